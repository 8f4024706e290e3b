package main

import (
	"context"
	"fmt"
	"io"
)

// runExport is `cryptomesh export`: the registry as a YAML mesh document
// on standard output, which `cryptomesh apply -f` takes back.
func runExport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, cf := clientCommand("export", "cryptomesh export [flags] > mesh.yaml", stderr)
	if _, err := parseCommand(fs, args, 0, 0, ""); err != nil {
		return err
	}
	s, err := connect(cf)
	if err != nil {
		return err
	}
	ctx, cancel := s.context(ctx)
	defer cancel()
	doc, err := s.c.Export(ctx)
	if err != nil {
		return s.explain(err)
	}
	if _, err := stdout.Write(doc); err != nil {
		return fmt.Errorf("write the document: %w", err)
	}
	return nil
}
