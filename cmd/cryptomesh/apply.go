package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/cryptomesh/cryptomesh/api/client"
	"github.com/cryptomesh/cryptomesh/registry/mesh"
)

// runApply is `cryptomesh apply -f FILE [--dry-run]`: it posts a mesh
// document to /api/v1/apply and prints what happened to each entity,
// then a summary; warnings go to stderr.
func runApply(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var file string
	var dryRun bool
	fs, cf := clientCommand("apply", "cryptomesh apply -f FILE [--dry-run] [flags]", stderr)
	fs.StringVar(&file, "f", "", "the mesh document, YAML or JSON (- reads standard input)")
	fs.StringVar(&file, "filename", "", "the same as -f")
	fs.BoolVar(&dryRun, "dry-run", false, "only plan: show what would change, change nothing")
	if _, err := parseCommand(fs, args, 0, 0, ""); err != nil {
		return err
	}
	if file == "" {
		fs.Usage()
		return usageError{errors.New("-f FILE is required (- reads standard input)")}
	}
	doc, ctype, err := readDocument(file)
	if err != nil {
		return err
	}
	s, err := connect(cf)
	if err != nil {
		return err
	}
	ctx, cancel := s.context(ctx)
	defer cancel()
	rep, err := s.c.Apply(ctx, doc, ctype, dryRun)
	if err != nil {
		status := client.StatusOf(err)
		err = s.explain(err)
		var ce codedError
		if errors.As(err, &ce) && ce.code != exitError {
			hint := ""
			if status == http.StatusRequestEntityTooLarge {
				hint = "\n(the server's --max-apply-bytes sets the limit)"
			}
			return codedError{ce.code, fmt.Errorf("%s was not applied; nothing was changed:\n%w%s", file, ce.err, hint)}
		}
		return err
	}
	printReport(stdout, stderr, rep)
	return nil
}

// readDocument reads a document and decides its Content-Type: from the
// file's extension, else from its content.
func readDocument(file string) ([]byte, string, error) {
	var doc []byte
	var err error
	if file == "-" {
		doc, err = io.ReadAll(os.Stdin)
	} else {
		doc, err = os.ReadFile(file)
	}
	if err != nil {
		return nil, "", usageError{fmt.Errorf("read the document: %w", err)}
	}
	switch strings.ToLower(filepath.Ext(file)) {
	case ".json":
		return doc, "application/json", nil
	case ".yaml", ".yml":
		return doc, "application/yaml", nil
	}
	return doc, client.DocumentContentType(doc), nil
}

func printReport(stdout, stderr io.Writer, rep *mesh.Report) {
	suffix := ""
	if rep.DryRun {
		suffix = " (dry run)"
	}
	for _, it := range rep.Items {
		note := ""
		switch {
		case it.Implied:
			note = " (implied: no permissions)"
		case it.Embedded:
			note = " (embedded)"
		}
		fmt.Fprintf(stdout, "%s/%s %s%s%s\n", kindOfSection(it.Kind).name, it.ID, it.Outcome, note, suffix)
	}
	for _, w := range rep.Warnings {
		fmt.Fprintf(stderr, "warning: %s\n", w)
	}
	if rep.DryRun {
		fmt.Fprintf(stdout, "dry run: %d to create, %d to update, %d unchanged; nothing was changed\n", rep.Created, rep.Updated, rep.Unchanged)
		return
	}
	fmt.Fprintf(stdout, "applied: %d created, %d updated, %d unchanged\n", rep.Created, rep.Updated, rep.Unchanged)
}
