package agent_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/cryptomesh/cryptomesh/identity"
	"github.com/cryptomesh/cryptomesh/identity/agent"
)

var (
	td = spiffeid.RequireTrustDomainFromString("cryptomesh.local")
	t0 = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
)

// fakeClock drives the agent's timers by hand.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []waiter
	waits   []time.Duration // every duration the agent asked to wait
}

type waiter struct {
	at time.Time
	ch chan time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	c.waits = append(c.waits, d)
	c.waiters = append(c.waiters, waiter{at: c.now.Add(d), ch: ch})
	return ch
}

// Advance moves the clock and fires the timers that are due.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	kept := c.waiters[:0]
	for _, w := range c.waiters {
		if w.at.After(c.now) {
			kept = append(kept, w)
			continue
		}
		w.ch <- c.now
	}
	c.waiters = kept
}

// dropTimers forgets the timers of an agent that was stopped.
func (c *fakeClock) dropTimers() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.waiters = nil
}

// AdvanceTo moves the clock to t.
func (c *fakeClock) AdvanceTo(t time.Time) { c.Advance(t.Sub(c.Now())) }

// waitBlocked waits (in real time, generously) until the agent is parked on
// a timer, i.e. has finished what the last tick started.
func (c *fakeClock) waitBlocked(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		c.mu.Lock()
		n := len(c.waiters)
		c.mu.Unlock()
		if n > 0 {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatal("agent never waited on its timer")
}

func (c *fakeClock) lastWait() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.waits[len(c.waits)-1]
}

// controlPlane is the API's side of POST /api/v1/identity/svids, on the real
// CA, token authority and authenticator.
type controlPlane struct {
	ca    *identity.CA
	auth  *identity.Authenticator
	calls atomic.Int32
	// failNext makes that many SignCSR calls fail.
	failNext atomic.Int32
	// tamper, if set, rewrites an answer.
	tamper func(identity.Issued) identity.Issued
}

type noRevocations struct{}

func (noRevocations) IsRevoked(context.Context, string) (bool, error) { return false, nil }

type roles map[string]string

func (r roles) EndpointRole(_ context.Context, e string) (string, error) {
	role, ok := r[e]
	if !ok {
		return "", errors.New("no such endpoint")
	}
	return role, nil
}

func newControlPlane(t *testing.T, clock *fakeClock, ttl time.Duration) (*controlPlane, *identity.TokenAuthority) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "ca")
	ca, err := identity.LoadOrCreateCA(dir, identity.WithClock(clock.Now), identity.WithSVIDTTL(ttl))
	if err != nil {
		t.Fatal(err)
	}
	tokens, err := identity.NewTokenAuthority(dir, noRevocations{}, identity.WithClock(clock.Now))
	if err != nil {
		t.Fatal(err)
	}
	auth, err := identity.NewAuthenticator(tokens, ca, roles{"e1": "svc"}, identity.WithClock(clock.Now))
	if err != nil {
		t.Fatal(err)
	}
	return &controlPlane{ca: ca, auth: auth}, tokens
}

func (cp *controlPlane) SPIFFEID(ctx context.Context, token string) (spiffeid.ID, error) {
	cred, err := cp.auth.FromToken(ctx, token)
	if err != nil {
		return spiffeid.ID{}, err
	}
	return cred.SPIFFEID, nil
}

func (cp *controlPlane) SignCSR(ctx context.Context, token string, csrPEM []byte) (agent.Issued, error) {
	cp.calls.Add(1)
	if cp.failNext.Load() > 0 {
		cp.failNext.Add(-1)
		return agent.Issued{}, errors.New("control plane unavailable")
	}
	cred, err := cp.auth.FromToken(ctx, token)
	if err != nil {
		return agent.Issued{}, err
	}
	block, _ := pem.Decode(csrPEM)
	req, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil || len(req.URIs) != 1 {
		return agent.Issued{}, errors.New("bad CSR")
	}
	requested, err := spiffeid.FromURI(req.URIs[0])
	if err != nil || !identity.MayIssue(cred, requested) {
		return agent.Issued{}, errors.New("forbidden")
	}
	issued, err := cp.ca.SignCSR(ctx, csrPEM, requested)
	if err != nil {
		return agent.Issued{}, err
	}
	if cp.tamper != nil {
		*issued = cp.tamper(*issued)
	}
	return agent.Issued{CertChainPEM: issued.CertChainPEM, BundlePEM: issued.BundlePEM, ExpiresAt: issued.ExpiresAt}, nil
}

type env struct {
	clock     *fakeClock
	cp        *controlPlane
	tokens    *identity.TokenAuthority
	dir       string
	tokenFile string
	cancel    context.CancelFunc
	done      chan error
}

func start(t *testing.T, ttl time.Duration, binding identity.Binding) *env {
	t.Helper()
	clock := &fakeClock{now: t0}
	cp, tokens := newControlPlane(t, clock, ttl)
	tok, _, err := tokens.Mint("node-1", binding, 365*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	base := t.TempDir()
	e := &env{clock: clock, cp: cp, tokens: tokens, dir: filepath.Join(base, "identity"), tokenFile: filepath.Join(base, "token-in")}
	if err := os.WriteFile(e.tokenFile, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.run(t)
	return e
}

func (e *env) run(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel, e.done = cancel, make(chan error, 1)
	go func() {
		e.done <- agent.Run(ctx, agent.Config{
			Dir: e.dir, TokenFile: e.tokenFile, Issuer: e.cp,
			Now: e.clock.Now, After: e.clock.After,
			MinBackoff: time.Second, MaxBackoff: 8 * time.Second,
		})
	}()
	t.Cleanup(e.stop)
}

func (e *env) stop() {
	if e.cancel == nil {
		return
	}
	e.cancel()
	<-e.done
	e.cancel = nil
}

func (e *env) leaf(t *testing.T) *x509.Certificate {
	t.Helper()
	svid, err := x509svid.Load(filepath.Join(e.dir, agent.SVIDFile), filepath.Join(e.dir, agent.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	return svid.Certificates[0]
}

func TestAgentWritesFiles(t *testing.T) {
	tests := []struct {
		name    string
		binding identity.Binding
		wantID  string
	}{
		{"endpoint node", identity.EndpointBinding("e1", ""), "spiffe://cryptomesh.local/role/svc/endpoint/e1"},
		{"role node", identity.RoleBinding("ml"), "spiffe://cryptomesh.local/role/ml"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := start(t, time.Hour, tt.binding)
			e.clock.waitBlocked(t)

			fi, err := os.Stat(e.dir)
			if err != nil || fi.Mode().Perm() != 0o700 {
				t.Fatalf("dir: %v mode %v", err, fi.Mode())
			}
			for name, mode := range map[string]os.FileMode{
				agent.SVIDFile: 0o644, agent.KeyFile: 0o600, agent.BundleFile: 0o644, agent.TokenFile: 0o600,
			} {
				fi, err := os.Stat(filepath.Join(e.dir, name))
				if err != nil {
					t.Fatal(err)
				}
				if fi.Mode().Perm() != mode {
					t.Errorf("%s mode %04o, want %04o", name, fi.Mode().Perm(), mode)
				}
			}
			entries, _ := os.ReadDir(e.dir)
			if len(entries) != 4 {
				t.Errorf("%d entries in dir, want the 4 files and no temporaries", len(entries))
			}
			svid, err := x509svid.Load(filepath.Join(e.dir, agent.SVIDFile), filepath.Join(e.dir, agent.KeyFile))
			if err != nil {
				t.Fatalf("SVID and key do not load as a pair: %v", err)
			}
			if svid.ID.String() != tt.wantID {
				t.Fatalf("SVID for %s, want %s", svid.ID, tt.wantID)
			}
			bundle, err := x509bundle.Load(td, filepath.Join(e.dir, agent.BundleFile))
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := x509svid.Verify(svid.Certificates, bundle, x509svid.WithTime(e.clock.Now())); err != nil {
				t.Fatalf("SVID does not verify against bundle.pem: %v", err)
			}
			in, _ := os.ReadFile(e.tokenFile)
			out, _ := os.ReadFile(filepath.Join(e.dir, agent.TokenFile))
			if !bytes.Equal(bytes.TrimSpace(in), out) {
				t.Fatal("token file not mirrored")
			}
		})
	}
}

func TestAgentRenewsAtHalfLife(t *testing.T) {
	e := start(t, time.Hour, identity.RoleBinding("ml"))
	e.clock.waitBlocked(t)
	prev := e.leaf(t)
	for i := range 10 {
		half := prev.NotBefore.Add(prev.NotAfter.Sub(prev.NotBefore) / 2)
		calls := e.cp.calls.Load()
		e.clock.AdvanceTo(half.Add(-time.Second))
		e.clock.waitBlocked(t)
		if e.cp.calls.Load() != calls {
			t.Fatalf("renewal %d: renewed before half-life", i)
		}
		e.clock.AdvanceTo(half)
		e.clock.waitBlocked(t)
		cur := e.leaf(t)
		if cur.SerialNumber.Cmp(prev.SerialNumber) == 0 {
			t.Fatalf("renewal %d: SVID not renewed at half-life", i)
		}
		if !e.clock.Now().Before(prev.NotAfter) {
			t.Fatalf("renewal %d: renewed only after expiry", i)
		}
		if pub, ok := cur.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || pub.Equal(prev.PublicKey) {
			t.Fatalf("renewal %d: key reused", i)
		}
		prev = cur
	}
}

func TestAgentBacksOff(t *testing.T) {
	clock := &fakeClock{now: t0}
	cp, tokens := newControlPlane(t, clock, time.Hour)
	cp.failNext.Store(6)
	tok, _, _ := tokens.Mint("node-1", identity.RoleBinding("ml"), time.Hour*24)
	base := t.TempDir()
	e := &env{clock: clock, cp: cp, tokens: tokens, dir: filepath.Join(base, "id"), tokenFile: filepath.Join(base, "tok")}
	if err := os.WriteFile(e.tokenFile, []byte(tok), 0o600); err != nil {
		t.Fatal(err)
	}
	e.run(t)

	// Doubling from 1 s, capped at 8 s, each with ±20 % jitter.
	wantBase := []time.Duration{1, 2, 4, 8, 8, 8}
	for i, b := range wantBase {
		clock.waitBlocked(t)
		got := clock.lastWait()
		lo, hi := b*time.Second*8/10, b*time.Second*12/10
		if got < lo || got > hi {
			t.Fatalf("wait %d after failure = %s, want %s..%s", i, got, lo, hi)
		}
		if _, err := os.Stat(filepath.Join(e.dir, agent.SVIDFile)); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("SVID file exists after failures: %v", err)
		}
		clock.Advance(got)
	}
	clock.waitBlocked(t)
	if n := cp.calls.Load(); n != 7 {
		t.Fatalf("%d calls, want 6 failures and a success", n)
	}
	if got := clock.lastWait(); got < 29*time.Minute || got > 30*time.Minute {
		t.Fatalf("after success the agent waits %s, want about half the TTL", got)
	}
	e.leaf(t)
}

func TestAgentRefusesBadAnswers(t *testing.T) {
	otherDir := filepath.Join(t.TempDir(), "other-ca")
	otherCA, err := identity.LoadOrCreateCA(otherDir, identity.WithClock(func() time.Time { return t0 }))
	if err != nil {
		t.Fatal(err)
	}
	_, otherBundle := otherCA.Bundle()
	resign := func(cp *controlPlane, id spiffeid.ID) []byte {
		key := mustKey(t)
		der, err := x509.CreateCertificateRequest(nil, &x509.CertificateRequest{URIs: []*url.URL{id.URL()}}, key)
		if err != nil {
			t.Fatal(err)
		}
		issued, err := cp.ca.SignCSR(context.Background(), der, id)
		if err != nil {
			t.Fatal(err)
		}
		return issued.CertChainPEM
	}
	mlID := spiffeid.RequireFromString("spiffe://cryptomesh.local/role/ml")
	tests := []struct {
		name   string
		tamper func(cp *controlPlane, in identity.Issued) identity.Issued
	}{
		{"certificate for another key", func(cp *controlPlane, in identity.Issued) identity.Issued {
			in.CertChainPEM = resign(cp, mlID)
			return in
		}},
		{"certificate for another ID", func(cp *controlPlane, in identity.Issued) identity.Issued {
			in.CertChainPEM = resign(cp, spiffeid.RequireFromString("spiffe://cryptomesh.local/role/admin"))
			return in
		}},
		{"bundle of another CA", func(_ *controlPlane, in identity.Issued) identity.Issued {
			in.BundlePEM = otherBundle
			return in
		}},
		{"garbage certificate", func(_ *controlPlane, in identity.Issued) identity.Issued {
			in.CertChainPEM = []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
			return in
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := &fakeClock{now: t0}
			cp, tokens := newControlPlane(t, clock, time.Hour)
			cp.tamper = func(in identity.Issued) identity.Issued { return tt.tamper(cp, in) }
			tok, _, _ := tokens.Mint("node-1", identity.RoleBinding("ml"), time.Hour*24)
			base := t.TempDir()
			e := &env{clock: clock, cp: cp, tokens: tokens, dir: filepath.Join(base, "id"), tokenFile: filepath.Join(base, "tok")}
			if err := os.WriteFile(e.tokenFile, []byte(tok), 0o600); err != nil {
				t.Fatal(err)
			}
			e.run(t)
			for range 3 {
				clock.waitBlocked(t)
				clock.Advance(clock.lastWait())
			}
			clock.waitBlocked(t)
			if n := cp.calls.Load(); n < 3 {
				t.Fatalf("%d attempts, want retries", n)
			}
			for _, f := range []string{agent.SVIDFile, agent.KeyFile, agent.BundleFile} {
				if _, err := os.Stat(filepath.Join(e.dir, f)); !errors.Is(err, os.ErrNotExist) {
					t.Fatalf("%s written from a bad answer (%v)", f, err)
				}
			}
			// The same agent enrols once the answers are right.
			cp.tamper = nil
			clock.Advance(clock.lastWait())
			clock.waitBlocked(t)
			if id := e.leaf(t).URIs[0].String(); id != mlID.String() {
				t.Fatalf("enrolled as %s", id)
			}
		})
	}
}

func mustKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestAgentAtomicFiles reads the files in a tight loop while the agent
// renews them again and again: every read must be a whole PEM file.
func TestAgentAtomicFiles(t *testing.T) {
	e := start(t, time.Hour, identity.RoleBinding("ml"))
	e.clock.waitBlocked(t)

	stop := make(chan struct{})
	var reads atomic.Int64
	errc := make(chan error, 1)
	go func() {
		defer close(errc)
		for {
			select {
			case <-stop:
				return
			default:
			}
			for _, f := range []string{agent.SVIDFile, agent.KeyFile, agent.BundleFile} {
				data, err := os.ReadFile(filepath.Join(e.dir, f))
				if err != nil {
					errc <- err
					return
				}
				if err := wholePEM(data); err != nil {
					errc <- errors.New(f + ": " + err.Error())
					return
				}
				reads.Add(1)
			}
		}
	}()
	first := e.leaf(t)
	for range 60 {
		e.clock.Advance(e.clock.lastWait())
		e.clock.waitBlocked(t)
	}
	close(stop)
	if err := <-errc; err != nil {
		t.Fatalf("reader saw a partial file: %v", err)
	}
	if e.leaf(t).SerialNumber.Cmp(first.SerialNumber) == 0 || e.cp.calls.Load() < 61 {
		t.Fatalf("only %d renewals", e.cp.calls.Load())
	}
	if reads.Load() == 0 {
		t.Fatal("reader never read")
	}
	t.Logf("%d whole reads during %d renewals", reads.Load(), e.cp.calls.Load())
}

func wholePEM(data []byte) error {
	if len(data) == 0 {
		return errors.New("empty")
	}
	rest := data
	for len(bytes.TrimSpace(rest)) > 0 {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return errors.New("truncated PEM")
		}
		switch block.Type {
		case "CERTIFICATE":
			if _, err := x509.ParseCertificate(block.Bytes); err != nil {
				return err
			}
		case "PRIVATE KEY":
			if _, err := x509.ParsePKCS8PrivateKey(block.Bytes); err != nil {
				return err
			}
		default:
			return errors.New("unexpected block " + block.Type)
		}
	}
	return nil
}

func TestAgentRestartReusesFilesAndFollowsToken(t *testing.T) {
	e := start(t, time.Hour, identity.RoleBinding("ml"))
	e.clock.waitBlocked(t)
	first := e.leaf(t)
	e.stop()

	// A restart before half-life keeps the SVID on disk.
	e.clock.Advance(10 * time.Minute)
	e.clock.dropTimers()
	calls := e.cp.calls.Load()
	e.run(t)
	e.clock.waitBlocked(t)
	if e.cp.calls.Load() != calls || e.leaf(t).SerialNumber.Cmp(first.SerialNumber) != 0 {
		t.Fatal("restarted agent re-enrolled although its SVID was fresh")
	}
	if w := e.clock.lastWait(); w != 20*time.Minute-5*time.Second {
		t.Fatalf("restarted agent waits %s, want until half-life", w)
	}

	// The operator rotates the token; the next renewal mirrors it.
	tok, _, err := e.tokens.Mint("node-1", identity.RoleBinding("ml"), 48*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(e.tokenFile, []byte(tok), 0o600); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(e.clock.lastWait())
	e.clock.waitBlocked(t)
	got, _ := os.ReadFile(filepath.Join(e.dir, agent.TokenFile))
	if string(got) != tok {
		t.Fatal("rotated token not mirrored")
	}
	if e.leaf(t).SerialNumber.Cmp(first.SerialNumber) == 0 {
		t.Fatal("not renewed at half-life after restart")
	}
}

func TestAgentConfig(t *testing.T) {
	if err := agent.Run(context.Background(), agent.Config{}); err == nil {
		t.Fatal("empty config accepted")
	}
}
