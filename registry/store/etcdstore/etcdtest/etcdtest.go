// Package etcdtest runs a real etcd server for tests: a single member on
// loopback ports, with its data in the test's temp directory, that a test
// can kill with SIGKILL and restart on the same data. It also has a TCP
// proxy that a test can cut, to partition one client from etcd while the
// others go on.
//
// The etcd binary must be installed (`make deps` installs Debian's
// etcd-server). Without it the tests fail, naming the fix, rather than
// skip: a skipped store test is a store that was never tested.
package etcdtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// startTimeout bounds how long etcd may take to answer /health.
const startTimeout = 30 * time.Second

// Server is a running etcd.
type Server struct {
	bin        string
	dir        string
	clientPort int
	peerPort   int
	extra      []string
	tlsOn      bool
	tls        TLSFiles

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// Option configures a Server.
type Option func(*Server)

// WithArgs adds etcd flags, such as "--max-txn-ops=16".
func WithArgs(args ...string) Option { return func(s *Server) { s.extra = append(s.extra, args...) } }

// Binary returns the path of the etcd binary, failing the test with the
// fix when it is not installed.
func Binary(t testing.TB) string {
	t.Helper()
	bin, err := exec.LookPath("etcd")
	if err != nil {
		t.Fatalf("etcdtest: the etcd server binary is not installed (%v): run `make deps`, which installs Debian's etcd-server", err)
	}
	return bin
}

// Start runs etcd until the test ends and returns once it is healthy.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	s := &Server{bin: Binary(t), dir: t.TempDir()}
	for _, o := range opts {
		o(s)
	}
	if s.tlsOn {
		var err error
		if s.tls, err = writeTLS(filepath.Join(s.dir, "tls")); err != nil {
			t.Fatalf("etcdtest: certificates: %v", err)
		}
	}
	t.Cleanup(s.kill)
	var err error
	// Free ports are found by binding and releasing them, so another
	// process can take one in between: then try other ports.
	for range 5 {
		if s.clientPort, s.peerPort, err = freePorts(); err != nil {
			t.Fatalf("etcdtest: %v", err)
		}
		if err = s.start(); err == nil {
			return s
		}
	}
	t.Fatalf("etcdtest: start etcd: %v", err)
	return nil
}

// Endpoint is the client address, host:port.
func (s *Server) Endpoint() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.clientPort)) }

// Logs returns what etcd has logged so far.
func (s *Server) Logs() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "etcd.log"))
	return string(b)
}

// Client returns a client of this server, closed when the test ends.
func (s *Server) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	cfg := clientv3.Config{Endpoints: []string{s.Endpoint()}, DialTimeout: 10 * time.Second, Logger: zap.NewNop()}
	if s.tlsOn {
		var err error
		if cfg.TLS, err = s.tls.clientTLS(); err != nil {
			t.Fatalf("etcdtest: client TLS: %v", err)
		}
	}
	c, err := clientv3.New(cfg)
	if err != nil {
		t.Fatalf("etcdtest: client: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// Kill stops etcd with SIGKILL, as a crash would, and waits for it.
func (s *Server) Kill(t testing.TB) {
	t.Helper()
	s.kill()
}

// Restart starts etcd again on the same ports and data directory.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.kill()
	// The old process's sockets are gone once it was reaped, but give a
	// port taken by someone else meanwhile a few chances to free up.
	var err error
	for range 5 {
		if err = s.start(); err == nil {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("etcdtest: restart etcd: %v", err)
}

func (s *Server) kill() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

func (s *Server) start() error {
	scheme := "http://"
	var tlsArgs []string
	if s.tlsOn {
		scheme = "https://"
		tlsArgs = []string{"--cert-file", s.tls.serverCert, "--key-file", s.tls.serverKey,
			"--trusted-ca-file", s.tls.CA, "--client-cert-auth"}
	}
	clientURL := scheme + s.Endpoint()
	peerURL := "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(s.peerPort))
	args := append([]string{
		"--name", "test",
		"--data-dir", filepath.Join(s.dir, "data"),
		"--listen-client-urls", clientURL, "--advertise-client-urls", clientURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "test=" + peerURL,
		// A single member elects itself as soon as its election timer
		// fires; short timers make (re)starts quick.
		"--heartbeat-interval", "20", "--election-timeout", "200",
		"--logger", "zap", "--log-level", "warn",
	}, append(tlsArgs, s.extra...)...)
	logFile, err := os.OpenFile(filepath.Join(s.dir, "etcd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logFile.Close()
	cmd := exec.Command(s.bin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// etcd reads ETCD_* variables as flags; the caller's must not leak in.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ETCD_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("run %s: %w", s.bin, err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		close(done)
	}()
	s.mu.Lock()
	s.cmd, s.done = cmd, done
	s.mu.Unlock()
	health := &http.Client{Timeout: time.Second}
	defer health.CloseIdleConnections()
	if s.tlsOn {
		cfg, err := s.tls.clientTLS()
		if err != nil {
			s.kill()
			return err
		}
		health.Transport = &http.Transport{TLSClientConfig: cfg}
	}
	if err := waitHealthy(health, clientURL+"/health", done); err != nil {
		s.kill()
		return fmt.Errorf("%w\n%s", err, tail(s.Logs(), 20))
	}
	return nil
}

func waitHealthy(client *http.Client, url string, exited <-chan struct{}) error {
	deadline := time.Now().Add(startTimeout)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return errors.New("etcd exited during startup")
		default:
		}
		resp, err := client.Get(url)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && bytes.Contains(body, []byte(`"health":"true"`)) {
				return nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("etcd not healthy within %s", startTimeout)
}

func freePorts() (int, int, error) {
	var ports [2]int
	for i := range ports {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, 0, fmt.Errorf("find a free port: %w", err)
		}
		defer ln.Close()
		ports[i] = ln.Addr().(*net.TCPAddr).Port
	}
	return ports[0], ports[1], nil
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// Proxy forwards TCP connections to an address until it is cut.
type Proxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	cut   bool
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// NewProxy listens on a loopback port and forwards to target until the
// test ends.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("etcdtest: proxy: %v", err)
	}
	p := &Proxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(func() {
		ln.Close()
		p.Cut()
		p.wg.Wait()
	})
	return p
}

// Addr is the proxy's address, host:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Cut closes every forwarded connection and refuses new ones, as a
// partition would, until Restore.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	for c := range p.conns {
		c.Close()
	}
}

// Restore forwards new connections again.
func (p *Proxy) Restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = false
}

func (p *Proxy) serve() {
	defer p.wg.Done()
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.cut {
			p.mu.Unlock()
			in.Close()
			continue
		}
		out, err := (&net.Dialer{Timeout: time.Second}).DialContext(context.Background(), "tcp", p.target)
		if err != nil {
			p.mu.Unlock()
			in.Close()
			continue
		}
		p.conns[in], p.conns[out] = struct{}{}, struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		pipe := func(dst, src net.Conn) {
			defer p.wg.Done()
			io.Copy(dst, src)
			dst.Close()
			src.Close()
			p.mu.Lock()
			delete(p.conns, dst)
			delete(p.conns, src)
			p.mu.Unlock()
		}
		go pipe(in, out)
		go pipe(out, in)
	}
}
