package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/cryptomesh/cryptomesh/api/client"
)

// startTLSServer runs a server that speaks TLS and waits until it is ready,
// trusting it by the roots in caDir (which the server creates at start when
// it is its own <data-dir>/ca). A wildcard address is reached on 127.0.0.1.
func startTLSServer(t *testing.T, caDir string, args ...string) *proc {
	t.Helper()
	p := launchServer(t, args...)
	u, err := url.Parse(p.url)
	if err != nil || u.Scheme != "https" {
		t.Fatalf("server URL %q is not https\n%s", p.url, p.Logs())
	}
	if host, port, _ := net.SplitHostPort(u.Host); host == "::" || host == "0.0.0.0" {
		p.url = "https://127.0.0.1:" + port
	}
	roots, err := client.LoadRootCAs(caDir)
	if err != nil {
		t.Fatalf("roots of %s: %v", caDir, err)
	}
	p.client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	waitReady(t, p)
	return p
}

func checkMode(t *testing.T, path string, want fs.FileMode) {
	t.Helper()
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := info.Mode().Perm(); got != want {
		t.Errorf("%s has mode %04o, want %04o", path, got, want)
	}
}

// checkCADir checks the modes of a CA directory: the directory and every
// key 0600/0700, certificates and state readable.
func checkCADir(t *testing.T, dir string) {
	t.Helper()
	checkMode(t, dir, 0o700)
	keys, _ := filepath.Glob(filepath.Join(dir, "*.key"))
	certs, _ := filepath.Glob(filepath.Join(dir, "*.crt"))
	if len(keys) != 2 || len(certs) != 1 {
		t.Fatalf("%s holds keys %v and certificates %v; want a root key, the token key and a root certificate", dir, keys, certs)
	}
	for _, k := range keys {
		checkMode(t, k, 0o600)
	}
	checkMode(t, certs[0], 0o644)
	checkMode(t, filepath.Join(dir, "ca.json"), 0o644)
}

// TestServerTLSBeyondLoopback: on a wildcard address without --insecure the
// API speaks TLS with the control plane's certificate (its SPIFFE ID and
// the --san names), the first start creates the CA directory with private
// modes, and plain HTTP is refused; --insecure serves plain HTTP, and
// --insecure with --tls is a usage error.
func TestServerTLSBeyondLoopback(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	p := startTLSServer(t, filepath.Join(data, "ca"), "--addr", "0.0.0.0:0", "--data-dir", data,
		"--san", "localhost,127.0.0.1,cm.example.test,10.9.8.7", "--trust-domain", "example.org")
	checkCADir(t, filepath.Join(data, "ca"))
	checkMode(t, data, 0o700)

	roots := p.client.Transport.(*http.Transport).TLSClientConfig.RootCAs
	addr := strings.TrimPrefix(p.url, "https://")
	// The client checks the name it asks for against the certificate.
	for _, name := range []string{"cm.example.test", "localhost"} {
		conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots, ServerName: name})
		if err != nil {
			t.Fatalf("TLS as %s: %v", name, err)
		}
		leaf := conn.ConnectionState().PeerCertificates[0]
		conn.Close()
		if len(leaf.URIs) != 1 || leaf.URIs[0].String() != "spiffe://example.org/control-plane" {
			t.Errorf("URI SANs %v, want only spiffe://example.org/control-plane", leaf.URIs)
		}
		if !slices.Equal(leaf.DNSNames, []string{"localhost", "cm.example.test"}) || len(leaf.IPAddresses) != 2 ||
			!leaf.IPAddresses[0].Equal(net.ParseIP("127.0.0.1")) || !leaf.IPAddresses[1].Equal(net.ParseIP("10.9.8.7")) {
			t.Errorf("SANs DNS %v IPs %v, want the --san names", leaf.DNSNames, leaf.IPAddresses)
		}
	}
	if _, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots, ServerName: "other.example.test"}); err == nil {
		t.Error("a name outside --san was accepted")
	}
	// Plain HTTP to the TLS port gets no API answer.
	if code, body, err := call(context.Background(), http.DefaultClient, "GET", "http://"+addr+"/healthz", "", ""); err == nil && code == http.StatusOK {
		t.Errorf("plain HTTP answered: %d %s", code, body)
	}
	p.stop(t)

	insecure := startServer(t, "--addr", "0.0.0.0:0", "--insecure", "--data-dir", filepath.Join(dir, "insecure"))
	if !strings.HasPrefix(insecure.url, "http://") || !strings.Contains(insecure.Logs(), "serving plain HTTP beyond loopback") {
		t.Errorf("--insecure: URL %s\n%s", insecure.url, insecure.Logs())
	}
	out := startServerFails(t, "--tls", "--insecure", "--data-dir", filepath.Join(dir, "both"))
	if !strings.Contains(out, "--tls and --insecure contradict each other") {
		t.Errorf("--tls --insecure: %s", out)
	}
}

// TestCAInitSharedByReplicas: `ca init` makes a CA directory that two
// servers use with --ca-dir, serving the same bundle; a second init and a
// server of another trust domain are refused.
func TestCAInitSharedByReplicas(t *testing.T) {
	dir := t.TempDir()
	caDir := filepath.Join(dir, "shared-ca")
	r := cliRun(t, dir, nil, "", "ca", "init", "--out", caDir, "--trust-domain", "mesh.example")
	if r.code != 0 || !strings.Contains(r.stdout, "trust domain mesh.example") || !strings.Contains(r.stdout, "--ca-dir "+caDir) {
		t.Fatalf("ca init: %s", r)
	}
	checkCADir(t, caDir)
	before, _ := os.ReadFile(filepath.Join(caDir, "ca.json"))
	if r := cliRun(t, dir, nil, "", "ca", "init", "--out", caDir); r.code != 1 || !strings.Contains(r.stderr, "already holds a CA") {
		t.Errorf("second ca init: %s", r)
	}
	if after, _ := os.ReadFile(filepath.Join(caDir, "ca.json")); string(after) != string(before) {
		t.Error("the second ca init changed the CA")
	}
	if r := cliRun(t, dir, nil, "", "ca", "init"); r.code != 2 || !strings.Contains(r.stderr, "--out DIR is required") {
		t.Errorf("ca init without --out: %s", r)
	}

	var bundles []string
	for i := range 2 {
		p := startTLSServer(t, caDir, "--tls", "--ca-dir", caDir, "--trust-domain", "mesh.example",
			"--data-dir", filepath.Join(dir, "replica", string(rune('a'+i))))
		code, body, err := call(context.Background(), p.client, "GET", p.url+"/api/v1/identity/bundle", "", "")
		if err != nil || code != http.StatusOK {
			t.Fatalf("bundle of replica %d: %d %v", i, code, err)
		}
		bundles = append(bundles, string(body))
	}
	if bundles[0] != bundles[1] {
		t.Error("the replicas serve different bundles")
	}
	certs, _ := filepath.Glob(filepath.Join(caDir, "*.crt"))
	root, _ := os.ReadFile(certs[0])
	if bundles[0] != string(root) {
		t.Errorf("the bundle is not the CA's root:\n%s", bundles[0])
	}
	if _, err := os.Stat(filepath.Join(dir, "replica", "a", "ca")); err == nil {
		t.Error("a replica with --ca-dir made a CA of its own in its data dir")
	}
	out := startServerFails(t, "--ca-dir", caDir, "--data-dir", filepath.Join(dir, "wrong-td"))
	if !strings.Contains(out, `belongs to trust domain "mesh.example", not "cryptomesh.local"`) {
		t.Errorf("a server of another trust domain: %s", out)
	}
}

// TestTokenCommands: create prints the token alone, list shows records
// (never tokens), revoke revokes; mistakes exit with the documented codes.
func TestTokenCommands(t *testing.T) {
	c := newCLIEnv(t)
	doc := filepath.Join(c.dir, "mesh.yaml")
	writeFile(t, doc, "roles:\n  r1: {name: r1}\nsecurity_policies:\n  p1: {roles: [r1], requires_authentication: true}\nendpoints:\n  e1: {security_policy: p1, role: r1}\n")
	c.ok("apply", "-f", doc)

	r := c.ok("token", "create", "--node", "n1", "--endpoint", "e1", "--ttl", "2h")
	if !regexp.MustCompile(`^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\n$`).MatchString(r.stdout) {
		t.Fatalf("token create printed more than the token:\n%q", r.stdout)
	}
	tok := strings.TrimSpace(r.stdout)
	jti := regexp.MustCompile(`jti (\S+),`).FindStringSubmatch(r.stderr)
	if jti == nil {
		t.Fatalf("stderr does not name the jti: %s", r.stderr)
	}
	c.ok("token", "create", "--node", "n2", "--role", "r1")

	var recs []client.TokenRecord
	r = c.ok("token", "list", "-o", "json")
	if err := json.Unmarshal([]byte(r.stdout), &recs); err != nil || len(recs) != 2 {
		t.Fatalf("token list -o json: %v\n%s", err, r.stdout)
	}
	if strings.Contains(r.stdout, tok) {
		t.Error("token list shows a token")
	}
	table := c.ok("token", "list").stdout
	if !regexp.MustCompile(`(?m)^`+jti[1]+`\s+n1\s+endpoint:e1\s+\S+\s+\S+\s+active$`).MatchString(table) ||
		!regexp.MustCompile(`(?m)^\S+\s+n2\s+role:r1\s+`).MatchString(table) {
		t.Errorf("token list:\n%s", table)
	}

	// The token works until it is revoked.
	code, body, err := call(context.Background(), http.DefaultClient, "GET", c.srv.url+"/api/v1/identity/whoami", tok, "")
	if err != nil || code != http.StatusOK || !strings.Contains(string(body), "spiffe://cryptomesh.local/role/r1/endpoint/e1") {
		t.Fatalf("whoami: %d %v %s", code, err, body)
	}
	if r := c.ok("token", "revoke", jti[1]); !strings.Contains(r.stdout, "revoked join token "+jti[1]) {
		t.Errorf("revoke: %s", r)
	}
	if code, _, _ := call(context.Background(), http.DefaultClient, "GET", c.srv.url+"/api/v1/identity/whoami", tok, ""); code != http.StatusUnauthorized {
		t.Errorf("a revoked token: %d", code)
	}
	if !regexp.MustCompile(`(?m)^` + jti[1] + `\s.*\srevoked$`).MatchString(c.ok("token", "list").stdout) {
		t.Error("token list does not show the revocation")
	}

	c.fails(3, []string{"no join token with jti 'nope'"}, "token", "revoke", "nope")
	c.fails(5, []string{"endpoint 'e9' does not exist"}, "token", "create", "--node", "n3", "--endpoint", "e9")
	c.fails(5, []string{"ttl"}, "token", "create", "--node", "n3", "--endpoint", "e1", "--ttl", "10s")
	c.fails(2, []string{"--node N is required"}, "token", "create", "--endpoint", "e1")
	c.fails(2, []string{"exactly one of --endpoint E and --role R"}, "token", "create", "--node", "n3", "--endpoint", "e1", "--role", "r1")
	c.fails(2, []string{"unknown token command"}, "token", "mint")
	if strings.Contains(c.srv.Logs(), tok) {
		t.Error("the server logged a token")
	}
}

// TestAgentKeepsFilesAgainstATLSServer runs `cryptomesh agent` against a
// real server speaking TLS (--tls): it writes the SVID, key, bundle and
// token with their modes, the SVID is the node's and verifies against the
// bundle, and then authenticates the node as a TLS client certificate.
func TestAgentKeepsFilesAgainstATLSServer(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	caDir := filepath.Join(data, "ca")
	p := startTLSServer(t, caDir, "--tls", "--data-dir", data)
	cli := func(args ...string) cliResult {
		t.Helper()
		r := cliRun(t, dir, nil, "", append(args, "--server", p.url, "--data-dir", data)...)
		if r.code != 0 {
			t.Fatalf("cryptomesh %s: %s", strings.Join(args, " "), r)
		}
		return r
	}
	doc := filepath.Join(dir, "mesh.yaml")
	writeFile(t, doc, `roles:
  r1: {name: r1, permissions: [execute]}
security_policies:
  p1: {roles: [r1], requires_authentication: true}
endpoints:
  e1: {security_policy: p1, role: r1, address: "127.0.0.1:9100"}
  e2: {security_policy: p1, address: "127.0.0.1:9200"}
services:
  s1: {security_policy: p1}
microservices:
  m1: {service_id: s1}
functions:
  f1: {microservice_id: m1, endpoint_id: e1}
  f2: {microservice_id: m1, endpoint_id: e2}
`)
	cli("apply", "-f", doc)
	// A CLI that trusts another CA says what to do.
	other := filepath.Join(dir, "other-ca")
	cliRun(t, dir, nil, "", "ca", "init", "--out", other)
	if r := cliRun(t, dir, nil, "", "get", "roles", "--server", p.url, "--data-dir", data, "--ca-file", other); r.code != 1 ||
		!strings.Contains(r.stderr, "signed by a CA this command does not trust — pass --ca-file") {
		t.Errorf("get with the wrong --ca-file: %s", r)
	}
	tokenFile := filepath.Join(dir, "n1.token")
	writeFile(t, tokenFile, cli("token", "create", "--node", "n1", "--endpoint", "e1").stdout)

	out := filepath.Join(dir, "svid")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	agent := exec.CommandContext(ctx, binPath, "agent", "--node", "n1", "--dir", out, "--token-file", tokenFile,
		"--server", p.url, "--ca-file", caDir, "--log-format", "json")
	var logs lockedBuffer
	agent.Stderr = &logs
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- agent.Wait() }()
	svidFile, keyFile := filepath.Join(out, "svid.pem"), filepath.Join(out, "svid-key.pem")
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := os.Stat(svidFile); err == nil {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("the agent exited: %v\n%s", err, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s within 60s\n%s", svidFile, logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}

	checkMode(t, out, 0o700)
	for name, mode := range map[string]fs.FileMode{"svid.pem": 0o644, "svid-key.pem": 0o600, "bundle.pem": 0o644, "token": 0o600} {
		checkMode(t, filepath.Join(out, name), mode)
	}
	tokOnDisk, _ := os.ReadFile(filepath.Join(out, "token"))
	tokGiven, _ := os.ReadFile(tokenFile)
	if strings.TrimSpace(string(tokOnDisk)) != strings.TrimSpace(string(tokGiven)) {
		t.Error("DIR/token is not the join token")
	}
	svid, err := x509svid.Load(svidFile, keyFile)
	if err != nil {
		t.Fatalf("SVID and key: %v", err)
	}
	td := spiffeid.RequireTrustDomainFromString("cryptomesh.local")
	bundle, err := x509bundle.Load(td, filepath.Join(out, "bundle.pem"))
	if err != nil {
		t.Fatal(err)
	}
	id, _, err := x509svid.Verify(svid.Certificates, bundle)
	if err != nil || id.String() != "spiffe://cryptomesh.local/role/r1/endpoint/e1" {
		t.Fatalf("SVID %v: %v", id, err)
	}
	if ttl := svid.Certificates[0].NotAfter.Sub(svid.Certificates[0].NotBefore); ttl < 59*time.Minute || ttl > 61*time.Minute {
		t.Errorf("SVID lifetime %s, want about 1h", ttl)
	}

	// The SVID is the node's credential: reports for its own endpoint pass,
	// others are refused item by item; admin routes are 403.
	cert, err := tls.LoadX509KeyPair(svidFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	roots, _ := client.LoadRootCAs(filepath.Join(out, "bundle.pem"))
	mtls := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{cert}}}}
	code, body, err := call(ctx, mtls, "POST", p.url+"/api/v1/reports", "",
		`{"items": [{"kind": "function_state", "data": {"function_id": "f1", "state": "running"}},
		            {"kind": "function_state", "data": {"function_id": "f2", "state": "running"}}]}`)
	if err != nil || code != http.StatusOK {
		t.Fatalf("reports with the SVID: %d %v %s", code, err, body)
	}
	var answers struct {
		Items []struct {
			Status int `json:"status"`
		} `json:"items"`
	}
	if err := json.Unmarshal(body, &answers); err != nil || len(answers.Items) != 2 || answers.Items[0].Status != 201 || answers.Items[1].Status != 403 {
		t.Errorf("report answers %s", body)
	}
	if code, _, _ := call(ctx, mtls, "GET", p.url+"/api/v1/functions", "", ""); code != http.StatusForbidden {
		t.Errorf("an admin route with the SVID: %d", code)
	}
	// The server's /metrics counts the serving SVID and the node's, and
	// tracks the node's expiry.
	_, metrics, err := call(ctx, p.client, "GET", p.url+"/metrics", "", "")
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^cryptomesh_identity_svids_issued_total [2-9]`).Match(metrics) ||
		!strings.Contains(string(metrics), `cryptomesh_identity_svid_expiry_timestamp_seconds{spiffe_id="spiffe://cryptomesh.local/role/r1/endpoint/e1"}`) {
		t.Errorf("identity metrics missing from /metrics")
	}

	if err := agent.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("the agent did not stop cleanly on SIGINT: %v\n%s", err, logs.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the agent did not stop on SIGINT")
	}
	if strings.Contains(logs.String(), strings.TrimSpace(string(tokGiven))) {
		t.Error("the agent logged its token")
	}
	keyPEM, _ := os.ReadFile(keyFile)
	block, _ := pem.Decode(keyPEM)
	if block == nil || strings.Contains(logs.String(), string(pem.EncodeToMemory(block))[30:80]) {
		t.Error("the agent logged its key")
	}
}

// lockedBuffer collects a child process's output while the test reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
