package api_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/cryptomesh/cryptomesh/api"
	"github.com/cryptomesh/cryptomesh/registry"
)

// getOpenAPI fetches the document; when the server cannot build it, the
// failure names why (it is only logged, never sent).
func (e *env) getOpenAPI() *resp {
	e.t.Helper()
	r := e.get("/api/v1/openapi.json")
	if r.status != http.StatusOK {
		e.t.Fatalf("GET /api/v1/openapi.json: %s\nserver log:\n%s", r, e.logs.String())
	}
	return r
}

// openAPI fetches the server's document as a generic JSON object.
func (e *env) openAPI() map[string]any {
	e.t.Helper()
	r := e.getOpenAPI()
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		e.t.Fatalf("openapi.json Content-Type %q", ct)
	}
	return object(e.t, r)
}

// loadOpenAPI fetches the document and loads it with kin-openapi, with
// the test server as its server.
func (e *env) loadOpenAPI() *openapi3.T {
	e.t.Helper()
	raw := e.getOpenAPI().body
	doc, err := openapi3.NewLoader().LoadFromData(raw)
	if err != nil {
		e.t.Fatalf("load the OpenAPI document: %v", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		e.t.Fatalf("the OpenAPI document is not valid: %v", err)
	}
	doc.Servers = openapi3.Servers{{URL: e.srv.URL}}
	return doc
}

func mapAt(t *testing.T, m map[string]any, keys ...string) map[string]any {
	t.Helper()
	cur := m
	for _, k := range keys {
		next, ok := cur[k].(map[string]any)
		if !ok {
			t.Fatalf("no object at %s", strings.Join(keys, "."))
		}
		cur = next
	}
	return cur
}

// TestOpenAPICoversEveryRoute walks the API's route table: every route is
// in the document with exactly its methods and access, and the document
// has nothing the server does not serve.
func TestOpenAPICoversEveryRoute(t *testing.T) {
	e := newEnv(t, withIdentity(nil))
	doc := e.openAPI()
	paths := mapAt(t, doc, "paths")
	table := api.RouteTable(e.api)
	if len(table) < 25 {
		t.Fatalf("the route table has only %d routes", len(table))
	}
	for pattern, methods := range table {
		item, ok := paths[pattern].(map[string]any)
		if !ok {
			t.Errorf("route %s is not in the document", pattern)
			continue
		}
		var want, got []string
		for m := range methods {
			want = append(want, strings.ToLower(m))
		}
		for m := range item {
			got = append(got, m)
		}
		slices.Sort(want)
		slices.Sort(got)
		if !slices.Equal(want, got) {
			t.Errorf("%s: the document has methods %v, the server %v", pattern, got, want)
			continue
		}
		for m, access := range methods {
			op := mapAt(t, item, strings.ToLower(m))
			if op["x-cryptomesh-access"] != access {
				t.Errorf("%s %s: documented access %v, served %s", m, pattern, op["x-cryptomesh-access"], access)
			}
			sec, has := op["security"].([]any)
			switch {
			case access == "public" && (!has || len(sec) != 0):
				t.Errorf("%s %s is public but the document asks for credentials", m, pattern)
			case access != "public" && has && len(sec) == 0:
				t.Errorf("%s %s needs a credential but the document says none", m, pattern)
			}
			if _, ok := mapAt(t, op, "responses")["401"]; ok == (access == "public") {
				t.Errorf("%s %s (%s): a 401 answer documented: %v", m, pattern, access, ok)
			}
		}
	}
	for pattern := range paths {
		if _, ok := table[pattern]; !ok {
			t.Errorf("the document describes %s, which the server does not serve", pattern)
		}
	}
}

// TestOpenAPIDocumentIsValid loads the document with kin-openapi (which
// checks references, schemas, examples and defaults) and checks the
// basics a client generator relies on.
func TestOpenAPIDocumentIsValid(t *testing.T) {
	e := newEnv(t, withIdentity(nil))
	raw := e.must(e.get("/api/v1/openapi.json/"), http.StatusOK).body
	if !json.Valid(raw) {
		t.Fatal("not JSON")
	}
	doc := e.loadOpenAPI()
	if !strings.HasPrefix(doc.OpenAPI, "3.") || doc.Info == nil || doc.Info.Title == "" || doc.Info.Version == "" {
		t.Fatalf("openapi %q info %+v", doc.OpenAPI, doc.Info)
	}
	bearer := doc.Components.SecuritySchemes["bearer"]
	if bearer == nil || bearer.Value.Type != "http" || bearer.Value.Scheme != "bearer" {
		t.Fatalf("bearer security scheme %+v", bearer)
	}
	if len(doc.Security) != 1 {
		t.Fatalf("global security %+v", doc.Security)
	}
	for _, name := range []string{"Error", "ErrorDetail", "FieldError", "MeshDocument", "ApplyReport", "ReportBatch", "ReportAnswers", "Health",
		"WhoAmI", "SVIDRequest", "SVID", "TokenRequest", "Token", "TokenRecord"} {
		if doc.Components.Schemas[name] == nil {
			t.Errorf("no schema %s", name)
		}
	}
	ids := map[string]string{}
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			where := method + " " + path
			if op.OperationID == "" || ids[op.OperationID] != "" {
				t.Errorf("%s: operationId %q missing or also used by %s", where, op.OperationID, ids[op.OperationID])
			}
			ids[op.OperationID] = where
			if op.Responses == nil || op.Responses.Len() == 0 {
				t.Errorf("%s: no responses", where)
			}
			hasSuccess := false
			for code := range op.Responses.Map() {
				hasSuccess = hasSuccess || strings.HasPrefix(code, "2")
			}
			if !hasSuccess {
				t.Errorf("%s: no success response", where)
			}
		}
	}
	for _, k := range registry.Kinds() {
		name := entityName(k)
		for _, suffix := range []string{"", "Input", "Update"} {
			if doc.Components.Schemas[name+suffix] == nil {
				t.Errorf("no schema %s%s for %s", name, suffix, k)
			}
		}
	}
}

// entityName is the schema name of a kind, as the document names it.
func entityName(k registry.Kind) string {
	return map[registry.Kind]string{
		registry.KindRole: "Role", registry.KindSecurityPolicy: "SecurityPolicy", registry.KindStorage: "Storage",
		registry.KindEndpoint: "Endpoint", registry.KindEndpointState: "EndpointState", registry.KindService: "Service",
		registry.KindMicroservice: "Microservice", registry.KindFunction: "Function",
		registry.KindFunctionState: "FunctionState", registry.KindFunctionResult: "FunctionResult",
	}[k]
}

// inputProps returns a kind's documented input properties with their
// first example, and its required fields.
func inputProps(t *testing.T, doc *openapi3.T, k registry.Kind) (examples map[string]any, required []string, props openapi3.Schemas) {
	t.Helper()
	s := doc.Components.Schemas[entityName(k)+"Input"].Value
	examples = map[string]any{}
	for name, p := range s.Properties {
		if name == "policy_id" {
			continue
		}
		ex := exampleOf(p.Value)
		if ex == nil {
			t.Fatalf("%s.%s has no example", k, name)
		}
		examples[name] = ex
	}
	return examples, s.Required, s.Properties
}

// exampleOf finds the example of a (possibly nullable) property.
func exampleOf(s *openapi3.Schema) any {
	if len(s.Examples) > 0 {
		return s.Examples[0]
	}
	for _, alt := range s.AnyOf {
		if ex := exampleOf(alt.Value); ex != nil {
			return ex
		}
	}
	return nil
}

// enumOf finds the enum of a (possibly nullable) property.
func enumOf(s *openapi3.Schema) []any {
	if len(s.Enum) > 0 {
		return s.Enum
	}
	for _, alt := range s.AnyOf {
		if en := enumOf(alt.Value); en != nil {
			return en
		}
	}
	return nil
}

func defaultOf(s *openapi3.Schema) any {
	if s.Default != nil {
		return s.Default
	}
	for _, alt := range s.AnyOf {
		if d := defaultOf(alt.Value); d != nil {
			return d
		}
	}
	return nil
}

// TestOpenAPISchemasMatchTheRegistry catches drift between the generated
// schemas and the registry's own rules, with a real registry. Every body
// it sends is first judged by the document's schema, and the server must
// agree: bodies the schema accepts are stored, bodies it refuses are 422.
// The bodies: every documented field with its example; only the required
// fields; the required fields and each optional field alone; each
// required field left out; each field with a value of the wrong type;
// every enum value and one outside the enum; an undocumented field.
// Stored entities must have exactly the documented fields, match the
// answer schema and carry the documented defaults.
func TestOpenAPISchemasMatchTheRegistry(t *testing.T) {
	e := newEnv(t)
	doc := e.loadOpenAPI()
	for _, k := range registry.Kinds() {
		t.Run(string(k), func(t *testing.T) {
			e := e.in(t)
			base := "/api/v1/" + k.Route()
			idf := k.IDField()
			examples, required, props := inputProps(t, doc, k)
			input := doc.Components.Schemas[entityName(k)+"Input"].Value
			update := doc.Components.Schemas[entityName(k)+"Update"].Value
			n := 0
			freshID := func() string { n++; return fmt.Sprintf("%v-%d", examples[idf], n) }
			with := func(fields ...string) map[string]any {
				body := map[string]any{idf: freshID()}
				for _, f := range fields {
					body[f] = examples[f]
				}
				return body
			}

			// Every documented field, with its example.
			if verdict(input, examples) != nil {
				t.Fatalf("the examples do not match the schema: %v", verdict(input, examples))
			}
			full := object(t, agree(t, e, input, "POST", base, examples, http.StatusCreated))
			out := doc.Components.Schemas[entityName(k)].Value
			var stored, documented []string
			for f := range full {
				stored = append(stored, f)
			}
			for f := range out.Properties {
				documented = append(documented, f)
			}
			slices.Sort(stored)
			slices.Sort(documented)
			if !slices.Equal(stored, documented) {
				t.Errorf("stored fields %v, documented %v", stored, documented)
			}
			for f := range out.Properties {
				if !slices.Contains(out.Required, f) {
					t.Errorf("answered field %s is not documented as always present", f)
				}
			}
			if err := out.VisitJSON(full, openapi3.EnableJSONSchema2020()); err != nil {
				t.Errorf("the stored entity does not match its schema: %v", err)
			}

			// Only the required fields; then each optional field with them.
			r := agree(t, e, input, "POST", base, with(required...), http.StatusCreated)
			if r.status == http.StatusCreated {
				got := object(t, r)
				for name, p := range props {
					if def := defaultOf(p.Value); def != nil && !jsonEqual(got[name], def) {
						t.Errorf("%s defaults to %v, documented %v", name, got[name], def)
					}
				}
			}
			for name := range examples {
				if name != idf && !slices.Contains(required, name) {
					agree(t, e, input, "POST", base, with(append([]string{name}, required...)...), http.StatusCreated)
				}
			}

			// Each required field left out.
			for _, f := range required {
				body := with(required...)
				delete(body, f)
				if verdict(input, body) == nil {
					t.Errorf("the schema accepts a body without the required %s", f)
				}
				agree(t, e, input, "POST", base, body, http.StatusCreated)
			}

			// Each field with a value of the wrong JSON type.
			for name, ex := range examples {
				body := maps(examples, idf, freshID())
				body[name] = wrongType(ex)
				if verdict(input, body) == nil {
					t.Errorf("the schema accepts %v for %s", body[name], name)
				}
				agree(t, e, input, "POST", base, body, http.StatusCreated)
			}

			// Every enum value, and one outside the enum, as updates.
			item := fmt.Sprintf("%s/%v", base, examples[idf])
			for name, p := range props {
				en := enumOf(p.Value)
				for _, v := range en {
					agree(t, e, update, "PUT", item, map[string]any{name: v}, http.StatusOK)
				}
				if en != nil {
					agree(t, e, update, "PUT", item, map[string]any{name: "not-in-the-enum"}, http.StatusOK)
				}
			}

			// A field the document does not have.
			body := maps(examples, idf, freshID())
			body["undocumented_field"] = "x"
			agree(t, e, input, "POST", base, body, http.StatusCreated)
			agree(t, e, update, "PUT", item, map[string]any{"undocumented_field": "x"}, http.StatusOK)
		})
	}
}

// verdict is the schema's judgement of a body.
func verdict(s *openapi3.Schema, body map[string]any) error {
	raw, err := json.Marshal(body)
	if err != nil {
		return err
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return err
	}
	return s.VisitJSON(v, openapi3.EnableJSONSchema2020())
}

// agree sends body and checks that the server's answer agrees with the
// schema's verdict: ok when the schema accepts it, 422 when it refuses it.
func agree(t *testing.T, e *env, s *openapi3.Schema, method, path string, body map[string]any, ok int) *resp {
	t.Helper()
	schemaErr := verdict(s, body)
	r := e.send(req{method: method, path: path, body: body})
	switch {
	case schemaErr == nil && r.status != ok:
		t.Errorf("%s %s %v: the document accepts it, the server answers %s", method, path, body, r)
	case schemaErr != nil && r.status != http.StatusUnprocessableEntity:
		t.Errorf("%s %s %v: the document refuses it (%v), the server answers %s", method, path, body, firstLine(schemaErr), r)
	}
	return r
}

func firstLine(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}

// wrongType is a value of another JSON type than v.
func wrongType(v any) any {
	switch v.(type) {
	case string:
		return 12345
	case bool, float64, int:
		return "not-that-type"
	case []any:
		return map[string]any{"a": "b"}
	case map[string]any:
		return []any{"a"}
	}
	return nil
}

// maps copies m with key set to val.
func maps(m map[string]any, key string, val any) map[string]any {
	out := make(map[string]any, len(m)+1)
	for k, v := range m {
		out[k] = v
	}
	out[key] = val
	return out
}

// exchange is one request of TestOpenAPIAnswersMatchTheDocument.
type exchange struct {
	method, path string
	body         string
	ctype        string
	token        *string
	status       int
	// badRequest marks a request that is wrong on purpose: only the answer
	// is checked against the document.
	badRequest bool
}

// TestOpenAPIAnswersMatchTheDocument sends requests of every route,
// good and bad, to a real server and validates each request and answer
// against the document: every status must be documented for its
// operation and every body must match its schema.
func TestOpenAPIAnswersMatchTheDocument(t *testing.T) {
	nodes := nodeAuth{"node-token": {Kind: api.PrincipalNode, Name: "n1", Endpoint: "e1"}}
	e := newEnv(t, withAPI(api.WithAuthenticator(nodes)), withIdentity(nil))
	e.seed()
	join, _ := e.mintToken(map[string]any{"node": "n1", "endpoint": "e1"})
	_, revokeJTI := e.mintToken(map[string]any{"node": "n2", "role": "r1", "ttl": "1h"})
	csr, _ := json.Marshal(map[string]any{"csr": csrFor(t, newP256(t), x509.CertificateRequest{}, "spiffe://cryptomesh.local/endpoint/e1")})
	otherCSR, _ := json.Marshal(map[string]any{"csr": csrFor(t, newP256(t), x509.CertificateRequest{}, "spiffe://cryptomesh.local/role/r1")})
	doc := e.loadOpenAPI()
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	none, node, joined := noToken(), tokenOf("node-token"), tokenOf(join)
	var xs []exchange
	for _, s := range seedBodies() {
		base := "/api/v1/" + s.route
		id := s.body[registry.Kind(strings.ReplaceAll(s.route, "-", "_")).IDField()]
		if s.route == "security-policies" {
			id = s.body["sp_id"]
		}
		item := fmt.Sprintf("%s/%v", base, id)
		dup, _ := json.Marshal(s.body)
		xs = append(xs,
			exchange{method: "GET", path: base, status: 200},
			exchange{method: "GET", path: base + "?limit=1", status: 200},
			exchange{method: "GET", path: base + "?limit=0", status: 422, badRequest: true},
			exchange{method: "GET", path: base + "?colour=red", status: 422, badRequest: true},
			exchange{method: "GET", path: item, status: 200},
			exchange{method: "GET", path: base + "/nope", status: 404},
			exchange{method: "POST", path: base, body: string(dup), ctype: "application/json", status: 409},
			exchange{method: "POST", path: base, body: `{"colour": "red"}`, ctype: "application/json", status: 422, badRequest: true},
			exchange{method: "POST", path: base, body: `{"name": `, ctype: "application/json", status: 400, badRequest: true},
			exchange{method: "POST", path: base, body: `{}`, ctype: "text/plain", status: 415, badRequest: true},
			exchange{method: "PUT", path: item, body: `{}`, ctype: "application/json", status: 200},
			exchange{method: "PUT", path: base + "/nope", body: `{}`, ctype: "application/json", status: 404},
			exchange{method: "GET", path: item, token: none, status: 401, badRequest: true},
			exchange{method: "GET", path: item, token: node, status: 403},
		)
	}
	xs = append(xs,
		exchange{method: "GET", path: "/api/v1/functions?microservice_id=m1&endpoint_id=e1", status: 200},
		exchange{method: "GET", path: "/api/v1/function-states?function_id=f1", status: 200},
		exchange{method: "GET", path: "/api/v1/functions/f1/state", status: 200},
		exchange{method: "GET", path: "/api/v1/endpoints/e1/state", status: 200},
		exchange{method: "GET", path: "/api/v1/functions/nope/state", status: 404},
		exchange{method: "POST", path: "/api/v1/reports", ctype: "application/json", status: 200, body: `{"items": [
			{"kind": "function_state", "data": {"function_id": "f1", "state": "completed"}},
			{"kind": "function_result", "data": {"function_id": "f1", "metadata": {"ok": "yes"}}},
			{"kind": "endpoint_state", "data": {"endpoint_id": "e1", "state": "warm"}},
			{"kind": "endpoint_state", "data": {"endpoint_id": "e1", "state": "asleep"}}]}`, badRequest: true},
		exchange{method: "POST", path: "/api/v1/reports", token: node, ctype: "application/json", status: 200,
			body: `{"items": [{"kind": "endpoint_state", "data": {"endpoint_id": "e9", "state": "warm"}}]}`},
		exchange{method: "POST", path: "/api/v1/reports", ctype: "application/json", status: 422, badRequest: true, body: `{"items": 5}`},
		exchange{method: "POST", path: "/api/v1/apply", ctype: "application/yaml", status: 200,
			body: "roles:\n  r7:\n    name: seven\nsecurity_policies:\n  p7:\n    requires_authentication: true\n    roles: [r7, implied-one]\n"},
		exchange{method: "POST", path: "/api/v1/apply?dry_run=true", ctype: "application/json", status: 200,
			body: `{"cryptomesh": "v1", "functions": {"f8": {"microservice_id": "m1", "storage": {"capacity": "1GB", "source_path": "/a", "sink_path": "/b"}}}}`},
		exchange{method: "POST", path: "/api/v1/apply", ctype: "application/yaml", status: 422, badRequest: true,
			body: "functions:\n  f9:\n    resources: {cpu: 0, ram: 1GB}\n"},
		exchange{method: "POST", path: "/api/v1/apply", ctype: "application/yaml", status: 409,
			body: "microservices:\n  m9:\n    service_id: svc1\n    functions: [f1]\n"},
		exchange{method: "POST", path: "/api/v1/apply", ctype: "application/yaml", status: 400, badRequest: true, body: "roles: [\n"},
		exchange{method: "POST", path: "/api/v1/apply", ctype: "text/plain", status: 415, badRequest: true, body: "roles: {}\n"},
		exchange{method: "GET", path: "/api/v1/export", status: 200},
		exchange{method: "GET", path: "/api/v1/export", token: node, status: 403},
		exchange{method: "GET", path: "/api/v1/openapi.json", status: 200},
		exchange{method: "GET", path: "/api/v1/openapi.json", token: none, status: 401, badRequest: true},
		exchange{method: "GET", path: "/healthz", token: none, status: 200},
		exchange{method: "GET", path: "/healthz?verbose=1", token: none, status: 422, badRequest: true},
		exchange{method: "GET", path: "/readyz", token: none, status: 200},
		exchange{method: "GET", path: "/metrics", token: none, status: 200},
		exchange{method: "DELETE", path: "/api/v1/services/svc1", status: 409},
		exchange{method: "DELETE", path: "/api/v1/services/svc1?cascade=maybe", status: 422, badRequest: true},
		exchange{method: "DELETE", path: "/api/v1/function-results/fr1", status: 204},
		exchange{method: "DELETE", path: "/api/v1/services/svc1?cascade=true", status: 204},
		exchange{method: "DELETE", path: "/api/v1/services/svc1", status: 404},
		exchange{method: "GET", path: "/api/v1/identity/bundle", token: none, status: 200},
		exchange{method: "GET", path: "/api/v1/identity/whoami", token: joined, status: 200},
		exchange{method: "GET", path: "/api/v1/identity/whoami", status: 403},
		exchange{method: "POST", path: "/api/v1/identity/svids", token: joined, ctype: "application/json", status: 200, body: string(csr)},
		exchange{method: "POST", path: "/api/v1/identity/svids", token: joined, ctype: "application/json", status: 403, body: string(otherCSR)},
		exchange{method: "POST", path: "/api/v1/identity/svids", token: joined, ctype: "application/json", status: 422, badRequest: true, body: `{"csr": "x"}`},
		exchange{method: "POST", path: "/api/v1/identity/svids", token: none, ctype: "application/json", status: 401, badRequest: true, body: string(csr)},
		exchange{method: "POST", path: "/api/v1/identity/tokens", ctype: "application/json", status: 201, body: `{"node": "n3", "endpoint": "e1", "ttl": "2h"}`},
		exchange{method: "POST", path: "/api/v1/identity/tokens", ctype: "application/json", status: 422, body: `{"node": "n3", "endpoint": "nope"}`},
		exchange{method: "POST", path: "/api/v1/identity/tokens", token: joined, ctype: "application/json", status: 403, body: `{"node": "n3", "endpoint": "e1"}`},
		exchange{method: "GET", path: "/api/v1/identity/tokens", status: 200},
		exchange{method: "DELETE", path: "/api/v1/identity/tokens/" + revokeJTI, status: 204},
		exchange{method: "DELETE", path: "/api/v1/identity/tokens/nope", status: 404},
	)
	opts := &openapi3filter.Options{
		AuthenticationFunc:    openapi3filter.NoopAuthenticationFunc,
		IncludeResponseStatus: true,
		MultiError:            true,
	}
	for _, x := range xs {
		t.Run(x.method+" "+x.path+" "+fmt.Sprint(x.status), func(t *testing.T) {
			e := e.in(t)
			rq := req{method: x.method, path: x.path, token: x.token}
			if x.body != "" {
				rq.body, rq.header = x.body, map[string]string{"Content-Type": x.ctype}
			}
			r := e.send(rq)
			if r.status != x.status {
				t.Fatalf("status %d, want %d: %s", r.status, x.status, r.body)
			}
			hr, err := http.NewRequest(x.method, e.srv.URL+x.path, strings.NewReader(x.body))
			if err != nil {
				t.Fatal(err)
			}
			if x.body != "" {
				hr.Header.Set("Content-Type", x.ctype)
			}
			if x.token == nil {
				hr.Header.Set("Authorization", "Bearer "+adminToken)
			}
			route, params, err := router.FindRoute(hr)
			if err != nil {
				t.Fatalf("the document has no route for %s %s: %v", x.method, x.path, err)
			}
			in := &openapi3filter.RequestValidationInput{Request: hr, PathParams: params, Route: route, Options: opts}
			if !x.badRequest {
				if err := openapi3filter.ValidateRequest(context.Background(), in); err != nil {
					t.Errorf("the request does not match the document: %v", err)
				}
			}
			validateAnswer(t, in, r, opts)
		})
	}
}

func validateAnswer(t *testing.T, in *openapi3filter.RequestValidationInput, r *resp, opts *openapi3filter.Options) {
	t.Helper()
	out := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: in,
		Status:                 r.status,
		Header:                 r.header,
		Body:                   io.NopCloser(bytes.NewReader(r.body)),
		Options:                opts,
	}
	if r.status == http.StatusNoContent {
		out.Body = io.NopCloser(bytes.NewReader(nil))
	}
	if err := openapi3filter.ValidateResponse(context.Background(), out); err != nil {
		t.Errorf("the answer does not match the document: %v\n%s", err, truncate(r.body))
	}
}

func truncate(b []byte) string {
	if len(b) > 600 {
		return string(b[:600]) + "…"
	}
	return string(b)
}
