package api_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/cryptomesh/cryptomesh/api"
	"github.com/cryptomesh/cryptomesh/identity"
	"github.com/cryptomesh/cryptomesh/identity/idreg"
	"github.com/cryptomesh/cryptomesh/registry"
)

var testTD = spiffeid.RequireTrustDomainFromString(identity.DefaultTrustDomain)

// idEnv is the identity side of a test server: a built-in CA in a temp
// directory, the join-token records in the server's registry, the token
// authority and the authenticator, as cmd/cryptomesh wires them.
type idEnv struct {
	dir     string
	ca      *identity.CA
	serving *identity.ServingSource
	store   *idreg.Store
	tokens  *identity.TokenAuthority
	nodes   *identity.Authenticator
}

func newIDEnv(t *testing.T, reg *registry.Registry, prom *prometheus.Registry) *idEnv {
	t.Helper()
	m, err := identity.NewMetrics(prom, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := idreg.NewBuiltin(reg, filepath.Join(t.TempDir(), "ca"), nil, identity.WithMetrics(m))
	if err != nil {
		t.Fatal(err)
	}
	return &idEnv{dir: b.Dir, ca: b.CA, serving: b.Serving, store: b.Records, tokens: b.Tokens, nodes: b.Nodes}
}

func (id *idEnv) config() api.IdentityConfig {
	return api.IdentityConfig{TrustDomain: testTD, Tokens: id.tokens, Nodes: id.nodes, Records: id.store, Bundles: id.ca, Signer: id.ca}
}

func (id *idEnv) bundlePool(t *testing.T) *x509.CertPool {
	t.Helper()
	b, _ := id.ca.Bundle()
	pool := x509.NewCertPool()
	for _, c := range b.X509Authorities() {
		pool.AddCert(c)
	}
	return pool
}

// withIdentity serves the identity routes; adjust may change the
// configuration (nil leaves it as cmd/cryptomesh builds it).
func withIdentity(adjust func(*api.IdentityConfig)) envOption {
	return func(c *envConfig) {
		if adjust == nil {
			adjust = func(*api.IdentityConfig) {}
		}
		c.identity = adjust
	}
}

// withTLS serves over TLS with the CA's serving certificate (and the
// identity routes).
func withTLS() envOption { return func(c *envConfig) { c.tls = true } }

// issuedTotal reads cryptomesh_identity_svids_issued_total.
func (e *env) issuedTotal() float64 {
	e.t.Helper()
	mfs, err := e.prom.Gather()
	if err != nil {
		e.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "cryptomesh_identity_svids_issued_total" {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	e.t.Fatal("no cryptomesh_identity_svids_issued_total")
	return 0
}

// mintToken creates a join token through the API.
func (e *env) mintToken(body map[string]any) (token, jti string) {
	e.t.Helper()
	out := object(e.t, e.must(e.post("/api/v1/identity/tokens", body), http.StatusCreated))
	token, _ = out["token"].(string)
	jti, _ = out["jti"].(string)
	if token == "" || jti == "" {
		e.t.Fatalf("token answer %v", out)
	}
	return token, jti
}

// mintAt mints a token with the server's key but another clock, and records
// it, as the server would have at that time.
func (e *env) mintAt(at time.Time, node string, b identity.Binding, ttl time.Duration) string {
	e.t.Helper()
	ta, err := identity.NewTokenAuthority(e.id.dir, e.id.store, identity.WithClock(func() time.Time { return at }))
	if err != nil {
		e.t.Fatal(err)
	}
	tok, rec, err := ta.Mint(node, b, ttl)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := e.id.store.Add(context.Background(), rec); err != nil {
		e.t.Fatal(err)
	}
	return tok
}

func mustID(t *testing.T, s string) spiffeid.ID {
	t.Helper()
	id, err := spiffeid.FromString(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func newP256(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// csrFor is a PEM CSR signed by key asking for the given URIs (and
// whatever else tmpl holds).
func csrFor(t *testing.T, key crypto.Signer, tmpl x509.CertificateRequest, ids ...string) string {
	t.Helper()
	for _, s := range ids {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, u)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

// svidAnswer is the answer of POST /identity/svids.
type svidAnswer struct {
	SPIFFEID  string `json:"spiffe_id"`
	CertChain string `json:"cert_chain"`
	Bundle    string `json:"bundle"`
	ExpiresAt string `json:"expires_at"`
}

// enrol runs what a node does: whoami, key, CSR, SVID; it returns the SVID
// as a TLS client certificate.
func (e *env) enrol(token string) (svidAnswer, tls.Certificate) {
	e.t.Helper()
	who := object(e.t, e.must(e.send(req{method: "GET", path: "/api/v1/identity/whoami", token: tokenOf(token)}), http.StatusOK))
	id, _ := who["spiffe_id"].(string)
	key := newP256(e.t)
	r := e.must(e.send(req{method: "POST", path: "/api/v1/identity/svids", token: tokenOf(token),
		body: map[string]any{"csr": csrFor(e.t, key, x509.CertificateRequest{}, id)}}), http.StatusOK)
	var out svidAnswer
	decodeStrict(e.t, r.body, &out)
	cert, err := tls.X509KeyPair([]byte(out.CertChain), keyPEM(e.t, key))
	if err != nil {
		e.t.Fatal(err)
	}
	return out, cert
}

func keyPEM(t *testing.T, key crypto.Signer) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}
