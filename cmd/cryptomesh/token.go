package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/cryptomesh/cryptomesh/api/client"
)

// runToken is `cryptomesh token create|list|revoke`: the join tokens that
// enrol nodes (SPEC §4), managed with the admin token like every client
// command.
func runToken(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const synopsis = "cryptomesh token create --node N (--endpoint E | --role R) [--ttl 24h] | token list [-o table|json] | token revoke JTI"
	if len(args) == 0 {
		return usageError{fmt.Errorf("want %s", synopsis)}
	}
	switch args[0] {
	case "create":
		return runTokenCreate(ctx, args[1:], stdout, stderr)
	case "list":
		return runTokenList(ctx, args[1:], stdout, stderr)
	case "revoke":
		return runTokenRevoke(ctx, args[1:], stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprintf(stderr, "Usage: %s\n", synopsis)
		return flag.ErrHelp
	}
	return usageError{fmt.Errorf("unknown token command %q; want %s", args[0], synopsis)}
}

// runTokenCreate prints the token alone on stdout, so that
// `cryptomesh token create ... > node.token` is the whole job; what it is
// for goes to stderr.
func runTokenCreate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var req client.TokenRequest
	fs, cf := clientCommand("token create", "cryptomesh token create --node N (--endpoint E | --role R) [--ttl 24h] [flags]", stderr)
	fs.StringVar(&req.Node, "node", "", "the node's name (its xDS node id)")
	fs.StringVar(&req.Endpoint, "endpoint", "", "bind the node to this endpoint (it is the endpoint's sidecar or gRPC server)")
	fs.StringVar(&req.Role, "role", "", "bind the node to this role (it calls in that role)")
	fs.DurationVar(&req.TTL, "ttl", 24*time.Hour, "how long the token is valid (1m to 720h)")
	if _, err := parseCommand(fs, args, 0, 0, ""); err != nil {
		return err
	}
	switch {
	case req.Node == "":
		return usageError{errors.New("--node N is required")}
	case (req.Endpoint == "") == (req.Role == ""):
		return usageError{errors.New("give exactly one of --endpoint E and --role R")}
	}
	s, err := connect(cf)
	if err != nil {
		return err
	}
	ctx, cancel := s.context(ctx)
	defer cancel()
	tok, err := s.c.CreateToken(ctx, req)
	if err != nil {
		return s.explain(err)
	}
	binding := "endpoint " + req.Endpoint
	if req.Role != "" {
		binding = "role " + req.Role
	}
	fmt.Fprintf(stderr, "join token for node %s (%s), jti %s, expires %s\n", req.Node, binding, tok.JTI, tok.ExpiresAt.UTC().Format(time.RFC3339))
	_, err = fmt.Fprintln(stdout, tok.Token)
	return err
}

func runTokenList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var output string
	fs, cf := clientCommand("token list", "cryptomesh token list [-o table|json] [flags]", stderr)
	fs.StringVar(&output, "o", "table", "output format: table or json")
	fs.StringVar(&output, "output", "table", "the same as -o")
	if _, err := parseCommand(fs, args, 0, 0, ""); err != nil {
		return err
	}
	if output != "table" && output != "json" {
		return usageError{fmt.Errorf("-o %q: want table or json", output)}
	}
	s, err := connect(cf)
	if err != nil {
		return err
	}
	ctx, cancel := s.context(ctx)
	defer cancel()
	recs, err := s.c.ListTokens(ctx)
	if err != nil {
		return s.explain(err)
	}
	if output == "json" {
		if recs == nil {
			recs = []client.TokenRecord{}
		}
		return writeJSONOut(stdout, recs)
	}
	if len(recs) == 0 {
		fmt.Fprintln(stderr, "no join tokens")
		return nil
	}
	now := time.Now()
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "JTI\tNODE\tBINDING\tISSUED\tEXPIRES\tSTATUS")
	for _, r := range recs {
		binding := "endpoint:" + r.Endpoint
		if r.Role != "" {
			binding = "role:" + r.Role
		}
		status := "active"
		switch {
		case r.Revoked:
			status = "revoked"
		case !now.Before(r.ExpiresAt):
			status = "expired"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.JTI, r.Node, binding,
			r.IssuedAt.UTC().Format(time.RFC3339), r.ExpiresAt.UTC().Format(time.RFC3339), status)
	}
	return tw.Flush()
}

func runTokenRevoke(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, cf := clientCommand("token revoke", "cryptomesh token revoke JTI [flags]", stderr)
	pos, err := parseCommand(fs, args, 1, 1, "JTI")
	if err != nil {
		return err
	}
	s, err := connect(cf)
	if err != nil {
		return err
	}
	ctx, cancel := s.context(ctx)
	defer cancel()
	if err := s.c.RevokeToken(ctx, pos[0]); err != nil {
		err = s.explain(err)
		var ce codedError
		if errors.As(err, &ce) && ce.code == exitNotFound {
			return codedError{exitNotFound, fmt.Errorf("404: no join token with jti '%s' (see cryptomesh token list)", pos[0])}
		}
		return err
	}
	fmt.Fprintf(stdout, "revoked join token %s\n", pos[0])
	return nil
}
