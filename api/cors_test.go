package api_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/cryptomesh/cryptomesh/api"
)

func TestCORS(t *testing.T) {
	const ui = "https://ui.example.com"
	e := newEnv(t, withAPI(api.WithCORSOrigins([]string{ui, "http://localhost:3000"})))
	e.seed()

	t.Run("listed origin is echoed", func(t *testing.T) {
		r := e.in(t).send(req{method: "GET", path: "/api/v1/roles", header: map[string]string{"Origin": ui}})
		if r.status != 200 {
			t.Fatalf("status %d: %s", r.status, r.body)
		}
		if got := r.header.Get("Access-Control-Allow-Origin"); got != ui {
			t.Errorf("Access-Control-Allow-Origin %q, want %q", got, ui)
		}
		if !strings.Contains(r.header.Get("Vary"), "Origin") {
			t.Errorf("Vary %q lacks Origin", r.header.Get("Vary"))
		}
		if !strings.Contains(r.header.Get("Access-Control-Expose-Headers"), "X-Total-Count") {
			t.Errorf("X-Total-Count not exposed to the browser")
		}
	})
	t.Run("the export's revision is exposed", func(t *testing.T) {
		r := e.in(t).send(req{method: "GET", path: "/api/v1/export", header: map[string]string{"Origin": ui}})
		if r.status != 200 || r.header.Get("X-Registry-Revision") == "" ||
			!strings.Contains(r.header.Get("Access-Control-Expose-Headers"), "X-Registry-Revision") {
			t.Errorf("export to a browser: %d, revision %q, exposed %q", r.status, r.header.Get("X-Registry-Revision"), r.header.Get("Access-Control-Expose-Headers"))
		}
	})
	t.Run("listed origin still needs a token", func(t *testing.T) {
		r := e.in(t).send(req{method: "GET", path: "/api/v1/roles", token: noToken(), header: map[string]string{"Origin": ui}})
		errorOf(t, r, http.StatusUnauthorized)
	})
	for _, origin := range []string{"https://evil.example.com", "https://ui.example.com.evil.com", "http://ui.example.com", "null", ui + "/"} {
		t.Run("refused "+origin, func(t *testing.T) {
			e := e.in(t)
			before := e.snapshot()
			for _, rq := range []req{
				{method: "GET", path: "/api/v1/roles"},
				{method: "POST", path: "/api/v1/roles", body: map[string]any{"role_id": "x", "name": "x"}},
				{method: "GET", path: "/healthz"},
				{method: "OPTIONS", path: "/api/v1/roles", header: map[string]string{"Access-Control-Request-Method": "POST"}},
			} {
				if rq.header == nil {
					rq.header = map[string]string{}
				}
				rq.header["Origin"] = origin
				r := e.send(rq)
				errorOf(t, r, http.StatusForbidden)
				if acao := r.header.Get("Access-Control-Allow-Origin"); acao != "" {
					t.Errorf("%s %s: Access-Control-Allow-Origin %q for a refused origin", rq.method, rq.path, acao)
				}
			}
			e.unchangedSince(before)
		})
	}
	t.Run("preflight needs no token", func(t *testing.T) {
		r := e.in(t).send(req{method: "OPTIONS", path: "/api/v1/functions/f1/", token: noToken(), header: map[string]string{
			"Origin": ui, "Access-Control-Request-Method": "PUT", "Access-Control-Request-Headers": "authorization, content-type",
		}})
		if r.status != http.StatusNoContent {
			t.Fatalf("preflight status %d: %s", r.status, r.body)
		}
		methods := r.header.Get("Access-Control-Allow-Methods")
		for _, m := range []string{"GET", "PUT", "DELETE"} {
			if !strings.Contains(methods, m) {
				t.Errorf("Access-Control-Allow-Methods %q lacks %s", methods, m)
			}
		}
		if strings.Contains(methods, "POST") {
			t.Errorf("Access-Control-Allow-Methods %q offers POST on an item route", methods)
		}
		headers := strings.ToLower(r.header.Get("Access-Control-Allow-Headers"))
		if !strings.Contains(headers, "authorization") || !strings.Contains(headers, "content-type") {
			t.Errorf("Access-Control-Allow-Headers %q", headers)
		}
		if r.header.Get("Access-Control-Allow-Origin") != ui {
			t.Errorf("preflight without Access-Control-Allow-Origin")
		}
	})
	t.Run("requests without Origin are unaffected", func(t *testing.T) {
		r := e.in(t).must(e.get("/api/v1/roles"), http.StatusOK)
		if r.header.Get("Access-Control-Allow-Origin") != "" {
			t.Error("CORS header on a request without Origin")
		}
		if !strings.Contains(r.header.Get("Vary"), "Origin") {
			t.Error("Vary: Origin missing, so a cache could serve this answer to a browser origin")
		}
	})
}

func TestCORSOriginsMustBeExact(t *testing.T) {
	reg := openRegistry(t)
	for _, o := range []string{"*", "ui.example.com", "https://ui.example.com/", "https://ui.example.com/app", "ftp://x", ""} {
		if _, err := api.New(reg, api.WithAuthenticator(nodeAuth{}), api.WithCORSOrigins([]string{o})); err == nil {
			t.Errorf("origin %q accepted", o)
		}
	}
}
