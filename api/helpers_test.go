package api_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	stdlog "log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/cryptomesh/cryptomesh/api"
	"github.com/cryptomesh/cryptomesh/registry"
	"github.com/cryptomesh/cryptomesh/registry/store/memstore"
	"github.com/prometheus/client_golang/prometheus"
)

// adminToken is the literal admin token of test servers.
const adminToken = "test-admin-token-3f9c2a"

// env is one API server over a fresh in-memory registry, reached over
// real HTTP on loopback.
type env struct {
	t     *testing.T
	srv   *httptest.Server
	api   *api.Server
	reg   *registry.Registry
	store *memstore.Store
	prom  *prometheus.Registry
	logs  *syncBuffer
	token string
	// id is the identity of a server built withIdentity, else nil.
	id *idEnv
	// roots is set when the server speaks TLS (withTLS): the bundle.
	roots *x509.CertPool
}

// syncBuffer collects log output written from server goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

type envConfig struct {
	apiOpts []api.Option
	noAdmin bool // do not add the default literal-token authenticator
	regOpts []registry.Option
	// identity, when not nil, adds the identity routes; it may adjust
	// the configuration (identity_helpers_test.go).
	identity func(*api.IdentityConfig)
	tls      bool
}

type envOption func(*envConfig)

func withAPI(opts ...api.Option) envOption {
	return func(c *envConfig) { c.apiOpts = append(c.apiOpts, opts...) }
}

func withoutDefaultAdmin() envOption { return func(c *envConfig) { c.noAdmin = true } }

func newEnv(t *testing.T, opts ...envOption) *env {
	t.Helper()
	var cfg envConfig
	for _, o := range opts {
		o(&cfg)
	}
	logs := &syncBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	prom := prometheus.NewRegistry()
	st := memstore.New()
	reg, err := registry.Open(context.Background(), st,
		append([]registry.Option{registry.WithLogger(log), registry.WithRegisterer(prom)}, cfg.regOpts...)...)
	if err != nil {
		t.Fatalf("open registry: %v", err)
	}
	t.Cleanup(func() { reg.Close() })
	apiOpts := []api.Option{api.WithLogger(log), api.WithRegisterer(prom)}
	var id *idEnv
	if cfg.identity != nil || cfg.tls {
		id = newIDEnv(t, reg, prom)
		ic := id.config()
		if cfg.identity != nil {
			cfg.identity(&ic)
		}
		apiOpts = append(apiOpts, api.WithIdentity(ic))
	}
	if !cfg.noAdmin {
		tokens, err := api.NewAdminTokens(nil, []string{adminToken}, log)
		if err != nil {
			t.Fatalf("admin tokens: %v", err)
		}
		apiOpts = append(apiOpts, api.WithAuthenticator(tokens))
	}
	s, err := api.New(reg, append(apiOpts, cfg.apiOpts...)...)
	if err != nil {
		t.Fatalf("api.New: %v", err)
	}
	e := &env{t: t, api: s, reg: reg, store: st, prom: prom, logs: logs, token: adminToken, id: id}
	if cfg.tls {
		// The server's own TLS (api.TLSConfig over the CA's serving
		// source), as cmd/cryptomesh serves it; handshake errors go to
		// the logs, where tests look for their reasons.
		e.srv = httptest.NewUnstartedServer(s.Handler())
		e.srv.Listener = tls.NewListener(e.srv.Listener, api.TLSConfig(id.serving))
		e.srv.Config.ErrorLog = stdlog.New(logs, "http: ", 0)
		e.srv.Start()
		e.srv.URL = "https://" + e.srv.Listener.Addr().String()
		e.roots = id.bundlePool(t)
	} else {
		e.srv = httptest.NewServer(s.Handler())
	}
	t.Cleanup(e.srv.Close)
	return e
}

// resp is an answer read in full.
type resp struct {
	status int
	header http.Header
	body   []byte
}

func (r *resp) String() string {
	return fmt.Sprintf("%d %s", r.status, r.body)
}

// req describes one request. body is sent as is when it is a string or
// []byte, else encoded as JSON.
type req struct {
	method  string
	path    string
	body    any
	token   *string           // nil: the env's admin token; "": none
	header  map[string]string // extra headers; "Content-Type": "" removes it
	noCType bool
	// cert is a TLS client certificate to present (withTLS servers).
	cert *tls.Certificate
}

func noToken() *string { s := ""; return &s }

func tokenOf(s string) *string { return &s }

func (e *env) send(rq req) *resp {
	e.t.Helper()
	r, err := e.trySend(rq)
	if err != nil {
		e.t.Fatal(err)
	}
	return r
}

// trySend is send for requests that may fail below HTTP (TLS handshakes).
func (e *env) trySend(rq req) (*resp, error) {
	e.t.Helper()
	var rd io.Reader
	if rq.body != nil {
		switch b := rq.body.(type) {
		case string:
			rd = strings.NewReader(b)
		case []byte:
			rd = bytes.NewReader(b)
		default:
			raw, err := json.Marshal(b)
			if err != nil {
				e.t.Fatalf("encode request body: %v", err)
			}
			rd = bytes.NewReader(raw)
		}
	}
	hr, err := http.NewRequest(rq.method, e.srv.URL+rq.path, rd)
	if err != nil {
		e.t.Fatalf("new request: %v", err)
	}
	if rq.body != nil && !rq.noCType {
		hr.Header.Set("Content-Type", "application/json")
	}
	tok := e.token
	if rq.token != nil {
		tok = *rq.token
	}
	if tok != "" {
		hr.Header.Set("Authorization", "Bearer "+tok)
	}
	for k, v := range rq.header {
		if v == "" {
			hr.Header.Del(k)
			continue
		}
		hr.Header.Set(k, v)
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	if e.roots != nil {
		tc := &tls.Config{RootCAs: e.roots}
		if rq.cert != nil {
			tc.Certificates = []tls.Certificate{*rq.cert}
		}
		client.Transport = &http.Transport{TLSClientConfig: tc, DisableKeepAlives: true}
	}
	res, err := client.Do(hr)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", rq.method, rq.path, err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		return nil, fmt.Errorf("read %s %s: %w", rq.method, rq.path, err)
	}
	return &resp{status: res.StatusCode, header: res.Header, body: body}, nil
}

func (e *env) get(path string) *resp { e.t.Helper(); return e.send(req{method: "GET", path: path}) }

func (e *env) post(path string, body any) *resp {
	e.t.Helper()
	return e.send(req{method: "POST", path: path, body: body})
}

func (e *env) put(path string, body any) *resp {
	e.t.Helper()
	return e.send(req{method: "PUT", path: path, body: body})
}

func (e *env) del(path string) *resp { e.t.Helper(); return e.send(req{method: "DELETE", path: path}) }

// must checks the status of r and returns it.
func (e *env) must(r *resp, status int) *resp {
	e.t.Helper()
	if r.status != status {
		e.t.Fatalf("status %d, want %d: %s", r.status, status, r.body)
	}
	return r
}

// object decodes a JSON object answer.
func object(t *testing.T, r *resp) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("answer is not a JSON object: %v: %s", err, r.body)
	}
	return m
}

// array decodes a JSON array answer.
func array(t *testing.T, r *resp) []map[string]any {
	t.Helper()
	var a []map[string]any
	if err := json.Unmarshal(r.body, &a); err != nil {
		t.Fatalf("answer is not a JSON array of objects: %v: %s", err, r.body)
	}
	return a
}

// apiError is the error shape of SPEC §2.
type apiError struct {
	Detail struct {
		Message string `json:"message"`
		Code    int    `json:"code"`
		Errors  []struct {
			Field   string `json:"field"`
			Message string `json:"message"`
		} `json:"errors"`
	} `json:"detail"`
}

// errorOf checks that r is an error answer in the SPEC shape with the
// given status and returns it.
func errorOf(t *testing.T, r *resp, status int) apiError {
	t.Helper()
	var e apiError
	decodeError(t, r, status, &e)
	if e.Detail.Code != status {
		t.Fatalf("detail.code %d, want %d: %s", e.Detail.Code, status, r.body)
	}
	if strings.TrimSpace(e.Detail.Message) == "" {
		t.Fatalf("error without a message: %s", r.body)
	}
	if status == http.StatusUnprocessableEntity && len(e.Detail.Errors) == 0 {
		t.Fatalf("422 without errors: %s", r.body)
	}
	if status != http.StatusUnprocessableEntity && e.Detail.Errors != nil {
		t.Fatalf("errors given on a %d: %s", status, r.body)
	}
	return e
}

// fieldErr returns the message of the field error named field, or fails.
func (a apiError) field(t *testing.T, field string) string {
	t.Helper()
	for _, fe := range a.Detail.Errors {
		if fe.Field == field {
			return fe.Message
		}
	}
	t.Fatalf("no error for field %q in %+v", field, a.Detail.Errors)
	return ""
}

// seedBodies is a small mesh covering every kind, in dependency order.
func seedBodies() []struct {
	route string
	body  map[string]any
} {
	return []struct {
		route string
		body  map[string]any
	}{
		{"roles", map[string]any{"role_id": "r1", "name": "reader", "permissions": []any{"read", "execute:ml_*"}}},
		{"security-policies", map[string]any{"sp_id": "p1", "roles": []any{"r1"}, "requires_authentication": true}},
		{"storage", map[string]any{"storage_id": "s1", "capacity": "10GB", "source_path": "/in", "sink_path": "/out"}},
		{"endpoints", map[string]any{"endpoint_id": "e1", "name": "gpu", "image": "img:1", "resources": map[string]any{"cpu": 2, "ram": "4GB"}, "security_policy": "p1", "address": "10.0.0.1:9000"}},
		{"endpoint-states", map[string]any{"state_id": "es1", "endpoint_id": "e1", "state": "warm"}},
		{"services", map[string]any{"service_id": "svc1", "security_policy": "p1"}},
		{"microservices", map[string]any{"microservice_id": "m1", "service_id": "svc1"}},
		{"functions", map[string]any{"function_id": "f1", "microservice_id": "m1", "endpoint_id": "e1", "storage": "s1", "resources": map[string]any{"cpu": 1, "ram": "512MB"}}},
		{"function-states", map[string]any{"state_id": "fs1", "function_id": "f1", "state": "running"}},
		{"function-results", map[string]any{"state_id": "fr1", "function_id": "f1", "metadata": map[string]any{"status": "200"}}},
	}
}

// seed creates the seed mesh through the API.
func (e *env) seed() {
	e.t.Helper()
	for _, s := range seedBodies() {
		e.must(e.post("/api/v1/"+s.route, s.body), http.StatusCreated)
	}
}

// listRoutes are the list routes of every kind.
func listRoutes() []string {
	var out []string
	for _, k := range registry.Kinds() {
		out = append(out, "/api/v1/"+k.Route())
	}
	return out
}

// snapshot is everything the API shows, byte for byte, and the revision.
type snapshot struct {
	rev   uint64
	lists map[string]string
}

func (e *env) snapshot() snapshot {
	e.t.Helper()
	s := snapshot{rev: e.reg.Revision(), lists: map[string]string{}}
	for _, p := range listRoutes() {
		r := e.must(e.get(p+"?limit=10000"), http.StatusOK)
		s.lists[p] = r.header.Get("X-Total-Count") + "\n" + string(r.body)
	}
	return s
}

// unchangedSince fails if the registry differs from before.
func (e *env) unchangedSince(before snapshot) {
	e.t.Helper()
	after := e.snapshot()
	if after.rev != before.rev {
		e.t.Errorf("registry revision moved from %d to %d", before.rev, after.rev)
	}
	for p, b := range before.lists {
		if after.lists[p] != b {
			e.t.Errorf("%s changed:\nbefore %s\nafter  %s", p, b, after.lists[p])
		}
	}
}

// in returns e reporting to t, for use inside subtests.
func (e *env) in(t *testing.T) *env {
	c := *e
	c.t = t
	return &c
}

// openRegistry opens a quiet registry on a fresh memstore, for tests that
// build servers themselves.
func openRegistry(t *testing.T) *registry.Registry {
	t.Helper()
	reg, err := registry.Open(context.Background(), memstore.New(), registry.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatalf("open registry: %v", err)
	}
	t.Cleanup(func() { reg.Close() })
	return reg
}

// decodeError checks an error answer's status and content type and
// decodes its body strictly into v (apiError or docError).
func decodeError(t *testing.T, r *resp, status int, v any) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d: %s", r.status, status, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("error Content-Type %q, want application/json", ct)
	}
	dec := json.NewDecoder(bytes.NewReader(r.body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("error body not in the {\"detail\": {...}} shape: %v: %s", err, r.body)
	}
}
