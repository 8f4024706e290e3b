package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// binPath is the cryptomesh binary built once for the package's tests.
// Tests run the real binary as separate processes, as users do.
var binPath string

func TestMain(m *testing.M) {
	if role := os.Getenv(xdsChildEnv); role != "" {
		os.Exit(xdsChild(role)) // a gRPC process of the xDS end-to-end test
	}
	dir, err := os.MkdirTemp("", "cryptomesh-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binPath = filepath.Join(dir, "cryptomesh")
	build := exec.Command("go", "build", "-o", binPath, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build cryptomesh:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is a running cryptomesh server.
type proc struct {
	cmd  *exec.Cmd
	url  string
	done chan struct{}
	mu   sync.Mutex
	logs strings.Builder
	err  error
	// client reaches the server; nil means http.DefaultClient (plain
	// HTTP). TLS servers get one that trusts their CA.
	client *http.Client
}

func (p *proc) Logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.logs.String()
}

// startServer runs `cryptomesh server` on a free loopback port and waits
// until it answers /readyz.
func startServer(t *testing.T, args ...string) *proc {
	t.Helper()
	p := launchServer(t, args...)
	waitReady(t, p)
	return p
}

// launchServer runs `cryptomesh server` and returns once it logged the URL
// it serves (http or https), without waiting for readiness.
func launchServer(t *testing.T, args ...string) *proc {
	t.Helper()
	args = append([]string{"server", "--addr", "127.0.0.1:0", "--xds-addr", "127.0.0.1:0", "--log-format", "json"}, args...)
	cmd := exec.Command(binPath, args...)
	cmd.Env = append(os.Environ(), "GOMAXPROCS=2")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start server: %v", err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.logs.WriteString(line + "\n")
			p.mu.Unlock()
			var rec struct {
				Msg string `json:"msg"`
				URL string `json:"url"`
			}
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "serving API" {
				select {
				case addr <- strings.TrimSuffix(rec.URL, "/api/v1"):
				default:
				}
			}
		}
		io.Copy(io.Discard, stderr)
	}()
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() { p.kill() })
	select {
	case u := <-addr:
		p.url = u
	case <-p.done:
		t.Fatalf("server exited before serving: %v\n%s", p.err, p.Logs())
	case <-time.After(60 * time.Second):
		t.Fatalf("server did not start within 60s\n%s", p.Logs())
	}
	return p
}

func waitReady(t *testing.T, p *proc) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	c := p.client
	if c == nil {
		c = http.DefaultClient
	}
	for time.Now().Before(deadline) {
		resp, err := c.Get(p.url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("server not ready within 60s\n%s", p.Logs())
}

func (p *proc) kill() {
	if p.cmd.Process != nil {
		p.cmd.Process.Kill()
	}
	<-p.done
}

// stop sends SIGTERM and waits for a clean exit.
func (p *proc) stop(t *testing.T) {
	t.Helper()
	p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("server did not stop on SIGINT\n%s", p.Logs())
	}
}

// call sends one authenticated JSON request.
func call(ctx context.Context, c *http.Client, method, url, token, body string) (int, []byte, error) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return 0, nil, err
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}
