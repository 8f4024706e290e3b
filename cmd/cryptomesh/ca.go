package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/cryptomesh/cryptomesh/identity"
)

// runCA is `cryptomesh ca init --out DIR [--trust-domain TD]`: a CA
// directory made once and mounted by every replica (as a Kubernetes Secret,
// say) with --ca-dir, so that they share roots and the join-token key.
func runCA(_ context.Context, args []string, stdout, stderr io.Writer) error {
	const synopsis = "cryptomesh ca init --out DIR [--trust-domain TD]"
	if len(args) == 0 || args[0] != "init" {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
			fmt.Fprintf(stderr, "Usage: %s\n", synopsis)
			return flag.ErrHelp
		}
		return usageError{fmt.Errorf("want %s", synopsis)}
	}
	var out, td string
	fs := flag.NewFlagSet("ca init", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&out, "out", "", "directory to create the CA in (0700; keys 0600); it must not hold a CA yet")
	fs.StringVar(&td, "trust-domain", identity.DefaultTrustDomain, "SPIFFE trust domain of the CA (the servers' --trust-domain)")
	fs.Usage = usageWithEnv(fs, synopsis)
	if _, err := parseCommand(fs, args[1:], 0, 0, ""); err != nil {
		return err
	}
	if out == "" {
		return usageError{errors.New("--out DIR is required")}
	}
	trust, err := spiffeid.TrustDomainFromString(td)
	if err != nil {
		return usageError{fmt.Errorf("--trust-domain %q: %w", td, err)}
	}
	ca, err := identity.InitCA(out, identity.WithTrustDomain(trust))
	if errors.Is(err, identity.ErrCAExists) {
		return fmt.Errorf("%s already holds a CA; give its replicas --ca-dir %s, or choose another --out", out, out)
	}
	if err != nil {
		return err
	}
	b, _ := ca.Bundle()
	notAfter := b.X509Authorities()[0].NotAfter
	fmt.Fprintf(stdout, "created a CA for trust domain %s in %s (root valid until %s)\n", trust, out, notAfter.UTC().Format("2006-01-02"))
	fmt.Fprintf(stdout, "give every replica: cryptomesh server --ca-dir %s --trust-domain %s\n", out, trust)
	return nil
}
