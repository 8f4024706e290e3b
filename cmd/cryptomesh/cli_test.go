package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// cliResult is what one run of a client command printed and its exit code.
type cliResult struct {
	stdout, stderr string
	code           int
}

func (r cliResult) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// cliRun runs the cryptomesh binary in dir with args, the environment
// without any CRYPTOMESH_* variable plus env, and stdin.
func cliRun(t *testing.T, dir string, env []string, stdin string, args ...string) cliResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binPath, args...)
	cmd.Dir = dir
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CRYPTOMESH_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	res := cliResult{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		res.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("run %v: %v", args, err)
	}
	return res
}

// cliEnv is a server with its data directory, and the directory the
// commands run in: its ./data is the server's, as after `make run`.
type cliEnv struct {
	t   *testing.T
	dir string
	srv *proc
}

func newCLIEnv(t *testing.T) *cliEnv {
	t.Helper()
	dir := t.TempDir()
	p := startServer(t, "--data-dir", filepath.Join(dir, "data"))
	return &cliEnv{t: t, dir: dir, srv: p}
}

// run runs a client command against the env's server.
func (c *cliEnv) run(stdin string, args ...string) cliResult {
	c.t.Helper()
	return cliRun(c.t, c.dir, []string{"CRYPTOMESH_SERVER=" + c.srv.url}, stdin, args...)
}

// ok runs a command that must succeed.
func (c *cliEnv) ok(args ...string) cliResult {
	c.t.Helper()
	r := c.run("", args...)
	if r.code != 0 {
		c.t.Fatalf("cryptomesh %s: %s", strings.Join(args, " "), r)
	}
	return r
}

// fails runs a command that must exit with code (the numbers of the
// documented contract, not the constants) and say each of says on
// stderr.
func (c *cliEnv) fails(code int, says []string, args ...string) cliResult {
	c.t.Helper()
	r := c.run("", args...)
	if r.code != code {
		c.t.Fatalf("cryptomesh %s: exit %d, want %d\n%s", strings.Join(args, " "), r.code, code, r)
	}
	for _, s := range says {
		if !strings.Contains(r.stderr, s) {
			c.t.Errorf("cryptomesh %s: stderr does not say %q:\n%s", strings.Join(args, " "), s, r.stderr)
		}
	}
	return r
}

func example(t *testing.T, rel string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("..", "..", "examples", rel))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCLIApplyGetDelete(t *testing.T) {
	c := newCLIEnv(t)
	pipeline := example(t, "ml-pipeline/mesh.yaml")

	// apply prints each entity and a summary.
	r := c.ok("apply", "-f", pipeline)
	for _, want := range []string{"role/ml-engineer created\n", "security-policy/reports-audit created\n", "function/train_model created\n", "applied: 49 created, 0 updated, 0 unchanged\n"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("apply output lacks %q:\n%s", want, r.stdout)
		}
	}
	// The legacy document, from standard input: implied roles warn on
	// stderr, embedded entities are marked.
	legacy, err := os.ReadFile(example(t, "legacy/sentiment.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	r = c.run(string(legacy), "apply", "-f", "-")
	if r.code != 0 || !strings.Contains(r.stdout, "role/api-gateway created (implied: no permissions)") ||
		!strings.Contains(r.stdout, "storage/fn-classify.storage created (embedded)") ||
		!strings.Contains(r.stderr, "warning: role 'api-gateway' is named but not defined") {
		t.Fatalf("legacy apply: %s", r)
	}
	r = c.ok("apply", "--filename", pipeline)
	if !strings.Contains(r.stdout, "applied: 0 created, 0 updated, 49 unchanged") || !strings.Contains(r.stdout, "function/train_model unchanged") {
		t.Errorf("re-apply:\n%s", r.stdout)
	}

	// A dry run plans and changes nothing.
	changed := filepath.Join(c.dir, "changed.yml")
	doc, _ := os.ReadFile(pipeline)
	writeFile(t, changed, strings.Replace(string(doc), "timeout: 2s", "timeout: 9s", 1))
	r = c.ok("apply", "-f", changed, "--dry-run")
	if !strings.Contains(r.stdout, "function/predict_online updated (dry run)") || !strings.Contains(r.stdout, "dry run: 0 to create, 1 to update, 48 unchanged; nothing was changed") {
		t.Errorf("dry run:\n%s", r.stdout)
	}
	if out := c.ok("get", "function", "predict_online", "-o", "json").stdout; !strings.Contains(out, `"timeout": "2s"`) {
		t.Errorf("the dry run changed predict_online:\n%s", out)
	}

	// get: every way of naming a kind, every output format.
	for _, name := range []string{"functions", "function", "fn", "FUNCTIONS", "fns"} {
		r := c.ok("get", name)
		lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
		if len(lines) != 14 || !regexp.MustCompile(`^ID\s+MICROSERVICE\s+ENDPOINT\s+STATUS\s+TIMEOUT\s+STORAGE\s+RESOURCES$`).MatchString(lines[0]) {
			t.Fatalf("get %s: %d lines:\n%s", name, len(lines), r.stdout)
		}
		if !regexp.MustCompile(`(?m)^train_model\s+trainer\s+gpu-trainer\s+deployed\s+0\s+model-artifacts\s+16cpu/96GB$`).MatchString(r.stdout) {
			t.Errorf("get %s: no train_model row:\n%s", name, r.stdout)
		}
	}
	kinds := map[string]string{
		"roles": "ID", "role": "ID", "security-policies": "AUTH", "security-policy": "AUTH", "sp": "AUTH", "security_policies": "AUTH",
		"policies": "AUTH", "storage": "CAPACITY", "endpoints": "ADDRESS", "ep": "ADDRESS", "services": "MICROSERVICES", "svc": "MICROSERVICES",
		"microservices": "FUNCTIONS", "ms": "FUNCTIONS",
	}
	for name, header := range kinds {
		if r := c.ok("get", name); !strings.Contains(strings.SplitN(r.stdout, "\n", 2)[0], header) {
			t.Errorf("get %s: header %q lacks %s", name, strings.SplitN(r.stdout, "\n", 2)[0], header)
		}
	}
	if r := c.ok("get", "sp", "reports-audit"); !regexp.MustCompile(`(?m)^reports-audit\s+yes\s+audit\s+analyst,auditor$`).MatchString(r.stdout) {
		t.Errorf("get sp reports-audit:\n%s", r.stdout)
	}
	if r := c.ok("get", "fs"); r.stdout != "" || !strings.Contains(r.stderr, "no function-states") {
		t.Errorf("get fs with none: %s", r)
	}

	var fns []map[string]any
	if err := json.Unmarshal([]byte(c.ok("get", "-o", "json", "functions").stdout), &fns); err != nil || len(fns) != 13 {
		t.Fatalf("get -o json functions: %d, %v", len(fns), err)
	}
	var fn map[string]any
	if err := json.Unmarshal([]byte(c.ok("get", "fn", "train_model", "--output=json").stdout), &fn); err != nil || fn["timeout"] != "0" || fn["endpoint_id"] != "gpu-trainer" {
		t.Fatalf("get fn train_model -o json: %v %v", fn, err)
	}
	var asYAML map[string]any
	if err := yaml.Unmarshal([]byte(c.ok("get", "ms", "ingestion", "-o", "yaml").stdout), &asYAML); err != nil || asYAML["service_id"] != "data-platform" {
		t.Fatalf("get ms ingestion -o yaml: %v %v", asYAML, err)
	}
	var roles []map[string]any
	if err := yaml.Unmarshal([]byte(c.ok("get", "roles", "-o", "yaml").stdout), &roles); err != nil || len(roles) != 8 {
		t.Fatalf("get roles -o yaml: %d %v", len(roles), err)
	}

	// Exit codes: 2 usage, 3 not found, 4 conflict, 5 invalid input.
	c.fails(2, []string{`unknown kind "widgets"`, "security-policies"}, "get", "widgets")
	c.fails(2, []string{`-o "xml"`}, "get", "roles", "-o", "xml")
	c.fails(2, []string{"want KIND ID"}, "delete", "function")
	c.fails(3, []string{"404: function 'nope' not found"}, "get", "fn", "nope")
	c.fails(3, []string{"404: function 'nope' not found"}, "delete", "fn", "nope")
	c.fails(4, []string{"409: service 'inference' is referenced by microservice 'online-serving'", "pass --cascade"}, "delete", "service", "inference")
	if r := c.ok("delete", "service", "inference", "--cascade"); r.stdout != "service/inference deleted\n" {
		t.Errorf("delete --cascade printed %q", r.stdout)
	}
	c.fails(3, nil, "get", "microservice", "online-serving")
	c.fails(3, nil, "get", "function", "predict_online")
	// Cascade follows containment only: a role in use stays.
	c.fails(4, []string{"role 'ml-engineer' is referenced by"}, "delete", "role", "ml-engineer", "--cascade")
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestCLIRefusedDocuments: a document the server refuses changes nothing,
// and the error says where in the document and what to fix.
func TestCLIRefusedDocuments(t *testing.T) {
	c := newCLIEnv(t)
	doc, err := os.ReadFile(example(t, "ml-pipeline/mesh.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	bad := strings.Replace(string(doc), "resources: {cpu: 1, ram: 1GB}", "resources: {cpu: 0, ram: 1GB}", 1)
	line := 1 + strings.Count(bad[:strings.Index(bad, "cpu: 0")], "\n")
	path := filepath.Join(c.dir, "bad.yaml")
	writeFile(t, path, bad)
	c.fails(5, []string{
		path + " was not applied; nothing was changed",
		fmt.Sprintf("functions.report_daily.resources.cpu (line %d): must be greater than 0", line),
	}, "apply", "-f", path)
	if r := c.ok("get", "roles"); !strings.Contains(r.stderr, "no roles") {
		t.Fatalf("a refused document left entities:\n%s", r)
	}

	// JSON without an extension is recognised by its content; its errors
	// have paths but no lines.
	js := filepath.Join(c.dir, "doc")
	writeFile(t, js, `{"roles": {"r1": {"name": "one", "permissions": ["fly"]}}}`)
	r := c.fails(5, []string{"roles.r1.permissions[0]: \"fly\" is not a permission"}, "apply", "-f", js)
	if strings.Contains(r.stderr, "(line") {
		t.Errorf("a JSON error with a line: %s", r.stderr)
	}
	writeFile(t, js, "roles:\n  a: [\n")
	c.fails(5, []string{"400: the document is not valid YAML"}, "apply", "-f", js)
	c.fails(2, []string{"read the document", "no-such-file.yaml"}, "apply", "-f", filepath.Join(c.dir, "no-such-file.yaml"))
	c.fails(2, []string{"-f FILE is required"}, "apply")

	// A conflict with stored state is 4.
	c.ok("apply", "-f", example(t, "ml-pipeline/mesh.yaml"))
	clash := filepath.Join(c.dir, "clash.yaml")
	writeFile(t, clash, "microservices:\n  thief:\n    service_id: inference\n    functions: [train_model]\n")
	c.fails(4, []string{"microservices.thief (line 2): ", "belongs to microservice 'trainer'"}, "apply", "-f", clash)
}

func TestCLIMaxApplyBytes(t *testing.T) {
	dir := t.TempDir()
	p := startServer(t, "--data-dir", filepath.Join(dir, "data"), "--max-apply-bytes", "1024")
	c := &cliEnv{t: t, dir: dir, srv: p}
	c.fails(5, []string{"413: the request body exceeds the limit of 1024 bytes", "--max-apply-bytes"},
		"apply", "-f", example(t, "ml-pipeline/mesh.yaml"))
	small := filepath.Join(dir, "small.yaml")
	writeFile(t, small, "roles:\n  r1:\n    name: one\n")
	c.ok("apply", "-f", small)
}

// TestCLIExportRoundTrip: export from one server, apply to a new one, the
// same export.
func TestCLIExportRoundTrip(t *testing.T) {
	a := newCLIEnv(t)
	a.ok("apply", "-f", example(t, "ml-pipeline/mesh.yaml"))
	a.ok("apply", "-f", example(t, "legacy/sentiment.yaml"))
	exported := a.ok("export").stdout
	if !strings.HasPrefix(exported, "cryptomesh: v1\n") || !strings.Contains(exported, "train_model:") {
		t.Fatalf("export:\n%.300s", exported)
	}
	b := newCLIEnv(t)
	r := b.run(exported, "apply", "-f", "-")
	if r.code != 0 || !strings.Contains(r.stdout, "applied: 62 created, 0 updated, 0 unchanged") {
		t.Fatalf("apply the export: %s", r)
	}
	if again := b.ok("export").stdout; again != exported {
		t.Fatalf("export → apply → export differs:\n%s\n---\n%s", exported, again)
	}
}

// TestCLIErrorsSayWhatToFix: a refused token, an unreachable server, a
// missing token file; and the variables that point elsewhere.
func TestCLIErrorsSayWhatToFix(t *testing.T) {
	c := newCLIEnv(t)
	wrong := filepath.Join(c.dir, "wrong-token")
	writeFile(t, wrong, "not-the-admin-token\n")
	c.fails(1, []string{"401: the token in " + wrong + " was refused", "--token-file"}, "get", "roles", "--token-file", wrong)

	// Via the environment: the same token file, another server.
	r := cliRun(t, c.dir, []string{"CRYPTOMESH_SERVER=" + c.srv.url, "CRYPTOMESH_TOKEN_FILE=" + wrong}, "", "get", "roles")
	if r.code != 1 || !strings.Contains(r.stderr, "the token in "+wrong+" was refused") {
		t.Fatalf("CRYPTOMESH_TOKEN_FILE: %s", r)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close()
	for _, args := range [][]string{
		{"get", "roles", "--server", dead},
		{"export", "--server=" + dead},
	} {
		c.fails(1, []string{"cannot reach the control plane at " + dead + " — is `cryptomesh server` running?"}, args...)
	}
	r = cliRun(t, c.dir, []string{"CRYPTOMESH_SERVER=" + dead}, "", "delete", "fn", "x")
	if r.code != 1 || !strings.Contains(r.stderr, "cannot reach the control plane at "+dead) {
		t.Fatalf("CRYPTOMESH_SERVER: %s", r)
	}

	// No token where the command runs: say where it looked and how to
	// point elsewhere; --data-dir does.
	elsewhere := t.TempDir()
	r = cliRun(t, elsewhere, []string{"CRYPTOMESH_SERVER=" + c.srv.url}, "", "get", "roles")
	if r.code != 1 || !strings.Contains(r.stderr, filepath.Join("data", "admin-token")+" does not exist") || !strings.Contains(r.stderr, "--data-dir") {
		t.Fatalf("no token file: %s", r)
	}
	r = cliRun(t, elsewhere, []string{"CRYPTOMESH_SERVER=" + c.srv.url}, "", "get", "roles", "--data-dir", filepath.Join(c.dir, "data"))
	if r.code != 0 {
		t.Fatalf("--data-dir: %s", r)
	}
	c.fails(2, []string{"want http:// or https://"}, "get", "roles", "--server", "127.0.0.1:19000")

	// help documents the exit codes.
	r = cliRun(t, c.dir, nil, "", "help")
	for _, want := range []string{"apply", "get", "delete", "export", "Exit codes:", "3  not found", "4  conflict", "5  invalid input"} {
		if !strings.Contains(r.stdout+r.stderr, want) {
			t.Errorf("help lacks %q", want)
		}
	}
	if r := cliRun(t, c.dir, nil, "", "get", "--help"); r.code != 0 || !strings.Contains(r.stderr, "CRYPTOMESH_TOKEN_FILE") {
		t.Errorf("get --help: %s", r)
	}
}
