package api_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
)

func ids(t *testing.T, r *resp, field string) []string {
	t.Helper()
	var out []string
	for _, it := range array(t, r) {
		s, _ := it[field].(string)
		out = append(out, s)
	}
	return out
}

func TestListPagination(t *testing.T) {
	e := newEnv(t)
	var want []string
	for i := 24; i >= 0; i-- { // created out of order: lists are in id order
		id := fmt.Sprintf("r%02d", i)
		e.must(e.post("/api/v1/roles", map[string]any{"role_id": id, "name": id}), http.StatusCreated)
	}
	for i := range 25 {
		want = append(want, fmt.Sprintf("r%02d", i))
	}

	tests := []struct {
		query string
		want  []string
	}{
		{"", want},
		{"?limit=10", want[:10]},
		{"?limit=10&after=r09", want[10:20]},
		{"?after=r19", want[20:]},
		{"?after=r24", nil},
		{"?after=r095", want[10:]}, // a cursor need not exist for id-ordered kinds
		{"?limit=10000", want},
		{"?limit=1&after=r00", want[1:2]},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			e := e.in(t)
			r := e.must(e.get("/api/v1/roles"+tt.query), http.StatusOK)
			if got := ids(t, r, "role_id"); strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Errorf("ids %v, want %v", got, tt.want)
			}
			if tc := r.header.Get("X-Total-Count"); tc != "25" {
				t.Errorf("X-Total-Count %q, want 25 (all matches, not the page)", tc)
			}
			if len(tt.want) == 0 && strings.TrimSpace(string(r.body)) != "[]" {
				t.Errorf("empty page is %s, want []", r.body)
			}
		})
	}

	t.Run("walking pages visits every entity once", func(t *testing.T) {
		e := e.in(t)
		var got []string
		after := ""
		for range 10 {
			q := "?limit=7"
			if after != "" {
				q += "&after=" + after
			}
			page := ids(t, e.must(e.get("/api/v1/roles"+q), http.StatusOK), "role_id")
			if len(page) == 0 {
				break
			}
			got = append(got, page...)
			after = page[len(page)-1]
		}
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("walked %v", got)
		}
	})
}

func TestListHistoryInCommitOrder(t *testing.T) {
	e := newEnv(t)
	e.seed()
	e.must(e.post("/api/v1/functions", map[string]any{"function_id": "f2", "microservice_id": "m1"}), http.StatusCreated)
	for _, s := range []struct{ id, fn string }{{"z", "f1"}, {"a", "f2"}, {"m", "f1"}, {"b", "f1"}} {
		e.must(e.post("/api/v1/function-states", map[string]any{"state_id": s.id, "function_id": s.fn, "state": "running"}), http.StatusCreated)
	}
	tests := []struct {
		query string
		want  string
		total string
	}{
		{"", "fs1,z,a,m,b", "5"},
		{"?after=z", "a,m,b", "5"},
		{"?limit=2&after=z", "a,m", "5"},
		{"?function_id=f1", "fs1,z,m,b", "4"},
		{"?function_id=f1&after=z", "m,b", "4"},
		{"?function_id=f2", "a", "1"},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			e := e.in(t)
			r := e.must(e.get("/api/v1/function-states"+tt.query), http.StatusOK)
			if got := strings.Join(ids(t, r, "state_id"), ","); got != tt.want {
				t.Errorf("ids %s, want %s", got, tt.want)
			}
			if tc := r.header.Get("X-Total-Count"); tc != tt.total {
				t.Errorf("X-Total-Count %q, want %s", tc, tt.total)
			}
		})
	}
	// A history cursor must exist: commit order cannot be guessed.
	errorOf(t, e.get("/api/v1/function-states?after=nope"), http.StatusUnprocessableEntity).field(t, "after")
}

func TestListFilters(t *testing.T) {
	e := newEnv(t)
	e.seed()
	e.must(e.post("/api/v1/roles", map[string]any{"role_id": "r2", "name": "w"}), http.StatusCreated)
	e.must(e.post("/api/v1/security-policies", map[string]any{"sp_id": "p2", "roles": []any{"r2", "r1"}, "requires_authentication": true}), http.StatusCreated)
	e.must(e.post("/api/v1/security-policies", map[string]any{"sp_id": "p3", "roles": []any{"r2"}, "requires_authentication": true}), http.StatusCreated)
	e.must(e.post("/api/v1/services", map[string]any{"service_id": "svc2", "security_policy": "p2"}), http.StatusCreated)
	e.must(e.post("/api/v1/microservices", map[string]any{"microservice_id": "m2", "service_id": "svc2"}), http.StatusCreated)
	e.must(e.post("/api/v1/functions", map[string]any{"function_id": "f2", "microservice_id": "m2"}), http.StatusCreated)
	e.must(e.post("/api/v1/functions", map[string]any{"function_id": "f3", "microservice_id": "m1", "endpoint_id": "e1"}), http.StatusCreated)

	tests := []struct {
		path  string
		field string
		want  string
	}{
		{"/api/v1/functions?microservice_id=m1", "function_id", "f1,f3"},
		{"/api/v1/functions/?microservice_id=m2", "function_id", "f2"},
		{"/api/v1/functions?endpoint_id=e1", "function_id", "f1,f3"},
		{"/api/v1/functions?storage=s1", "function_id", "f1"},
		{"/api/v1/functions?microservice_id=m1&endpoint_id=e1&storage=s1", "function_id", "f1"},
		{"/api/v1/functions?microservice_id=ghost", "function_id", ""},
		{"/api/v1/security-policies?roles=r1", "sp_id", "p1,p2"},
		{"/api/v1/security-policies?roles=r2", "sp_id", "p2,p3"},
		{"/api/v1/microservices?service_id=svc2", "microservice_id", "m2"},
		{"/api/v1/services?security_policy=p1", "service_id", "svc1"},
		{"/api/v1/endpoints?security_policy=p1", "endpoint_id", "e1"},
		{"/api/v1/endpoint-states?endpoint_id=e1", "state_id", "es1"},
		{"/api/v1/function-results?function_id=f1", "state_id", "fr1"},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			e := e.in(t)
			r := e.must(e.get(tt.path), http.StatusOK)
			got := strings.Join(ids(t, r, tt.field), ",")
			if got != tt.want {
				t.Errorf("ids %q, want %q", got, tt.want)
			}
			n := 0
			if tt.want != "" {
				n = len(strings.Split(tt.want, ","))
			}
			if tc := r.header.Get("X-Total-Count"); tc != fmt.Sprint(n) {
				t.Errorf("X-Total-Count %q, want %d", tc, n)
			}
		})
	}
}

func TestListBadQueries(t *testing.T) {
	e := newEnv(t)
	e.seed()
	tests := []struct {
		path   string
		status int
		fields []string // query parameters the 422 must name
	}{
		{"/api/v1/roles?limit=0", 422, []string{"limit"}},
		{"/api/v1/roles?limit=10001", 422, []string{"limit"}},
		{"/api/v1/roles?limit=-1", 422, []string{"limit"}},
		{"/api/v1/roles?limit=ten", 422, []string{"limit"}},
		{"/api/v1/roles?limit=", 422, []string{"limit"}},
		{"/api/v1/roles?limit=1&limit=2", 422, []string{"limit"}},
		{"/api/v1/roles?after=", 422, []string{"after"}},
		{"/api/v1/roles?colour=red&size=9", 422, []string{"colour", "size"}},
		{"/api/v1/functions?microservice=m1", 422, []string{"microservice"}},
		{"/api/v1/functions?microservice_id=", 422, []string{"microservice_id"}},
		{"/api/v1/functions?microservice_id=-bad", 422, []string{"microservice_id"}},
		{"/api/v1/roles?function_id=f1", 422, []string{"function_id"}},
		{"/api/v1/roles/r1?verbose=1", 422, []string{"verbose"}},
		{"/api/v1/endpoints/e1/state?x=1", 422, []string{"x"}},
		{"/api/v1/roles?limit=%zz", 400, nil},
		{"/api/v1/roles?a=1;b=2", 400, nil},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			e := e.in(t)
			ae := errorOf(t, e.get(tt.path), tt.status)
			for _, f := range tt.fields {
				if msg := ae.field(t, f); msg == "" {
					t.Errorf("empty message for %s", f)
				}
			}
		})
	}
}
