package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"gopkg.in/yaml.v3"

	"github.com/cryptomesh/cryptomesh/api/client"
)

// runGet is `cryptomesh get KIND [ID] [-o table|json|yaml]`: one entity,
// or every entity of a kind (all pages).
func runGet(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var output string
	fs, cf := clientCommand("get", "cryptomesh get KIND [ID] [-o table|json|yaml] [flags]", stderr)
	fs.StringVar(&output, "o", "table", "output format: table, json or yaml")
	fs.StringVar(&output, "output", "table", "the same as -o")
	pos, err := parseCommand(fs, args, 1, 2, "KIND [ID]")
	if err != nil {
		return err
	}
	switch output {
	case "table", "json", "yaml":
	default:
		return usageError{fmt.Errorf("-o %q: want table, json or yaml", output)}
	}
	k, err := lookupKind(pos[0])
	if err != nil {
		return err
	}
	s, err := connect(cf)
	if err != nil {
		return err
	}
	ctx, cancel := s.context(ctx)
	defer cancel()
	col := client.For[map[string]any](s.c, k.kind)
	var items []map[string]any
	var single map[string]any
	if len(pos) == 2 {
		single, err = col.Get(ctx, pos[1])
		items = []map[string]any{single}
	} else {
		items, err = col.ListAll(ctx, client.ListOptions{Limit: 10000})
	}
	if err != nil {
		return notFoundAs(s.explain(err), k, pos[1:])
	}
	if output != "table" {
		var v any = items
		switch {
		case single != nil:
			v = single
		case len(items) == 0:
			v = []any{}
		}
		if output == "json" {
			return writeJSONOut(stdout, v)
		}
		return writeYAMLOut(stdout, v)
	}
	if len(items) == 0 {
		fmt.Fprintf(stderr, "no %s\n", k.kind.Route())
		return nil
	}
	return writeTable(stdout, k, items)
}

func writeJSONOut(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("write JSON: %w", err)
	}
	return nil
}

func writeYAMLOut(w io.Writer, v any) error {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("write YAML: %w", err)
	}
	if err := enc.Close(); err != nil {
		return fmt.Errorf("write YAML: %w", err)
	}
	if _, err := w.Write(buf.Bytes()); err != nil {
		return fmt.Errorf("write YAML: %w", err)
	}
	return nil
}

// writeTable writes the kind's columns, one entity per row.
func writeTable(w io.Writer, k cliKind, items []map[string]any) error {
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	headers := make([]string, len(k.columns))
	for i, c := range k.columns {
		headers[i] = c.header
	}
	fmt.Fprintln(tw, strings.Join(headers, "\t"))
	for _, e := range items {
		cells := make([]string, len(k.columns))
		for i, c := range k.columns {
			// Cells are one line each, whatever the value holds.
			cells[i] = strings.NewReplacer("\t", " ", "\n", " ").Replace(c.value(e))
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write the table: %w", err)
	}
	return nil
}
