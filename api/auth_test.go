package api_test

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cryptomesh/cryptomesh/api"
)

func TestAuthentication(t *testing.T) {
	nodes := nodeAuth{"node-token": {Kind: api.PrincipalNode, Name: "n1", Endpoint: "e1"}}
	e := newEnv(t, withAPI(api.WithAuthenticator(nodes)))
	e.seed()
	tests := []struct {
		name   string
		method string
		path   string
		header map[string]string
		token  *string
		status int
	}{
		{"no token", "GET", "/api/v1/roles", nil, noToken(), 401},
		{"wrong token", "GET", "/api/v1/roles", nil, tokenOf("not-the-token"), 401},
		{"token with a suffix", "GET", "/api/v1/roles", nil, tokenOf(adminToken + "x"), 401},
		{"token prefix", "GET", "/api/v1/roles", nil, tokenOf(adminToken[:len(adminToken)-1]), 401},
		{"basic auth", "GET", "/api/v1/roles", map[string]string{"Authorization": "Basic " + adminToken}, noToken(), 401},
		{"bearer without token", "GET", "/api/v1/roles", map[string]string{"Authorization": "Bearer "}, noToken(), 401},
		{"right token", "GET", "/api/v1/roles", nil, nil, 200},
		{"scheme is case-insensitive", "GET", "/api/v1/roles", map[string]string{"Authorization": "bearer " + adminToken}, noToken(), 200},
		{"no token on an item", "GET", "/api/v1/functions/f1", nil, noToken(), 401},
		{"no token on a write", "DELETE", "/api/v1/functions/f1", nil, noToken(), 401},
		{"no token on a state", "GET", "/api/v1/endpoints/e1/state", nil, noToken(), 401},
		{"no token on reports", "POST", "/api/v1/reports", nil, noToken(), 401},
		{"node on an admin route", "GET", "/api/v1/roles", nil, tokenOf("node-token"), 403},
		{"node writing an entity", "DELETE", "/api/v1/functions/f1", nil, tokenOf("node-token"), 403},
		{"node reading its own state", "GET", "/api/v1/endpoints/e1/state", nil, tokenOf("node-token"), 403},
		{"healthz without token", "GET", "/healthz", nil, noToken(), 200},
		{"readyz without token", "GET", "/readyz/", nil, noToken(), 200},
		{"metrics without token", "GET", "/metrics", nil, noToken(), 200},
		{"public route ignores a bad token", "GET", "/healthz", nil, tokenOf("garbage"), 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := e.in(t)
			before := e.snapshot()
			r := e.send(req{method: tt.method, path: tt.path, token: tt.token, header: tt.header})
			if r.status != tt.status {
				t.Fatalf("status %d, want %d: %s", r.status, tt.status, r.body)
			}
			if tt.status >= 400 {
				errorOf(t, r, tt.status)
			}
			wa := r.header.Get("WWW-Authenticate")
			if tt.status == 401 && !strings.HasPrefix(wa, "Bearer") {
				t.Errorf("401 without WWW-Authenticate: Bearer (got %q)", wa)
			}
			if tt.status != 401 && wa != "" {
				t.Errorf("WWW-Authenticate %q on a %d", wa, tt.status)
			}
			e.unchangedSince(before)
		})
	}
}

// TestNoUnauthenticatedMode: a server cannot be built without a way to
// authenticate, nor with a nil one.
func TestNoUnauthenticatedMode(t *testing.T) {
	reg := openRegistry(t)
	if _, err := api.New(reg); err == nil {
		t.Error("New without an authenticator succeeded")
	}
	if _, err := api.New(reg, api.WithAuthenticator(nil)); err == nil {
		t.Error("New with a nil authenticator succeeded")
	}
	if _, err := api.New(nil, api.WithAuthenticator(nodeAuth{})); err == nil {
		t.Error("New without a registry succeeded")
	}
	if _, err := api.New(reg, api.WithAuthenticator(nodeAuth{}), api.WithMaxBodyBytes(0)); err == nil {
		t.Error("New with a zero body limit succeeded")
	}
}

// failingAuth cannot decide: its backend is down.
type failingAuth struct{}

func (failingAuth) Authenticate(*http.Request) (api.Principal, error) {
	return api.Principal{}, errors.New("token service unreachable")
}

func TestAuthenticatorFailureIsUnavailable(t *testing.T) {
	e := newEnv(t, withoutDefaultAdmin(), withAPI(api.WithAuthenticator(failingAuth{})))
	r := e.get("/api/v1/roles")
	ae := errorOf(t, r, http.StatusServiceUnavailable)
	if strings.Contains(ae.Detail.Message, "unreachable") {
		t.Errorf("internal cause leaked to the client: %q", ae.Detail.Message)
	}
	if !strings.Contains(e.logs.String(), "token service unreachable") {
		t.Error("the cause was not logged")
	}
}

// zeroAuth accepts everyone as a Principal it forgot to fill in.
type zeroAuth struct{}

func (zeroAuth) Authenticate(*http.Request) (api.Principal, error) { return api.Principal{}, nil }

func TestZeroPrincipalMayDoNothing(t *testing.T) {
	e := newEnv(t, withoutDefaultAdmin(), withAPI(api.WithAuthenticator(zeroAuth{})))
	errorOf(t, e.get("/api/v1/roles"), http.StatusForbidden)
	errorOf(t, e.post("/api/v1/reports", map[string]any{"items": []any{}}), http.StatusForbidden)
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// replaceFile swaps path's content atomically, as rotation tools do.
func replaceFile(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	writeFile(t, tmp, content)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func tokenEnv(t *testing.T, files []string, literals []string) *env {
	t.Helper()
	tokens, err := api.NewAdminTokens(files, literals, nil)
	if err != nil {
		t.Fatalf("NewAdminTokens: %v", err)
	}
	return newEnv(t, withoutDefaultAdmin(), withAPI(api.WithAuthenticator(tokens)))
}

func statusWith(e *env, token string) int {
	return e.send(req{method: "GET", path: "/api/v1/roles", token: tokenOf(token)}).status
}

// eventually polls cond for up to 15 s: token files are re-read at most
// once a second.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 15s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestAdminTokenFiles(t *testing.T) {
	dir := t.TempDir()
	a := filepath.Join(dir, "a")
	b := filepath.Join(dir, "b")
	writeFile(t, a, "# admin tokens\n\n  tok-alpha  \ntok-beta\n# tok-commented\n")
	writeFile(t, b, "tok-gamma\n")
	e := tokenEnv(t, []string{a, b}, []string{"tok-literal"})
	for tok, want := range map[string]int{
		"tok-alpha": 200, "tok-beta": 200, "tok-gamma": 200, "tok-literal": 200,
		"tok-commented": 401, "# tok-commented": 401, "# admin tokens": 401, "tok": 401,
	} {
		if got := statusWith(e, tok); got != want {
			t.Errorf("token %q: status %d, want %d", tok, got, want)
		}
	}
}

func TestAdminTokenRotation(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "admin-token")
	writeFile(t, path, "old-token-1\n")
	e := tokenEnv(t, []string{path}, nil)
	if got := statusWith(e, "old-token-1"); got != 200 {
		t.Fatalf("old token before rotation: %d", got)
	}

	// Step 1: both tokens valid, written atomically (a new inode).
	replaceFile(t, path, "old-token-1\nnew-token-2\n")
	eventually(t, "new token accepted", func() bool { return statusWith(e, "new-token-2") == 200 })
	if got := statusWith(e, "old-token-1"); got != 200 {
		t.Fatalf("old token during rotation: %d", got)
	}

	// Step 2: the old token removed by rewriting the file in place.
	writeFile(t, path, "new-token-2\n")
	eventually(t, "old token refused", func() bool { return statusWith(e, "old-token-1") == 401 })
	if got := statusWith(e, "new-token-2"); got != 200 {
		t.Fatalf("new token after rotation: %d", got)
	}

	// A file that disappears revokes its tokens, and comes back working.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	eventually(t, "tokens of a removed file refused", func() bool { return statusWith(e, "new-token-2") == 401 })
	writeFile(t, path, "third-token-3\n")
	eventually(t, "recreated file accepted", func() bool { return statusWith(e, "third-token-3") == 200 })

	// An emptied file also revokes (fail closed).
	writeFile(t, path, "# nothing here\n")
	eventually(t, "tokens of an emptied file refused", func() bool { return statusWith(e, "third-token-3") == 401 })
}

func TestNewAdminTokensRejectsBadInput(t *testing.T) {
	dir := t.TempDir()
	secret := "s3cret-value-never-echoed"
	files := map[string]string{
		"empty":    "",
		"comments": "# only a comment\n\n",
		"space":    "tok " + secret + "\n",
		"control":  "tok\x01" + secret + "\n",
	}
	for name, content := range files {
		writeFile(t, filepath.Join(dir, name), content)
	}
	tests := []struct {
		name     string
		files    []string
		literals []string
	}{
		{"nothing configured", nil, nil},
		{"empty file", []string{filepath.Join(dir, "empty")}, nil},
		{"only comments", []string{filepath.Join(dir, "comments")}, nil},
		{"token with a space", []string{filepath.Join(dir, "space")}, nil},
		{"token with a control character", []string{filepath.Join(dir, "control")}, nil},
		{"missing file", []string{filepath.Join(dir, "missing")}, nil},
		{"a directory", []string{dir}, nil},
		{"empty literal", nil, []string{""}},
		{"literal with a space", nil, []string{"a " + secret}},
		{"one bad file among good tokens", []string{filepath.Join(dir, "empty")}, []string{"good"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := api.NewAdminTokens(tt.files, tt.literals, nil)
			if err == nil {
				t.Fatal("accepted")
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("the error shows the token: %v", err)
			}
		})
	}
}

func TestEnsureTokenFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data", "nested")
	path := filepath.Join(dir, "admin-token")

	created, err := api.EnsureTokenFile(path)
	if err != nil || !created {
		t.Fatalf("first call: created=%v err=%v", created, err)
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := info.Mode().Perm(); perm != 0o600 {
		t.Errorf("token file mode %04o, want 0600", perm)
	}
	dinfo, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if perm := dinfo.Mode().Perm(); perm != 0o700 {
		t.Errorf("token dir mode %04o, want 0700", perm)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	tok := strings.TrimSpace(string(raw))
	if len(tok) != 43 || strings.ContainsAny(tok, "+/=") {
		t.Errorf("token %d characters, want 43 of base64url (32 bytes)", len(tok))
	}

	created, err = api.EnsureTokenFile(path)
	if err != nil || created {
		t.Fatalf("second call: created=%v err=%v", created, err)
	}
	if again, _ := os.ReadFile(path); string(again) != string(raw) {
		t.Error("second call replaced the token")
	}

	// The created file works as an admin token file.
	e := tokenEnv(t, []string{path}, nil)
	if got := statusWith(e, tok); got != 200 {
		t.Errorf("generated token: status %d", got)
	}

	other, err := api.EnsureTokenFile(filepath.Join(t.TempDir(), "admin-token"))
	if err != nil || !other {
		t.Fatalf("second file: %v %v", other, err)
	}

	for _, mode := range []os.FileMode{0o640, 0o604, 0o660} {
		t.Run(fmt.Sprintf("mode %04o", mode), func(t *testing.T) {
			if err := os.Chmod(path, mode); err != nil {
				t.Fatal(err)
			}
			_, err := api.EnsureTokenFile(path)
			if err == nil {
				t.Fatal("an existing group/world-accessible token file was accepted")
			}
			if strings.Contains(err.Error(), tok) {
				t.Errorf("the error shows the token: %v", err)
			}
		})
	}
}

// TestTokensNeverLogged drives every path that logs (good and bad
// credentials, errors, 5xx, panics, token reloads) with debug logging on
// and checks that no token reaches the log.
func TestTokensNeverLogged(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "tokens")
	fileToken := "file-token-7f3e9b1c"
	writeFile(t, path, fileToken+"\n")
	tokenLogs := &syncBuffer{}
	tokens, err := api.NewAdminTokens([]string{path}, nil,
		slog.New(slog.NewJSONHandler(tokenLogs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, withAPI(api.WithAuthenticator(tokens)))
	e.seed()
	wrong := "wrong-token-c0ffee42"
	for _, tok := range []string{adminToken, fileToken, wrong, ""} {
		for _, rq := range []req{
			{method: "GET", path: "/api/v1/roles"},
			{method: "GET", path: "/api/v1/roles/ghost"},
			{method: "POST", path: "/api/v1/roles", body: `{"name":`},
			{method: "POST", path: "/api/v1/roles", body: map[string]any{"name": 5}},
			{method: "PATCH", path: "/api/v1/roles"},
			{method: "GET", path: "/nowhere"},
			{method: "GET", path: "/healthz"},
			{method: "DELETE", path: "/api/v1/roles/r1"},
		} {
			rq.token = tokenOf(tok)
			e.send(rq)
		}
	}
	writeFile(t, path, "")
	time.Sleep(1100 * time.Millisecond)
	e.send(req{method: "GET", path: "/api/v1/roles", token: tokenOf(fileToken)})

	logs := e.logs.String()
	if !strings.Contains(logs, `"route":"/api/v1/roles"`) {
		t.Fatalf("the request log is missing; captured:\n%s", logs)
	}
	if !strings.Contains(tokenLogs.String(), "no longer usable") {
		t.Fatalf("the token reload was not logged; captured:\n%s", tokenLogs)
	}
	logs += tokenLogs.String()
	for _, secret := range []string{adminToken, fileToken, wrong} {
		if strings.Contains(logs, secret) {
			t.Errorf("token %q appears in the logs", secret)
		}
	}
	if strings.Contains(strings.ToLower(logs), "authorization") {
		t.Error("an Authorization header was logged")
	}
}
