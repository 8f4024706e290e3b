package api_test

import (
	"net/http"
	"strings"
	"testing"
)

// TestCompatibilityInput covers the input of the original CryptoMesh
// clients (SPEC §1): embedded policies and storage, and policy_id.
func TestCompatibilityInput(t *testing.T) {
	e := newEnv(t)
	e.seed()
	policy := map[string]any{"roles": []any{"r1"}, "requires_authentication": true, "policy_id": "legacy"}

	t.Run("embedded policy without id becomes <owner>.policy", func(t *testing.T) {
		e := e.in(t)
		ep := object(t, e.must(e.post("/api/v1/endpoints", map[string]any{
			"endpoint_id": "eA", "address": "10.0.0.9:9000", "security_policy": policy, "policy_id": "ignored",
		}), http.StatusCreated))
		if ep["security_policy"] != "eA.policy" {
			t.Fatalf("security_policy = %v, want eA.policy", ep["security_policy"])
		}
		if _, ok := ep["policy_id"]; ok {
			t.Errorf("policy_id was stored: %v", ep)
		}
		sp := object(t, e.must(e.get("/api/v1/security-policies/eA.policy"), http.StatusOK))
		if !jsonEqual(sp["roles"], []any{"r1"}) || sp["requires_authentication"] != true {
			t.Errorf("embedded policy stored as %v", sp)
		}
	})
	t.Run("embedded storage without id becomes <owner>.storage", func(t *testing.T) {
		e := e.in(t)
		fn := object(t, e.must(e.post("/api/v1/functions", map[string]any{
			"function_id": "fA", "microservice_id": "m1",
			"storage": map[string]any{"capacity": "5GB", "source_path": "/s", "sink_path": "/d"},
		}), http.StatusCreated))
		if fn["storage"] != "fA.storage" {
			t.Fatalf("storage = %v, want fA.storage", fn["storage"])
		}
		st := object(t, e.must(e.get("/api/v1/storage/fA.storage"), http.StatusOK))
		if st["capacity"] != "5GB" {
			t.Errorf("embedded storage stored as %v", st)
		}
	})
	t.Run("the same embedded content again is fine", func(t *testing.T) {
		e := e.in(t)
		rev := e.reg.Revision()
		e.must(e.put("/api/v1/endpoints/eA", map[string]any{"security_policy": policy, "name": "again"}), http.StatusOK)
		ep := object(t, e.must(e.post("/api/v1/endpoints", map[string]any{
			"endpoint_id":     "eB",
			"security_policy": map[string]any{"sp_id": "p1", "roles": []any{"r1"}, "requires_authentication": true},
		}), http.StatusCreated))
		if ep["security_policy"] != "p1" {
			t.Errorf("security_policy = %v, want the existing p1", ep["security_policy"])
		}
		if e.reg.Revision() != rev+2 {
			t.Errorf("revision %d → %d, want one write per request", rev, e.reg.Revision())
		}
	})
	conflicts := []struct {
		name string
		do   func() *resp
	}{
		{"embedded policy with an existing id and different content", func() *resp {
			return e.post("/api/v1/endpoints", map[string]any{"endpoint_id": "eC",
				"security_policy": map[string]any{"sp_id": "p1", "roles": []any{}, "requires_authentication": false}})
		}},
		{"embedded policy whose derived id exists with different content", func() *resp {
			return e.put("/api/v1/endpoints/eA", map[string]any{
				"security_policy": map[string]any{"requires_authentication": false}})
		}},
		{"embedded storage whose derived id exists with different content", func() *resp {
			return e.put("/api/v1/functions/fA", map[string]any{
				"storage": map[string]any{"capacity": "6GB", "source_path": "/s", "sink_path": "/d"}})
		}},
	}
	for _, tt := range conflicts {
		t.Run(tt.name, func(t *testing.T) {
			e := e.in(t)
			before := e.snapshot()
			ae := errorOf(t, tt.do(), http.StatusConflict)
			if !strings.Contains(ae.Detail.Message, "already exists with different") {
				t.Errorf("409 message %q does not explain the conflict", ae.Detail.Message)
			}
			e.unchangedSince(before)
		})
	}
}
