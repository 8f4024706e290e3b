package api_test

import (
	"net/http"
	"strings"
	"testing"
)

func TestDeleteReferencedIsConflict(t *testing.T) {
	e := newEnv(t)
	e.seed()
	tests := []struct {
		path      string
		referrers []string // each must be named in the 409 message
	}{
		{"/api/v1/roles/r1", []string{"security policy 'p1'"}},
		{"/api/v1/roles/r1?cascade=true", []string{"security policy 'p1'"}}, // cascade never follows references
		{"/api/v1/security-policies/p1", []string{"endpoint 'e1'", "service 'svc1'"}},
		{"/api/v1/storage/s1?cascade=true", []string{"function 'f1'"}},
		{"/api/v1/endpoints/e1", []string{"function 'f1'"}},
		{"/api/v1/endpoints/e1?cascade=true", []string{"function 'f1'"}},
		{"/api/v1/services/svc1", []string{"microservice 'm1'"}},
		{"/api/v1/microservices/m1", []string{"function 'f1'"}},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			e := e.in(t)
			before := e.snapshot()
			ae := errorOf(t, e.del(tt.path), http.StatusConflict)
			for _, ref := range tt.referrers {
				if !strings.Contains(ae.Detail.Message, ref) {
					t.Errorf("409 message %q does not name %s", ae.Detail.Message, ref)
				}
			}
			e.unchangedSince(before)
		})
	}
}

func TestDeleteCascade(t *testing.T) {
	e := newEnv(t)
	e.seed()
	rev := e.reg.Revision()
	e.must(e.del("/api/v1/services/svc1/?cascade=true"), http.StatusNoContent)
	if e.reg.Revision() != rev+1 {
		t.Errorf("cascade took %d revisions, want one atomic write", e.reg.Revision()-rev)
	}
	for _, gone := range []string{
		"/api/v1/services/svc1", "/api/v1/microservices/m1", "/api/v1/functions/f1",
		"/api/v1/function-states/fs1", "/api/v1/function-results/fr1",
	} {
		errorOf(t, e.get(gone), http.StatusNotFound)
	}
	// References are never followed: the endpoint, its states, the policy
	// and the storage stay.
	for _, kept := range []string{
		"/api/v1/endpoints/e1", "/api/v1/endpoint-states/es1", "/api/v1/security-policies/p1",
		"/api/v1/storage/s1", "/api/v1/roles/r1",
	} {
		e.must(e.get(kept), http.StatusOK)
	}
	// An endpoint's history goes with it, cascade or not.
	e.must(e.del("/api/v1/endpoints/e1"), http.StatusNoContent)
	errorOf(t, e.get("/api/v1/endpoint-states/es1"), http.StatusNotFound)
}

func TestDeleteCascadeParameter(t *testing.T) {
	e := newEnv(t)
	e.seed()
	for _, q := range []string{"?cascade=yes", "?cascade=", "?cascade=true&cascade=true", "?force=true"} {
		t.Run(q, func(t *testing.T) {
			e := e.in(t)
			before := e.snapshot()
			errorOf(t, e.del("/api/v1/services/svc1"+q), http.StatusUnprocessableEntity)
			e.unchangedSince(before)
		})
	}
	errorOf(t, e.del("/api/v1/services/svc1?cascade=false"), http.StatusConflict)
	e.must(e.del("/api/v1/services/svc1?cascade=1"), http.StatusNoContent)
}
