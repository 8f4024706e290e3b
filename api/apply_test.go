package api_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/cryptomesh/cryptomesh/api"
)

func readExample(t *testing.T, rel string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "examples", rel))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// yamlToJSON re-encodes a YAML document as JSON.
func yamlToJSON(t *testing.T, doc []byte) []byte {
	t.Helper()
	var v any
	if err := yaml.Unmarshal(doc, &v); err != nil {
		t.Fatalf("decode YAML: %v", err)
	}
	raw, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("encode JSON: %v", err)
	}
	return raw
}

// apply posts a mesh document with the given Content-Type ("-" sends
// none) to path (default /api/v1/apply).
func (e *env) apply(path string, doc []byte, ctype string) *resp {
	e.t.Helper()
	if path == "" {
		path = "/api/v1/apply"
	}
	h := map[string]string{"Content-Type": ctype}
	if ctype == "-" {
		h["Content-Type"] = ""
	}
	return e.send(req{method: "POST", path: path, body: doc, header: h})
}

type applyItem struct {
	Kind     string `json:"kind"`
	ID       string `json:"id"`
	Outcome  string `json:"outcome"`
	Implied  bool   `json:"implied"`
	Embedded bool   `json:"embedded"`
}

type applyReport struct {
	DryRun    bool        `json:"dry_run"`
	Items     []applyItem `json:"items"`
	Warnings  []string    `json:"warnings"`
	Created   int         `json:"created"`
	Updated   int         `json:"updated"`
	Unchanged int         `json:"unchanged"`
}

// reportOf checks a 200 apply answer, its shape and its counts.
func reportOf(t *testing.T, r *resp) applyReport {
	t.Helper()
	if r.status != http.StatusOK {
		t.Fatalf("apply: %s", r)
	}
	dec := json.NewDecoder(bytes.NewReader(r.body))
	dec.DisallowUnknownFields()
	var rep applyReport
	if err := dec.Decode(&rep); err != nil {
		t.Fatalf("apply report: %v: %s", err, r.body)
	}
	counts := map[string]int{}
	for _, it := range rep.Items {
		if it.Kind == "" || it.ID == "" {
			t.Errorf("item without kind or id: %+v", it)
		}
		counts[it.Outcome]++
	}
	if counts["created"] != rep.Created || counts["updated"] != rep.Updated || counts["unchanged"] != rep.Unchanged || len(counts) > 3 {
		t.Errorf("counts %+v do not match the items %v", rep, counts)
	}
	return rep
}

func (rep applyReport) outcome(kind, id string) string {
	for _, it := range rep.Items {
		if it.Kind == kind && it.ID == id {
			return it.Outcome
		}
	}
	return ""
}

// export returns the registry as the API exports it.
func (e *env) export() string {
	e.t.Helper()
	r := e.must(e.get("/api/v1/export"), http.StatusOK)
	if ct := r.header.Get("Content-Type"); ct != "application/yaml" {
		e.t.Fatalf("export Content-Type %q", ct)
	}
	if rev := r.header.Get("X-Registry-Revision"); rev != strconv.FormatUint(e.reg.Revision(), 10) {
		e.t.Fatalf("X-Registry-Revision %q, registry at %d", rev, e.reg.Revision())
	}
	return string(r.body)
}

// docError is an apply error: the shape of SPEC §2 with document paths
// and YAML lines.
type docError struct {
	Detail struct {
		Message string `json:"message"`
		Code    int    `json:"code"`
		Errors  []struct {
			Field   string `json:"field"`
			Line    int    `json:"line"`
			Message string `json:"message"`
		} `json:"errors"`
	} `json:"detail"`
}

func docErrorOf(t *testing.T, r *resp, status int) docError {
	t.Helper()
	var de docError
	decodeError(t, r, status, &de)
	if de.Detail.Code != status || strings.TrimSpace(de.Detail.Message) == "" {
		t.Fatalf("detail %+v on a %d", de.Detail, status)
	}
	return de
}

// lineOf is the 1-based line of the first occurrence of s in doc.
func lineOf(t *testing.T, doc, s string) int {
	t.Helper()
	i := strings.Index(doc, s)
	if i < 0 {
		t.Fatalf("%q not in the document", s)
	}
	return 1 + strings.Count(doc[:i], "\n")
}

// entityCount is how many entities of a route the API lists.
func (e *env) entityCount(route string) int {
	e.t.Helper()
	n, err := strconv.Atoi(e.must(e.get("/api/v1/"+route+"?limit=1"), http.StatusOK).header.Get("X-Total-Count"))
	if err != nil {
		e.t.Fatal(err)
	}
	return n
}

func TestApplyYAMLAndJSON(t *testing.T) {
	doc := readExample(t, "ml-pipeline/mesh.yaml")
	want := map[string]int{"roles": 6, "security-policies": 7, "storage": 4, "endpoints": 7, "services": 6, "microservices": 8, "functions": 11}
	total := 0
	for _, n := range want {
		total += n
	}

	yamlEnv := newEnv(t)
	rep := reportOf(t, yamlEnv.apply("", doc, "application/yaml"))
	if rep.DryRun || rep.Created != total || rep.Updated != 0 || rep.Unchanged != 0 || len(rep.Warnings) != 0 {
		t.Fatalf("first apply: created %d updated %d unchanged %d warnings %q; want %d created", rep.Created, rep.Updated, rep.Unchanged, rep.Warnings, total)
	}
	for route, n := range want {
		if got := yamlEnv.entityCount(route); got != n {
			t.Errorf("%s: %d entities, want %d", route, got, n)
		}
	}
	fn := object(t, yamlEnv.must(yamlEnv.get("/api/v1/functions/train_model"), http.StatusOK))
	if fn["timeout"] != "0" || fn["storage"] != "model-artifacts" || fn["endpoint_id"] != "gpu-trainer" {
		t.Errorf("train_model stored as %v", fn)
	}
	ms := object(t, yamlEnv.must(yamlEnv.get("/api/v1/microservices/ingestion"), http.StatusOK))
	if !jsonEqual(ms["functions"], []any{"ingest_events", "ingest_images"}) {
		t.Errorf("derived functions %v", ms["functions"])
	}

	// Every name YAML goes by, with and without the trailing slash: the
	// same document again changes nothing.
	rev := yamlEnv.reg.Revision()
	for _, tc := range []struct{ path, ctype string }{
		{"/api/v1/apply/", "application/x-yaml"},
		{"/api/v1/apply", "text/yaml"},
		{"/api/v1/apply/", "application/yaml; charset=utf-8"},
	} {
		rep := reportOf(t, yamlEnv.apply(tc.path, doc, tc.ctype))
		if rep.Unchanged != total || rep.Created+rep.Updated != 0 {
			t.Errorf("%s %s: re-apply %+v", tc.path, tc.ctype, rep)
		}
	}
	if yamlEnv.reg.Revision() != rev {
		t.Errorf("re-applying an unchanged document moved the revision %d → %d", rev, yamlEnv.reg.Revision())
	}

	// The same document as JSON builds the same registry.
	jsonEnv := newEnv(t)
	rep = reportOf(t, jsonEnv.apply("", yamlToJSON(t, doc), "application/json"))
	if rep.Created != total {
		t.Fatalf("JSON apply created %d, want %d", rep.Created, total)
	}
	if a, b := yamlEnv.export(), jsonEnv.export(); a != b {
		t.Fatalf("YAML and JSON of one document built different registries:\n%s\n---\n%s", a, b)
	}

	// A change to one entity updates it alone.
	changed := strings.Replace(string(doc), "timeout: 2s", "timeout: 3s", 1)
	rep = reportOf(t, yamlEnv.apply("", []byte(changed), "application/yaml"))
	if rep.Updated != 1 || rep.outcome("functions", "predict_online") != "updated" || rep.Unchanged != total-1 {
		t.Fatalf("one change: %+v", rep)
	}
}

func TestApplyDryRunChangesNothing(t *testing.T) {
	e := newEnv(t)
	e.seed()
	before := e.export()
	snap := e.snapshot()
	doc := readExample(t, "ml-pipeline/mesh.yaml")
	for _, q := range []string{"?dry_run=true", "?dry_run=1", "?dry_run=TRUE"} {
		rep := reportOf(t, e.apply("/api/v1/apply"+q, doc, "application/yaml"))
		if !rep.DryRun || rep.Created != len(rep.Items) || rep.Created < 40 {
			t.Fatalf("%s: plan %+v", q, rep)
		}
	}
	e.unchangedSince(snap)
	if after := e.export(); after != before {
		t.Fatalf("a dry run changed the export:\n%s\n---\n%s", before, after)
	}
	// The plan is what the real apply then does.
	plan := reportOf(t, e.apply("/api/v1/apply?dry_run=true", doc, "application/yaml"))
	real := reportOf(t, e.apply("/api/v1/apply?dry_run=false", doc, "application/yaml"))
	plan.DryRun = true
	real.DryRun = true
	if !jsonEqual(plan, real) {
		t.Fatalf("plan and apply differ:\n%+v\n%+v", plan, real)
	}
	// A dry run of a bad document reports the same error as applying it.
	bad := strings.Replace(string(doc), "capacity: 2TB", "capacity: 2 parsecs", 1)
	de := docErrorOf(t, e.apply("/api/v1/apply?dry_run=true", []byte(bad), "application/yaml"), http.StatusUnprocessableEntity)
	if de.Detail.Errors[0].Field != "storage.raw-data.capacity" {
		t.Fatalf("dry run error %+v", de.Detail)
	}
}

func TestApplyOneBadEntityAppliesNothing(t *testing.T) {
	doc := string(readExample(t, "ml-pipeline/mesh.yaml"))
	tests := []struct {
		name, from, to string
		status         int
		field, at      string // the error's path, and text on its line
		message        string
	}{
		{"cpu 0", "resources: {cpu: 1, ram: 1GB}", "resources: {cpu: 0, ram: 1GB}", 422,
			"functions.report_daily.resources.cpu", "cpu: 0", "greater than 0"},
		{"dangling endpoint", "endpoint_id: health-node", "endpoint_id: health-nod", 422,
			"functions.healthz.endpoint_id", "endpoint_id: health-nod", "'health-nod' does not exist"},
		{"bad permission", `permissions: ["read"]`, `permissions: ["read", "fly"]`, 422,
			"roles.auditor.permissions[1]", `"fly"`, "not a permission"},
		{"unknown field", "    protocol: grpc", "    protocol: grpc\n    colour: red", 422,
			"endpoints.online-node.colour", "colour: red", "unknown field"},
		{"id differs from key", "  trainer:\n    service_id: model-training", "  trainer:\n    microservice_id: other\n    service_id: model-training", 422,
			"microservices.trainer.microservice_id", "microservice_id: other", "must equal the key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			e.seed()
			before := e.export()
			snap := e.snapshot()
			bad := strings.Replace(doc, tt.from, tt.to, 1)
			if bad == doc {
				t.Fatal("the test document did not change")
			}
			de := docErrorOf(t, e.apply("", []byte(bad), "application/yaml"), tt.status)
			f := de.Detail.Errors[0]
			if f.Field != tt.field || f.Line != lineOf(t, bad, tt.at) || !strings.Contains(f.Message, tt.message) {
				t.Fatalf("error %+v, want %s at line %d saying %q", de.Detail, tt.field, lineOf(t, bad, tt.at), tt.message)
			}
			if after := e.export(); after != before {
				t.Fatalf("a refused document changed the registry")
			}
			e.unchangedSince(snap)

			// As JSON, the same error names the same path, without a line.
			de = docErrorOf(t, e.apply("", yamlToJSON(t, []byte(bad)), "application/json"), tt.status)
			if f := de.Detail.Errors[0]; f.Field != tt.field || f.Line != 0 {
				t.Fatalf("JSON error %+v, want %s without a line", de.Detail, tt.field)
			}
			e.unchangedSince(snap)
		})
	}
}

func TestApplyRefusals(t *testing.T) {
	e := newEnv(t)
	e.seed()
	role := "roles:\n  r9:\n    name: nine\n"
	tests := []struct {
		name    string
		path    string
		body    string
		ctype   string // "-": none
		status  int
		field   string
		line    int
		message string
	}{
		{"text/plain", "", role, "text/plain", 415, "", 0, "application/yaml"},
		{"no content type", "", role, "-", 415, "", 0, "Content-Type"},
		{"xml", "", role, "application/xml", 415, "", 0, "application/json or application/yaml"},
		{"latin1", "", role, "application/yaml; charset=latin1", 415, "", 0, "charset"},
		{"malformed content type", "", role, "application/", 415, "", 0, "malformed Content-Type"},
		{"malformed YAML", "", "roles:\n  a: [\n", "application/yaml", 400, "", 0, "not valid YAML"},
		{"malformed JSON", "", `{"roles": {`, "application/json", 400, "", 0, "not valid JSON"},
		{"JSON array", "", `[{"roles": {}}]`, "application/json", 400, "", 0, "not valid JSON"},
		{"JSON with trailing data", "", `{"roles": {}} {}`, "application/json", 400, "", 0, "after its top-level object"},
		{"YAML as JSON", "", role, "application/json", 400, "", 0, "not valid JSON"},
		{"empty body", "", "", "application/yaml", 400, "", 0, "empty"},
		{"blank body", "", "  \n\n", "application/json", 400, "", 0, "empty"},
		{"duplicate key", "", "roles:\n  a:\n    name: x\n  a:\n    name: y\n", "application/yaml", 400, "roles.a", 4, "appears twice"},
		{"two documents", "", "roles: {}\n---\nroles: {}\n", "application/yaml", 400, "", 0, "more than one"},
		{"alias", "", "x: &a {name: y}\nroles:\n  r: *a\n", "application/yaml", 400, "roles.r", 3, "aliases"},
		{"unknown section", "", "cryptomesh: v1\nwidgets:\n  a: {}\n", "application/yaml", 422, "widgets", 2, "unknown section"},
		{"bad version", "", "cryptomesh: v9\n", "application/yaml", 422, "cryptomesh", 1, "unsupported document version"},
		{"not a map", "", "- a\n- b\n", "application/yaml", 422, "", 0, "must be a map"},
		{"bad id", "", "roles:\n  -bad:\n    name: x\n", "application/yaml", 422, "roles.-bad", 2, "not a valid id"},
		{"missing required", "", "storage:\n  st:\n    capacity: 1GB\n    source_path: /a\n", "application/yaml", 422, "storage.st.sink_path", 2, "required"},
		{"implied role clashes", "", "security_policies:\n  px:\n    requires_authentication: true\n    roles: [\"-x\"]\n", "application/yaml", 422, "security_policies.px.roles[0]", 4, "not a valid id"},
		{"child of another parent", "", "microservices:\n  m9:\n    service_id: svc1\n    functions: [f1]\n", "application/yaml", 409, "microservices.m9", 2, "belongs to microservice 'm1'"},
		{"embedded policy differs", "", "endpoints:\n  e9:\n    security_policy:\n      sp_id: p1\n      roles: []\n      requires_authentication: false\n", "application/yaml", 409, "endpoints.e9", 2, "already exists with different"},
		{"unknown query parameter", "/api/v1/apply?force=true", role, "application/yaml", 422, "force", 0, "unknown query parameter"},
		{"bad dry_run", "/api/v1/apply?dry_run=maybe", role, "application/yaml", 422, "dry_run", 0, "not true or false"},
		{"empty dry_run", "/api/v1/apply?dry_run=", role, "application/yaml", 422, "dry_run", 0, "not true or false"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := e.in(t)
			before := e.export()
			snap := e.snapshot()
			de := docErrorOf(t, e.apply(tt.path, []byte(tt.body), tt.ctype), tt.status)
			msg := de.Detail.Message
			if tt.field != "" {
				var found bool
				for _, f := range de.Detail.Errors {
					if f.Field == tt.field {
						found = true
						msg = f.Message + " / " + msg
						if f.Line != tt.line {
							t.Errorf("%s at line %d, want %d", f.Field, f.Line, tt.line)
						}
					}
				}
				if !found {
					t.Fatalf("no error for %s: %+v", tt.field, de.Detail)
				}
			}
			if !strings.Contains(msg, tt.message) {
				t.Errorf("message %q does not say %q", msg, tt.message)
			}
			if e.export() != before {
				t.Fatal("a refused document changed the registry")
			}
			e.unchangedSince(snap)
		})
	}
}

func TestApplyBodyLimit(t *testing.T) {
	e := newEnv(t, withAPI(api.WithMaxApplyBytes(2048)))
	small := []byte("roles:\n  r1:\n    name: one\n")
	reportOf(t, e.apply("", small, "application/yaml"))
	big := []byte("roles:\n  r2:\n    name: two\n    description: " + strings.Repeat("x", 4096) + "\n")
	snap := e.snapshot()
	ae := errorOf(t, e.apply("", big, "application/yaml"), http.StatusRequestEntityTooLarge)
	if !strings.Contains(ae.Detail.Message, "2048") {
		t.Errorf("413 does not state the limit: %q", ae.Detail.Message)
	}
	// Without a Content-Length: the limit still holds while reading.
	hr, err := http.NewRequest("POST", e.srv.URL+"/api/v1/apply", struct{ io.Reader }{bytes.NewReader(big)})
	if err != nil {
		t.Fatal(err)
	}
	hr.Header.Set("Content-Type", "application/yaml")
	hr.Header.Set("Authorization", "Bearer "+adminToken)
	res, err := http.DefaultClient.Do(hr)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusRequestEntityTooLarge || hr.ContentLength != 0 {
		t.Fatalf("chunked oversize body: %d %s (Content-Length %d)", res.StatusCode, body, hr.ContentLength)
	}
	e.unchangedSince(snap)

	// The entity routes keep their own 1 MiB limit; the apply limit is
	// independent of it.
	doc := []byte("roles:\n  r3:\n    name: three\n    description: " + strings.Repeat("y", 3<<20) + "\n")
	def := newEnv(t)
	reportOf(t, def.apply("", doc, "application/yaml"))
	errorOf(t, def.post("/api/v1/roles", map[string]any{"name": strings.Repeat("z", 2<<20)}), http.StatusRequestEntityTooLarge)

	if _, err := api.New(openRegistry(t), api.WithAuthenticator(nodeAuth{}), api.WithMaxApplyBytes(0)); err == nil {
		t.Error("New with a zero apply limit succeeded")
	}
}

func TestApplyAndExportNeedAnAdmin(t *testing.T) {
	nodes := nodeAuth{"node-token": {Kind: api.PrincipalNode, Name: "n1", Endpoint: "e1"}}
	e := newEnv(t, withAPI(api.WithAuthenticator(nodes)))
	e.seed()
	doc := []byte("roles:\n  r9:\n    name: nine\n")
	routes := []struct {
		method, path string
		body         []byte
	}{
		{"POST", "/api/v1/apply", doc},
		{"POST", "/api/v1/apply/", doc},
		{"POST", "/api/v1/apply?dry_run=true", doc},
		{"GET", "/api/v1/export", nil},
		{"GET", "/api/v1/export/", nil},
		{"GET", "/api/v1/openapi.json", nil},
	}
	creds := []struct {
		name   string
		token  *string
		status int
	}{
		{"no token", noToken(), 401},
		{"wrong token", tokenOf("not-the-token"), 401},
		{"node token", tokenOf("node-token"), 403},
		{"admin", nil, 200},
	}
	for _, rt := range routes {
		for _, c := range creds {
			t.Run(rt.method+" "+rt.path+" "+c.name, func(t *testing.T) {
				e := e.in(t)
				snap := e.snapshot()
				rq := req{method: rt.method, path: rt.path, token: c.token}
				if rt.body != nil {
					rq.body, rq.header = rt.body, map[string]string{"Content-Type": "application/yaml"}
				}
				r := e.send(rq)
				if c.status != 200 {
					errorOf(t, r, c.status)
					e.unchangedSince(snap)
					return
				}
				if r.status != 200 {
					t.Fatalf("admin: %s", r)
				}
			})
		}
	}
	if e.entityCount("roles") != 2 {
		t.Fatal("the admin's apply did not create r9")
	}
}

// TestExportRoundTrip: export → apply on a new empty server → the same
// export; and the export applied back to its own server changes nothing.
func TestExportRoundTrip(t *testing.T) {
	a := newEnv(t)
	a.seed()
	reportOf(t, a.apply("", readExample(t, "ml-pipeline/mesh.yaml"), "application/yaml"))
	reportOf(t, a.apply("", readExample(t, "legacy/sentiment.yaml"), "application/yaml"))
	a.must(a.put("/api/v1/roles/r1", map[string]any{"description": "multi\nline: with: colons # and a hash"}), http.StatusOK)
	exported := a.export()
	for _, notWanted := range []string{"created_at", "timestamp", "endpoint_states", "function_states", "es1", "fs1"} {
		if strings.Contains(exported, notWanted) {
			t.Errorf("the export holds %q", notWanted)
		}
	}
	if head := a.send(req{method: "HEAD", path: "/api/v1/export"}); head.status != 200 || len(head.body) != 0 || head.header.Get("Content-Length") != strconv.Itoa(len(exported)) {
		t.Errorf("HEAD export: %d, %d body bytes, Content-Length %q", head.status, len(head.body), head.header.Get("Content-Length"))
	}

	b := newEnv(t)
	rep := reportOf(t, b.apply("", []byte(exported), "application/yaml"))
	if rep.Updated != 0 || rep.Unchanged != 0 || len(rep.Warnings) != 0 {
		t.Errorf("applying an export to an empty server: %+v", rep)
	}
	if again := b.export(); again != exported {
		t.Fatalf("export → apply → export differs:\n%s\n---\n%s", exported, again)
	}
	for _, route := range []string{"roles", "security-policies", "storage", "endpoints", "services", "microservices", "functions"} {
		if na, nb := a.entityCount(route), b.entityCount(route); na != nb {
			t.Errorf("%s: %d on the source, %d after the round trip", route, na, nb)
		}
	}

	rev := a.reg.Revision()
	rep = reportOf(t, a.apply("", []byte(exported), "application/yaml"))
	if rep.Created+rep.Updated != 0 || a.reg.Revision() != rev {
		t.Fatalf("re-applying the export changed its own server: %+v", rep)
	}
}

func TestApplyLegacyDocument(t *testing.T) {
	e := newEnv(t)
	doc := readExample(t, "legacy/sentiment.yaml")
	rep := reportOf(t, e.apply("", doc, "application/yaml"))
	implied, embedded := map[string]bool{}, map[string]bool{}
	for _, it := range rep.Items {
		if it.Implied {
			implied[it.ID] = true
		}
		if it.Embedded {
			embedded[it.Kind+"/"+it.ID] = true
		}
	}
	if len(implied) != 2 || !implied["data-scientist"] || !implied["api-gateway"] {
		t.Errorf("implied roles %v", implied)
	}
	if len(rep.Warnings) != 2 || !strings.Contains(rep.Warnings[0], "grants nothing") {
		t.Errorf("warnings %q", rep.Warnings)
	}
	for _, want := range []string{"security_policies/sp-sentiment", "security_policies/ep-tokenizer.policy", "storage/fn-classify.storage", "storage/st-tokens"} {
		if !embedded[want] {
			t.Errorf("embedded %s not reported (got %v)", want, embedded)
		}
	}
	role := object(t, e.must(e.get("/api/v1/roles/api-gateway"), http.StatusOK))
	if !jsonEqual(role["permissions"], []any{}) {
		t.Errorf("an implied role grants %v", role["permissions"])
	}
	ep := object(t, e.must(e.get("/api/v1/endpoints/ep-sentiment-cpu"), http.StatusOK))
	if ep["security_policy"] != "sp-sentiment" {
		t.Errorf("endpoint policy %v", ep["security_policy"])
	}
	if _, ok := ep["policy_id"]; ok {
		t.Error("policy_id was stored")
	}
	fn := object(t, e.must(e.get("/api/v1/functions/fn-classify"), http.StatusOK))
	if fn["storage"] != "fn-classify.storage" {
		t.Errorf("embedded storage became %v", fn["storage"])
	}
	rep = reportOf(t, e.apply("", doc, "application/yaml"))
	if rep.Created+rep.Updated != 0 || len(rep.Warnings) != 0 {
		t.Errorf("second apply of the legacy document: %+v", rep)
	}
}
