package api_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"testing"
	"time"
)

// crudCase creates a second entity of one kind next to the seed mesh,
// then updates one field and checks another stays as it was.
type crudCase struct {
	route   string
	idField string
	id      string
	create  map[string]any
	patch   map[string]any
	changed string // field the patch changes
	want    any    // its value afterwards (JSON-decoded)
	kept    string // a field the patch must not touch
	keptVal any
}

func crudCases() []crudCase {
	return []crudCase{
		{"roles", "role_id", "r2",
			map[string]any{"role_id": "r2", "name": "writer", "permissions": []any{"write"}},
			map[string]any{"description": "writes things"}, "description", "writes things", "name", "writer"},
		{"security-policies", "sp_id", "p2",
			map[string]any{"sp_id": "p2", "roles": []any{"r1"}, "requires_authentication": true},
			map[string]any{"mode": "audit"}, "mode", "audit", "roles", []any{"r1"}},
		{"storage", "storage_id", "s2",
			map[string]any{"storage_id": "s2", "capacity": "1GB", "source_path": "/a", "sink_path": "/b"},
			map[string]any{"capacity": "2gb"}, "capacity", "2gb", "sink_path", "/b"},
		{"endpoints", "endpoint_id", "e2",
			map[string]any{"endpoint_id": "e2", "security_policy": "p1", "address": "10.0.0.2:9000", "resources": map[string]any{"cpu": 1, "ram": "1GB"}},
			map[string]any{"resources": map[string]any{"cpu": 4}}, "resources", map[string]any{"cpu": 4.0, "ram": "1GB"}, "security_policy", "p1"},
		{"endpoint-states", "state_id", "es2",
			map[string]any{"state_id": "es2", "endpoint_id": "e1", "state": "cold"},
			map[string]any{"state": "warm"}, "state", "warm", "endpoint_id", "e1"},
		{"services", "service_id", "svc2",
			map[string]any{"service_id": "svc2", "security_policy": "p1"},
			map[string]any{"resources": map[string]any{"cpu": 1, "ram": "1GB"}}, "resources", map[string]any{"cpu": 1.0, "ram": "1GB"}, "security_policy", "p1"},
		{"microservices", "microservice_id", "m2",
			map[string]any{"microservice_id": "m2", "service_id": "svc1"},
			map[string]any{"resources": map[string]any{"cpu": 2, "ram": "2GB"}}, "resources", map[string]any{"cpu": 2.0, "ram": "2GB"}, "service_id", "svc1"},
		{"functions", "function_id", "f2",
			map[string]any{"function_id": "f2", "microservice_id": "m1", "endpoint_id": "e1"},
			map[string]any{"deployment_status": "deployed"}, "deployment_status", "deployed", "endpoint_id", "e1"},
		{"function-states", "state_id", "fs2",
			map[string]any{"state_id": "fs2", "function_id": "f1", "state": "pending"},
			map[string]any{"state": "completed"}, "state", "completed", "function_id", "f1"},
		{"function-results", "state_id", "fr2",
			map[string]any{"state_id": "fr2", "function_id": "f1", "metadata": map[string]any{"status": "200"}},
			map[string]any{"metadata": map[string]any{"status": "500"}}, "metadata", map[string]any{"status": "500"}, "function_id", "f1"},
	}
}

func jsonEqual(a, b any) bool {
	ra, _ := json.Marshal(a)
	rb, _ := json.Marshal(b)
	return bytes.Equal(ra, rb)
}

// TestCRUDEveryKind runs create, get, list, update and delete for every
// kind, once with and once without trailing slashes.
func TestCRUDEveryKind(t *testing.T) {
	for _, tc := range crudCases() {
		for _, slash := range []string{"", "/"} {
			t.Run(fmt.Sprintf("%s/slash=%q", tc.route, slash), func(t *testing.T) {
				e := newEnv(t)
				e.seed()
				base := "/api/v1/" + tc.route
				item := base + "/" + tc.id

				r := e.must(e.post(base+slash, tc.create), http.StatusCreated)
				created := object(t, r)
				if created[tc.idField] != tc.id {
					t.Fatalf("created %s = %v, want %s", tc.idField, created[tc.idField], tc.id)
				}
				if loc := r.header.Get("Location"); loc != item {
					t.Errorf("Location %q, want %q", loc, item)
				}
				if ct := r.header.Get("Content-Type"); ct != "application/json" {
					t.Errorf("Content-Type %q", ct)
				}
				stamp := "created_at"
				if _, ok := created["timestamp"]; ok {
					stamp = "timestamp"
				}
				ts, _ := created[stamp].(string)
				if _, err := time.Parse(time.RFC3339Nano, ts); err != nil || ts[len(ts)-1] != 'Z' {
					t.Errorf("%s %q is not RFC 3339 UTC with Z", stamp, ts)
				}

				got := e.must(e.get(item+slash), http.StatusOK)
				if !jsonEqual(object(t, got), created) {
					t.Errorf("GET %s = %s, want what POST answered: %s", item, got.body, r.body)
				}

				list := e.must(e.get(base+slash), http.StatusOK)
				items := array(t, list)
				found := false
				for _, it := range items {
					found = found || it[tc.idField] == tc.id
				}
				if !found {
					t.Errorf("list %s lacks %s: %s", base, tc.id, list.body)
				}
				if tc := list.header.Get("X-Total-Count"); tc != fmt.Sprint(len(items)) {
					t.Errorf("X-Total-Count %q for %d items", tc, len(items))
				}

				upd := object(t, e.must(e.put(item+slash, tc.patch), http.StatusOK))
				if !jsonEqual(upd[tc.changed], tc.want) {
					t.Errorf("after PUT %s = %v, want %v", tc.changed, upd[tc.changed], tc.want)
				}
				if !jsonEqual(upd[tc.kept], tc.keptVal) {
					t.Errorf("PUT changed %s to %v, want %v", tc.kept, upd[tc.kept], tc.keptVal)
				}
				if upd[stamp] != created[stamp] {
					t.Errorf("PUT changed %s from %v to %v", stamp, created[stamp], upd[stamp])
				}
				if after := object(t, e.must(e.get(item), http.StatusOK)); !jsonEqual(after, upd) {
					t.Errorf("GET after PUT = %v, want %v", after, upd)
				}

				d := e.must(e.del(item+slash), http.StatusNoContent)
				if len(d.body) != 0 {
					t.Errorf("DELETE answered a body: %q", d.body)
				}
				nf := errorOf(t, e.get(item+slash), http.StatusNotFound)
				if want := fmt.Sprintf("Resource '%s' not found", tc.id); nf.Detail.Message != want {
					t.Errorf("404 message %q, want %q", nf.Detail.Message, want)
				}
				errorOf(t, e.del(item), http.StatusNotFound)
				errorOf(t, e.put(item, tc.patch), http.StatusNotFound)
			})
		}
	}
}

func TestCreateAssignsUUIDWhenIDAbsent(t *testing.T) {
	uuid4 := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	for _, body := range []map[string]any{
		{"name": "no id"},
		{"role_id": nil, "name": "null id"},
		{"role_id": "", "name": "empty id"},
	} {
		e := newEnv(t)
		r := object(t, e.must(e.post("/api/v1/roles", body), http.StatusCreated))
		id, _ := r["role_id"].(string)
		if !uuid4.MatchString(id) {
			t.Errorf("%v: generated id %q is not a UUIDv4", body, id)
		}
		e.must(e.get("/api/v1/roles/"+id), http.StatusOK)
	}
}

func TestCreateFillsDefaults(t *testing.T) {
	e := newEnv(t)
	e.seed()
	ep := object(t, e.must(e.get("/api/v1/endpoints/e1"), http.StatusOK))
	if ep["workload_address"] != "127.0.0.1:8080" || ep["protocol"] != "http" {
		t.Errorf("endpoint defaults: %v", ep)
	}
	fn := object(t, e.must(e.get("/api/v1/functions/f1"), http.StatusOK))
	if fn["deployment_status"] != "pending" || fn["timeout"] != "60s" {
		t.Errorf("function defaults: %v", fn)
	}
	sp := object(t, e.must(e.get("/api/v1/security-policies/p1"), http.StatusOK))
	if sp["mode"] != "enforce" {
		t.Errorf("policy mode default: %v", sp)
	}
	// Derived lists show the actual children.
	svc := object(t, e.must(e.get("/api/v1/services/svc1"), http.StatusOK))
	if !jsonEqual(svc["microservices"], []any{"m1"}) {
		t.Errorf("service microservices = %v, want [m1]", svc["microservices"])
	}
	ms := object(t, e.must(e.get("/api/v1/microservices/m1"), http.StatusOK))
	if !jsonEqual(ms["functions"], []any{"f1"}) {
		t.Errorf("microservice functions = %v, want [f1]", ms["functions"])
	}
}

func TestPartialUpdate(t *testing.T) {
	e := newEnv(t)
	e.seed()
	e.must(e.post("/api/v1/roles", map[string]any{"role_id": "r2", "name": "writer"}), http.StatusCreated)

	t.Run("resources merge field by field", func(t *testing.T) {
		e := e.in(t)
		got := object(t, e.must(e.put("/api/v1/endpoints/e1", map[string]any{"resources": map[string]any{"ram": "8GB"}}), http.StatusOK))
		if !jsonEqual(got["resources"], map[string]any{"cpu": 2, "ram": "8GB"}) {
			t.Errorf("resources = %v, want cpu 2 kept, ram 8GB", got["resources"])
		}
	})
	t.Run("null leaves a field unchanged", func(t *testing.T) {
		e := e.in(t)
		got := object(t, e.must(e.put("/api/v1/endpoints/e1", map[string]any{"name": nil, "image": "img:2", "resources": map[string]any{"cpu": nil, "ram": "16GB"}}), http.StatusOK))
		if got["name"] != "gpu" || got["image"] != "img:2" {
			t.Errorf("name %v image %v, want gpu and img:2", got["name"], got["image"])
		}
		if !jsonEqual(got["resources"], map[string]any{"cpu": 2, "ram": "16GB"}) {
			t.Errorf("resources = %v", got["resources"])
		}
	})
	t.Run("lists are replaced", func(t *testing.T) {
		e := e.in(t)
		got := object(t, e.must(e.put("/api/v1/security-policies/p1", map[string]any{"roles": []any{"r2"}}), http.StatusOK))
		if !jsonEqual(got["roles"], []any{"r2"}) {
			t.Errorf("roles = %v, want [r2]", got["roles"])
		}
		if got["requires_authentication"] != true {
			t.Errorf("requires_authentication changed: %v", got)
		}
	})
	t.Run("maps are replaced", func(t *testing.T) {
		e := e.in(t)
		e.must(e.put("/api/v1/function-states/fs1", map[string]any{"metadata": map[string]any{"a": "1", "b": "2"}}), http.StatusOK)
		got := object(t, e.must(e.put("/api/v1/function-states/fs1", map[string]any{"metadata": map[string]any{"c": "3"}}), http.StatusOK))
		if !jsonEqual(got["metadata"], map[string]any{"c": "3"}) {
			t.Errorf("metadata = %v, want only c", got["metadata"])
		}
	})
	t.Run("the id may be repeated but not changed", func(t *testing.T) {
		e := e.in(t)
		e.must(e.put("/api/v1/roles/r2", map[string]any{"role_id": "r2", "name": "w"}), http.StatusOK)
		before := e.snapshot()
		errorOf(t, e.put("/api/v1/roles/r2", map[string]any{"role_id": "r3"}), http.StatusUnprocessableEntity).field(t, "role_id")
		e.unchangedSince(before)
	})
	t.Run("an identical update writes nothing", func(t *testing.T) {
		e := e.in(t)
		before := e.snapshot()
		e.must(e.put("/api/v1/roles/r2", map[string]any{"name": "w"}), http.StatusOK)
		e.unchangedSince(before)
	})
}

func TestHeadServesListHeaders(t *testing.T) {
	e := newEnv(t)
	e.seed()
	r := e.send(req{method: http.MethodHead, path: "/api/v1/roles"})
	if r.status != http.StatusOK || r.header.Get("X-Total-Count") != "1" || len(r.body) != 0 {
		t.Fatalf("HEAD /api/v1/roles: %d X-Total-Count=%q body=%q", r.status, r.header.Get("X-Total-Count"), r.body)
	}
}

// TestUpdateEndpointWithoutAddress: address is optional (SPEC §1), so an
// endpoint created without one must stay updatable.
func TestUpdateEndpointWithoutAddress(t *testing.T) {
	e := newEnv(t)
	e.seed()
	e.must(e.post("/api/v1/endpoints", map[string]any{"endpoint_id": "e2", "security_policy": "p1"}), http.StatusCreated)
	got := object(t, e.must(e.put("/api/v1/endpoints/e2", map[string]any{"name": "renamed"}), http.StatusOK))
	if got["name"] != "renamed" {
		t.Errorf("name = %v, want renamed", got["name"])
	}
}
