package identity

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

var testTD = spiffeid.RequireTrustDomainFromString("cryptomesh.local")

// fakeClock is a settable clock shared by CA, tokens and verification.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock(t time.Time) *fakeClock { return &fakeClock{t: t} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// testCA is a CA in a temp dir with its clock and metrics.
type testCA struct {
	*CA
	dir     string
	clock   *fakeClock
	metrics *Metrics
	reg     *prometheus.Registry
}

func newTestCA(t testing.TB, clock *fakeClock, opts ...Option) *testCA {
	t.Helper()
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg, clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir() + "/ca"
	all := append([]Option{WithClock(clock.Now), WithMetrics(m)}, opts...)
	ca, err := LoadOrCreateCA(dir, all...)
	if err != nil {
		t.Fatalf("LoadOrCreateCA: %v", err)
	}
	return &testCA{CA: ca, dir: dir, clock: clock, metrics: m, reg: reg}
}

func (c *testCA) issuedCount() float64 {
	var m dto.Metric
	if err := c.metrics.issued.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}

// expirySeries gathers cryptomesh_identity_svid_expiry_timestamp_seconds.
func (c *testCA) expirySeries(t testing.TB) map[string]float64 {
	t.Helper()
	fams, err := c.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range fams {
		if f.GetName() != "cryptomesh_identity_svid_expiry_timestamp_seconds" {
			continue
		}
		for _, m := range f.GetMetric() {
			out[m.GetLabel()[0].GetValue()] = m.GetGauge().GetValue()
		}
	}
	return out
}

func roleID(t testing.TB, role string) spiffeid.ID {
	t.Helper()
	id, err := RoleID(testTD, role)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func endpointID(t testing.TB, endpoint, role string) spiffeid.ID {
	t.Helper()
	id, err := EndpointID(testTD, endpoint, role)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func newP256(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// csrPEM makes a CSR for key with the given URI SANs (and optional extras).
func csrPEM(t testing.TB, key crypto.Signer, tmpl x509.CertificateRequest, uris ...spiffeid.ID) []byte {
	t.Helper()
	for _, id := range uris {
		tmpl.URIs = append(tmpl.URIs, id.URL())
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &tmpl, key)
	if err != nil {
		t.Fatalf("CreateCertificateRequest: %v", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func parseCertPEM(t testing.TB, data []byte) *x509.Certificate {
	t.Helper()
	block, rest := pem.Decode(data)
	if block == nil || len(rest) != 0 {
		t.Fatalf("want exactly one PEM block, got %q", data)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// issueSVID has the CA sign a fresh key for id, as a node would.
func issueSVID(t testing.TB, ca *CA, id spiffeid.ID) (*x509svid.SVID, *Issued) {
	t.Helper()
	key := newP256(t)
	issued, err := ca.SignCSR(context.Background(), csrPEM(t, key, x509.CertificateRequest{}, id), id)
	if err != nil {
		t.Fatalf("SignCSR(%s): %v", id, err)
	}
	return &x509svid.SVID{ID: id, Certificates: []*x509.Certificate{parseCertPEM(t, issued.CertChainPEM)}, PrivateKey: key}, issued
}

// selfSigned makes a self-signed leaf claiming id: what a forger can do
// without the CA key.
func selfSigned(t testing.TB, id spiffeid.ID, notBefore, notAfter time.Time) *x509svid.SVID {
	t.Helper()
	key := newP256(t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		NotBefore:    notBefore, NotAfter: notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{id.URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &x509svid.SVID{ID: id, Certificates: []*x509.Certificate{cert}, PrivateKey: key}
}

// signedBy makes a leaf for id signed by an arbitrary CA cert and key.
func signedBy(t testing.TB, parent *x509.Certificate, parentKey crypto.Signer, id spiffeid.ID, notBefore, notAfter time.Time) *x509svid.SVID {
	t.Helper()
	key := newP256(t)
	serial, err := randomSerial()
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		NotBefore:    notBefore, NotAfter: notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{id.URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &x509svid.SVID{ID: id, Certificates: []*x509.Certificate{cert}, PrivateKey: key}
}

// handshake runs a real TLS handshake over loopback and one byte of
// application data from server to client, so that a client certificate the
// server refuses (reported to the client only after its TLS 1.3 handshake)
// fails the exchange too. It returns the server's and the client's errors.
func handshake(t testing.TB, serverCfg, clientCfg *tls.Config) (serverErr, clientErr error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		srv := tls.Server(conn, serverCfg)
		if err := srv.HandshakeContext(ctx); err != nil {
			done <- err
			return
		}
		_, err = srv.Write([]byte{'k'})
		done <- err
	}()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	cli := tls.Client(conn, clientCfg)
	clientErr = cli.HandshakeContext(ctx)
	if clientErr == nil {
		buf := make([]byte, 1)
		if _, err := cli.Read(buf); err != nil {
			clientErr = fmt.Errorf("read after handshake: %w", err)
		} else if buf[0] != 'k' {
			clientErr = errors.New("unexpected byte from server")
		}
	}
	_ = cli.Close()
	serverErr = <-done
	return serverErr, clientErr
}

// memRevocations is an in-memory revocation list.
type memRevocations struct {
	mu      sync.Mutex
	revoked map[string]bool
	err     error
}

func newMemRevocations() *memRevocations { return &memRevocations{revoked: map[string]bool{}} }

func (r *memRevocations) Revoke(jti string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.revoked[jti] = true
}

func (r *memRevocations) IsRevoked(_ context.Context, jti string) (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.revoked[jti], r.err
}

// mapRoles is an in-memory endpoint → role table.
type mapRoles map[string]string

func (m mapRoles) EndpointRole(_ context.Context, endpoint string) (string, error) {
	role, ok := m[endpoint]
	if !ok {
		return "", fmt.Errorf("endpoint %q not found", endpoint)
	}
	return role, nil
}
