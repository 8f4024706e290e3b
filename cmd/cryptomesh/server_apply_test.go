package main

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestServerAppliesDocumentsAtStart is what `make run` relies on: the
// example system is loaded before the API serves, and a restart with the
// same document changes nothing.
func TestServerAppliesDocumentsAtStart(t *testing.T) {
	const token = "apply-at-start-token-0123456789"
	dir := t.TempDir()
	client := &http.Client{Timeout: 10 * time.Second}
	args := []string{"--data-dir", dir, "--api-token", token, "--apply", "../../examples/ml-pipeline/mesh.yaml"}
	p := startServer(t, args...)
	code, body, err := call(context.Background(), client, "GET", p.url+"/api/v1/functions/predict_online", token, "")
	if err != nil || code != http.StatusOK {
		t.Fatalf("example function missing: %d %v %s", code, err, body)
	}
	if !strings.Contains(p.Logs(), `"created":`) {
		t.Fatalf("no apply summary logged:\n%s", p.Logs())
	}
	before := exportDoc(t, client, p.url, token)
	p.stop(t)

	p = startServer(t, args...)
	if after := exportDoc(t, client, p.url, token); after != before {
		t.Fatalf("re-applying at start changed the registry")
	}
	var sawUnchanged bool
	for _, line := range strings.Split(p.Logs(), "\n") {
		var rec struct {
			Msg                string `json:"msg"`
			Created, Unchanged int
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "applied document" && rec.Created == 0 && rec.Unchanged > 0 {
			sawUnchanged = true
		}
	}
	if !sawUnchanged {
		t.Fatalf("second start did not report everything unchanged:\n%s", p.Logs())
	}
	p.stop(t)

	bad := startServerFails(t, "--data-dir", t.TempDir(), "--api-token", token, "--apply", "no-such-file.yaml")
	if !strings.Contains(bad, "no-such-file.yaml") {
		t.Fatalf("unhelpful error for a missing document: %s", bad)
	}
}

func exportDoc(t *testing.T, c *http.Client, url, token string) string {
	t.Helper()
	code, body, err := call(context.Background(), c, "GET", url+"/api/v1/export", token, "")
	if err != nil || code != http.StatusOK {
		t.Fatalf("export: %d %v %s", code, err, body)
	}
	return string(body)
}

// startServerFails runs `cryptomesh server` with args, expects it to exit
// with an error before serving, and returns what it printed.
func startServerFails(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binPath, append([]string{"server", "--addr", "127.0.0.1:0", "--xds-addr", "127.0.0.1:0"}, args...)...)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() == 0 {
		t.Fatalf("server did not fail: %v\n%s", err, out)
	}
	return string(out)
}
