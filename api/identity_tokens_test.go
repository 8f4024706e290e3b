package api_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cryptomesh/cryptomesh/api"
)

// TestJoinTokenRequestsRefused: every bad request to mint a token is 422
// naming the field, and nothing is minted or recorded.
func TestJoinTokenRequestsRefused(t *testing.T) {
	e := newEnv(t, withIdentity(nil))
	e.seedIdentity()
	tests := []struct {
		name  string
		body  map[string]any
		field string
		says  string
	}{
		{"empty", map[string]any{}, "node", "is required"},
		{"no binding", map[string]any{"node": "n1"}, "endpoint", "give endpoint"},
		{"both bindings", map[string]any{"node": "n1", "endpoint": "e1", "role": "r1"}, "role", "not both"},
		{"unknown endpoint", map[string]any{"node": "n1", "endpoint": "e9"}, "endpoint", "endpoint 'e9' does not exist"},
		{"unknown role", map[string]any{"node": "n1", "role": "r9"}, "role", "role 'r9' does not exist"},
		{"bad node name", map[string]any{"node": "bad name", "endpoint": "e1"}, "node", "must be 1-128 characters"},
		{"bad endpoint name", map[string]any{"node": "n1", "endpoint": "../e1"}, "endpoint", "must be 1-128 characters"},
		{"ttl not a duration", map[string]any{"node": "n1", "endpoint": "e1", "ttl": "forever"}, "ttl", "is not a duration"},
		{"ttl too short", map[string]any{"node": "n1", "endpoint": "e1", "ttl": "30s"}, "ttl", "outside 1m0s to 720h0m0s"},
		{"ttl too long", map[string]any{"node": "n1", "endpoint": "e1", "ttl": "721h"}, "ttl", "outside"},
		{"ttl negative", map[string]any{"node": "n1", "endpoint": "e1", "ttl": "-1h"}, "ttl", "outside"},
		{"ttl a number", map[string]any{"node": "n1", "endpoint": "e1", "ttl": 3600}, "ttl", "must be a string"},
		{"node a number", map[string]any{"node": 7, "endpoint": "e1"}, "node", "must be a string"},
		{"unknown field", map[string]any{"node": "n1", "endpoint": "e1", "expires": "tomorrow"}, "expires", "unknown field"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := e.in(t)
			rev := e.reg.Revision()
			ae := errorOf(t, e.post("/api/v1/identity/tokens", tt.body), http.StatusUnprocessableEntity)
			if msg := ae.field(t, tt.field); !strings.Contains(msg, tt.says) {
				t.Errorf("%s: %q does not say %q", tt.field, msg, tt.says)
			}
			if e.reg.Revision() != rev || len(e.id.store.Records()) != 0 {
				t.Error("a refused request recorded a token")
			}
		})
	}
	errorOf(t, e.send(req{method: "POST", path: "/api/v1/identity/tokens", body: "{", noCType: false}), http.StatusBadRequest)
	errorOf(t, e.send(req{method: "POST", path: "/api/v1/identity/tokens", body: "{}", header: map[string]string{"Content-Type": "text/plain"}}), http.StatusUnsupportedMediaType)
}

// TestJoinTokenLifecycle: mint (TTL default and given), list without the
// tokens, revoke (idempotent, 404 for an unknown jti), and tokens never in
// answers other than their own mint, nor in logs.
func TestJoinTokenLifecycle(t *testing.T) {
	e := newEnv(t, withIdentity(nil))
	e.seedIdentity()
	start := time.Now().Truncate(time.Second)
	tokA, jtiA := e.mintToken(map[string]any{"node": "n1", "endpoint": "e1"})
	tokB, jtiB := e.mintToken(map[string]any{"node": "n2", "role": "r1", "ttl": "90m", "endpoint": nil})
	if !strings.HasPrefix(tokA, "eyJ") || strings.Count(tokA, ".") != 2 {
		t.Errorf("the token is not a compact JWT: %.20s…", tokA)
	}

	r := e.must(e.get("/api/v1/identity/tokens"), http.StatusOK)
	if r.header.Get("X-Total-Count") != "2" {
		t.Errorf("X-Total-Count %q", r.header.Get("X-Total-Count"))
	}
	var recs []struct {
		JTI       string    `json:"jti"`
		Node      string    `json:"node"`
		Endpoint  string    `json:"endpoint"`
		Role      string    `json:"role"`
		IssuedAt  time.Time `json:"issued_at"`
		ExpiresAt time.Time `json:"expires_at"`
		Revoked   bool      `json:"revoked"`
	}
	decodeStrict(t, r.body, &recs)
	if len(recs) != 2 {
		t.Fatalf("records %s", r.body)
	}
	byJTI := map[string]int{recs[0].JTI: 0, recs[1].JTI: 1}
	a, b := recs[byJTI[jtiA]], recs[byJTI[jtiB]]
	if a.Node != "n1" || a.Endpoint != "e1" || a.Role != "" || b.Node != "n2" || b.Role != "r1" || b.Endpoint != "" {
		t.Errorf("records %+v", recs)
	}
	for _, c := range []struct {
		rec  time.Time
		want time.Duration
	}{{a.ExpiresAt, api.DefaultTokenTTL}, {b.ExpiresAt, 90 * time.Minute}} {
		if d := c.rec.Sub(start); d < c.want || d > c.want+5*time.Second {
			t.Errorf("expires %s after minting, want %s", d, c.want)
		}
	}
	if strings.Contains(string(r.body), tokA) || strings.Contains(string(r.body), tokB) {
		t.Error("the list shows a token")
	}

	errorOf(t, e.del("/api/v1/identity/tokens/nope"), http.StatusNotFound)
	for range 2 {
		r := e.must(e.del("/api/v1/identity/tokens/"+jtiA), http.StatusNoContent)
		if len(r.body) != 0 {
			t.Errorf("204 with a body: %q", r.body)
		}
	}
	decodeStrict(t, e.must(e.get("/api/v1/identity/tokens/"), http.StatusOK).body, &recs)
	for _, rec := range recs {
		if rec.Revoked != (rec.JTI == jtiA) {
			t.Errorf("record %s revoked=%v", rec.JTI, rec.Revoked)
		}
	}
	errorOf(t, e.send(req{method: "GET", path: "/api/v1/identity/whoami", token: &tokA}), http.StatusUnauthorized)
	e.must(e.send(req{method: "GET", path: "/api/v1/identity/whoami", token: &tokB}), http.StatusOK)
	for _, tok := range []string{tokA, tokB} {
		if strings.Contains(e.logs.String(), tok) {
			t.Error("a token appears in the logs")
		}
	}
	if !strings.Contains(e.logs.String(), jtiA) {
		t.Error("minting and revoking are not logged by jti")
	}
}

// TestSPIREModeIssuesNoSVIDs: without a signer (SPIRE mode) tokens still
// authenticate nodes, and the svids route says where SVIDs come from.
func TestSPIREModeIssuesNoSVIDs(t *testing.T) {
	e := newEnv(t, withIdentity(func(c *api.IdentityConfig) { c.Signer = nil }))
	e.seedIdentity()
	tok, _ := e.mintToken(map[string]any{"node": "n2", "endpoint": "e2"})
	who := object(t, e.must(e.send(req{method: "GET", path: "/api/v1/identity/whoami", token: &tok}), http.StatusOK))
	if who["spiffe_id"] != idE2 {
		t.Errorf("whoami %v", who)
	}
	before := e.issuedTotal()
	r := e.send(req{method: "POST", path: "/api/v1/identity/svids", token: &tok, body: map[string]any{"csr": "whatever"}})
	errorOf(t, r, http.StatusNotImplemented)
	for _, says := range []string{"--identity spire", "Workload API", idE2} {
		if !strings.Contains(string(r.body), says) {
			t.Errorf("the 501 does not say %q: %s", says, r.body)
		}
	}
	if e.issuedTotal() != before {
		t.Error("issued an SVID")
	}
	e.must(e.send(req{method: "GET", path: "/api/v1/identity/bundle", token: noToken()}), http.StatusOK)
}

// TestIdentityConfigRequired: WithIdentity names what is missing.
func TestIdentityConfigRequired(t *testing.T) {
	_, err := api.New(openRegistry(t), api.WithAuthenticator(nodeAuth{}), api.WithIdentity(api.IdentityConfig{}))
	if err == nil {
		t.Fatal("New accepted an empty identity configuration")
	}
	for _, f := range []string{"TrustDomain", "Tokens", "Nodes", "Records", "Bundles"} {
		if !strings.Contains(err.Error(), f) {
			t.Errorf("the error does not name %s: %v", f, err)
		}
	}
}
