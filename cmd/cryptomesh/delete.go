package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/cryptomesh/cryptomesh/api/client"
)

// runDelete is `cryptomesh delete KIND ID [--cascade]`.
func runDelete(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var cascade bool
	fs, cf := clientCommand("delete", "cryptomesh delete KIND ID [--cascade] [flags]", stderr)
	fs.BoolVar(&cascade, "cascade", false, "also delete what it contains (a service's microservices, their functions, and their states and results)")
	pos, err := parseCommand(fs, args, 2, 2, "KIND ID")
	if err != nil {
		return err
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
	err = client.For[map[string]any](s.c, k.kind).Delete(ctx, pos[1], client.DeleteOptions{Cascade: cascade})
	if err != nil {
		err = notFoundAs(s.explain(err), k, pos[1:])
		var ce codedError
		if errors.As(err, &ce) && ce.code == exitConflict {
			// The server's hint names its query parameter; say the flag.
			return codedError{exitConflict, errors.New(strings.ReplaceAll(ce.err.Error(), "use ?cascade=true", "pass --cascade"))}
		}
		return err
	}
	fmt.Fprintf(stdout, "%s/%s deleted\n", k.name, pos[1])
	return nil
}
