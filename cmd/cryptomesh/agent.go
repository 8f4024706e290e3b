package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/cryptomesh/cryptomesh/api/client"
	"github.com/cryptomesh/cryptomesh/identity"
	"github.com/cryptomesh/cryptomesh/identity/agent"
)

// runAgent is `cryptomesh agent --node N --dir DIR --token-file F`: it keeps
// DIR's SVID, key, bundle and token files fresh for a proxyless gRPC node
// (identity/agent), asking the control plane with the join token.
func runAgent(ctx context.Context, args []string, _, stderr io.Writer) error {
	var node, dir, tokenFile, server, caFile, td, logLevel, logFormat string
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&node, "node", "", "the node's name; the join token must be for it")
	fs.StringVar(&dir, "dir", "", "directory of "+strings.Join([]string{agent.SVIDFile, agent.KeyFile, agent.BundleFile, agent.TokenFile}, ", ")+" (created 0700)")
	fs.StringVar(&tokenFile, "token-file", "", "file holding the node's join token (re-read at every renewal; replace it to rotate)")
	fs.StringVar(&server, "server", "http://127.0.0.1:19000", "URL of the control plane")
	fs.StringVar(&caFile, "ca-file", "", "PEM bundle (or CA directory) to trust an https --server by at first; then DIR's bundle.pem, kept current, is trusted too")
	fs.StringVar(&td, "trust-domain", identity.DefaultTrustDomain, "SPIFFE trust domain the answers must belong to")
	fs.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&logFormat, "log-format", "text", "text or json")
	fs.Usage = usageWithEnv(fs, "cryptomesh agent --node N --dir DIR --token-file F [--server URL --ca-file PATH] [flags]")
	if _, err := parseCommand(fs, args, 0, 0, ""); err != nil {
		return err
	}
	var missing []string
	for name, v := range map[string]string{"--node": node, "--dir": dir, "--token-file": tokenFile} {
		if v == "" {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return usageError{fmt.Errorf("%s required", strings.Join(missing, ", "))}
	}
	if err := identity.ValidateName("node", node); err != nil {
		return usageError{err}
	}
	trust, err := spiffeid.TrustDomainFromString(td)
	if err != nil {
		return usageError{fmt.Errorf("--trust-domain %q: %w", td, err)}
	}
	if _, err := client.New(server); err != nil {
		return usageError{fmt.Errorf("--server: %w", err)}
	}
	log, err := newLogger(stderr, logLevel, logFormat)
	if err != nil {
		return err
	}
	iss := &apiIssuer{server: server, caFile: caFile, bundleFile: filepath.Join(dir, agent.BundleFile), node: node}
	if strings.HasPrefix(strings.ToLower(server), "https://") && caFile == "" {
		if _, err := os.Stat(iss.bundleFile); err != nil {
			return usageError{fmt.Errorf("--server %s is https and there is no %s yet: pass --ca-file with the control plane's bundle", server, iss.bundleFile)}
		}
	}
	log.Info("agent starting", "node", node, "dir", dir, "server", server)
	err = agent.Run(ctx, agent.Config{
		Dir:         dir,
		TokenFile:   tokenFile,
		Issuer:      iss,
		TrustDomain: trust,
		Logger:      log.With("node", node),
	})
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		return nil // SIGINT or SIGTERM: a clean stop
	}
	return err
}

// apiIssuer is the agent's Issuer over the REST API. A client is built for
// every call because both its credential (the token file may be replaced)
// and its trust (bundle.pem follows root rotations) change over time, and
// calls come once per renewal.
type apiIssuer struct {
	server     string
	caFile     string
	bundleFile string
	node       string
}

func (i *apiIssuer) client(token string) (*client.Client, error) {
	opts := []client.Option{client.WithToken(token), client.WithUserAgent("cryptomesh-agent")}
	if strings.HasPrefix(strings.ToLower(i.server), "https://") {
		var paths []string
		if i.caFile != "" {
			paths = append(paths, i.caFile)
		}
		if _, err := os.Stat(i.bundleFile); err == nil {
			paths = append(paths, i.bundleFile)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("trust bundle: %w", err)
		}
		if len(paths) == 0 {
			return nil, fmt.Errorf("nothing to trust %s by: pass --ca-file", i.server)
		}
		pool, err := client.LoadRootCAs(paths...)
		if err != nil {
			return nil, err
		}
		opts = append(opts, client.WithRootCAs(pool))
	}
	return client.New(i.server, opts...)
}

// SPIFFEID asks the control plane which ID the token may be issued, and
// checks that the token is this node's.
func (i *apiIssuer) SPIFFEID(ctx context.Context, token string) (spiffeid.ID, error) {
	c, err := i.client(token)
	if err != nil {
		return spiffeid.ID{}, err
	}
	who, err := c.WhoAmI(ctx)
	if err != nil {
		return spiffeid.ID{}, err
	}
	if who.Node != i.node {
		return spiffeid.ID{}, fmt.Errorf("the join token is for node %q, not --node %s", who.Node, i.node)
	}
	id, err := spiffeid.FromString(who.SPIFFEID)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("the control plane named %q: %w", who.SPIFFEID, err)
	}
	return id, nil
}

// SignCSR has the CSR signed.
func (i *apiIssuer) SignCSR(ctx context.Context, token string, csrPEM []byte) (agent.Issued, error) {
	c, err := i.client(token)
	if err != nil {
		return agent.Issued{}, err
	}
	svid, err := c.SignCSR(ctx, csrPEM)
	if err != nil {
		return agent.Issued{}, err
	}
	return agent.Issued{CertChainPEM: svid.CertChainPEM, BundlePEM: svid.BundlePEM, ExpiresAt: svid.ExpiresAt}, nil
}
