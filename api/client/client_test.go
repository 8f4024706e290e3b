package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cryptomesh/cryptomesh/api"
	"github.com/cryptomesh/cryptomesh/api/client"
	"github.com/cryptomesh/cryptomesh/registry"
	"github.com/cryptomesh/cryptomesh/registry/mesh"
	"github.com/cryptomesh/cryptomesh/registry/store/memstore"
)

const token = "client-test-admin-token-5d1e"

// server is a real API server over a fresh in-memory registry, reached
// over HTTP on loopback; it records what clients sent.
type server struct {
	url      string
	reg      *registry.Registry
	requests atomic.Int64
	mu       sync.Mutex
	agents   []string
}

func newServer(t *testing.T, opts ...api.Option) *server {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	reg, err := registry.Open(context.Background(), memstore.New(), registry.WithLogger(log))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Close() })
	tokens, err := api.NewAdminTokens(nil, []string{token}, log)
	if err != nil {
		t.Fatal(err)
	}
	s, err := api.New(reg, append([]api.Option{api.WithLogger(log), api.WithAuthenticator(tokens)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	srv := &server{reg: reg}
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		srv.requests.Add(1)
		srv.mu.Lock()
		srv.agents = append(srv.agents, r.UserAgent())
		srv.mu.Unlock()
		s.Handler().ServeHTTP(w, r)
	}))
	t.Cleanup(hs.Close)
	srv.url = hs.URL
	return srv
}

func newClient(t *testing.T, url string, opts ...client.Option) *client.Client {
	t.Helper()
	c, err := client.New(url, append([]client.Option{client.WithToken(token)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func must[T any](t *testing.T) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

// wantStatus checks that err is an *Error with status.
func wantStatus(t *testing.T, err error, status int) *client.Error {
	t.Helper()
	var e *client.Error
	if !errors.As(err, &e) || e.Status != status {
		t.Fatalf("got %v, want a %d *client.Error", err, status)
	}
	if client.StatusOf(err) != status {
		t.Fatalf("StatusOf = %d", client.StatusOf(err))
	}
	return e
}

// seedMesh creates a policy, an endpoint, a service, a microservice and
// a function, with typed values.
func seedMesh(t *testing.T, ctx context.Context, c *client.Client) {
	t.Helper()
	must[registry.Role](t)(c.Roles().Create(ctx, registry.Role{RoleID: "r1", Name: "reader", Permissions: []string{"read"}}))
	must[registry.SecurityPolicy](t)(c.SecurityPolicies().Create(ctx, registry.SecurityPolicy{SPID: "p1", Roles: []string{"r1"}, RequiresAuthentication: true}))
	must[registry.Endpoint](t)(c.Endpoints().Create(ctx, registry.Endpoint{EndpointID: "e1", SecurityPolicy: "p1", Address: "127.0.0.1:9000"}))
	must[registry.Service](t)(c.Services().Create(ctx, registry.Service{ServiceID: "s1", SecurityPolicy: "p1"}))
	must[registry.Microservice](t)(c.Microservices().Create(ctx, registry.Microservice{MicroserviceID: "m1", ServiceID: "s1"}))
	must[registry.Function](t)(c.Functions().Create(ctx, registry.Function{FunctionID: "f1", MicroserviceID: "m1", EndpointID: "e1",
		Resources: &registry.Resources{CPU: 2, RAM: "1GB"}}))
}

func TestTypedCRUD(t *testing.T) {
	ctx := context.Background()
	srv := newServer(t)
	c := newClient(t, srv.url)
	seedMesh(t, ctx, c)

	// Zero values of a typed body are left out: the server fills in the
	// defaults and assigns ids.
	fn := must[registry.Function](t)(c.Functions().Get(ctx, "f1"))
	if fn.DeploymentStatus != "pending" || fn.Timeout != "60s" || fn.CreatedAt == "" || fn.Resources.CPU != 2 {
		t.Errorf("function stored as %+v", fn)
	}
	role := must[registry.Role](t)(c.Roles().Create(ctx, registry.Role{Name: "anonymous"}))
	if len(role.RoleID) != 36 || role.Permissions == nil {
		t.Errorf("role created as %+v", role)
	}
	ms := must[registry.Microservice](t)(c.Microservices().Get(ctx, "m1"))
	if strings.Join(ms.Functions, ",") != "f1" {
		t.Errorf("derived functions %v", ms.Functions)
	}

	// Partial updates: a struct sends its non-empty fields, a map anything.
	upd := must[registry.Function](t)(c.Functions().Update(ctx, "f1", registry.Function{Image: "img:2", Resources: &registry.Resources{CPU: 4, RAM: "1GB"}}))
	if upd.Image != "img:2" || upd.Resources.CPU != 4 || upd.EndpointID != "e1" {
		t.Errorf("after update %+v", upd)
	}
	upd = must[registry.Function](t)(c.Functions().Update(ctx, "f1", map[string]any{"image": ""}))
	if upd.Image != "" {
		t.Errorf("a map update did not clear the image: %+v", upd)
	}
	raw := must[json.RawMessage](t)(client.For[json.RawMessage](c, registry.KindFunction).Update(ctx, "f1", json.RawMessage(`{"deployment_status": "deployed"}`)))
	if !strings.Contains(string(raw), `"deployment_status":"deployed"`) {
		t.Errorf("raw update answered %s", raw)
	}
	generic := must[map[string]any](t)(client.For[map[string]any](c, registry.KindService).Get(ctx, "s1"))
	if generic["security_policy"] != "p1" {
		t.Errorf("untyped get %v", generic)
	}

	// Deletes: references block, cascade follows containment.
	err := c.Services().Delete(ctx, "s1", client.DeleteOptions{})
	if e := wantStatus(t, err, http.StatusConflict); !strings.Contains(e.Message, "microservice 'm1'") {
		t.Errorf("409 message %q", e.Message)
	}
	if err := c.Services().Delete(ctx, "s1", client.DeleteOptions{Cascade: true}); err != nil {
		t.Fatal(err)
	}
	_, err = c.Functions().Get(ctx, "f1")
	if e := wantStatus(t, err, http.StatusNotFound); e.Message != "Resource 'f1' not found" {
		t.Errorf("404 message %q", e.Message)
	}
	wantStatus(t, c.Roles().Delete(ctx, "nope", client.DeleteOptions{}), http.StatusNotFound)

	// Ids are escaped in paths.
	_, err = c.Roles().Get(ctx, "a/b?c")
	wantStatus(t, err, http.StatusNotFound)
}

func TestInvalidInputNamesTheFields(t *testing.T) {
	ctx := context.Background()
	c := newClient(t, newServer(t).url)
	_, err := c.Functions().Create(ctx, map[string]any{"resources": map[string]any{"cpu": 0, "ram": "lots"}, "colour": "red"})
	e := wantStatus(t, err, http.StatusUnprocessableEntity)
	got := map[string]bool{}
	for _, f := range e.Fields {
		got[f.Field] = true
	}
	if !got["resources.cpu"] || !got["resources.ram"] || !got["colour"] {
		t.Fatalf("fields %+v", e.Fields)
	}
	if !strings.Contains(e.Error(), "resources.cpu: must be greater than 0") {
		t.Errorf("Error() = %q", e.Error())
	}
	_, err = c.Roles().List(ctx, client.ListOptions{Filters: map[string]string{"colour": "red"}})
	wantStatus(t, err, http.StatusUnprocessableEntity)
}

func TestListPaging(t *testing.T) {
	ctx := context.Background()
	srv := newServer(t)
	c := newClient(t, srv.url)
	var want []string
	for i := range 25 {
		id := fmt.Sprintf("r%02d", i)
		want = append(want, id)
		must[registry.Role](t)(c.Roles().Create(ctx, map[string]any{"role_id": id, "name": id}))
	}
	page := must[*client.Page[registry.Role]](t)(c.Roles().List(ctx, client.ListOptions{Limit: 10}))
	if len(page.Items) != 10 || page.Total != 25 || page.Next != "r09" {
		t.Fatalf("first page: %d items, total %d, next %q", len(page.Items), page.Total, page.Next)
	}
	last := must[*client.Page[registry.Role]](t)(c.Roles().List(ctx, client.ListOptions{Limit: 10, After: "r19"}))
	if len(last.Items) != 5 || last.Next != "" {
		t.Fatalf("last page: %d items, next %q", len(last.Items), last.Next)
	}

	tests := []struct {
		name     string
		limit    int
		requests int64
	}{
		{"pages of 10", 10, 3},
		{"pages of 5, the last one full", 5, 6}, // a full last page needs one more, empty, request
		{"one page", 0, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := srv.requests.Load()
			all := must[[]registry.Role](t)(c.Roles().ListAll(ctx, client.ListOptions{Limit: tt.limit}))
			var got []string
			for _, r := range all {
				got = append(got, r.RoleID)
			}
			if strings.Join(got, ",") != strings.Join(want, ",") {
				t.Fatalf("ids %v", got)
			}
			if n := srv.requests.Load() - before; n != tt.requests {
				t.Errorf("%d requests, want %d", n, tt.requests)
			}
		})
	}

	// Stopping early stops paging.
	before := srv.requests.Load()
	n := 0
	for _, err := range c.Roles().All(ctx, client.ListOptions{Limit: 10}) {
		if err != nil {
			t.Fatal(err)
		}
		if n++; n == 3 {
			break
		}
	}
	if srv.requests.Load()-before != 1 {
		t.Errorf("breaking after 3 items sent %d requests", srv.requests.Load()-before)
	}

	// Filters, and history in commit order.
	seedMesh(t, ctx, c)
	must[registry.Function](t)(c.Functions().Create(ctx, map[string]any{"function_id": "f0", "microservice_id": "m1"}))
	must[registry.Function](t)(c.Functions().Create(ctx, map[string]any{"function_id": "g1"}))
	fns := must[[]registry.Function](t)(c.Functions().ListAll(ctx, client.ListOptions{Filters: map[string]string{"microservice_id": "m1"}}))
	if len(fns) != 2 || fns[0].FunctionID != "f0" || fns[1].FunctionID != "f1" {
		t.Errorf("filtered functions %+v", fns)
	}
	for _, id := range []string{"z", "a", "m"} {
		must[registry.FunctionState](t)(c.FunctionStates().Create(ctx, registry.FunctionState{StateID: id, FunctionID: "f1", State: "running"}))
	}
	states := must[[]registry.FunctionState](t)(c.FunctionStates().ListAll(ctx, client.ListOptions{Limit: 2}))
	if len(states) != 3 || states[0].StateID != "z" || states[2].StateID != "m" {
		t.Errorf("history not in commit order: %+v", states)
	}
	latest := must[registry.FunctionState](t)(c.LatestFunctionState(ctx, "f1"))
	if latest.StateID != "m" {
		t.Errorf("latest state %+v", latest)
	}
	_, err := c.LatestEndpointState(ctx, "e1")
	wantStatus(t, err, http.StatusNotFound)
}

func TestReport(t *testing.T) {
	ctx := context.Background()
	c := newClient(t, newServer(t).url)
	seedMesh(t, ctx, c)
	items := []client.ReportItem{
		{Kind: client.ReportFunctionState, Data: registry.FunctionState{FunctionID: "f1", State: "completed"}},
		{Kind: client.ReportFunctionResult, Data: map[string]any{"function_id": "f1", "metadata": map[string]any{"rows": "10"}}},
		{Kind: client.ReportEndpointState, Data: map[string]any{"endpoint_id": "e1", "state": "asleep"}},
	}
	answers := must[[]client.ReportAnswer](t)(c.Report(ctx, items))
	if len(answers) != 3 || answers[0].Status != 201 || answers[1].Status != 201 || answers[2].Status != 422 {
		t.Fatalf("answers %+v", answers)
	}
	if answers[2].Err == nil || answers[2].Err.Fields[0].Field != "state" || answers[0].Err != nil {
		t.Errorf("item errors %+v %+v", answers[0].Err, answers[2].Err)
	}
	if _, ok := items[0].Data.(registry.FunctionState); !ok {
		t.Error("Report changed the caller's items")
	}
	if _, err := c.LatestEndpointState(ctx, "e1"); client.StatusOf(err) != http.StatusNotFound {
		t.Errorf("a refused endpoint state became the latest: %v", err)
	}
}

func readExample(t *testing.T, rel string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "examples", rel))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestApplyAndExport(t *testing.T) {
	ctx := context.Background()
	a := newServer(t)
	c := newClient(t, a.url)
	doc := readExample(t, "ml-pipeline/mesh.yaml")

	plan := must[*mesh.Report](t)(c.Apply(ctx, doc, "", true))
	if !plan.DryRun || plan.Created == 0 || a.reg.Revision() != 0 {
		t.Fatalf("dry run %+v at revision %d", plan, a.reg.Revision())
	}
	rep := must[*mesh.Report](t)(c.Apply(ctx, doc, "application/yaml", false))
	if rep.Created != plan.Created || rep.DryRun {
		t.Fatalf("apply %+v, plan %+v", rep, plan)
	}
	legacy := must[*mesh.Report](t)(c.Apply(ctx, readExample(t, "legacy/sentiment.yaml"), "", false))
	if len(legacy.Warnings) != 2 {
		t.Errorf("legacy warnings %q", legacy.Warnings)
	}

	bad := strings.Replace(string(doc), "capacity: 2TB", "capacity: lots", 1)
	_, err := c.Apply(ctx, []byte(bad), "", false)
	e := wantStatus(t, err, http.StatusUnprocessableEntity)
	line := 1 + strings.Count(bad[:strings.Index(bad, "capacity: lots")], "\n")
	if f := e.Fields[0]; f.Field != "storage.raw-data.capacity" || f.Line != line {
		t.Errorf("document error %+v, want line %d", e.Fields, line)
	}
	if !strings.Contains(e.Fields[0].String(), fmt.Sprintf("storage.raw-data.capacity (line %d): ", line)) {
		t.Errorf("FieldError.String() = %q", e.Fields[0].String())
	}
	_, err = c.Apply(ctx, []byte(`{"roles": {"r": {"name": 5}}}`), "", false)
	if e := wantStatus(t, err, http.StatusUnprocessableEntity); e.Fields[0].Field != "roles.r.name" || e.Fields[0].Line != 0 {
		t.Errorf("JSON document error %+v", e.Fields)
	}
	_, err = c.Apply(ctx, nil, "", false)
	wantStatus(t, err, http.StatusBadRequest)

	exported := must[[]byte](t)(c.Export(ctx))
	b := newServer(t)
	cb := newClient(t, b.url)
	must[*mesh.Report](t)(cb.Apply(ctx, exported, "application/yaml", false))
	if again := must[[]byte](t)(cb.Export(ctx)); string(again) != string(exported) {
		t.Fatal("export → apply → export differs")
	}
	oa := must[[]byte](t)(c.OpenAPI(ctx))
	if !json.Valid(oa) || !strings.Contains(string(oa), `"/api/v1/apply"`) {
		t.Errorf("OpenAPI document %.200s", oa)
	}
	if got := client.DocumentContentType([]byte("  \n{\"roles\": {}}")); got != "application/json" {
		t.Errorf("DocumentContentType(JSON) = %q", got)
	}
	if got := client.DocumentContentType([]byte("roles: {}")); got != "application/yaml" {
		t.Errorf("DocumentContentType(YAML) = %q", got)
	}
}

func TestHealthAndReadiness(t *testing.T) {
	ctx := context.Background()
	var broken atomic.Bool
	srv := newServer(t, api.WithReadiness("xds", func() error {
		if broken.Load() {
			return errors.New("not serving")
		}
		return nil
	}))
	// The probes need no credential.
	c, err := client.New(srv.url)
	if err != nil {
		t.Fatal(err)
	}
	if h := must[*client.Health](t)(c.Health(ctx)); h.Status != "ok" {
		t.Errorf("health %+v", h)
	}
	if h := must[*client.Health](t)(c.Ready(ctx)); h.Status != "ok" || h.Components["xds"] != "ok" {
		t.Errorf("ready %+v", h)
	}
	broken.Store(true)
	h, err := c.Ready(ctx)
	e := wantStatus(t, err, http.StatusServiceUnavailable)
	if h == nil || h.Components["xds"] != "not serving" || !strings.Contains(e.Message, "xds: not serving") {
		t.Errorf("not ready: %+v %v", h, err)
	}
	// Without a credential everything else is refused.
	_, err = c.Roles().List(ctx, client.ListOptions{})
	wantStatus(t, err, http.StatusUnauthorized)
}

func TestCredentialsAndOptions(t *testing.T) {
	ctx := context.Background()
	srv := newServer(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "admin-token")
	if err := os.WriteFile(file, []byte("# rotated 2024-06-01\n\n  "+token+"  \nold-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := client.New(srv.url+"/api/v1/", client.WithTokenFile(file), client.WithUserAgent("cryptomesh-test/1"))
	if err != nil {
		t.Fatal(err)
	}
	must[*client.Page[registry.Role]](t)(c.Roles().List(ctx, client.ListOptions{}))
	srv.mu.Lock()
	ua := srv.agents[len(srv.agents)-1]
	srv.mu.Unlock()
	if ua != "cryptomesh-test/1" {
		t.Errorf("User-Agent %q", ua)
	}
	if c.BaseURL() != srv.url {
		t.Errorf("BaseURL %q, want %q", c.BaseURL(), srv.url)
	}

	wrong := newClient(t, srv.url, client.WithToken("not-the-token"))
	_, err = wrong.Roles().List(ctx, client.ListOptions{})
	if e := wantStatus(t, err, http.StatusUnauthorized); e.Message != "invalid credentials" {
		t.Errorf("401 message %q", e.Message)
	}

	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("# nothing\n\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		url  string
		opts []client.Option
		is   error
		msg  string
	}{
		{"missing token file", srv.url, []client.Option{client.WithTokenFile(filepath.Join(dir, "nope"))}, fs.ErrNotExist, "read token file"},
		{"empty token file", srv.url, []client.Option{client.WithTokenFile(empty)}, nil, "holds no token"},
		{"token and file", srv.url, []client.Option{client.WithToken("x"), client.WithTokenFile(file)}, nil, "not both"},
		{"token with a newline", srv.url, []client.Option{client.WithToken("a\nb")}, nil, "line break"},
		{"nil http client", srv.url, []client.Option{client.WithHTTPClient(nil)}, nil, "nil client"},
		{"no scheme", "127.0.0.1:19000", nil, nil, "want http:// or https://"},
		{"ftp", "ftp://example.com", nil, nil, "want http:// or https://"},
		{"no host", "http://", nil, nil, "no host"},
		{"query", srv.url + "?x=1", nil, nil, "no query"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := client.New(tt.url, tt.opts...)
			if err == nil || !strings.Contains(err.Error(), tt.msg) || (tt.is != nil && !errors.Is(err, tt.is)) {
				t.Fatalf("got %v, want an error saying %q", err, tt.msg)
			}
		})
	}
}

func TestTransportFailures(t *testing.T) {
	// A port nobody listens on.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	c := newClient(t, "http://"+addr)
	_, err = c.Roles().Get(context.Background(), "r1")
	var ue *url.Error
	var oe *net.OpError
	if !errors.As(err, &ue) || !errors.As(err, &oe) || oe.Op != "dial" || client.StatusOf(err) != 0 {
		t.Fatalf("unreachable server: %v", err)
	}

	// An answer not in the API's error shape (a proxy in between).
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "upstream timed out", http.StatusBadGateway)
	}))
	defer proxy.Close()
	_, err = newClient(t, proxy.URL).Export(context.Background())
	if e := wantStatus(t, err, http.StatusBadGateway); e.Message != "Bad Gateway: upstream timed out" {
		t.Errorf("message %q", e.Message)
	}

	// A cancelled context.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = newClient(t, newServer(t).url).Health(ctx)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled call: %v", err)
	}
}
