package api_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/cryptomesh/cryptomesh/api"
)

func TestHealthz(t *testing.T) {
	e := newEnv(t)
	r := e.must(e.send(req{method: "GET", path: "/healthz", token: noToken()}), http.StatusOK)
	if strings.TrimSpace(string(r.body)) != `{"status":"ok"}` {
		t.Errorf("healthz body %s", r.body)
	}
}

type readyBody struct {
	Status     string            `json:"status"`
	Components map[string]string `json:"components"`
}

func readiness(t *testing.T, e *env, status int) readyBody {
	t.Helper()
	r := e.send(req{method: "GET", path: "/readyz", token: noToken()})
	if r.status != status {
		t.Fatalf("readyz %d, want %d: %s", r.status, status, r.body)
	}
	var b readyBody
	if err := json.Unmarshal(r.body, &b); err != nil {
		t.Fatalf("readyz body: %v: %s", err, r.body)
	}
	return b
}

func TestReadyzNamesTheFailingComponent(t *testing.T) {
	var xdsDown atomic.Bool
	e := newEnv(t, withAPI(api.WithReadiness("xds", func() error {
		if xdsDown.Load() {
			return errors.New("not listening")
		}
		return nil
	})))
	b := readiness(t, e, http.StatusOK)
	if b.Status != "ok" || b.Components["registry"] != "ok" || b.Components["xds"] != "ok" {
		t.Errorf("ready body %+v", b)
	}
	xdsDown.Store(true)
	b = readiness(t, e, http.StatusServiceUnavailable)
	if b.Components["xds"] != "not listening" || b.Components["registry"] != "ok" {
		t.Errorf("not-ready body %+v", b)
	}
}

func TestStoreFailure(t *testing.T) {
	e := newEnv(t)
	e.seed()
	e.store.FailAppends(errors.New("disk /var/lib/secret-path full"))
	r := e.post("/api/v1/roles", map[string]any{"name": "x"})
	ae := errorOf(t, r, http.StatusServiceUnavailable)
	if strings.Contains(ae.Detail.Message, "secret-path") {
		t.Errorf("store cause leaked to the client: %q", ae.Detail.Message)
	}
	// The registry now refuses writes, and readiness says why.
	e.store.FailAppends(nil)
	errorOf(t, e.post("/api/v1/reports", map[string]any{"items": []any{
		item("function_state", map[string]any{"function_id": "f1", "state": "running"}),
	}}), http.StatusServiceUnavailable)
	errorOf(t, e.del("/api/v1/functions/f1"), http.StatusServiceUnavailable)
	b := readiness(t, e, http.StatusServiceUnavailable)
	if b.Components["registry"] == "ok" || b.Status == "ok" {
		t.Errorf("readyz after a store failure: %+v", b)
	}
	// Reads go on from the last durable state.
	e.must(e.get("/api/v1/functions/f1"), http.StatusOK)
}

// panicAuth panics for one path, standing in for any handler bug.
type panicAuth struct{}

func (panicAuth) Authenticate(r *http.Request) (api.Principal, error) {
	if strings.HasSuffix(r.URL.Path, "/boom") {
		panic("handler bug")
	}
	return api.Principal{Kind: api.PrincipalAdmin, Name: "admin"}, nil
}

func TestPanicIsRecovered(t *testing.T) {
	e := newEnv(t, withoutDefaultAdmin(), withAPI(api.WithAuthenticator(panicAuth{})))
	ae := errorOf(t, e.get("/api/v1/roles/boom"), http.StatusInternalServerError)
	if strings.Contains(ae.Detail.Message, "handler bug") {
		t.Errorf("panic value leaked to the client: %q", ae.Detail.Message)
	}
	logs := e.logs.String()
	if !strings.Contains(logs, "panic serving request") || !strings.Contains(logs, "handler bug") {
		t.Errorf("the panic was not logged:\n%s", logs)
	}
	// The server keeps serving.
	e.must(e.get("/api/v1/roles"), http.StatusOK)
	fams, _ := scrape(t, e)
	if n, ok := sample(fams, "cryptomesh_api_requests_total", map[string]string{"route": "/api/v1/roles/{id}", "method": "GET", "code": "500"}); !ok || n != 1 {
		t.Errorf("the 500 was not counted: %v %v", n, ok)
	}
}

func TestRequestLog(t *testing.T) {
	e := newEnv(t)
	e.seed()
	e.must(e.get("/api/v1/functions/f1"), http.StatusOK)
	var found bool
	for _, line := range strings.Split(e.logs.String(), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) != nil || rec["msg"] != "request" || rec["path"] != "/api/v1/functions/f1" {
			continue
		}
		found = true
		for _, key := range []string{"method", "route", "status", "duration", "bytes", "principal"} {
			if _, ok := rec[key]; !ok {
				t.Errorf("request log lacks %q: %s", key, line)
			}
		}
		if rec["route"] != "/api/v1/functions/{id}" || rec["status"] != 200.0 || rec["principal"] != "admin" {
			t.Errorf("request log %s", line)
		}
	}
	if !found {
		t.Errorf("no request log line for GET /api/v1/functions/f1:\n%s", e.logs.String())
	}
}
