package registry_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cryptomesh/cryptomesh/registry"
	"github.com/cryptomesh/cryptomesh/registry/registrytest"
)

// logStore keeps appended records in memory so a test can reopen a
// registry from exactly what the first one logged.
type logStore struct {
	mu      sync.Mutex
	records []registry.Record
}

type done struct{}

func (done) Wait(context.Context) error { return nil }

func (s *logStore) Load(_ context.Context, apply func(registry.Record) error) error {
	s.mu.Lock()
	recs := append([]registry.Record(nil), s.records...)
	s.mu.Unlock()
	for _, r := range recs {
		if err := apply(r); err != nil {
			return err
		}
	}
	return nil
}

func (s *logStore) Append(rec registry.Record) (registry.Pending, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	// Keep a deep copy: the log must not alias registry memory.
	raw, err := json.Marshal(rec)
	if err != nil {
		return nil, err
	}
	var cp registry.Record
	if err := json.Unmarshal(raw, &cp); err != nil {
		return nil, err
	}
	s.records = append(s.records, cp)
	return done{}, nil
}

func (s *logStore) Close() error { return nil }

func open(t *testing.T, st registry.Store, opts ...registry.Option) *registry.Registry {
	t.Helper()
	clock := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	n := 0
	opts = append([]registry.Option{
		registry.WithClock(func() time.Time { return clock }),
		registry.WithIDGenerator(func() string { n++; return fmt.Sprintf("gen-%d", n) }),
	}, opts...)
	r, err := registry.Open(context.Background(), st, opts...)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	return r
}

// create is registrytest.Create with the test given last, which reads
// better in long operation lists.
func create(kind registry.Kind, js string) func(t *testing.T) registry.Op {
	return func(t *testing.T) registry.Op { return registrytest.Create(t, kind, js) }
}

func TestCreateAppliesDefaultsAndDerivedLists(t *testing.T) {
	r := open(t, &logStore{})
	registrytest.Seed(t, r)
	v := r.View()
	fn, err := v.Get(registry.KindFunction, "f1")
	if err != nil {
		t.Fatal(err)
	}
	f := fn.(*registry.Function)
	if f.DeploymentStatus != "pending" || f.Timeout != "60s" || f.CreatedAt != "2026-01-02T03:04:05.000000Z" {
		t.Fatalf("defaults not applied: %+v", f)
	}
	ep, _ := v.Get(registry.KindEndpoint, "e1")
	if e := ep.(*registry.Endpoint); e.WorkloadAddress != "127.0.0.1:8080" || e.Protocol != "http" {
		t.Fatalf("endpoint defaults not applied: %+v", e)
	}
	svc, _ := v.Get(registry.KindService, "s1")
	if got := svc.(*registry.Service).Microservices; len(got) != 1 || got[0] != "m1" {
		t.Fatalf("service.microservices = %v, want [m1]", got)
	}
	ms, _ := v.Get(registry.KindMicroservice, "m1")
	if got := ms.(*registry.Microservice).Functions; len(got) != 1 || got[0] != "f1" {
		t.Fatalf("microservice.functions = %v, want [f1]", got)
	}
}

func TestValidationReportsEveryField(t *testing.T) {
	r := open(t, &logStore{})
	registrytest.Seed(t, r)
	before := registrytest.Dump(t, r)
	tests := []struct {
		name   string
		kind   registry.Kind
		js     string
		code   registry.Code
		fields []string
	}{
		{"every bad field at once", registry.KindFunction,
			`{"function_id":"-bad","resources":{"cpu":0,"ram":"12XB","gpu":1},"deployment_status":"done","timeout":"-1s","colour":"red"}`,
			registry.CodeInvalid, []string{"colour", "deployment_status", "function_id", "resources.cpu", "resources.gpu", "resources.ram", "timeout"}},
		{"wrong types", registry.KindSecurityPolicy, `{"roles":"ml-engineer","requires_authentication":"yes","mode":3}`,
			registry.CodeInvalid, []string{"mode", "requires_authentication", "roles"}},
		{"permission grammar", registry.KindRole, `{"name":"x","permissions":["execute:[","delete","read:","write:ml_*",7]}`,
			registry.CodeInvalid, []string{"permissions[0]", "permissions[1]", "permissions[2]", "permissions[4]"}},
		{"required fields", registry.KindStorage, `{"source_path":"  "}`,
			registry.CodeInvalid, []string{"capacity", "sink_path", "source_path"}},
		{"auth policy without roles", registry.KindSecurityPolicy, `{"requires_authentication":true}`,
			registry.CodeInvalid, []string{"roles"}},
		{"dangling references", registry.KindFunction, `{"microservice_id":"nope","endpoint_id":"e9","storage":"st9"}`,
			registry.CodeInvalid, []string{"endpoint_id", "microservice_id", "storage"}},
		{"dangling role in embedded policy", registry.KindEndpoint, `{"security_policy":{"roles":["ghost"],"requires_authentication":true}}`,
			registry.CodeInvalid, []string{"security_policy.roles[0]"}},
		{"id too long", registry.KindRole, `{"role_id":"` + strings.Repeat("a", 129) + `","name":"x"}`,
			registry.CodeInvalid, []string{"role_id"}},
		{"duplicate id", registry.KindRole, `{"role_id":"analyst","name":"x"}`, registry.CodeConflict, nil},
		{"child under another parent", registry.KindService, `{"security_policy":"sp1","microservices":["m1"]}`, registry.CodeConflict, nil},
		{"embedded policy conflicts", registry.KindEndpoint, `{"endpoint_id":"e2","security_policy":{"sp_id":"sp1","roles":[],"requires_authentication":false}}`, registry.CodeConflict, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := r.Do(context.Background(), create(tt.kind, tt.js)(t))
			if got := registry.CodeOf(err); got != tt.code {
				t.Fatalf("code = %d, want %d (err %v)", got, tt.code, err)
			}
			var e *registry.Error
			if !asRegistryError(err, &e) {
				t.Fatalf("not a registry error: %v", err)
			}
			var fields []string
			for _, f := range e.Fields {
				fields = append(fields, f.Field)
			}
			if strings.Join(fields, ",") != strings.Join(tt.fields, ",") {
				t.Fatalf("fields = %v, want %v (%v)", fields, tt.fields, err)
			}
			if after := registrytest.Dump(t, r); after != before {
				t.Fatalf("a refused write changed the registry")
			}
		})
	}
}

func asRegistryError(err error, e **registry.Error) bool {
	x, ok := err.(*registry.Error)
	*e = x
	return ok
}

func TestEmbeddedCompatibilityObjects(t *testing.T) {
	r := open(t, &logStore{})
	registrytest.Seed(t, r)
	res := registrytest.MustDo(t, r,
		create(registry.KindEndpoint, `{"endpoint_id":"e2","policy_id":"ignored","security_policy":{"roles":["analyst"],"requires_authentication":true}}`)(t),
		create(registry.KindFunction, `{"function_id":"f2","storage":{"capacity":"10GB","source_path":"/in","sink_path":"/out"}}`)(t),
	)
	if got := res[0].Value.(*registry.Endpoint).SecurityPolicy; got != "e2.policy" {
		t.Fatalf("embedded policy id = %q, want e2.policy", got)
	}
	if got := res[1].Value.(*registry.Function).Storage; got != "f2.storage" {
		t.Fatalf("embedded storage id = %q, want f2.storage", got)
	}
	// Same content again is fine; different content is a conflict.
	registrytest.MustDo(t, r, create(registry.KindEndpoint, `{"endpoint_id":"e3","security_policy":{"sp_id":"e2.policy","roles":["analyst"],"requires_authentication":true}}`)(t))
	_, err := r.Do(context.Background(), create(registry.KindEndpoint, `{"endpoint_id":"e4","security_policy":{"sp_id":"e2.policy","roles":["ml-engineer"],"requires_authentication":true}}`)(t))
	if registry.CodeOf(err) != registry.CodeConflict {
		t.Fatalf("different embedded content: got %v, want conflict", err)
	}
}

func TestPartialUpdate(t *testing.T) {
	r := open(t, &logStore{})
	registrytest.Seed(t, r)
	res := registrytest.MustDo(t, r, registry.Op{Type: registry.OpUpdate, Kind: registry.KindFunction, ID: "f1",
		Body: registrytest.Body(t, `{"resources":{"cpu":4},"image":"img:2","endpoint_id":null}`)})
	f := res[0].Value.(*registry.Function)
	if f.Resources.CPU != 4 || f.Resources.RAM != "512MB" || f.Image != "img:2" || f.EndpointID != "e1" {
		t.Fatalf("partial update wrong: %+v %+v", f, f.Resources)
	}
	if f.CreatedAt != "2026-01-02T03:04:05.000000Z" {
		t.Fatalf("created_at changed: %q", f.CreatedAt)
	}
	rev := r.Revision()
	res = registrytest.MustDo(t, r, registry.Op{Type: registry.OpUpdate, Kind: registry.KindFunction, ID: "f1", Body: registrytest.Body(t, `{"image":"img:2"}`)})
	if res[0].Outcome != registry.Unchanged || r.Revision() != rev {
		t.Fatalf("no-op update: outcome %s, revision %d -> %d", res[0].Outcome, rev, r.Revision())
	}
	_, err := r.Do(context.Background(), registry.Op{Type: registry.OpUpdate, Kind: registry.KindFunction, ID: "f1", Body: registrytest.Body(t, `{"function_id":"other"}`)})
	if registry.CodeOf(err) != registry.CodeInvalid {
		t.Fatalf("id change: got %v", err)
	}
	_, err = r.Do(context.Background(), registry.Op{Type: registry.OpUpdate, Kind: registry.KindFunction, ID: "nope", Body: registrytest.Body(t, `{}`)})
	if registry.CodeOf(err) != registry.CodeNotFound {
		t.Fatalf("update of missing: got %v", err)
	}
}

func TestDeleteReferencesAndCascade(t *testing.T) {
	r := open(t, &logStore{})
	registrytest.Seed(t, r)
	registrytest.MustDo(t, r, create(registry.KindFunctionState, `{"state_id":"st1","function_id":"f1","state":"running"}`)(t))
	del := func(k registry.Kind, id string, cascade bool) error {
		_, err := r.Do(context.Background(), registry.Op{Type: registry.OpDelete, Kind: k, ID: id, Cascade: cascade})
		return err
	}
	for _, tt := range []struct {
		k       registry.Kind
		id      string
		cascade bool
		want    string
	}{
		{registry.KindService, "s1", false, "microservice 'm1' (service_id)"},
		{registry.KindRole, "analyst", true, "security policy 'sp1' (roles)"},
		{registry.KindEndpoint, "e1", true, "function 'f1' (endpoint_id)"},
		{registry.KindSecurityPolicy, "sp1", true, "endpoint 'e1' (security_policy)"},
	} {
		err := del(tt.k, tt.id, tt.cascade)
		if registry.CodeOf(err) != registry.CodeConflict || !strings.Contains(err.Error(), tt.want) {
			t.Fatalf("delete %s %s: got %v, want conflict naming %s", tt.k, tt.id, err, tt.want)
		}
	}
	if err := del(registry.KindService, "s1", true); err != nil {
		t.Fatalf("cascade delete: %v", err)
	}
	v := r.View()
	for _, c := range []struct {
		k  registry.Kind
		id string
	}{{registry.KindService, "s1"}, {registry.KindMicroservice, "m1"}, {registry.KindFunction, "f1"}, {registry.KindFunctionState, "st1"}} {
		if _, err := v.Get(c.k, c.id); registry.CodeOf(err) != registry.CodeNotFound {
			t.Fatalf("%s %s survived the cascade: %v", c.k, c.id, err)
		}
	}
	if err := del(registry.KindEndpoint, "e1", false); err != nil {
		t.Fatalf("endpoint no longer referenced: %v", err)
	}
	if err := del(registry.KindEndpoint, "e1", false); registry.CodeOf(err) != registry.CodeNotFound {
		t.Fatalf("second delete: %v", err)
	}
}

func TestHistoryRetentionAndLatest(t *testing.T) {
	st := &logStore{}
	r := open(t, st, registry.WithHistoryLimit(3))
	registrytest.Seed(t, r)
	for i := range 5 {
		registrytest.MustDo(t, r, create(registry.KindFunctionState, fmt.Sprintf(`{"state_id":"z%d","function_id":"f1","state":"running"}`, 9-i))(t))
	}
	v := r.View()
	items, total, err := v.List(registry.KindFunctionState, registry.ListOptions{Filters: map[string]string{"function_id": "f1"}})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, it := range items {
		ids = append(ids, it.(*registry.FunctionState).StateID)
	}
	// Commit order, not id order; only the newest three kept.
	if strings.Join(ids, ",") != "z7,z6,z5" || total != 3 {
		t.Fatalf("history = %v (total %d), want z7,z6,z5", ids, total)
	}
	latest, err := v.Latest(registry.KindFunctionState, "f1")
	if err != nil || latest.(*registry.FunctionState).StateID != "z5" {
		t.Fatalf("latest = %v, %v; want z5", latest, err)
	}
	page, _, _ := v.List(registry.KindFunctionState, registry.ListOptions{After: "z7", Limit: 1})
	if len(page) != 1 || page[0].(*registry.FunctionState).StateID != "z6" {
		t.Fatalf("page after z7 = %v", page)
	}
	// The retention deletes were logged, so replay gives the same history.
	r2 := open(t, st, registry.WithHistoryLimit(3))
	if registrytest.Dump(t, r2) != registrytest.Dump(t, r) {
		t.Fatalf("replay differs:\n%s\nvs\n%s", registrytest.Dump(t, r2), registrytest.Dump(t, r))
	}
}

func TestDoIsAtomicAndDoEachIsPerItem(t *testing.T) {
	r := open(t, &logStore{})
	registrytest.Seed(t, r)
	before := registrytest.Dump(t, r)
	_, err := r.Do(context.Background(),
		create(registry.KindRole, `{"role_id":"ok","name":"fine"}`)(t),
		create(registry.KindRole, `{"role_id":"bad"}`)(t))
	var e *registry.Error
	if !asRegistryError(err, &e) || e.Index != 1 {
		t.Fatalf("want error at index 1, got %v", err)
	}
	if registrytest.Dump(t, r) != before {
		t.Fatal("a failed batch left changes")
	}
	rev := r.Revision()
	res, err := r.DoEach(context.Background(),
		create(registry.KindFunctionState, `{"function_id":"f1","state":"running"}`)(t),
		create(registry.KindFunctionState, `{"function_id":"ghost","state":"running"}`)(t),
		create(registry.KindFunctionResult, `{"function_id":"f1","metadata":{"status":"200"}}`)(t))
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Err != nil || res[1].Err == nil || res[2].Err != nil {
		t.Fatalf("per-item results wrong: %+v", res)
	}
	if r.Revision() != rev+1 {
		t.Fatalf("DoEach used %d revisions, want 1", r.Revision()-rev)
	}
}

func TestReplayRebuildsIdenticalState(t *testing.T) {
	st := &logStore{}
	r := open(t, st)
	registrytest.Seed(t, r)
	registrytest.MustDo(t, r, create(registry.KindFunction, `{"microservice_id":"m1","storage":{"capacity":"1TB","source_path":"/a","sink_path":"/b"}}`)(t))
	registrytest.MustDo(t, r, registry.Op{Type: registry.OpUpdate, Kind: registry.KindEndpoint, ID: "e1", Body: registrytest.Body(t, `{"protocol":"grpc"}`)})
	registrytest.MustDo(t, r, create(registry.KindEndpointState, `{"endpoint_id":"e1","state":"warm"}`)(t))
	r2 := open(t, st)
	if a, b := registrytest.Dump(t, r), registrytest.Dump(t, r2); a != b {
		t.Fatalf("replay differs:\n%s\nvs\n%s", a, b)
	}
	if r2.Revision() != r.Revision() {
		t.Fatalf("revision %d after replay, want %d", r2.Revision(), r.Revision())
	}
}

func TestSubscribeFiltersByKind(t *testing.T) {
	r := open(t, &logStore{})
	sub := r.Subscribe(registry.KindFunction)
	defer sub.Close()
	registrytest.Seed(t, r)
	registrytest.MustDo(t, r, create(registry.KindFunctionState, `{"function_id":"f1","state":"running"}`)(t))
	registrytest.MustDo(t, r, registry.Op{Type: registry.OpUpdate, Kind: registry.KindFunction, ID: "f1", Body: registrytest.Body(t, `{"image":"x"}`)})
	var got []string
	deadline := time.After(10 * time.Second)
	for len(got) < 2 {
		select {
		case ev := <-sub.C():
			if ev.Committed.IsZero() || ev.Committed.After(time.Now()) {
				t.Fatalf("event of revision %d has commit time %v", ev.Rev, ev.Committed)
			}
			if r.Revision() < ev.Rev {
				t.Fatalf("event of revision %d arrived before readers see it (at %d)", ev.Rev, r.Revision())
			}
			for _, c := range ev.Changes {
				got = append(got, fmt.Sprintf("%d:%s/%s", ev.Rev, c.Kind, c.ID))
			}
		case <-deadline:
			t.Fatalf("events so far: %v", got)
		}
	}
	if strings.Join(got, " ") != "1:functions/f1 3:functions/f1" {
		t.Fatalf("events = %v", got)
	}
}

func TestPutIsDeclarative(t *testing.T) {
	r := open(t, &logStore{})
	registrytest.Seed(t, r)
	put := func(k registry.Kind, id, js string) registry.Op {
		return registry.Op{Type: registry.OpPut, Kind: k, ID: id, Body: registrytest.Body(t, js)}
	}
	res := registrytest.MustDo(t, r,
		put(registry.KindRole, "analyst", `{"name":"Analyst","permissions":["read:report_*"]}`),
		put(registry.KindRole, "new-role", `{"name":"New"}`),
		put(registry.KindFunction, "f1", `{"microservice_id":"m1","endpoint_id":"e1","resources":{"cpu":1,"ram":"512MB"}}`),
		registry.Op{Type: registry.OpCreate, Kind: registry.KindRole, IfAbsent: true, Body: registrytest.Body(t, `{"role_id":"ml-engineer","name":"ml-engineer"}`)},
	)
	want := []registry.Outcome{registry.Unchanged, registry.Created, registry.Unchanged, registry.Unchanged}
	for i, w := range want {
		if res[i].Outcome != w {
			t.Fatalf("op %d: outcome %s, want %s", i, res[i].Outcome, w)
		}
	}
	// A full replacement drops what the body leaves out.
	res = registrytest.MustDo(t, r, put(registry.KindFunction, "f1", `{"microservice_id":"m1"}`))
	f := res[0].Value.(*registry.Function)
	if res[0].Outcome != registry.Updated || f.EndpointID != "" || f.Resources != nil || f.Timeout != "60s" {
		t.Fatalf("replace: %s %+v", res[0].Outcome, f)
	}
	rev := r.Revision()
	registrytest.MustDo(t, r, put(registry.KindFunction, "f1", `{"microservice_id":"m1"}`))
	if r.Revision() != rev {
		t.Fatal("re-applying an identical body used a revision")
	}
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func jsonReader(s string) *strings.Reader { return strings.NewReader(s) }

func TestJoinTokenRecordsAreInternal(t *testing.T) {
	r := open(t, &logStore{})
	res := registrytest.MustDo(t, r, create(registry.KindJoinToken, `{"jti":"j1","node":"n1","endpoint":"e1","issued_at":"2026-01-02T03:04:05Z","expires_at":"2026-01-03T03:04:05Z"}`)(t))
	if tok := res[0].Value.(*registry.JoinToken); tok.Node != "n1" || tok.Revoked {
		t.Fatalf("token record: %+v", tok)
	}
	registrytest.MustDo(t, r, registry.Op{Type: registry.OpUpdate, Kind: registry.KindJoinToken, ID: "j1", Body: registrytest.Body(t, `{"revoked":true}`)})
	if o := r.View().Object(registry.KindJoinToken, "j1"); o == nil || !o.Value.(*registry.JoinToken).Revoked {
		t.Fatal("revocation not stored")
	}
	_, err := r.Do(context.Background(), create(registry.KindJoinToken, `{"jti":"j2","node":"n1","issued_at":"yesterday","expires_at":"2026-01-03T03:04:05Z"}`)(t))
	if registry.CodeOf(err) != registry.CodeInvalid {
		t.Fatalf("bad time accepted: %v", err)
	}
	if !registry.KindJoinToken.Internal() || slices.Contains(registry.Kinds(), registry.KindJoinToken) {
		t.Fatal("join tokens must stay out of the public kinds")
	}
}

func TestValidID(t *testing.T) {
	for id, want := range map[string]bool{
		"a": true, "A9": true, "9a": true, "a.b_c-d": true, strings.Repeat("x", 128): true,
		"": false, "-a": false, ".a": false, "_a": false, "a b": false, "a/b": false, "é": false,
		strings.Repeat("x", 129): false, "a:b": false,
	} {
		if got := registry.ValidID(id); got != want {
			t.Errorf("ValidID(%q) = %v, want %v", id, got, want)
		}
	}
}
