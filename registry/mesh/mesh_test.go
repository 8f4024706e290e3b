package mesh_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cryptomesh/cryptomesh/registry"
	"github.com/cryptomesh/cryptomesh/registry/mesh"
	"github.com/cryptomesh/cryptomesh/registry/store/memstore"
)

func openRegistry(t *testing.T) *registry.Registry {
	t.Helper()
	r, err := registry.Open(context.Background(), memstore.New())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func readExample(t *testing.T, rel string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "examples", rel))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func apply(t *testing.T, r *registry.Registry, data []byte, dryRun bool) (*mesh.Report, error) {
	t.Helper()
	doc, err := mesh.Parse(data, 0)
	if err != nil {
		return nil, err
	}
	return mesh.Apply(context.Background(), r, doc, dryRun)
}

func export(t *testing.T, r *registry.Registry) string {
	t.Helper()
	out, err := mesh.Export(r.View())
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

func TestExportAppliesBackToTheSameRegistry(t *testing.T) {
	for _, ex := range []string{"ml-pipeline/mesh.yaml", "legacy/sentiment.yaml"} {
		t.Run(ex, func(t *testing.T) {
			r1 := openRegistry(t)
			rep, err := apply(t, r1, readExample(t, ex), false)
			if err != nil {
				t.Fatalf("apply: %v", err)
			}
			if rep.Created == 0 || rep.Updated != 0 {
				t.Fatalf("first apply: %+v", rep)
			}
			out1 := export(t, r1)

			r2 := openRegistry(t)
			if _, err := apply(t, r2, []byte(out1), false); err != nil {
				t.Fatalf("apply export: %v\n%s", err, out1)
			}
			if out2 := export(t, r2); out2 != out1 {
				t.Fatalf("export differs after round trip:\n%s\n---\n%s", out1, out2)
			}
			// Re-applying changes nothing and uses no revision.
			rev := r2.Revision()
			rep, err = apply(t, r2, []byte(out1), false)
			if err != nil {
				t.Fatal(err)
			}
			if rep.Created != 0 || rep.Updated != 0 || rep.Unchanged != len(rep.Items) || r2.Revision() != rev {
				t.Fatalf("re-apply changed something: %+v (revision %d -> %d)", rep, rev, r2.Revision())
			}
		})
	}
}

func TestLegacyDocumentImpliesRolesAndEmbeddedEntities(t *testing.T) {
	r := openRegistry(t)
	rep, err := apply(t, r, readExample(t, "legacy/sentiment.yaml"), false)
	if err != nil {
		t.Fatal(err)
	}
	implied := map[string]bool{}
	embedded := map[string]bool{}
	for _, it := range rep.Items {
		if it.Implied {
			implied[it.ID] = true
		}
		if it.Embedded {
			embedded[string(it.Kind)+"/"+it.ID] = true
		}
	}
	if !implied["data-scientist"] || !implied["api-gateway"] || len(implied) != 2 {
		t.Fatalf("implied roles = %v", implied)
	}
	if len(rep.Warnings) != 2 || !strings.Contains(rep.Warnings[0], "grants nothing") {
		t.Fatalf("warnings = %q", rep.Warnings)
	}
	for _, want := range []string{"security_policies/sp-sentiment", "security_policies/ep-tokenizer.policy", "storage/fn-classify.storage", "storage/st-tokens"} {
		if !embedded[want] {
			t.Errorf("embedded entity %s not reported (got %v)", want, embedded)
		}
	}
	role, err := r.View().Get(registry.KindRole, "api-gateway")
	if err != nil || len(role.(*registry.Role).Permissions) != 0 {
		t.Fatalf("implied role must grant nothing: %+v %v", role, err)
	}
	svc, _ := r.View().Get(registry.KindService, "svc-nlp")
	if ms := svc.(*registry.Service).Microservices; strings.Join(ms, ",") != "ms-sentiment,ms-tokenize" {
		t.Fatalf("derived microservices = %v", ms)
	}
	// Applying again: an implied role that now exists is not implied again.
	rep, err = apply(t, r, readExample(t, "legacy/sentiment.yaml"), false)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Warnings) != 0 || rep.Created != 0 || rep.Updated != 0 {
		t.Fatalf("second apply: %+v", rep)
	}
}

func TestOneBadEntityAppliesNothing(t *testing.T) {
	r := openRegistry(t)
	before := export(t, r)
	doc := string(readExample(t, "ml-pipeline/mesh.yaml"))
	bad := strings.Replace(doc, "resources: {cpu: 1, ram: 1GB}", "resources: {cpu: 0, ram: 1GB}", 1)
	if bad == doc {
		t.Fatal("test document did not change")
	}
	_, err := apply(t, r, []byte(bad), false)
	var me *mesh.Error
	if !errors.As(err, &me) || me.Code != registry.CodeInvalid {
		t.Fatalf("want a document error, got %v", err)
	}
	f := me.Fields[0]
	wantLine := 1 + strings.Count(bad[:strings.Index(bad, "cpu: 0")], "\n")
	if f.Path != "functions.report_daily.resources.cpu" || f.Line != wantLine {
		t.Fatalf("error at %s line %d, want functions.report_daily.resources.cpu line %d (%v)", f.Path, f.Line, wantLine, err)
	}
	if after := export(t, r); after != before || r.Revision() != 0 {
		t.Fatalf("a failed apply changed the registry")
	}
}

func TestDryRunChangesNothing(t *testing.T) {
	r := openRegistry(t)
	rep, err := apply(t, r, readExample(t, "ml-pipeline/mesh.yaml"), true)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.DryRun || rep.Created == 0 {
		t.Fatalf("dry run plan: %+v", rep)
	}
	if r.Revision() != 0 || r.View().Count(registry.KindFunction) != 0 {
		t.Fatal("dry run changed the registry")
	}
}

func TestParseErrorsNameThePath(t *testing.T) {
	tests := []struct {
		name, doc string
		code      registry.Code
		path      string
		line      int
	}{
		{"malformed yaml", "roles:\n  a: [\n", registry.CodeMalformed, "", 0},
		{"malformed json", `{"roles": {`, registry.CodeMalformed, "", 0},
		{"unknown section", "cryptomesh: v1\nwidgets:\n  a: {}\n", registry.CodeInvalid, "widgets", 2},
		{"bad version", "cryptomesh: v9\n", registry.CodeInvalid, "cryptomesh", 1},
		{"section not a map", "roles: [a, b]\n", registry.CodeInvalid, "roles", 1},
		{"bad id", "roles:\n  -bad:\n    name: x\n", registry.CodeInvalid, "roles.-bad", 2},
		{"id differs from key", "roles:\n  a:\n    role_id: b\n    name: x\n", registry.CodeInvalid, "roles.a.role_id", 3},
		{"duplicate key", "roles:\n  a:\n    name: x\n  a:\n    name: y\n", registry.CodeMalformed, "roles.a", 4},
		{"alias", "x: &a {name: y}\nroles:\n  r: *a\n", registry.CodeMalformed, "roles.r", 3},
		{"two documents", "roles: {}\n---\nroles: {}\n", registry.CodeMalformed, "", 0},
		{"empty", "", registry.CodeInvalid, "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := mesh.Parse([]byte(tt.doc), 0)
			var me *mesh.Error
			if !errors.As(err, &me) || me.Code != tt.code {
				t.Fatalf("got %v, want code %d", err, tt.code)
			}
			if tt.path == "" {
				return
			}
			if len(me.Fields) == 0 || me.Fields[0].Path != tt.path || me.Fields[0].Line != tt.line {
				t.Fatalf("got %+v, want %s line %d", me.Fields, tt.path, tt.line)
			}
		})
	}
}

func TestJSONDocument(t *testing.T) {
	r := openRegistry(t)
	doc := `{"cryptomesh":"v1","roles":{"r1":{"name":"R1","permissions":["execute:fn_*"]}},
	 "security_policies":{"p1":{"roles":["r1"],"requires_authentication":true}},
	 "endpoints":{"e1":{"security_policy":"p1","address":"127.0.0.1:7001"}},
	 "services":{"s1":{"security_policy":"p1"}},
	 "microservices":{"m1":{"service_id":"s1"}},
	 "functions":{"fn_a":{"microservice_id":"m1","endpoint_id":"e1","resources":{"cpu":1,"ram":"1GB"}}}}`
	rep, err := apply(t, r, []byte(doc), false)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Created != 6 {
		t.Fatalf("created %d, want 6: %+v", rep.Created, rep)
	}
	bad := strings.Replace(doc, `"endpoint_id":"e1"`, `"endpoint_id":"e2"`, 1)
	_, err = apply(t, r, []byte(bad), false)
	var me *mesh.Error
	if !errors.As(err, &me) || me.Fields[0].Path != "functions.fn_a.endpoint_id" || !strings.Contains(me.Fields[0].Message, "'e2' does not exist") {
		t.Fatalf("dangling reference: %v", err)
	}
}
