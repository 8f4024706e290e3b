package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/cryptomesh/cryptomesh/api"
	"github.com/cryptomesh/cryptomesh/identity"
	"github.com/cryptomesh/cryptomesh/identity/idreg"
	"github.com/cryptomesh/cryptomesh/registry"
)

// The identity side of `cryptomesh server` (SPEC §4, §10): the trust
// domain, the built-in CA or SPIRE, the join tokens and their records, the
// API's TLS, and the minute-by-minute maintenance of all of it.

const (
	// maintainEvery is how often the CA rereads its directory (adopting a
	// root another replica prepared) and expired token records are swept.
	maintainEvery = time.Minute
	// spireWait bounds the wait for the SPIRE agent's first answer.
	spireWait = 30 * time.Second
)

// defaultSANs are the names the serving certificate carries by default.
func defaultSANs() []string { return []string{"localhost", "127.0.0.1"} }

// identityFlags are the server's identity flags.
type identityFlags struct {
	trustDomain string
	mode        string
	spireSocket string
	caDir       string
	sans        defaultedList
	tls         bool
}

func addIdentityFlags(fs *flag.FlagSet, c *identityFlags) {
	c.sans = defaultedList{values: defaultSANs()}
	fs.StringVar(&c.trustDomain, "trust-domain", identity.DefaultTrustDomain, "SPIFFE trust domain of every identity")
	fs.StringVar(&c.mode, "identity", "builtin", "identity provider: builtin (the control plane's CA) or spire (a SPIRE agent's Workload API)")
	fs.StringVar(&c.spireSocket, "spire-socket", "", "path (or unix:// address) of the SPIRE agent's Workload API socket, for --identity spire")
	fs.StringVar(&c.caDir, "ca-dir", "", "directory of the built-in CA and the join-token key, shared by replicas (default <data-dir>/ca)")
	fs.Var(&c.sans, "san", "DNS names and IPs of the API's TLS certificate (comma-separated)")
	fs.BoolVar(&c.tls, "tls", false, "serve TLS on a loopback --addr too (beyond loopback TLS is the default)")
}

// defaultedList is a list flag whose default the first given value
// replaces rather than extends.
type defaultedList struct {
	values []string
	set    bool
}

func (l *defaultedList) String() string { return strings.Join(l.values, ",") }

func (l *defaultedList) Set(v string) error {
	if !l.set {
		l.values, l.set = nil, true
	}
	return (*listFlag)(&l.values).Set(v)
}

// useTLS decides whether the API speaks TLS: always beyond loopback unless
// --insecure; on loopback only with --tls.
func useTLS(local, insecure, forceTLS bool) (bool, error) {
	switch {
	case insecure && forceTLS:
		return false, usageError{errors.New("--tls and --insecure contradict each other")}
	case local:
		return forceTLS, nil
	default:
		return !insecure, nil
	}
}

// serverIdentity is the wired identity of a running server.
type serverIdentity struct {
	api     api.IdentityConfig
	serving identity.Source
	ca      *identity.CA // nil in SPIRE mode
	records *idreg.Store
	close   func() error
}

// setupIdentity loads or creates the CA (or connects to SPIRE), the token
// authority and the authenticator, and registers the identity metrics.
func setupIdentity(ctx context.Context, f identityFlags, dataDir string, reg *registry.Registry, promReg prometheus.Registerer, log *slog.Logger) (*serverIdentity, error) {
	td, err := spiffeid.TrustDomainFromString(f.trustDomain)
	if err != nil {
		return nil, usageError{fmt.Errorf("--trust-domain %q: %w", f.trustDomain, err)}
	}
	caDir := f.caDir
	if caDir == "" {
		caDir = filepath.Join(dataDir, "ca")
	}
	if _, _, err := identity.ParseSANs(f.sans.values); err != nil {
		return nil, usageError{err}
	}
	metrics, err := identity.NewMetrics(promReg, nil)
	if err != nil {
		return nil, err
	}
	opts := []identity.Option{identity.WithTrustDomain(td), identity.WithLogger(log), identity.WithMetrics(metrics)}
	records, err := idreg.New(reg)
	if err != nil {
		return nil, err
	}
	id := &serverIdentity{records: records, close: func() error { return nil }}
	switch f.mode {
	case "builtin":
		if f.spireSocket != "" {
			return nil, usageError{errors.New("--spire-socket is for --identity spire")}
		}
		b, err := idreg.NewBuiltin(reg, caDir, f.sans.values, opts...)
		if err != nil {
			return nil, err
		}
		id.ca, id.serving = b.CA, b.Serving
		id.api = api.IdentityConfig{Bundles: b.CA, Signer: b.CA, Tokens: b.Tokens, Nodes: b.Nodes, Records: b.Records}
		log.Info("identity: built-in CA", "trust_domain", td.String(), "ca_dir", caDir, "sans", f.sans.values)
	case "spire":
		if f.spireSocket == "" {
			return nil, usageError{errors.New("--identity spire needs --spire-socket PATH")}
		}
		wctx, cancel := context.WithTimeout(ctx, spireWait)
		defer cancel()
		src, err := identity.NewSPIRESource(wctx, f.spireSocket, opts...)
		if err != nil {
			return nil, fmt.Errorf("identity spire (within %s): %w", spireWait, err)
		}
		id.serving, id.close = src, src.Close
		// SVIDs come from SPIRE; the control plane issues none (Signer nil).
		id.api = api.IdentityConfig{Bundles: src}
		log.Info("identity: SPIRE", "trust_domain", td.String(), "socket", f.spireSocket, "token_key_dir", caDir)
	default:
		return nil, usageError{fmt.Errorf("--identity %q: want builtin or spire", f.mode)}
	}
	if id.api.Tokens == nil {
		// SPIRE mode: join tokens still authenticate nodes; their key
		// lives in the CA directory.
		tokens, err := identity.NewTokenAuthority(caDir, records, opts...)
		if err != nil {
			return nil, errors.Join(fmt.Errorf("join-token key in %s: %w", caDir, err), id.close())
		}
		nodes, err := identity.NewAuthenticator(tokens, id.api.Bundles, records, opts...)
		if err != nil {
			return nil, errors.Join(err, id.close())
		}
		id.api.Tokens, id.api.Nodes, id.api.Records = tokens, nodes, records
	}
	id.api.TrustDomain = td
	return id, nil
}

// ready reports whether the control plane holds a serving SVID: with SPIRE
// it fails while the agent has no entry for the control plane.
func (id *serverIdentity) ready() error {
	if _, err := id.serving.GetX509SVID(); err != nil {
		return err
	}
	return nil
}

// tlsConfig is the API's TLS: the serving certificate of the CA or SPIRE.
func (id *serverIdentity) tlsConfig() *tls.Config { return api.TLSConfig(id.serving) }

// maintain runs until ctx ends: every minute the CA applies due rotation
// steps (and adopts roots other replicas prepared) and expired token
// records are swept. Failures are logged and tried again next time.
func (id *serverIdentity) maintain(ctx context.Context, log *slog.Logger) {
	t := time.NewTicker(maintainEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if id.ca != nil {
			if err := id.ca.Maintain(ctx); err != nil && ctx.Err() == nil {
				log.Error("CA maintenance failed", "error", err)
			}
		}
		n, err := id.records.Sweep(ctx, time.Now())
		switch {
		case err != nil && ctx.Err() == nil:
			log.Error("sweeping expired join-token records failed", "error", err)
		case n > 0:
			log.Info("swept expired join-token records", "count", n)
		}
	}
}
