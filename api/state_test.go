package api_test

import (
	"net/http"
	"strings"
	"testing"
)

func TestLatestState(t *testing.T) {
	e := newEnv(t)
	e.seed()
	e.must(e.post("/api/v1/endpoints", map[string]any{"endpoint_id": "e2", "security_policy": "p1"}), http.StatusCreated)
	e.must(e.post("/api/v1/functions", map[string]any{"function_id": "f2", "microservice_id": "m1"}), http.StatusCreated)
	// "Latest" is the last committed, not the largest id or timestamp.
	e.must(e.post("/api/v1/endpoint-states", map[string]any{"state_id": "a-later", "endpoint_id": "e1", "state": "draining"}), http.StatusCreated)
	e.must(e.post("/api/v1/function-states", map[string]any{"state_id": "a-later", "function_id": "f1", "state": "completed"}), http.StatusCreated)

	for _, slash := range []string{"", "/"} {
		t.Run("endpoint slash="+slash, func(t *testing.T) {
			e := e.in(t)
			got := object(t, e.must(e.get("/api/v1/endpoints/e1/state"+slash), http.StatusOK))
			if got["state_id"] != "a-later" || got["state"] != "draining" {
				t.Errorf("latest endpoint state %v", got)
			}
		})
		t.Run("function slash="+slash, func(t *testing.T) {
			e := e.in(t)
			got := object(t, e.must(e.get("/api/v1/functions/f1/state"+slash), http.StatusOK))
			if got["state_id"] != "a-later" || got["state"] != "completed" {
				t.Errorf("latest function state %v", got)
			}
		})
	}

	tests := []struct {
		path    string
		message string
	}{
		{"/api/v1/endpoints/ghost/state", "Resource 'ghost' not found"},
		{"/api/v1/functions/ghost/state", "Resource 'ghost' not found"},
		{"/api/v1/endpoints/e2/state", "no endpoint state yet"},
		{"/api/v1/functions/f2/state", "no function state yet"},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			e := e.in(t)
			ae := errorOf(t, e.get(tt.path), http.StatusNotFound)
			if !strings.Contains(ae.Detail.Message, tt.message) {
				t.Errorf("message %q, want it to contain %q", ae.Detail.Message, tt.message)
			}
		})
	}
	// Only GET exists on the state routes.
	r := e.send(req{method: http.MethodPost, path: "/api/v1/functions/f1/state", body: map[string]any{}})
	errorOf(t, r, http.StatusMethodNotAllowed)
}
