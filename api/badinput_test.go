package api_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/cryptomesh/cryptomesh/api"
)

// TestBadInputChangesNothing sends every kind of bad request and checks
// that each gets its 4xx with a useful message, never a 5xx, and that the
// registry is byte-for-byte what it was.
func TestBadInputChangesNothing(t *testing.T) {
	e := newEnv(t)
	e.seed()
	e.must(e.post("/api/v1/services", map[string]any{"service_id": "svc2", "security_policy": "p1"}), http.StatusCreated)

	big := `{"name": "` + strings.Repeat("x", 2<<20) + `"}`
	deep := strings.Repeat("[", 20000) + strings.Repeat("]", 20000)
	longID := strings.Repeat("a", 129)

	tests := []struct {
		name    string
		method  string
		path    string
		body    any
		ctype   string // "" keeps application/json; "-" sends none
		status  int
		field   string // a field the 422 must name
		message string // a substring of the message (or of the field's message)
	}{
		// Bodies that are not one JSON object.
		{"malformed JSON", "POST", "/api/v1/roles", `{"name": `, "", 400, "", "malformed JSON"},
		{"syntax error", "POST", "/api/v1/roles", `{"name" "x"}`, "", 400, "", "malformed JSON at byte"},
		{"trailing garbage", "POST", "/api/v1/roles", `{"name": "x"} trailing`, "", 400, "", "after the JSON value"},
		{"two objects", "POST", "/api/v1/roles", `{"name": "x"} {"name": "y"}`, "", 400, "", "after the JSON value"},
		{"empty body", "POST", "/api/v1/roles", ``, "", 400, "", "empty"},
		{"duplicate key", "POST", "/api/v1/roles", `{"name": "a", "name": "b"}`, "", 400, "", `key "name" appears more than once`},
		{"nested duplicate key", "POST", "/api/v1/endpoints", `{"endpoint_id": "e9", "security_policy": "p1", "resources": {"cpu": 1, "ram": "1GB", "cpu": 2}}`, "", 400, "", "object resources"},
		{"too deep", "POST", "/api/v1/roles", deep, "", 400, "", "malformed JSON"},
		{"array body", "POST", "/api/v1/roles", `[{"name": "x"}]`, "", 422, "body", "not an array"},
		{"string body", "POST", "/api/v1/roles", `"x"`, "", 422, "body", "not a string"},
		{"null body", "PUT", "/api/v1/roles/r1", `null`, "", 422, "body", "not null"},
		{"2 MiB body", "POST", "/api/v1/roles", big, "", 413, "", "exceeds"},
		{"2 MiB body on PUT", "PUT", "/api/v1/roles/r1", big, "", 413, "", "exceeds"},
		{"2 MiB report", "POST", "/api/v1/reports", big, "", 413, "", "exceeds"},

		// Content types.
		{"text/plain", "POST", "/api/v1/roles", `{"name": "x"}`, "text/plain", 415, "", "application/json"},
		{"no content type", "POST", "/api/v1/roles", `{"name": "x"}`, "-", 415, "", "Content-Type"},
		{"yaml", "PUT", "/api/v1/roles/r1", `name: x`, "application/yaml", 415, "", "application/json"},
		{"latin1", "POST", "/api/v1/roles", `{"name": "x"}`, "application/json; charset=latin1", 415, "", "charset"},
		{"form", "POST", "/api/v1/reports", `items=1`, "application/x-www-form-urlencoded", 415, "", "application/json"},

		// Values that break the rules of SPEC §1.
		{"wrong type", "POST", "/api/v1/roles", map[string]any{"name": 5}, "", 422, "name", "must be a string"},
		{"missing required", "POST", "/api/v1/roles", map[string]any{"description": "x"}, "", 422, "name", "required"},
		{"unknown field", "POST", "/api/v1/roles", map[string]any{"name": "x", "colour": "red"}, "", 422, "colour", "unknown field"},
		{"unknown field on PUT", "PUT", "/api/v1/roles/r1", map[string]any{"colour": "red"}, "", 422, "colour", "unknown field"},
		{"bad permission", "POST", "/api/v1/roles", map[string]any{"name": "x", "permissions": []any{"read", "fly"}}, "", 422, "permissions[1]", "not a permission"},
		{"policy needs a role", "POST", "/api/v1/security-policies", map[string]any{"requires_authentication": true}, "", 422, "roles", "at least one role"},
		{"policy mode", "PUT", "/api/v1/security-policies/p1", map[string]any{"mode": "permissive"}, "", 422, "mode", "enforce, audit"},
		{"cpu 0", "PUT", "/api/v1/endpoints/e1", map[string]any{"resources": map[string]any{"cpu": 0}}, "", 422, "resources.cpu", "greater than 0"},
		{"cpu negative", "POST", "/api/v1/functions", map[string]any{"microservice_id": "m1", "resources": map[string]any{"cpu": -2, "ram": "1GB"}}, "", 422, "resources.cpu", "greater than 0"},
		{"cpu fraction", "POST", "/api/v1/functions", map[string]any{"microservice_id": "m1", "resources": map[string]any{"cpu": 1.5, "ram": "1GB"}}, "", 422, "resources.cpu", "integer"},
		{"cpu huge", "POST", "/api/v1/functions", `{"resources": {"cpu": 1e999, "ram": "1GB"}}`, "", 422, "resources.cpu", ""},
		{"cpu as string", "POST", "/api/v1/functions", map[string]any{"resources": map[string]any{"cpu": "2", "ram": "1GB"}}, "", 422, "resources.cpu", "integer"},
		{"bad ram", "POST", "/api/v1/functions", map[string]any{"resources": map[string]any{"cpu": 1, "ram": "4 parsecs"}}, "", 422, "resources.ram", "not a size"},
		{"unknown resources field", "POST", "/api/v1/functions", map[string]any{"resources": map[string]any{"cpu": 1, "ram": "1GB", "gpu": 1}}, "", 422, "resources.gpu", "unknown"},
		{"zero capacity", "POST", "/api/v1/storage", map[string]any{"capacity": "0GB", "source_path": "/a", "sink_path": "/b"}, "", 422, "capacity", "positive"},
		{"capacity without unit", "PUT", "/api/v1/storage/s1", map[string]any{"capacity": "100"}, "", 422, "capacity", "not a size"},
		{"blank sink path", "POST", "/api/v1/storage", map[string]any{"capacity": "1GB", "source_path": "/a", "sink_path": "  "}, "", 422, "sink_path", "blank"},
		{"unknown protocol", "PUT", "/api/v1/endpoints/e1", map[string]any{"protocol": "smtp"}, "", 422, "protocol", "http, grpc"},
		{"unknown endpoint state", "POST", "/api/v1/endpoint-states", map[string]any{"endpoint_id": "e1", "state": "asleep"}, "", 422, "state", "cold"},
		{"unknown deployment status", "PUT", "/api/v1/functions/f1", map[string]any{"deployment_status": "exploded"}, "", 422, "deployment_status", "pending"},
		{"negative timeout", "PUT", "/api/v1/functions/f1", map[string]any{"timeout": "-5s"}, "", 422, "timeout", "negative"},
		{"timeout not a duration", "PUT", "/api/v1/functions/f1", map[string]any{"timeout": "soon"}, "", 422, "timeout", "duration"},
		{"address without port", "PUT", "/api/v1/endpoints/e1", map[string]any{"address": "10.0.0.1"}, "", 422, "address", "host:port"},
		{"metadata value not a string", "POST", "/api/v1/function-results", map[string]any{"function_id": "f1", "metadata": map[string]any{"n": 1}}, "", 422, "metadata.n", "string"},
		{"id starting with a dash", "POST", "/api/v1/roles", map[string]any{"role_id": "-bad", "name": "x"}, "", 422, "role_id", "not a valid id"},
		{"id with a space", "POST", "/api/v1/roles", map[string]any{"role_id": "a b", "name": "x"}, "", 422, "role_id", "not a valid id"},
		{"id with a slash", "POST", "/api/v1/functions", map[string]any{"function_id": "a/b", "microservice_id": "m1"}, "", 422, "function_id", "not a valid id"},
		{"id too long", "POST", "/api/v1/roles", map[string]any{"role_id": longID, "name": "x"}, "", 422, "role_id", "at most 128"},
		{"id not a string", "POST", "/api/v1/roles", map[string]any{"role_id": 7, "name": "x"}, "", 422, "role_id", "string"},
		{"changing the id", "PUT", "/api/v1/roles/r1", map[string]any{"role_id": "r9"}, "", 422, "role_id", "r1"},

		// References.
		{"dangling reference", "POST", "/api/v1/functions", map[string]any{"function_id": "f9", "microservice_id": "ghost"}, "", 422, "microservice_id", "ghost"},
		{"dangling reference in a list", "POST", "/api/v1/security-policies", map[string]any{"roles": []any{"r1", "ghost"}, "requires_authentication": true}, "", 422, "roles[1]", "ghost"},
		{"dangling reference on PUT", "PUT", "/api/v1/functions/f1", map[string]any{"endpoint_id": "ghost"}, "", 422, "endpoint_id", "ghost"},
		{"dangling policy", "POST", "/api/v1/services", map[string]any{"security_policy": "ghost"}, "", 422, "security_policy", "ghost"},
		{"dangling owner of a state", "POST", "/api/v1/endpoint-states", map[string]any{"endpoint_id": "ghost", "state": "warm"}, "", 422, "endpoint_id", "ghost"},
		{"result of another function's state", "POST", "/api/v1/function-results", map[string]any{"state_id": "fs1", "function_id": "f9"}, "", 422, "function_id", ""},
		{"child listed under another parent", "POST", "/api/v1/services", map[string]any{"service_id": "svc3", "security_policy": "p1", "microservices": []any{"m1"}}, "", 409, "", "m1"},
		{"child listed under another parent on PUT", "PUT", "/api/v1/services/svc2", map[string]any{"microservices": []any{"m1"}}, "", 409, "", "svc1"},
		{"embedded policy conflicting with a stored one", "POST", "/api/v1/endpoints", map[string]any{"endpoint_id": "e9", "security_policy": map[string]any{"sp_id": "p1", "requires_authentication": false}}, "", 409, "", "p1"},
		{"duplicate id", "POST", "/api/v1/roles", map[string]any{"role_id": "r1", "name": "again"}, "", 409, "", "already exists"},
		{"duplicate state id", "POST", "/api/v1/function-states", map[string]any{"state_id": "fs1", "function_id": "f1", "state": "running"}, "", 409, "", "fs1"},

		// Requests that name nothing that exists.
		{"PUT unknown id", "PUT", "/api/v1/roles/ghost", map[string]any{"name": "x"}, "", 404, "", "Resource 'ghost' not found"},
		{"DELETE unknown id", "DELETE", "/api/v1/functions/ghost", nil, "", 404, "", "Resource 'ghost' not found"},
		{"unknown query parameter on POST", "POST", "/api/v1/roles?dry_run=true", map[string]any{"name": "x"}, "", 422, "dry_run", "unknown query parameter"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := e.in(t)
			before := e.snapshot()
			rq := req{method: tt.method, path: tt.path, body: tt.body}
			switch tt.ctype {
			case "":
			case "-":
				rq.noCType = true
			default:
				rq.header = map[string]string{"Content-Type": tt.ctype}
			}
			r := e.send(rq)
			if r.status >= 500 {
				t.Fatalf("server error for bad input: %s", r)
			}
			ae := errorOf(t, r, tt.status)
			msg := ae.Detail.Message
			if tt.field != "" {
				msg = ae.field(t, tt.field)
			}
			if !strings.Contains(msg, tt.message) {
				t.Errorf("message %q does not contain %q", msg, tt.message)
			}
			e.unchangedSince(before)
		})
	}
}

// TestMessagesNameEveryBadField: validation reports all problems at once.
func TestMessagesNameEveryBadField(t *testing.T) {
	e := newEnv(t)
	e.seed()
	ae := errorOf(t, e.post("/api/v1/functions", map[string]any{
		"function_id": "f9", "microservice_id": "m1",
		"resources":         map[string]any{"cpu": 0, "ram": "lots"},
		"deployment_status": "maybe",
		"colour":            "red",
	}), http.StatusUnprocessableEntity)
	for _, f := range []string{"resources.cpu", "resources.ram", "deployment_status", "colour"} {
		ae.field(t, f)
	}
}

// TestBodyLimitWithoutContentLength: a chunked body has no length to
// check up front; it is cut off while being read.
func TestBodyLimitWithoutContentLength(t *testing.T) {
	e := newEnv(t, withAPI(api.WithMaxBodyBytes(64)))
	before := e.snapshot()
	body := io.MultiReader(strings.NewReader(`{"name": "`), strings.NewReader(strings.Repeat("x", 100)), strings.NewReader(`"}`))
	hr, err := http.NewRequest("POST", e.srv.URL+"/api/v1/roles", body)
	if err != nil {
		t.Fatal(err)
	}
	hr.Header.Set("Content-Type", "application/json")
	hr.Header.Set("Authorization", "Bearer "+e.token)
	res, err := http.DefaultClient.Do(hr)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if hr.ContentLength != 0 {
		t.Fatalf("request has a Content-Length (%d); it must be sent chunked", hr.ContentLength)
	}
	errorOf(t, &resp{status: res.StatusCode, header: res.Header, body: raw}, http.StatusRequestEntityTooLarge)
	e.unchangedSince(before)
	// Just under the limit is fine.
	e.must(e.post("/api/v1/roles", `{"name": "`+strings.Repeat("x", 40)+`"}`), http.StatusCreated)
}
