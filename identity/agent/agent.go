// Package agent is the node side of CryptoMesh identity for proxyless gRPC
// nodes (`cryptomesh agent`, SPEC §4): it keeps an SVID, its key, the trust
// bundle and the join token in a directory that the node's gRPC xDS bootstrap
// names as file_watcher certificate providers, renewing the SVID at half-life
// and never letting a reader see a half-written file.
//
// Files in Config.Dir (the bootstrap written by `cryptomesh bootstrap grpc`
// uses exactly these names):
//
//	svid.pem      the SVID certificate chain, leaf first, PEM (0644)   certificate_file
//	svid-key.pem  the SVID's private key, PKCS#8 PEM (0600)            private_key_file
//	bundle.pem    the trust bundle, PEM (0644)                         ca_certificate_file
//	token         the join token (0600)                                call_creds jwt_token_file
//
// The key is generated here and never leaves the node: only a CSR is sent.
package agent

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	mrand "math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/cryptomesh/cryptomesh/identity"
	"github.com/cryptomesh/cryptomesh/identity/internal/atomicfile"
)

// File names in Config.Dir.
const (
	SVIDFile   = "svid.pem"
	KeyFile    = "svid-key.pem"
	BundleFile = "bundle.pem"
	TokenFile  = "token"
)

const (
	publicMode = 0o644
	secretMode = 0o600
	dirMode    = 0o700

	defaultMinBackoff = time.Second
	defaultMaxBackoff = time.Minute
)

// Issued is the control plane's answer to a CSR.
type Issued struct {
	CertChainPEM []byte
	BundlePEM    []byte
	ExpiresAt    time.Time
}

// Issuer is the agent's view of the control plane (POST
// /api/v1/identity/svids, authenticated with the join token).
type Issuer interface {
	// SPIFFEID answers the ID the control plane issues for this token. The
	// CSR must name it as its only SAN, and for a node bound to an endpoint
	// it depends on the endpoint's current role, which only the control
	// plane knows.
	SPIFFEID(ctx context.Context, token string) (spiffeid.ID, error)
	// SignCSR has a CSR signed.
	SignCSR(ctx context.Context, token string, csrPEM []byte) (Issued, error)
}

// Config configures Run.
type Config struct {
	// Dir receives the files (created 0700 if missing).
	Dir string
	// TokenFile is the operator's join token (--token-file). It is re-read
	// before every renewal, so replacing it rotates the token, and copied to
	// Dir/token for the gRPC bootstrap's call credentials.
	TokenFile string
	Issuer    Issuer
	// TrustDomain is checked against every answer (default cryptomesh.local).
	TrustDomain spiffeid.TrustDomain
	Logger      *slog.Logger
	// Now and After stand in for time.Now and time.After in tests.
	Now   func() time.Time
	After func(time.Duration) <-chan time.Time
	// MinBackoff and MaxBackoff bound the wait between failed attempts
	// (default 1 s and 1 min, doubling, with jitter).
	MinBackoff, MaxBackoff time.Duration
}

func (c *Config) setDefaults() error {
	if c.Dir == "" || c.TokenFile == "" || c.Issuer == nil {
		return errors.New("agent: Dir, TokenFile and Issuer are required")
	}
	if c.TrustDomain.IsZero() {
		c.TrustDomain = spiffeid.RequireTrustDomainFromString(identity.DefaultTrustDomain)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.After == nil {
		c.After = time.After
	}
	if c.MinBackoff <= 0 {
		c.MinBackoff = defaultMinBackoff
	}
	if c.MaxBackoff < c.MinBackoff {
		c.MaxBackoff = max(defaultMaxBackoff, c.MinBackoff)
	}
	return nil
}

// Run keeps the files fresh until ctx ends; it returns ctx's error then, or
// a configuration error at once. Failures to renew are logged and retried:
// a node keeps its current SVID while the control plane is unreachable.
func Run(ctx context.Context, cfg Config) error {
	if err := cfg.setDefaults(); err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.Dir, dirMode); err != nil {
		return fmt.Errorf("agent: create %s: %w", cfg.Dir, err)
	}
	log := cfg.Logger.With("component", "agent", "dir", cfg.Dir)
	a := &agent{cfg: &cfg, log: log}

	var next time.Time // zero: renew now
	if leaf, err := a.loadExisting(); err != nil {
		log.Info("no usable SVID on disk, enrolling", "reason", err.Error())
	} else if !identity.NeedsRenewal(leaf, cfg.Now()) {
		next = halfLife(leaf)
		log.Info("reusing SVID on disk", "expires_at", leaf.NotAfter, "renew_at", next)
	}

	backoff := time.Duration(0)
	for {
		wait := max(next.Sub(cfg.Now()), 0)
		if !next.IsZero() && wait > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-cfg.After(wait):
			}
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		leaf, err := a.renew(ctx)
		if err == nil {
			backoff = 0
			next = halfLife(leaf)
			log.Info("renewed SVID", "spiffe_id", leaf.URIs[0].String(), "serial", leaf.SerialNumber.String(),
				"expires_at", leaf.NotAfter, "renew_at", next)
			continue
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		backoff = min(max(2*backoff, cfg.MinBackoff), cfg.MaxBackoff)
		// Jitter (0.8-1.2x) keeps a fleet that lost the control plane
		// together from coming back in lockstep.
		delay := time.Duration(float64(backoff) * (0.8 + 0.4*mrand.Float64()))
		next = cfg.Now().Add(delay)
		log.Warn("SVID renewal failed, retrying", "error", err, "retry_in", delay)
	}
}

type agent struct {
	cfg *Config
	log *slog.Logger
}

func halfLife(c *x509.Certificate) time.Time {
	return c.NotBefore.Add(c.NotAfter.Sub(c.NotBefore) / 2)
}

func (a *agent) path(name string) string { return filepath.Join(a.cfg.Dir, name) }

// loadExisting returns the leaf on disk if SVID, key and bundle agree and are
// valid now, so that a restarted agent does not re-enrol needlessly.
func (a *agent) loadExisting() (*x509.Certificate, error) {
	svid, err := x509svid.Load(a.path(SVIDFile), a.path(KeyFile))
	if err != nil {
		return nil, err
	}
	bundle, err := x509bundle.Load(a.cfg.TrustDomain, a.path(BundleFile))
	if err != nil {
		return nil, err
	}
	if _, _, err := x509svid.Verify(svid.Certificates, bundle, x509svid.WithTime(a.cfg.Now())); err != nil {
		return nil, err
	}
	return svid.Certificates[0], nil
}

// renew runs one enrolment: token, ID, key, CSR, answer checked, files written.
func (a *agent) renew(ctx context.Context) (*x509.Certificate, error) {
	token, err := a.syncToken()
	if err != nil {
		return nil, err
	}
	id, err := a.cfg.Issuer.SPIFFEID(ctx, token)
	if err != nil {
		return nil, fmt.Errorf("ask for the node's SPIFFE ID: %w", err)
	}
	if !id.MemberOf(a.cfg.TrustDomain) {
		return nil, fmt.Errorf("control plane named %s, outside trust domain %s", id, a.cfg.TrustDomain)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	csrDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{id.URL()}}, key)
	if err != nil {
		return nil, fmt.Errorf("create CSR: %w", err)
	}
	issued, err := a.cfg.Issuer.SignCSR(ctx, token, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER}))
	if err != nil {
		return nil, fmt.Errorf("have CSR for %s signed: %w", id, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("marshal key: %w", err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	// Check the answer before it replaces anything: a wrong or broken SVID
	// on disk would break the node's connections, an old one does not.
	svid, err := x509svid.Parse(issued.CertChainPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("answer for %s: %w", id, err)
	}
	if svid.ID != id {
		return nil, fmt.Errorf("answer is an SVID for %s, asked for %s", svid.ID, id)
	}
	bundle, err := x509bundle.Parse(a.cfg.TrustDomain, issued.BundlePEM)
	if err != nil {
		return nil, fmt.Errorf("answer's bundle: %w", err)
	}
	if _, _, err := x509svid.Verify(svid.Certificates, bundle, x509svid.WithTime(a.cfg.Now())); err != nil {
		return nil, fmt.Errorf("answer for %s does not verify against its bundle: %w", id, err)
	}
	// Bundle first: it may hold a root that peers' new SVIDs need. Key
	// before certificate: a watcher that reads the pair in between sees a
	// mismatch and keeps its previous pair (grpc-go's file watcher does).
	for _, f := range []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{BundleFile, issued.BundlePEM, publicMode},
		{KeyFile, keyPEM, secretMode},
		{SVIDFile, issued.CertChainPEM, publicMode},
	} {
		if err := atomicfile.Write(a.path(f.name), f.data, f.mode); err != nil {
			return nil, err
		}
	}
	return svid.Certificates[0], nil
}

// syncToken reads the operator's token file and mirrors it into Dir/token.
func (a *agent) syncToken() (string, error) {
	raw, err := os.ReadFile(a.cfg.TokenFile)
	if err != nil {
		return "", fmt.Errorf("read token file: %w", err)
	}
	token := bytes.TrimSpace(raw)
	if len(token) == 0 {
		return "", fmt.Errorf("token file %s is empty", a.cfg.TokenFile)
	}
	current, err := os.ReadFile(a.path(TokenFile))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("read %s: %w", TokenFile, err)
	}
	if !bytes.Equal(current, token) {
		if err := atomicfile.Write(a.path(TokenFile), token, secretMode); err != nil {
			return "", err
		}
	}
	return string(token), nil
}
