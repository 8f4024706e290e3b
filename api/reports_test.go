package api_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/cryptomesh/cryptomesh/api"
)

// nodeAuth stands in for the node authenticators to come: it maps bearer
// tokens to principals.
type nodeAuth map[string]api.Principal

func (n nodeAuth) Authenticate(r *http.Request) (api.Principal, error) {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if p, known := n[tok]; ok && known {
		return p, nil
	}
	return api.Principal{}, fmt.Errorf("not a node token: %w", api.ErrUnauthenticated)
}

type reportAnswer struct {
	Status int             `json:"status"`
	Data   map[string]any  `json:"data"`
	Detail json.RawMessage `json:"detail"`
}

func reportAnswers(t *testing.T, r *resp) []reportAnswer {
	t.Helper()
	if r.status != http.StatusOK {
		t.Fatalf("reports: %s", r)
	}
	var body struct {
		Items []reportAnswer `json:"items"`
	}
	dec := json.NewDecoder(strings.NewReader(string(r.body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		t.Fatalf("reports answer: %v: %s", err, r.body)
	}
	for i, a := range body.Items {
		if a.Status == http.StatusCreated {
			if a.Data == nil || a.Detail != nil {
				t.Errorf("item %d: 201 must carry data only: %+v", i, a)
			}
			continue
		}
		if a.Data != nil {
			t.Errorf("item %d: refused item carries data", i)
		}
		// The detail is the same shape as a whole error answer's.
		errorOf(t, &resp{status: a.Status, header: http.Header{"Content-Type": {"application/json"}},
			body: []byte(`{"detail":` + string(a.Detail) + `}`)}, a.Status)
	}
	return body.Items
}

func item(kind string, data map[string]any) map[string]any {
	return map[string]any{"kind": kind, "data": data}
}

func TestReportsMixedBatchIsOneWrite(t *testing.T) {
	e := newEnv(t)
	e.seed()
	rev := e.reg.Revision()
	records := len(e.store.Records())

	batch := map[string]any{"items": []any{
		item("function_state", map[string]any{"state_id": "run1", "function_id": "f1", "state": "running"}),
		item("function_state", map[string]any{"function_id": "f1", "state": "sleeping"}),
		item("function_result", map[string]any{"state_id": "run1", "function_id": "f1", "metadata": map[string]any{"status": "200", "duration_ms": "12"}}),
		item("function_state", map[string]any{"function_id": "ghost", "state": "running"}),
		item("endpoint_state", map[string]any{"endpoint_id": "e1", "state": "unhealthy"}),
		item("service", map[string]any{"service_id": "x"}),
		map[string]any{"kind": "function_state", "data": "not an object"},
		"not an item",
		item("function_state", map[string]any{"state_id": "fs1", "function_id": "f1", "state": "failed"}),
		item("function_result", map[string]any{"state_id": "run1", "function_id": "f1"}),
		map[string]any{"kind": "endpoint_state", "data": map[string]any{"endpoint_id": "e1", "state": "warm"}, "extra": 1},
	}}
	answers := reportAnswers(t, e.post("/api/v1/reports", batch))
	want := []int{201, 422, 201, 422, 201, 422, 422, 422, 409, 409, 422}
	if len(answers) != len(want) {
		t.Fatalf("%d answers for %d items", len(answers), len(want))
	}
	for i, a := range answers {
		if a.Status != want[i] {
			t.Errorf("item %d: status %d, want %d (%s)", i, a.Status, want[i], a.Detail)
		}
	}
	if answers[0].Data["state_id"] != "run1" || answers[0].Data["timestamp"] == nil {
		t.Errorf("item 0 data %v", answers[0].Data)
	}
	if !strings.Contains(string(answers[1].Detail), `"field":"state"`) {
		t.Errorf("item 1 does not name the state field: %s", answers[1].Detail)
	}
	if !strings.Contains(string(answers[3].Detail), "ghost") {
		t.Errorf("item 3 does not name the dangling function: %s", answers[3].Detail)
	}

	if got := e.reg.Revision(); got != rev+1 {
		t.Errorf("revision %d → %d: the batch must be exactly one write", rev, got)
	}
	if got := len(e.store.Records()); got != records+1 {
		t.Errorf("store records %d → %d, want one more", records, got)
	}
	latest := object(t, e.must(e.get("/api/v1/endpoints/e1/state"), http.StatusOK))
	if latest["state"] != "unhealthy" {
		t.Errorf("endpoint state after report: %v", latest)
	}
	fs := object(t, e.must(e.get("/api/v1/function-states/fs1"), http.StatusOK))
	if fs["state"] != "running" {
		t.Errorf("a refused duplicate overwrote fs1: %v", fs)
	}
}

func TestReportsWithNothingAcceptedWriteNothing(t *testing.T) {
	e := newEnv(t)
	e.seed()
	before := e.snapshot()
	answers := reportAnswers(t, e.post("/api/v1/reports/", map[string]any{"items": []any{
		item("function_state", map[string]any{"function_id": "f1", "state": "bogus"}),
	}}))
	if len(answers) != 1 || answers[0].Status != http.StatusUnprocessableEntity {
		t.Fatalf("answers %+v", answers)
	}
	empty := reportAnswers(t, e.post("/api/v1/reports", map[string]any{"items": []any{}}))
	if len(empty) != 0 {
		t.Fatalf("empty batch answered %+v", empty)
	}
	e.unchangedSince(before)
}

func TestReportsBadBatch(t *testing.T) {
	e := newEnv(t)
	e.seed()
	many := make([]any, 1001)
	for i := range many {
		many[i] = item("function_state", map[string]any{"function_id": "f1", "state": "running"})
	}
	tests := []struct {
		name   string
		body   any
		status int
		field  string
	}{
		{"no items", map[string]any{}, 422, "items"},
		{"items null", map[string]any{"items": nil}, 422, "items"},
		{"items not a list", map[string]any{"items": map[string]any{}}, 422, "items"},
		{"unknown field", map[string]any{"items": []any{}, "node": "n1"}, 422, "node"},
		{"too many items", map[string]any{"items": many}, 422, "items"},
		{"not an object", `[]`, 422, "body"},
		{"malformed", `{"items": [`, 400, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := e.in(t)
			before := e.snapshot()
			ae := errorOf(t, e.post("/api/v1/reports", tt.body), tt.status)
			if tt.field != "" {
				ae.field(t, tt.field)
			}
			e.unchangedSince(before)
		})
	}
}

func TestReportsByNodes(t *testing.T) {
	nodes := nodeAuth{
		"node-e1-token":   {Kind: api.PrincipalNode, Name: "n1", Endpoint: "e1"},
		"node-role-token": {Kind: api.PrincipalNode, Name: "n2", Role: "r1"},
	}
	e := newEnv(t, withAPI(api.WithAuthenticator(nodes)))
	e.seed()
	e.must(e.post("/api/v1/endpoints", map[string]any{"endpoint_id": "e3", "security_policy": "p1"}), http.StatusCreated)
	e.must(e.post("/api/v1/functions", map[string]any{"function_id": "f3", "microservice_id": "m1", "endpoint_id": "e3"}), http.StatusCreated)
	e.must(e.post("/api/v1/functions", map[string]any{"function_id": "f4", "microservice_id": "m1"}), http.StatusCreated)

	batch := map[string]any{"items": []any{
		item("function_state", map[string]any{"function_id": "f1", "state": "running"}),
		item("function_result", map[string]any{"function_id": "f1"}),
		item("function_state", map[string]any{"function_id": "f3", "state": "running"}),
		item("function_result", map[string]any{"function_id": "f4"}),
		item("function_state", map[string]any{"function_id": "ghost", "state": "running"}),
		item("endpoint_state", map[string]any{"endpoint_id": "e1", "state": "warm"}),
		item("endpoint_state", map[string]any{"endpoint_id": "e3", "state": "warm"}),
		item("function_state", map[string]any{"function_id": "f1", "state": "nonsense"}),
	}}

	t.Run("node bound to an endpoint", func(t *testing.T) {
		e := e.in(t)
		rev := e.reg.Revision()
		answers := reportAnswers(t, e.send(req{method: "POST", path: "/api/v1/reports", body: batch, token: tokenOf("node-e1-token")}))
		want := []int{201, 201, 403, 403, 403, 201, 403, 422}
		for i, a := range answers {
			if a.Status != want[i] {
				t.Errorf("item %d: status %d, want %d (%s)", i, a.Status, want[i], a.Detail)
			}
		}
		if e.reg.Revision() != rev+1 {
			t.Errorf("revision %d → %d, want one write", rev, e.reg.Revision())
		}
	})
	t.Run("node bound to a role reports nothing", func(t *testing.T) {
		e := e.in(t)
		before := e.snapshot()
		for i, a := range reportAnswers(t, e.send(req{method: "POST", path: "/api/v1/reports", body: batch, token: tokenOf("node-role-token")})) {
			// Authorization comes before validation: even the invalid
			// item is refused as not the node's to report.
			if a.Status != http.StatusForbidden {
				t.Errorf("item %d: status %d, want 403", i, a.Status)
			}
		}
		e.unchangedSince(before)
	})
	t.Run("admin reports anything", func(t *testing.T) {
		e := e.in(t)
		want := []int{201, 201, 201, 201, 422, 201, 201, 422}
		for i, a := range reportAnswers(t, e.post("/api/v1/reports", batch)) {
			if a.Status != want[i] {
				t.Errorf("item %d: status %d, want %d (%s)", i, a.Status, want[i], a.Detail)
			}
		}
	})
}
