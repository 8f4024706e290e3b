package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	grpcmetadata "google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/cryptomesh/cryptomesh/identity/agent"
)

// child is a process of the end-to-end test whose output lines are kept.
type child struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}

	mu     sync.Mutex
	lines  []string
	stderr strings.Builder
	grew   chan struct{} // closed and replaced when a line arrives
}

// startChild runs path with args and extra environment until the test ends.
func startChild(t *testing.T, name string, env []string, path string, args ...string) *child {
	t.Helper()
	cmd := exec.Command(path, args...)
	cmd.Env = append(append(os.Environ(), "GOMAXPROCS=1"), env...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	c := &child{name: name, cmd: cmd, done: make(chan struct{}), grew: make(chan struct{})}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			c.mu.Lock()
			c.lines = append(c.lines, sc.Text())
			close(c.grew)
			c.grew = make(chan struct{})
			c.mu.Unlock()
		}
	}()
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			c.mu.Lock()
			c.stderr.WriteString(sc.Text() + "\n")
			c.mu.Unlock()
		}
	}()
	go func() {
		wg.Wait()
		cmd.Wait()
		close(c.done)
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-c.done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-c.done
		}
		if t.Failed() {
			t.Logf("--- %s stderr (last 3000 bytes):\n%s", name, tail(c.Stderr(), 3000))
		}
	})
	return c
}

func (c *child) Stderr() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stderr.String()
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// waitLine waits for a line at or after index from that satisfies ok and
// returns its index.
func (c *child) waitLine(t *testing.T, from int, timeout time.Duration, what string, ok func(string) bool) int {
	t.Helper()
	deadline := time.After(timeout)
	for {
		c.mu.Lock()
		for i := from; i < len(c.lines); i++ {
			if ok(c.lines[i]) {
				c.mu.Unlock()
				return i
			}
		}
		from = max(from, len(c.lines))
		grew := c.grew
		last := ""
		if len(c.lines) > 0 {
			last = c.lines[len(c.lines)-1]
		}
		c.mu.Unlock()
		select {
		case <-grew:
		case <-c.done:
			t.Fatalf("%s exited while waiting for %s\n%s", c.name, what, tail(c.Stderr(), 3000))
		case <-deadline:
			t.Fatalf("%s: no %s within %s; last line %q", c.name, what, timeout, last)
		}
	}
}

func (c *child) lineCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.lines)
}

// freeAddr returns a loopback address nothing listens on now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// xdsAddrOf reads the xDS address the server logged.
func xdsAddrOf(t *testing.T, p *proc) string {
	t.Helper()
	for _, line := range strings.Split(p.Logs(), "\n") {
		var rec struct {
			Msg  string `json:"msg"`
			Addr string `json:"addr"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "serving xDS" {
			return rec.Addr
		}
	}
	t.Fatalf("the server logged no xDS address\n%s", p.Logs())
	return ""
}

// e2eControlPlane is the control plane of the end-to-end test.
type e2eControlPlane struct {
	p     *proc
	admin string
	xds   string
}

func (cp *e2eControlPlane) api(t *testing.T, method, path, body string, want int) []byte {
	t.Helper()
	code, out, err := call(context.Background(), http.DefaultClient, method, cp.p.url+path, cp.admin, body)
	if err != nil || code != want {
		t.Fatalf("%s %s: %d %v %s", method, path, code, err, out)
	}
	return out
}

// token mints a join token; binding is "endpoint":E or "role":R.
func (cp *e2eControlPlane) token(t *testing.T, node, field, value string) (tok, jti string) {
	t.Helper()
	out := cp.api(t, "POST", "/api/v1/identity/tokens", fmt.Sprintf(`{"node":%q,%q:%q,"ttl":"1h"}`, node, field, value), http.StatusCreated)
	var ans struct{ Token, JTI string }
	if err := json.Unmarshal(out, &ans); err != nil {
		t.Fatal(err)
	}
	return ans.Token, ans.JTI
}

// node enrols a node the way an operator does: a join token in a file, a
// `cryptomesh agent` keeping DIR fresh, and the bootstrap printed by
// `cryptomesh bootstrap grpc`. It returns DIR, the bootstrap's path and
// the token.
func (cp *e2eControlPlane) node(t *testing.T, root, node, field, value string) (dir, bootstrap, tok string) {
	t.Helper()
	tok, _ = cp.token(t, node, field, value)
	tokenFile := filepath.Join(root, node+".token")
	if err := os.WriteFile(tokenFile, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	dir = filepath.Join(root, node)
	startChild(t, "agent "+node, nil, binPath, "agent", "--node", node, "--dir", dir, "--token-file", tokenFile, "--server", cp.p.url)
	out, err := exec.Command(binPath, "bootstrap", "grpc", "--node", node, "--dir", dir, "--xds-server", cp.xds).Output()
	if err != nil {
		t.Fatalf("bootstrap grpc: %v", err)
	}
	bootstrap = filepath.Join(root, node+".bootstrap.json")
	if err := os.WriteFile(bootstrap, out, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir, bootstrap, tok
}

// waitFiles waits until the agent has written every file of dir.
func waitFiles(t *testing.T, dir string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for _, f := range []string{agent.SVIDFile, agent.KeyFile, agent.BundleFile, agent.TokenFile} {
		for {
			if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the agent did not write %s in %s", f, dir)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func grpcEnv(bootstrap string, extra ...string) []string {
	return append([]string{"GRPC_XDS_BOOTSTRAP=" + bootstrap, "GRPC_EXPERIMENTAL_XDS_BOOTSTRAP_CALL_CREDS=true"}, extra...)
}

// isResult matches the client's "RESULT <target> <code> <served-by>".
func isResult(target, code, by string) func(string) bool {
	want := fmt.Sprintf("RESULT %s %s %s", target, code, by)
	return func(l string) bool { return l == want }
}

// TestXDSEndToEnd runs the control plane, agents and grpc-go processes
// separately on loopback: a proxyless client reaches an xDS server hosting
// fn1 through xds:///fn1.cryptomesh, with mTLS and RBAC from the control
// plane; callers in another role, without the permission or without a
// certificate are refused by the server; moving fn1 to another endpoint
// through the API reaches the running client; a resource the client
// cannot parse is NACKed once and not sent again; and streams with a token
// of another node, a revoked token or a switched node.id are refused.
func TestXDSEndToEnd(t *testing.T) {
	root := t.TempDir()
	addr1, addr2 := freeAddr(t), freeAddr(t)
	doc := fmt.Sprintf(`
roles:
  caller: {name: caller, permissions: ["execute:fn*"]}
  outsider: {name: outsider, permissions: ["execute"]}
  reader: {name: reader, permissions: ["read"]}
security_policies:
  p: {requires_authentication: true, roles: [caller, reader]}
endpoints:
  e1: {name: e1, security_policy: p, address: %q, protocol: grpc}
  e2: {name: e2, security_policy: p, address: %q, protocol: grpc}
services:
  s: {security_policy: p}
microservices:
  m: {service_id: s}
functions:
  fn1: {microservice_id: m, endpoint_id: e1}
  fn2: {microservice_id: m, endpoint_id: e1}
`, addr1, addr2)
	meshFile := filepath.Join(root, "mesh.yaml")
	if err := os.WriteFile(meshFile, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(root, "data")
	// fn2's resources go out unparseable: the NACK test.
	p := startServer(t, "--data-dir", data, "--apply", meshFile, "--xds-test-corrupt", "fn2.cryptomesh")
	admin, err := os.ReadFile(filepath.Join(data, "admin-token"))
	if err != nil {
		t.Fatal(err)
	}
	cp := &e2eControlPlane{p: p, admin: strings.TrimSpace(string(admin)), xds: xdsAddrOf(t, p)}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("--- control plane logs (last 6000 bytes):\n%s", tail(p.Logs(), 6000))
		}
	})

	dir1, boot1, tok1 := cp.node(t, root, "srv1", "endpoint", "e1")
	dir2, boot2, _ := cp.node(t, root, "srv2", "endpoint", "e2")
	dirC, bootC, tokC := cp.node(t, root, "cli", "role", "caller")
	dirO, _, _ := cp.node(t, root, "outsider-1", "role", "outsider")
	dirR, _, _ := cp.node(t, root, "reader-1", "role", "reader")
	for _, d := range []string{dir1, dir2, dirC, dirO, dirR} {
		waitFiles(t, d)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}

	srv1 := startChild(t, "server srv1", grpcEnv(boot1, xdsChildEnv+"=server", xdsAddrEnv+"="+addr1, xdsNameEnv+"=srv1"), self)
	srv1.waitLine(t, 0, 30*time.Second, "serving mode", func(l string) bool { return strings.HasPrefix(l, "MODE SERVING") })
	client := startChild(t, "client", grpcEnv(bootC, xdsChildEnv+"=client", xdsTargetEnv+"=fn1.cryptomesh,fn2.cryptomesh"), self)
	client.waitLine(t, 0, 30*time.Second, "a call of fn1 served by srv1", isResult("fn1.cryptomesh", "OK", "srv1"))

	// The server decides who may call, whatever the caller's config.
	direct := func(dir, bundleDir string) string {
		t.Helper()
		c := startChild(t, "direct", []string{xdsChildEnv + "=direct", xdsAddrEnv + "=" + addr1, xdsTargetEnv + "=fn1.cryptomesh",
			xdsDirEnv + "=" + dir, xdsNameEnv + "=" + bundleDir}, self)
		i := c.waitLine(t, 0, 20*time.Second, "a result", func(l string) bool { return strings.HasPrefix(l, "RESULT ") })
		c.mu.Lock()
		defer c.mu.Unlock()
		return strings.Fields(c.lines[i])[1]
	}
	for _, tt := range []struct {
		name, dir, want string
	}{
		{"a caller in the allowed role", dirC, "OK"},
		{"a caller in another role", dirO, "PermissionDenied"},
		{"a caller whose role lacks the permission", dirR, "PermissionDenied"},
		{"a caller without a certificate", "", "Unavailable"},
	} {
		if got := direct(tt.dir, dirC); got != tt.want {
			t.Errorf("%s: %s, want %s", tt.name, got, tt.want)
		}
	}

	// fn2's listener is unparseable: one NACK by the client's node, the
	// version never sent again, fn1 still served.
	client.waitLine(t, 0, 30*time.Second, "a failed call of fn2", func(l string) bool {
		return strings.HasPrefix(l, "RESULT fn2.cryptomesh ") && !strings.HasPrefix(l, "RESULT fn2.cryptomesh OK")
	})
	nacks, requests := cliListenerStats(t, cp)
	time.Sleep(2 * time.Second)
	nacks2, requests2 := cliListenerStats(t, cp)
	if nacks != 1 || nacks2 != 1 || requests2 != requests {
		t.Errorf("node cli: listener NACKs %d then %d, requests %d then %d over 2s; want one NACK and no resend loop", nacks, nacks2, requests, requests2)
	}
	if got := metricValue(t, cp, `cryptomesh_xds_rejects_total{type="listener"}`); got != "1" {
		t.Errorf("rejects_total{type=listener} = %s, want 1", got)
	}
	from := client.lineCount()
	client.waitLine(t, from, 10*time.Second, "fn1 still served", isResult("fn1.cryptomesh", "OK", "srv1"))

	// Moving fn1 to e2 reaches the running client.
	srv2 := startChild(t, "server srv2", grpcEnv(boot2, xdsChildEnv+"=server", xdsAddrEnv+"="+addr2, xdsNameEnv+"=srv2"), self)
	srv2.waitLine(t, 0, 30*time.Second, "serving mode", func(l string) bool { return strings.HasPrefix(l, "MODE SERVING") })
	from = client.lineCount()
	moved := time.Now()
	cp.api(t, "PUT", "/api/v1/functions/fn1", `{"endpoint_id":"e2"}`, http.StatusOK)
	client.waitLine(t, from, 30*time.Second, "fn1 served by srv2", isResult("fn1.cryptomesh", "OK", "srv2"))
	t.Logf("fn1 moved to e2: the running client was served by srv2 %s after the PUT", time.Since(moved).Round(time.Millisecond))

	// Streams the control plane refuses, over a raw ADS client.
	roots := x509.NewCertPool()
	bundle, err := os.ReadFile(filepath.Join(dirC, agent.BundleFile))
	if err != nil || !roots.AppendCertsFromPEM(bundle) {
		t.Fatalf("bundle: %v", err)
	}
	tokTmp, jtiTmp := cp.token(t, "tmp", "role", "caller")
	cp.api(t, "DELETE", "/api/v1/identity/tokens/"+jtiTmp, "", http.StatusNoContent)
	for _, tt := range []struct {
		name          string
		token         string
		first, second string
		want          codes.Code
	}{
		{"the token of another node", tok1, "cli", "", codes.PermissionDenied},
		{"a revoked token", tokTmp, "tmp", "", codes.Unauthenticated},
		{"a stream that switches node.id", tokC, "cli", "srv1", codes.PermissionDenied},
		{"the node's own token", tokC, "cli", "", codes.OK},
	} {
		if got := rawADS(t, cp.xds, roots, tt.token, tt.first, tt.second); got != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
	}
}

// cliListenerStats sums, over node cli's streams in /api/v1/proxies, the
// listener NACKs and requests.
func cliListenerStats(t *testing.T, cp *e2eControlPlane) (nacks, requests int) {
	t.Helper()
	var streams []struct {
		Node  string `json:"node"`
		Types []struct {
			Type     string `json:"type"`
			Requests int    `json:"requests"`
			Nacks    int    `json:"nacks"`
		} `json:"types"`
	}
	if err := json.Unmarshal(cp.api(t, "GET", "/api/v1/proxies", "", http.StatusOK), &streams); err != nil {
		t.Fatal(err)
	}
	for _, s := range streams {
		for _, ts := range s.Types {
			if s.Node == "cli" && ts.Type == "listener" {
				nacks += ts.Nacks
				requests += ts.Requests
			}
		}
	}
	return nacks, requests
}

// metricValue reads one sample of the server's /metrics.
func metricValue(t *testing.T, cp *e2eControlPlane, sample string) string {
	t.Helper()
	resp, err := http.Get(cp.p.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, sample+" "); ok {
			return v
		}
	}
	return "absent"
}

// rawADS opens an ADS stream with token, asks for a listener as node first
// and, when second is set, asks again as node second; it returns how the
// stream ended (OK when it answered and was not ended).
func rawADS(t *testing.T, addr string, roots *x509.CertPool, token, first, second string) codes.Code {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: roots, ServerName: "127.0.0.1"})))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ctx = grpcmetadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ask := func(node string) {
		_ = stream.Send(&discoveryv3.DiscoveryRequest{
			Node:    &corev3.Node{Id: node, UserAgentName: "gRPC Go"},
			TypeUrl: "type.googleapis.com/envoy.config.listener.v3.Listener", ResourceNames: []string{"fn1.cryptomesh"},
		})
	}
	ask(first)
	resp, err := stream.Recv()
	if err != nil {
		return status.Code(err)
	}
	if second == "" {
		if len(resp.Resources) == 0 {
			t.Errorf("node %s got no listener", first)
		}
		return codes.OK
	}
	ask(second)
	for {
		if _, err := stream.Recv(); err != nil {
			return status.Code(err)
		}
	}
}
