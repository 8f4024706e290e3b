package identity

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/cryptomesh/cryptomesh/identity/internal/atomicfile"
)

// Files of a CA directory. Every replica of the control plane mounts the same
// directory; `cryptomesh ca init --out DIR` makes one.
const (
	// CAStateFile lists the roots and when each starts signing (JSON, 0644).
	CAStateFile = "ca.json"
	// Root certificates are <name>.crt (0644) and their keys <name>.key (0600).
	rootCertExt = ".crt"
	rootKeyExt  = ".key"
)

const (
	caStateVersion = 1
	// backdate absorbs clock skew between the control plane and its peers:
	// a certificate that is not yet valid on a slow peer fails its handshake.
	backdate = 10 * time.Second
	// maintainRetry is how soon a failed rotation step is tried again, so a
	// read-only CA directory does not turn every signature into a disk write.
	maintainRetry = time.Minute
	keyFileMode   = 0o600
	certFileMode  = 0o644
	dirMode       = 0o700
)

// Errors of the CA, for callers that map them to HTTP statuses.
var (
	// ErrMalformedCSR: the CSR cannot be parsed or its signature is invalid.
	ErrMalformedCSR = errors.New("malformed certificate signing request")
	// ErrUnsupportedKey: the CSR's key is not ECDSA P-256/P-384 or RSA >= 2048.
	ErrUnsupportedKey = errors.New("unsupported key")
	// ErrSANMismatch: the CSR's SANs are not exactly the expected URI.
	ErrSANMismatch = errors.New("subject alternative names do not match")
	// ErrIDNotAllowed: the ID is outside the trust domain, reserved, or not a node ID.
	ErrIDNotAllowed = errors.New("SPIFFE ID not allowed")
	// ErrInsecureKeyFile: a key file on disk is readable by group or others.
	ErrInsecureKeyFile = errors.New("key file is readable by group or others")
	// ErrCAExists: InitCA found a CA already in the directory.
	ErrCAExists = errors.New("CA already exists")
)

// CA is the built-in certificate authority of SPEC §4. It signs X.509-SVIDs
// directly with a self-signed ECDSA P-256 root (no intermediates) and rotates
// that root by itself:
//
//   - When the newest root has lived rotateAt of its life, a successor is
//     generated and persisted. It enters the bundle at once but signs nothing
//     until activate_at = now + lead (lead >= SVID TTL): nodes receive the
//     bundle with every SVID and renew at half-life, so by then every peer
//     trusts the successor.
//   - From activate_at the successor signs. The old root stays in the bundle
//     until activate_at + max SVID TTL (capped at its own expiry), when the
//     last SVID it signed has expired, and is then deleted.
//
// The state on disk is just the roots and their activate_at times (plus the
// largest SVID TTL ever configured); everything else is derived from them and
// the clock, so replicas sharing the directory reach the same decisions and a
// restart resumes where it left off.
type CA struct {
	dir  string
	opts *options
	lead time.Duration
	log  *slog.Logger

	mu     sync.RWMutex
	maxTTL time.Duration // the largest SVID TTL ever used with this directory
	roots  []*caRoot     // sorted by activateAt
	view   caView
}

type caRoot struct {
	name       string
	cert       *x509.Certificate
	key        *ecdsa.PrivateKey
	activateAt time.Time
}

// caView is what the roots mean at one instant; it is recomputed when the
// clock passes validUntil.
type caView struct {
	signer     *caRoot
	bundle     *x509bundle.Bundle
	bundlePEM  []byte
	validUntil time.Time
	// nextEvent is the next instant after the view's own at which the
	// derived state changes (a root activates, expires or retires).
	nextEvent time.Time
	// maintainAt is when the directory next needs a write (prepare a root or
	// delete a retired one); zero means never.
	maintainAt time.Time
}

type caState struct {
	Version     int           `json:"version"`
	TrustDomain string        `json:"trust_domain"`
	MaxSVIDTTL  string        `json:"max_svid_ttl"`
	Roots       []caStateRoot `json:"roots"`
}

type caStateRoot struct {
	Name       string    `json:"name"`
	ActivateAt time.Time `json:"activate_at"`
}

// InitCA creates a new CA (first root and join-token signing key) in dir, for
// `cryptomesh ca init --out DIR`. It refuses a directory that already holds one.
func InitCA(dir string, opts ...Option) (*CA, error) {
	if _, err := os.Stat(filepath.Join(dir, CAStateFile)); err == nil {
		return nil, fmt.Errorf("init CA in %s: %w", dir, ErrCAExists)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("init CA in %s: %w", dir, err)
	}
	ca, err := LoadOrCreateCA(dir, opts...)
	if err != nil {
		return nil, err
	}
	// Replicas mounting the directory read-only must find the token key too.
	if _, err := loadOrCreateTokenKey(context.Background(), dir); err != nil {
		return nil, err
	}
	return ca, nil
}

// LoadOrCreateCA opens the CA kept in dir, creating the directory (0700) and a
// first root if there is none.
func LoadOrCreateCA(dir string, opts ...Option) (*CA, error) {
	o, err := newOptions(opts)
	if err != nil {
		return nil, err
	}
	switch {
	case o.rootLifetime <= 0:
		return nil, fmt.Errorf("CA options: root lifetime %s must be positive", o.rootLifetime)
	case o.svidTTL <= 0:
		return nil, fmt.Errorf("CA options: SVID TTL %s must be positive", o.svidTTL)
	case !(o.rotateAt > 0 && o.rotateAt < 1):
		return nil, fmt.Errorf("CA options: rotate-at fraction %v must be between 0 and 1", o.rotateAt)
	}
	lead := max(o.rootLead, o.svidTTL)
	// The active root must outlive its successor's lead time plus one full
	// SVID, or SVIDs issued just before the switch would be cut short.
	if tail := time.Duration(float64(o.rootLifetime) * (1 - o.rotateAt)); tail < lead+o.svidTTL {
		return nil, fmt.Errorf("CA options: root lifetime %s rotated at %.3g leaves %s, less than lead %s + SVID TTL %s",
			o.rootLifetime, o.rotateAt, tail, lead, o.svidTTL)
	}
	c := &CA{dir: dir, opts: o, lead: lead, log: o.logger.With("component", "identity.ca", "ca_dir", dir)}

	ctx := context.Background()
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return nil, fmt.Errorf("create CA directory %s: %w", dir, err)
	}
	if err := c.loadOrCreate(ctx); err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	now := o.clock()
	c.view = c.computeView(now)
	if !c.view.maintainAt.IsZero() && !now.Before(c.view.maintainAt) {
		if err := c.maintainLocked(ctx, now); err != nil {
			return nil, err
		}
	}
	if c.view.signer == nil {
		return nil, fmt.Errorf("CA in %s has no usable root", dir)
	}
	return c, nil
}

// loadOrCreate reads the state under the directory lock, or creates a first
// root when there is none.
func (c *CA) loadOrCreate(ctx context.Context) error {
	o, dir := c.opts, c.dir
	unlock, err := lockDir(ctx, dir)
	if err != nil {
		return err
	}
	defer unlock()

	st, err := c.readState()
	switch {
	case errors.Is(err, fs.ErrNotExist):
		now := o.clock()
		r, err := c.newRoot(now, now)
		if err != nil {
			return err
		}
		c.roots = []*caRoot{r}
		c.maxTTL = o.svidTTL
		if err := c.writeState(); err != nil {
			return err
		}
		c.log.Info("created CA", "root_serial", r.name, "not_after", r.cert.NotAfter, "trust_domain", o.trustDomain.String())
	case err != nil:
		return err
	default:
		if st.TrustDomain != o.trustDomain.String() {
			return fmt.Errorf("CA in %s belongs to trust domain %q, not %q", dir, st.TrustDomain, o.trustDomain)
		}
		if err := c.adoptState(st); err != nil {
			return err
		}
		if o.svidTTL > c.maxTTL {
			// Remember the longest TTL ever used: retirement of old roots is
			// computed from it and must cover SVIDs signed before a restart.
			c.maxTTL = o.svidTTL
			if err := c.writeState(); err != nil {
				// A read-only mount (a Kubernetes Secret) cannot record it;
				// this replica still uses the longer TTL for its own view.
				c.log.Warn("cannot record the longer SVID TTL in the CA state", "svid_ttl", o.svidTTL, "error", err)
			}
		}
	}
	return nil
}

// TrustDomain is the CA's trust domain.
func (c *CA) TrustDomain() spiffeid.TrustDomain { return c.opts.trustDomain }

// SVIDTTL is the lifetime of the SVIDs the CA signs.
func (c *CA) SVIDTTL() time.Duration { return c.opts.svidTTL }

// Bundle returns the current trust bundle and its PEM encoding. Prepared
// roots are already in it and retiring roots still are.
func (c *CA) Bundle() (*x509bundle.Bundle, []byte) {
	v := c.current(context.Background())
	// Copies: the view is shared and x509bundle.Bundle is mutable.
	return v.bundle.Clone(), bytes.Clone(v.bundlePEM)
}

// GetX509BundleForTrustDomain implements x509bundle.Source.
func (c *CA) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	if td != c.opts.trustDomain {
		return nil, fmt.Errorf("no X.509 bundle for trust domain %q", td)
	}
	b, _ := c.Bundle()
	return b, nil
}

// Maintain rereads the directory and applies due rotation steps. Signing and
// Bundle already rotate lazily at the instants this CA's own view predicts;
// Maintain, called every minute or so, is what makes a replica adopt a root
// that another replica (perhaps configured differently) prepared, and keeps
// the directory tidy on an idle control plane. A lead time of at least one
// SVID TTL leaves ample room for that minute.
func (c *CA) Maintain(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.maintainLocked(ctx, c.opts.clock())
}

// current returns the view for the clock's now, refreshing it when stale.
func (c *CA) current(ctx context.Context) caView {
	now := c.opts.clock()
	c.mu.RLock()
	v := c.view
	c.mu.RUnlock()
	if now.Before(v.validUntil) {
		return v
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if now.Before(c.view.validUntil) {
		return c.view // another caller refreshed it (or is backing off a failure)
	}
	c.view = c.computeView(now)
	if !c.view.maintainAt.IsZero() && !now.Before(c.view.maintainAt) {
		if err := c.maintainLocked(ctx, now); err != nil {
			// Signing goes on with the roots we have; the step is retried.
			c.log.Error("CA rotation step failed", "error", err)
			// Retry later, but never sit on the view past an event: a
			// root that expires or activates meanwhile must be seen.
			c.view.validUntil = now.Add(maintainRetry)
			if c.view.nextEvent.Before(c.view.validUntil) {
				c.view.validUntil = c.view.nextEvent
			}
			c.view.maintainAt = now.Add(maintainRetry)
		}
	}
	return c.view
}

// computeView derives signer, bundle and the next instant anything changes.
func (c *CA) computeView(now time.Time) caView {
	v := caView{validUntil: farFuture}
	soonest := func(t time.Time) {
		if t.After(now) && t.Before(v.validUntil) {
			v.validUntil = t
		}
	}
	var inBundle []*x509.Certificate
	var pemBuf bytes.Buffer
	for i, r := range c.roots {
		retire := c.retireAt(i)
		soonest(retire)
		soonest(r.activateAt)
		soonest(r.cert.NotAfter)
		if now.Before(retire) {
			inBundle = append(inBundle, r.cert)
			_ = pem.Encode(&pemBuf, &pem.Block{Type: "CERTIFICATE", Bytes: r.cert.Raw})
		} else if v.maintainAt.IsZero() || retire.Before(v.maintainAt) {
			v.maintainAt = retire // a retired root's files are to be deleted
		}
		if !r.activateAt.After(now) && now.Before(r.cert.NotAfter) {
			v.signer = r // roots are sorted, so the newest active one wins
		}
	}
	if v.signer == nil {
		// Every active root has expired (the CA was down for longer than the
		// overlap). Nothing it signed is valid any more, so a prepared root
		// may sign at once; if there is none, maintenance makes one now.
		for _, r := range c.roots {
			if r.activateAt.After(now) && now.Before(r.cert.NotAfter) {
				v.signer = r
				break
			}
		}
		if v.signer == nil {
			v.maintainAt = now
		}
	}
	if n := len(c.roots); n > 0 {
		prep := c.preparePoint(c.roots[n-1])
		soonest(prep)
		if !now.Before(prep) && (v.maintainAt.IsZero() || prep.Before(v.maintainAt)) {
			v.maintainAt = prep
		}
	}
	v.nextEvent = v.validUntil
	if !v.maintainAt.IsZero() && !v.maintainAt.After(now) {
		v.validUntil = now // stale until maintenance has run
	}
	v.bundle = x509bundle.FromX509Authorities(c.opts.trustDomain, inBundle)
	v.bundlePEM = pemBuf.Bytes()
	return v
}

var farFuture = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)

// retireAt is when root i leaves the bundle: once its successor has been
// signing for the longest SVID TTL, every SVID it signed has expired.
func (c *CA) retireAt(i int) time.Time {
	r := c.roots[i]
	if i+1 < len(c.roots) {
		if t := c.roots[i+1].activateAt.Add(c.maxTTL); t.Before(r.cert.NotAfter) {
			return t
		}
	}
	return r.cert.NotAfter
}

func (c *CA) preparePoint(r *caRoot) time.Time {
	life := r.cert.NotAfter.Sub(r.cert.NotBefore)
	return r.cert.NotBefore.Add(time.Duration(float64(life) * c.opts.rotateAt))
}

// maintainLocked performs due rotation steps on disk under the directory
// lock. It rereads the state first: another replica may have rotated already,
// and adopting its root instead of making a second one keeps replicas in step.
func (c *CA) maintainLocked(ctx context.Context, now time.Time) error {
	unlock, err := lockDir(ctx, c.dir)
	if err != nil {
		return err
	}
	defer unlock()
	st, err := c.readState()
	if err != nil {
		return err
	}
	if err := c.adoptState(st); err != nil {
		return err
	}
	changed := false
	// Delete retired roots: state first, files after, so a crash in between
	// leaves only orphan files, never a state naming missing files.
	var keep, gone []*caRoot
	for i, r := range c.roots {
		if now.Before(c.retireAt(i)) || i == len(c.roots)-1 {
			keep = append(keep, r)
		} else {
			gone = append(gone, r)
		}
	}
	if len(gone) > 0 {
		c.roots = keep
		changed = true
	}
	newest := c.roots[len(c.roots)-1]
	hasSigner := false
	for _, r := range c.roots {
		if now.Before(r.cert.NotAfter) {
			hasSigner = true
		}
	}
	switch {
	case !hasSigner:
		r, err := c.newRoot(now, now)
		if err != nil {
			return err
		}
		c.roots = append(c.roots, r)
		changed = true
		c.log.Warn("all CA roots expired; new root signs at once", "root_serial", r.name, "not_after", r.cert.NotAfter)
	case !now.Before(c.preparePoint(newest)):
		r, err := c.newRoot(now, now.Add(c.lead))
		if err != nil {
			return err
		}
		c.roots = append(c.roots, r)
		changed = true
		c.log.Info("prepared new CA root", "root_serial", r.name, "activate_at", r.activateAt, "not_after", r.cert.NotAfter,
			"previous_root_serial", newest.name)
	}
	if changed {
		if err := c.writeState(); err != nil {
			return err
		}
	}
	for _, r := range gone {
		for _, ext := range []string{rootKeyExt, rootCertExt} {
			if err := os.Remove(filepath.Join(c.dir, r.name+ext)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("remove retired root %s: %w", r.name, err)
			}
		}
		c.log.Info("retired CA root", "root_serial", r.name)
	}
	if len(gone) > 0 {
		if err := atomicfile.SyncDir(c.dir); err != nil {
			return err
		}
	}
	c.view = c.computeView(now)
	return nil
}

// newRoot generates a root valid from now and persists its key and cert.
func (c *CA) newRoot(now, activateAt time.Time) (*caRoot, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate root key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	td := c.opts.trustDomain
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"CryptoMesh"}, CommonName: "CryptoMesh root CA " + td.String()},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(c.opts.rootLifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		URIs:                  []*url.URL{td.ID().URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create root certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse new root certificate: %w", err)
	}
	r := &caRoot{name: "root-" + hex.EncodeToString(serial.Bytes()), cert: cert, key: key, activateAt: activateAt}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("marshal root key: %w", err)
	}
	if err := atomicfile.Write(filepath.Join(c.dir, r.name+rootKeyExt), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), keyFileMode); err != nil {
		return nil, err
	}
	if err := atomicfile.Write(filepath.Join(c.dir, r.name+rootCertExt), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), certFileMode); err != nil {
		return nil, err
	}
	return r, nil
}

func (c *CA) readState() (*caState, error) {
	path := filepath.Join(c.dir, CAStateFile)
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read CA state: %w", err)
	}
	var st caState
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&st); err != nil {
		return nil, fmt.Errorf("parse CA state %s: %w", path, err)
	}
	if st.Version != caStateVersion {
		return nil, fmt.Errorf("CA state %s: unsupported version %d", path, st.Version)
	}
	if len(st.Roots) == 0 {
		return nil, fmt.Errorf("CA state %s lists no roots", path)
	}
	return &st, nil
}

// adoptState loads the roots a state names, reusing those already in memory.
func (c *CA) adoptState(st *caState) error {
	ttl, err := time.ParseDuration(st.MaxSVIDTTL)
	if err != nil || ttl <= 0 {
		return fmt.Errorf("CA state: bad max_svid_ttl %q", st.MaxSVIDTTL)
	}
	known := map[string]*caRoot{}
	for _, r := range c.roots {
		known[r.name] = r
	}
	roots := make([]*caRoot, 0, len(st.Roots))
	for _, sr := range st.Roots {
		if r, ok := known[sr.Name]; ok {
			roots = append(roots, &caRoot{name: r.name, cert: r.cert, key: r.key, activateAt: sr.ActivateAt})
			continue
		}
		r, err := c.loadRoot(sr.Name)
		if err != nil {
			return err
		}
		r.activateAt = sr.ActivateAt
		roots = append(roots, r)
	}
	slices.SortStableFunc(roots, func(a, b *caRoot) int { return a.activateAt.Compare(b.activateAt) })
	c.roots = roots
	c.maxTTL = max(c.maxTTL, ttl)
	return nil
}

func (c *CA) writeState() error {
	st := caState{Version: caStateVersion, TrustDomain: c.opts.trustDomain.String(), MaxSVIDTTL: c.maxTTL.String()}
	for _, r := range c.roots {
		st.Roots = append(st.Roots, caStateRoot{Name: r.name, ActivateAt: r.activateAt.UTC()})
	}
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("encode CA state: %w", err)
	}
	return atomicfile.Write(filepath.Join(c.dir, CAStateFile), append(data, '\n'), certFileMode)
}

func (c *CA) loadRoot(name string) (*caRoot, error) {
	if strings.ContainsAny(name, `/\`) || !strings.HasPrefix(name, "root-") {
		return nil, fmt.Errorf("CA state names a bad root %q", name)
	}
	key, err := readPrivateKey(filepath.Join(c.dir, name+rootKeyExt))
	if err != nil {
		return nil, err
	}
	ecKey, ok := key.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("root key %s is %T, not ECDSA", name, key)
	}
	certPath := filepath.Join(c.dir, name+rootCertExt)
	data, err := os.ReadFile(certPath)
	if err != nil {
		return nil, fmt.Errorf("read root certificate: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("root certificate %s: no CERTIFICATE PEM block", certPath)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse root certificate %s: %w", certPath, err)
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("root certificate %s is not a CA", certPath)
	}
	if !ecKey.PublicKey.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("root %s: key does not match certificate", name)
	}
	return &caRoot{name: name, cert: cert, key: ecKey}, nil
}

// readPrivateKey reads a PKCS#8 PEM key, refusing files that others can read:
// a key that has been exposed must not be used, whoever exposed it.
func readPrivateKey(path string) (crypto.Signer, error) {
	info, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("stat key file: %w", err)
	}
	if info.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s has mode %04o, want 0600", ErrInsecureKeyFile, path, info.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read key file: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		// Deliberately no content in the error: it would be key material.
		return nil, fmt.Errorf("key file %s: no PRIVATE KEY PEM block", path)
	}
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse key file %s: %w", path, err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("key file %s: %T cannot sign", path, key)
	}
	return signer, nil
}

// lockDir takes an exclusive flock on the directory itself, which works on a
// read-only mount too, so two replicas never rotate the same CA at once.
func lockDir(ctx context.Context, dir string) (func(), error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("open CA directory %s for locking: %w", dir, err)
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() {
				_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
				_ = f.Close()
			}, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			_ = f.Close()
			return nil, fmt.Errorf("lock CA directory %s: %w", dir, err)
		}
		select {
		case <-ctx.Done():
			_ = f.Close()
			return nil, fmt.Errorf("lock CA directory %s: %w", dir, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// randomSerial is a random positive 128-bit serial number (RFC 5280 allows up
// to 20 octets; 128 random bits make collisions and prediction hopeless).
func randomSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	for {
		n, err := rand.Int(rand.Reader, limit)
		if err != nil {
			return nil, fmt.Errorf("generate serial number: %w", err)
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}
