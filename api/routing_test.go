package api_test

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
)

func TestUnknownRoutesAndMethods(t *testing.T) {
	e := newEnv(t)
	e.seed()
	tests := []struct {
		method string
		path   string
		status int
		allow  string
	}{
		{"GET", "/", 404, ""},
		{"GET", "/api/v1", 404, ""},
		{"GET", "/api/v1/", 404, ""},
		{"GET", "/api/v1/widgets", 404, ""},
		{"GET", "/api/v1/roles/r1/extra", 404, ""},
		{"GET", "/api/v1/roles/r1/state", 404, ""},
		{"GET", "/api/v2/roles", 404, ""},
		{"GET", "/api/v1/security_policies", 404, ""},
		{"PATCH", "/api/v1/roles", 405, "GET, HEAD, OPTIONS, POST"},
		{"DELETE", "/api/v1/roles/", 405, "GET, HEAD, OPTIONS, POST"},
		{"POST", "/api/v1/roles/r1", 405, "DELETE, GET, HEAD, OPTIONS, PUT"},
		{"PATCH", "/api/v1/functions/f1/", 405, "DELETE, GET, HEAD, OPTIONS, PUT"},
		{"PUT", "/api/v1/endpoints/e1/state", 405, "GET, HEAD, OPTIONS"},
		{"GET", "/api/v1/reports", 405, "OPTIONS, POST"},
		{"POST", "/healthz", 405, "GET, HEAD, OPTIONS"},
		{"BREW", "/api/v1/roles", 405, "GET, HEAD, OPTIONS, POST"},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			e := e.in(t)
			before := e.snapshot()
			r := e.send(req{method: tt.method, path: tt.path})
			errorOf(t, r, tt.status)
			if got := r.header.Get("Allow"); got != tt.allow {
				t.Errorf("Allow %q, want %q", got, tt.allow)
			}
			e.unchangedSince(before)
		})
	}
}

// TestNoRedirects: no path is ever redirected, not even unclean ones
// that ServeMux would redirect by default.
func TestNoRedirects(t *testing.T) {
	e := newEnv(t)
	e.seed()
	for _, p := range []string{
		"/api/v1//roles", "/api/v1/roles/../roles", "/api/v1/./roles", "/api/v1/roles//",
		"//api/v1/roles", "/api/v1/roles/r1/..", "/api/v1/functions/f1/state/.",
	} {
		t.Run(p, func(t *testing.T) {
			for _, m := range []string{"GET", "POST", "DELETE"} {
				r := e.in(t).send(req{method: m, path: p})
				if r.status >= 300 && r.status < 400 {
					t.Fatalf("%s %s redirected (%d) to %q", m, p, r.status, r.header.Get("Location"))
				}
				errorOf(t, r, http.StatusNotFound)
			}
		})
	}
	// Both trailing-slash forms answer directly.
	for _, p := range []string{"/api/v1/roles", "/api/v1/roles/", "/api/v1/roles/r1", "/api/v1/roles/r1/", "/healthz/"} {
		e.must(e.get(p), http.StatusOK)
	}
}

func TestConcurrentWrites(t *testing.T) {
	e := newEnv(t)
	e.seed()
	rev := e.reg.Revision()
	const n = 32
	var wg sync.WaitGroup
	statuses := make([]int, n)
	for i := range n {
		wg.Go(func() {
			r := e.send(req{method: "POST", path: "/api/v1/functions", body: map[string]any{
				"function_id": fmt.Sprintf("cf%02d", i), "microservice_id": "m1", "endpoint_id": "e1",
			}})
			statuses[i] = r.status
		})
	}
	wg.Wait()
	for i, s := range statuses {
		if s != http.StatusCreated {
			t.Errorf("request %d: status %d", i, s)
		}
	}
	if got := e.reg.Revision(); got != rev+n {
		t.Errorf("revision %d → %d, want %d writes", rev, got, n)
	}
	r := e.must(e.get("/api/v1/microservices/m1"), http.StatusOK)
	if got := strings.Count(string(r.body), `"cf`); got != n {
		t.Errorf("microservice lists %d of %d new functions", got, n)
	}
}

// TestOptionsWithoutPreflight answers which methods a route has, without
// credentials and without touching anything.
func TestOptionsWithoutPreflight(t *testing.T) {
	e := newEnv(t)
	r := e.send(req{method: http.MethodOptions, path: "/api/v1/functions/f1", token: noToken()})
	if r.status != http.StatusNoContent || r.header.Get("Allow") != "DELETE, GET, HEAD, OPTIONS, PUT" {
		t.Fatalf("OPTIONS: %d Allow=%q", r.status, r.header.Get("Allow"))
	}
}
