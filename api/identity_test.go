package api_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/cryptomesh/cryptomesh/identity"
)

// The SPIFFE IDs of the identity tests' mesh (SPEC §4): e1 has no role, e2
// acts in role r1.
const (
	idE1 = "spiffe://cryptomesh.local/endpoint/e1"
	idE2 = "spiffe://cryptomesh.local/role/r1/endpoint/e2"
	idR1 = "spiffe://cryptomesh.local/role/r1"
	idCP = "spiffe://cryptomesh.local/control-plane"
)

// seedIdentity is the seed mesh plus endpoint e2 (role r1) with function f2.
func (e *env) seedIdentity() {
	e.t.Helper()
	e.seed()
	e.must(e.post("/api/v1/endpoints", map[string]any{"endpoint_id": "e2", "security_policy": "p1", "role": "r1", "address": "10.0.0.2:9000"}), http.StatusCreated)
	e.must(e.post("/api/v1/functions", map[string]any{"function_id": "f2", "microservice_id": "m1", "endpoint_id": "e2"}), http.StatusCreated)
}

func decodeStrict(t *testing.T, raw []byte, v any) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("decode %T: %v: %s", v, err, raw)
	}
}

// TestIdentityEnrolmentOverTLS is a node's whole enrolment over the API's
// real TLS: the bundle without credentials, a join token from the admin,
// whoami, a CSR, and an SVID for exactly the bound ID that verifies against
// the bundle, counted once.
func TestIdentityEnrolmentOverTLS(t *testing.T) {
	e := newEnv(t, withTLS())
	e.seedIdentity()

	// The serving certificate: the control plane's ID plus the --san names
	// the client checked the address against.
	conn, err := tls.Dial("tcp", strings.TrimPrefix(e.srv.URL, "https://"), &tls.Config{RootCAs: e.roots})
	if err != nil {
		t.Fatalf("TLS to the API: %v", err)
	}
	leaf := conn.ConnectionState().PeerCertificates[0]
	conn.Close()
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != idCP {
		t.Errorf("serving certificate URIs %v, want only %s", leaf.URIs, idCP)
	}
	if !slices.Contains(leaf.DNSNames, "localhost") || len(leaf.IPAddresses) != 1 || !leaf.IPAddresses[0].IsLoopback() {
		t.Errorf("serving certificate DNS %v IPs %v, want localhost and 127.0.0.1", leaf.DNSNames, leaf.IPAddresses)
	}

	r := e.must(e.send(req{method: "GET", path: "/api/v1/identity/bundle", token: noToken()}), http.StatusOK)
	if ct := r.header.Get("Content-Type"); ct != "application/x-pem-file" {
		t.Errorf("bundle Content-Type %q", ct)
	}
	served, err := x509bundle.Parse(testTD, r.body)
	if err != nil {
		t.Fatalf("bundle: %v", err)
	}
	want, _ := e.id.ca.Bundle()
	if !served.Equal(want) {
		t.Error("the served bundle is not the CA's")
	}

	tests := []struct {
		name    string
		mint    map[string]any
		binding string
		id      string
	}{
		{"endpoint without role", map[string]any{"node": "n1", "endpoint": "e1"}, "endpoint:e1", idE1},
		{"endpoint with role", map[string]any{"node": "n2", "endpoint": "e2", "ttl": "2h"}, "endpoint:e2", idE2},
		{"role", map[string]any{"node": "n3", "role": "r1"}, "role:r1", idR1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := e.in(t)
			token, _ := e.mintToken(tt.mint)
			var who struct {
				Node     string `json:"node"`
				Binding  string `json:"binding"`
				SPIFFEID string `json:"spiffe_id"`
			}
			decodeStrict(t, e.must(e.send(req{method: "GET", path: "/api/v1/identity/whoami", token: tokenOf(token)}), http.StatusOK).body, &who)
			if who.Node != tt.mint["node"] || who.Binding != tt.binding || who.SPIFFEID != tt.id {
				t.Fatalf("whoami %+v, want node %v binding %s id %s", who, tt.mint["node"], tt.binding, tt.id)
			}
			before := e.issuedTotal()
			start := time.Now()
			ans, _ := e.enrol(token)
			if got := e.issuedTotal(); got != before+1 {
				t.Errorf("svids issued %v → %v, want one more", before, got)
			}
			if ans.SPIFFEID != tt.id {
				t.Errorf("spiffe_id %s, want %s", ans.SPIFFEID, tt.id)
			}
			verified, _, err := x509svid.ParseAndVerify(pemBlocks(t, ans.CertChain), bundleOf(t, ans.Bundle))
			if err != nil {
				t.Fatalf("the SVID does not verify against its bundle: %v", err)
			}
			if verified.String() != tt.id {
				t.Errorf("verified ID %s, want %s", verified, tt.id)
			}
			svid := parseCert(t, ans.CertChain)
			if len(svid.URIs) != 1 || svid.URIs[0].String() != tt.id || len(svid.DNSNames)+len(svid.IPAddresses) != 0 {
				t.Errorf("SVID SANs URIs %v DNS %v IPs %v, want only %s", svid.URIs, svid.DNSNames, svid.IPAddresses, tt.id)
			}
			exp, err := time.Parse(time.RFC3339, ans.ExpiresAt)
			if err != nil || !exp.Equal(svid.NotAfter) {
				t.Errorf("expires_at %q, certificate NotAfter %s", ans.ExpiresAt, svid.NotAfter)
			}
			if ttl := svid.NotAfter.Sub(start); ttl < 59*time.Minute || ttl > 61*time.Minute {
				t.Errorf("SVID lives %s, want the default 1h", ttl)
			}
			metrics := string(e.must(e.send(req{method: "GET", path: "/metrics", token: noToken()}), http.StatusOK).body)
			if !strings.Contains(metrics, `cryptomesh_identity_svid_expiry_timestamp_seconds{spiffe_id="`+tt.id+`"}`) {
				t.Errorf("no expiry series for %s", tt.id)
			}
		})
	}
}

func pemBlocks(t *testing.T, s string) [][]byte {
	t.Helper()
	var out [][]byte
	rest := []byte(s)
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		out = append(out, b.Bytes)
	}
	if len(out) == 0 {
		t.Fatalf("no PEM in %q", s)
	}
	return out
}

func parseCert(t *testing.T, s string) *x509.Certificate {
	t.Helper()
	c, err := x509.ParseCertificate(pemBlocks(t, s)[0])
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func bundleOf(t *testing.T, s string) *x509bundle.Bundle {
	t.Helper()
	b, err := x509bundle.Parse(testTD, []byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestSVIDRequestsRefused sends bad CSRs and bad credentials: each is
// refused with a status and a message that says what is wrong, the token
// never appears in the answer, and nothing is issued.
func TestSVIDRequestsRefused(t *testing.T) {
	e := newEnv(t, withTLS())
	e.seedIdentity()
	e.must(e.post("/api/v1/endpoints", map[string]any{"endpoint_id": "e3", "security_policy": "p1"}), http.StatusCreated)
	tokE1, _ := e.mintToken(map[string]any{"node": "n1", "endpoint": "e1"})
	tokE3, _ := e.mintToken(map[string]any{"node": "n3", "endpoint": "e3"})
	e.must(e.del("/api/v1/endpoints/e3"), http.StatusNoContent)
	revoked, revokedJTI := e.mintToken(map[string]any{"node": "n1", "endpoint": "e1"})
	e.must(e.del("/api/v1/identity/tokens/"+revokedJTI), http.StatusNoContent)
	expired := e.mintAt(time.Now().Add(-2*time.Hour), "n1", identity.EndpointBinding("e1", ""), time.Hour)
	unrecorded, _, err := e.id.tokens.Mint("n1", identity.EndpointBinding("e1", ""), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	other, err := identity.NewTokenAuthority(filepath.Join(t.TempDir(), "other-ca"), e.id.store)
	if err != nil {
		t.Fatal(err)
	}
	foreign, _, err := other.Mint("n1", identity.EndpointBinding("e1", ""), time.Hour)
	if err != nil {
		t.Fatal(err)
	}

	key := newP256(t)
	good := csrFor(t, key, x509.CertificateRequest{}, idE1)
	tampered := []byte(good)
	block, _ := pem.Decode(tampered)
	block.Bytes[len(block.Bytes)-3] ^= 0xff
	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	p224, err := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name   string
		token  *string
		body   any
		status int
		says   string
	}{
		{"not PEM", &tokE1, map[string]any{"csr": "hello"}, 422, "is not PEM"},
		{"PEM of a certificate", &tokE1, map[string]any{"csr": string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("x")}))}, 422, "want CERTIFICATE REQUEST"},
		{"garbage DER", &tokE1, map[string]any{"csr": string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: []byte("xyz")}))}, 422, "malformed certificate signing request"},
		{"broken signature", &tokE1, map[string]any{"csr": string(pem.EncodeToMemory(block))}, 422, "signature"},
		{"CSR for another endpoint", &tokE1, map[string]any{"csr": csrFor(t, key, x509.CertificateRequest{}, idE2)}, 403, "only issued its own ID, " + idE1},
		{"CSR for a role", &tokE1, map[string]any{"csr": csrFor(t, key, x509.CertificateRequest{}, idR1)}, 403, "may not obtain an SVID for " + idR1},
		{"CSR for the control plane", &tokE1, map[string]any{"csr": csrFor(t, key, x509.CertificateRequest{}, idCP)}, 403, "reserved for the control plane"},
		{"CSR for another trust domain", &tokE1, map[string]any{"csr": csrFor(t, key, x509.CertificateRequest{}, "spiffe://evil.example/endpoint/e1")}, 403, "only issued its own ID"},
		{"CSR for a URL", &tokE1, map[string]any{"csr": csrFor(t, key, x509.CertificateRequest{}, "https://evil.example/")}, 403, "only issued its own ID"},
		{"RSA 1024 key", &tokE1, map[string]any{"csr": csrFor(t, rsa1024, x509.CertificateRequest{}, idE1)}, 422, "RSA key of 1024 bits"},
		{"P-224 key", &tokE1, map[string]any{"csr": csrFor(t, p224, x509.CertificateRequest{}, idE1)}, 422, "ECDSA curve P-224"},
		{"Ed25519 key", &tokE1, map[string]any{"csr": csrFor(t, edKey, x509.CertificateRequest{}, idE1)}, 422, "unsupported key"},
		{"extra DNS name", &tokE1, map[string]any{"csr": csrFor(t, key, x509.CertificateRequest{DNSNames: []string{"evil.example"}}, idE1)}, 422, "want only the URI " + idE1},
		{"no SAN", &tokE1, map[string]any{"csr": csrFor(t, key, x509.CertificateRequest{})}, 422, "SAN"},
		{"two URIs", &tokE1, map[string]any{"csr": csrFor(t, key, x509.CertificateRequest{}, idE1, idE2)}, 422, "2 SANs"},
		{"no csr", &tokE1, map[string]any{}, 422, "csr"},
		{"csr not a string", &tokE1, map[string]any{"csr": 5}, 422, "must be a string"},
		{"unknown field", &tokE1, map[string]any{"csr": good, "spiffe_id": idCP}, 422, "unknown field"},
		{"expired token", &expired, map[string]any{"csr": good}, 401, "join token expired at"},
		{"revoked token", &revoked, map[string]any{"csr": good}, 401, "join token revoked"},
		{"token without a record", &unrecorded, map[string]any{"csr": good}, 401, "no record of the join token"},
		{"token of another control plane", &foreign, map[string]any{"csr": good}, 401, "invalid join token"},
		{"token of a deleted endpoint", &tokE3, map[string]any{"csr": csrFor(t, key, x509.CertificateRequest{}, "spiffe://cryptomesh.local/endpoint/e3")}, 401, "endpoint 'e3' does not exist"},
		{"admin token", nil, map[string]any{"csr": good}, 403, "admin token does not have"},
		{"no credential", noToken(), map[string]any{"csr": good}, 401, "missing credentials"},
		{"opaque bearer", tokenOf("not-a-jwt"), map[string]any{"csr": good}, 401, "invalid credentials"},
		{"forged JWT", tokenOf("eyJhbGciOiJub25lIn0.eyJzdWIiOiJuMSJ9.sig"), map[string]any{"csr": good}, 401, "invalid join token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := e.in(t)
			before, rev := e.issuedTotal(), e.reg.Revision()
			r := e.send(req{method: "POST", path: "/api/v1/identity/svids", token: tt.token, body: tt.body})
			ae := errorOf(t, r, tt.status)
			msg := string(r.body)
			if !strings.Contains(msg, tt.says) {
				t.Errorf("answer does not say %q: %s", tt.says, msg)
			}
			if tt.token != nil && len(*tt.token) > 20 && strings.Contains(msg, *tt.token) {
				t.Error("the answer contains the token")
			}
			if tt.status == 422 && ae.Detail.Errors[0].Field == "" {
				t.Errorf("a 422 without the offending field: %s", msg)
			}
			if got := e.issuedTotal(); got != before {
				t.Errorf("svids issued moved %v → %v", before, got)
			}
			if e.reg.Revision() != rev {
				t.Error("the registry changed")
			}
		})
	}
	// The same node with its good token and CSR is issued: the refusals
	// above were about what they changed, not about the setup.
	e.must(e.send(req{method: "POST", path: "/api/v1/identity/svids", token: &tokE1, body: map[string]any{"csr": good}}), http.StatusOK)
	for _, tok := range []string{tokE1, revoked, expired, unrecorded, foreign} {
		if strings.Contains(e.logs.String(), tok) {
			t.Error("a token appears in the server's logs")
		}
	}
}

// TestNodeCredentialsReachOnlyTheirRoutes: a node, by join token or by its
// SVID as client certificate, may call the routes of SPEC §2's table and
// gets 403 on every other.
func TestNodeCredentialsReachOnlyTheirRoutes(t *testing.T) {
	e := newEnv(t, withTLS())
	e.seedIdentity()
	tok, jti := e.mintToken(map[string]any{"node": "n1", "endpoint": "e1"})
	_, cert := e.enrol(tok)
	report := map[string]any{"items": []any{item("endpoint_state", map[string]any{"endpoint_id": "e1", "state": "warm"})}}
	routes := []struct {
		method, path string
		body         any
		status       int
	}{
		{"GET", "/api/v1/identity/bundle", nil, 200},
		{"GET", "/api/v1/identity/whoami", nil, 200},
		{"POST", "/api/v1/identity/svids", map[string]any{"csr": csrFor(t, newP256(t), x509.CertificateRequest{}, idE1)}, 200},
		{"POST", "/api/v1/reports", report, 200},
		{"GET", "/healthz", nil, 200},
		{"GET", "/api/v1/identity/tokens", nil, 403},
		{"POST", "/api/v1/identity/tokens", map[string]any{"node": "n9", "endpoint": "e1"}, 403},
		{"DELETE", "/api/v1/identity/tokens/" + jti, nil, 403},
		{"GET", "/api/v1/roles", nil, 403},
		{"GET", "/api/v1/endpoints/e1", nil, 403},
		{"PUT", "/api/v1/endpoints/e1", map[string]any{"role": "r1"}, 403},
		{"POST", "/api/v1/function-states", map[string]any{"function_id": "f1", "state": "running"}, 403},
		{"GET", "/api/v1/endpoints/e1/state", nil, 403},
		{"POST", "/api/v1/apply", map[string]any{"roles": map[string]any{}}, 403},
		{"GET", "/api/v1/export", nil, 403},
		{"GET", "/api/v1/openapi.json", nil, 403},
	}
	creds := []struct {
		name  string
		token *string
		cert  *tls.Certificate
	}{
		{"join token", &tok, nil},
		{"SVID", noToken(), &cert},
	}
	for _, c := range creds {
		for _, rt := range routes {
			t.Run(c.name+" "+rt.method+" "+rt.path, func(t *testing.T) {
				e := e.in(t)
				r := e.send(req{method: rt.method, path: rt.path, token: c.token, cert: c.cert, body: rt.body})
				if r.status != rt.status {
					t.Fatalf("status %d, want %d: %s", r.status, rt.status, r.body)
				}
				if rt.status == 403 && !strings.Contains(string(r.body), "node '") {
					t.Errorf("the 403 does not name the node: %s", r.body)
				}
			})
		}
	}
	// Still there: the node could not revoke its own token.
	recs := array(t, e.must(e.get("/api/v1/identity/tokens"), http.StatusOK))
	if len(recs) != 1 || recs[0]["revoked"] != false {
		t.Errorf("records %v", recs)
	}
}

// TestSVIDAsClientCertificate: an SVID authenticates its node over TLS
// without a token (whoami, reports for its own endpoint only, renewal); a
// certificate of another CA or a self-signed one with the node's URI is
// refused in the handshake; an SVID whose endpoint was deleted is 401.
func TestSVIDAsClientCertificate(t *testing.T) {
	e := newEnv(t, withTLS())
	e.seedIdentity()
	e.must(e.post("/api/v1/endpoints", map[string]any{"endpoint_id": "e3", "security_policy": "p1"}), http.StatusCreated)
	tok, _ := e.mintToken(map[string]any{"node": "n1", "endpoint": "e1"})
	_, cert := e.enrol(tok)
	tok3, _ := e.mintToken(map[string]any{"node": "n3", "endpoint": "e3"})
	_, cert3 := e.enrol(tok3)

	var who map[string]any
	decodeStrict(t, e.must(e.send(req{method: "GET", path: "/api/v1/identity/whoami", token: noToken(), cert: &cert}), http.StatusOK).body, &who)
	if who["spiffe_id"] != idE1 || who["binding"] != "endpoint:e1" || who["node"] != nil {
		t.Errorf("whoami by SVID: %v", who)
	}

	batch := map[string]any{"items": []any{
		item("endpoint_state", map[string]any{"endpoint_id": "e1", "state": "warm"}),
		item("endpoint_state", map[string]any{"endpoint_id": "e2", "state": "warm"}),
		item("function_state", map[string]any{"function_id": "f1", "state": "running"}),
		item("function_result", map[string]any{"function_id": "f2", "metadata": map[string]any{"status": "200"}}),
	}}
	answers := reportAnswers(t, e.send(req{method: "POST", path: "/api/v1/reports", token: noToken(), cert: &cert, body: batch}))
	var got []int
	for _, a := range answers {
		got = append(got, a.Status)
	}
	if !slices.Equal(got, []int{201, 403, 201, 403}) {
		t.Errorf("report statuses %v, want own endpoint's items 201 and the others 403", got)
	}

	// Renewal with the SVID alone.
	before := e.issuedTotal()
	r := e.must(e.send(req{method: "POST", path: "/api/v1/identity/svids", token: noToken(), cert: &cert,
		body: map[string]any{"csr": csrFor(t, newP256(t), x509.CertificateRequest{}, idE1)}}), http.StatusOK)
	if e.issuedTotal() != before+1 || object(t, r)["spiffe_id"] != idE1 {
		t.Errorf("renewal by SVID: %s", r.body)
	}

	// Certificates the CA did not issue never get past the handshake.
	otherCA, err := identity.LoadOrCreateCA(filepath.Join(t.TempDir(), "other"))
	if err != nil {
		t.Fatal(err)
	}
	key := newP256(t)
	issued, err := otherCA.SignCSR(t.Context(), []byte(csrFor(t, key, x509.CertificateRequest{}, idE1)), mustID(t, idE1))
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := tls.X509KeyPair(issued.CertChainPEM, keyPEM(t, key))
	if err != nil {
		t.Fatal(err)
	}
	forged := selfSignedSVID(t, idE1)
	for name, c := range map[string]*tls.Certificate{"another CA": &foreign, "self-signed": &forged} {
		t.Run(name, func(t *testing.T) {
			e := e.in(t)
			before := e.issuedTotal()
			r, err := e.trySend(req{method: "GET", path: "/api/v1/identity/whoami", token: noToken(), cert: c})
			if err == nil {
				t.Fatalf("a client certificate from %s was accepted: %s", name, r)
			}
			if e.issuedTotal() != before {
				t.Error("issued something")
			}
			// The server logs the failed handshake after the client saw it.
			eventually(t, "the handshake failure logged with its reason", func() bool {
				return strings.Contains(e.logs.String(), "invalid client SVID")
			})
		})
	}

	// A verified SVID whose endpoint no longer exists authenticates no one.
	e.must(e.del("/api/v1/endpoints/e3"), http.StatusNoContent)
	r = e.send(req{method: "GET", path: "/api/v1/identity/whoami", token: noToken(), cert: &cert3})
	errorOf(t, r, http.StatusUnauthorized)
	if !strings.Contains(string(r.body), "endpoint 'e3' does not exist") {
		t.Errorf("401 does not say why: %s", r.body)
	}
}

// selfSignedSVID is a certificate carrying a node's URI SAN, signed by its
// own key: a forged SVID.
func selfSignedSVID(t *testing.T, id string) tls.Certificate {
	t.Helper()
	key := newP256(t)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{mustID(t, id).URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
