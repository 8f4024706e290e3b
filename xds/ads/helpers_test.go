package ads_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/cryptomesh/cryptomesh/api"
	"github.com/cryptomesh/cryptomesh/identity"
	"github.com/cryptomesh/cryptomesh/identity/idreg"
	"github.com/cryptomesh/cryptomesh/registry"
	"github.com/cryptomesh/cryptomesh/registry/mesh"
	"github.com/cryptomesh/cryptomesh/registry/store/memstore"
	"github.com/cryptomesh/cryptomesh/xds/ads"
)

const (
	listenerType = "type.googleapis.com/envoy.config.listener.v3.Listener"
	routeType    = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
	clusterType  = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
	endpointType = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
	secretType   = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

	grpcUA = "gRPC Go"
)

// fixture is a small mesh: two gRPC endpoints, an HTTP one, and roles that
// may call some of their functions.
const fixture = `
roles:
  caller: {name: caller, permissions: ["execute:fn*"]}
  other: {name: other, permissions: ["execute:other_*"]}
  reader: {name: reader, permissions: ["read"]}
security_policies:
  p: {requires_authentication: true, roles: [caller, reader, other]}
endpoints:
  e1: {name: e1, security_policy: p, address: "127.0.0.1:17101", workload_address: "127.0.0.1:18101", protocol: grpc}
  e2: {name: e2, security_policy: p, address: "127.0.0.1:17102", workload_address: "127.0.0.1:18102", protocol: grpc, role: caller}
  web: {name: web, security_policy: p, address: "127.0.0.1:17103", workload_address: "127.0.0.1:18103"}
services:
  s: {security_policy: p}
microservices:
  m: {service_id: s}
functions:
  fn1: {microservice_id: m, endpoint_id: e1}
  fn2: {microservice_id: m, endpoint_id: e2}
  fnweb: {microservice_id: m, endpoint_id: web}
  other_fn: {microservice_id: m, endpoint_id: e2}
`

var testTD = spiffeid.RequireTrustDomainFromString(identity.DefaultTrustDomain)

// env is an ADS server over TLS on loopback with the identity of a real
// control plane: a built-in CA, join-token records in the registry.
type env struct {
	reg    *registry.Registry
	ca     *identity.CA
	store  *idreg.Store
	tokens *identity.TokenAuthority
	srv    *ads.Server
	prom   *prometheus.Registry
	addr   string
	roots  *x509.CertPool
}

func newEnv(t testing.TB, opts ...ads.Option) *env {
	t.Helper()
	return newEnvTB(t, fixture, opts...)
}

// newEnvTB is newEnv over any mesh document; benchmarks log nothing.
func newEnvTB(t testing.TB, doc string, opts ...ads.Option) *env {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	reg, err := registry.Open(ctx, memstore.New(), registry.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	apply(t, reg, doc)
	id, err := idreg.NewBuiltin(reg, filepath.Join(t.TempDir(), "ca"), nil)
	if err != nil {
		t.Fatal(err)
	}
	ca, store, tokens, nodes, serving := id.CA, id.Records, id.Tokens, id.Nodes, id.Serving
	prom := prometheus.NewRegistry()
	log := slog.New(slog.DiscardHandler)
	if _, bench := t.(*testing.B); !bench {
		log = testLogger(t)
	}
	opts = append([]ads.Option{ads.WithRegisterer(prom), ads.WithSigner(ca), ads.WithLogger(log)}, opts...)
	srv, err := ads.New(reg, nodes, opts...)
	if err != nil {
		t.Fatal(err)
	}
	runDone := make(chan error, 1)
	go func() { runDone <- srv.Run(ctx) }()

	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(api.TLSConfig(serving))))
	srv.Register(gs)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(ln)
	b, _ := ca.Bundle()
	roots := x509.NewCertPool()
	for _, c := range b.X509Authorities() {
		roots.AddCert(c)
	}
	t.Cleanup(func() {
		srv.Close()
		gs.Stop()
		cancel()
		if err := <-runDone; err != nil {
			t.Errorf("Run: %v", err)
		}
		reg.Close()
	})
	e := &env{reg: reg, ca: ca, store: store, tokens: tokens, srv: srv, prom: prom, addr: ln.Addr().String(), roots: roots}
	deadline := time.Now().Add(10 * time.Second)
	for srv.Ready() != nil {
		if time.Now().After(deadline) {
			t.Fatal("server not ready")
		}
		time.Sleep(5 * time.Millisecond)
	}
	return e
}

// testLogger logs to the test at debug level, so failures show the
// server's side.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func apply(t testing.TB, reg *registry.Registry, doc string) {
	t.Helper()
	d, err := mesh.Parse([]byte(doc), 0)
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	if _, err := mesh.Apply(context.Background(), reg, d, false); err != nil {
		t.Fatalf("apply: %v", err)
	}
}

// update changes one entity.
func update(t testing.TB, reg *registry.Registry, k registry.Kind, id string, body map[string]any) {
	t.Helper()
	if _, err := reg.Do(context.Background(), registry.Op{Type: registry.OpUpdate, Kind: k, ID: id, Body: body}); err != nil {
		t.Fatalf("update %s %s: %v", k, id, err)
	}
}

// token mints a join token for node and records it, as the API does.
func (e *env) token(t testing.TB, node string, b identity.Binding) (string, string) {
	t.Helper()
	tok, rec, err := e.tokens.Mint(node, b, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.store.Add(context.Background(), rec); err != nil {
		t.Fatal(err)
	}
	return tok, rec.JTI
}

// svid issues a client certificate for id.
func (e *env) svid(t testing.TB, id spiffeid.ID) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{id.URL()}}, key)
	if err != nil {
		t.Fatal(err)
	}
	got, err := e.ca.SignCSR(context.Background(), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr}), id)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(got.CertChainPEM)
	return tls.Certificate{Certificate: [][]byte{block.Bytes}, PrivateKey: key}
}

// client is a raw ADS client: one stream, driven request by request.
type client struct {
	t      testing.TB
	stream discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	node   *corev3.Node
	cancel context.CancelFunc
	resps  chan *discoveryv3.DiscoveryResponse
	errc   chan error
}

type dialOpts struct {
	token string
	cert  *tls.Certificate
}

// open opens a stream with the given credentials; node is sent on the
// first request only, as grpc-go does.
func (e *env) open(t testing.TB, d dialOpts, nodeID, ua string) *client {
	t.Helper()
	tc := &tls.Config{RootCAs: e.roots, ServerName: "127.0.0.1"}
	if d.cert != nil {
		tc.Certificates = []tls.Certificate{*d.cert}
	}
	conn, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if d.token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+d.token)
	}
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := &client{t: t, stream: stream, cancel: cancel, node: &corev3.Node{Id: nodeID, UserAgentName: ua},
		resps: make(chan *discoveryv3.DiscoveryResponse, 64), errc: make(chan error, 1)}
	go func() {
		for {
			r, err := stream.Recv()
			if err != nil {
				c.errc <- err
				return
			}
			c.resps <- r
		}
	}()
	t.Cleanup(func() { cancel(); conn.Close() })
	return c
}

// withOutbound sets the node's outbound address metadata.
func (c *client) withOutbound(addr string) *client {
	c.node.Metadata = &structpb.Struct{Fields: map[string]*structpb.Value{ads.OutboundAddressKey: structpb.NewStringValue(addr)}}
	return c
}

// send sends a request; the node goes on the first request only.
func (c *client) send(req *discoveryv3.DiscoveryRequest) {
	c.t.Helper()
	if c.node != nil {
		req.Node = c.node
		c.node = nil
	}
	// io.EOF means the server ended the stream: its status is what
	// ended() or recv() report.
	if err := c.stream.Send(req); err != nil && !errors.Is(err, io.EOF) {
		c.t.Fatalf("send: %v", err)
	}
}

// ask subscribes to names of typeURL (ACKing nothing).
func (c *client) ask(typeURL string, names ...string) {
	c.t.Helper()
	c.send(&discoveryv3.DiscoveryRequest{TypeUrl: typeURL, ResourceNames: names})
}

// ack ACKs r, keeping the subscription names.
func (c *client) ack(r *discoveryv3.DiscoveryResponse, names ...string) {
	c.t.Helper()
	c.send(&discoveryv3.DiscoveryRequest{TypeUrl: r.TypeUrl, VersionInfo: r.VersionInfo, ResponseNonce: r.Nonce, ResourceNames: names})
}

// nack rejects r; version_info stays the last accepted version.
func (c *client) nack(r *discoveryv3.DiscoveryResponse, accepted string, names ...string) {
	c.t.Helper()
	c.send(&discoveryv3.DiscoveryRequest{TypeUrl: r.TypeUrl, VersionInfo: accepted, ResponseNonce: r.Nonce, ResourceNames: names,
		ErrorDetail: &rpcstatus.Status{Message: "injected: cannot parse"}})
}

// recv waits for the next response.
func (c *client) recv() *discoveryv3.DiscoveryResponse {
	c.t.Helper()
	select {
	case r := <-c.resps:
		return r
	case err := <-c.errc:
		c.t.Fatalf("stream ended: %v", err)
	case <-time.After(10 * time.Second):
		c.t.Fatal("no response within 10s")
	}
	return nil
}

// quiet checks that no response arrives for d.
func (c *client) quiet(d time.Duration) {
	c.t.Helper()
	select {
	case r := <-c.resps:
		c.t.Fatalf("unexpected response: %s version %s with %d resources", r.TypeUrl, r.VersionInfo, len(r.Resources))
	case err := <-c.errc:
		c.t.Fatalf("stream ended: %v", err)
	case <-time.After(d):
	}
}

// ended waits for the stream to end and returns its status.
func (c *client) ended() *status.Status {
	c.t.Helper()
	select {
	case err := <-c.errc:
		return status.Convert(err)
	case r := <-c.resps:
		c.t.Fatalf("response %s instead of the end of the stream", r.TypeUrl)
	case <-time.After(10 * time.Second):
		c.t.Fatal("stream did not end within 10s")
	}
	return nil
}

func names(r *discoveryv3.DiscoveryResponse) []string {
	var out []string
	for _, a := range r.Resources {
		m, err := a.UnmarshalNew()
		if err != nil {
			out = append(out, "<"+err.Error()+">")
			continue
		}
		switch m := m.(type) {
		case interface{ GetClusterName() string }:
			out = append(out, m.GetClusterName())
		case interface{ GetName() string }:
			out = append(out, m.GetName())
		}
	}
	return out
}

func fmtNames(ns []string) string { return fmt.Sprintf("%q", ns) }

func nodeProto(id, ua string) *corev3.Node { return &corev3.Node{Id: id, UserAgentName: ua} }

// histogramCount is how many observations a histogram of the server has.
func histogramCount(t testing.TB, e *env, name string) uint64 {
	t.Helper()
	for _, mf := range gather(t, e) {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetHistogram().GetSampleCount()
		}
	}
	return 0
}

// histogramMean is the mean observation of a histogram of the server.
func histogramMean(t testing.TB, e *env, name string) float64 {
	t.Helper()
	for _, mf := range gather(t, e) {
		if mf.GetName() == name {
			h := mf.GetMetric()[0].GetHistogram()
			if h.GetSampleCount() > 0 {
				return h.GetSampleSum() / float64(h.GetSampleCount())
			}
		}
	}
	return 0
}

// counter is the value of a counter with one label value (type).
func counter(t testing.TB, e *env, name, typ string) float64 {
	t.Helper()
	for _, mf := range gather(t, e) {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetValue() == typ {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

func gather(t testing.TB, e *env) []*dto.MetricFamily {
	t.Helper()
	mfs, err := e.prom.Gather()
	if err != nil {
		t.Fatal(err)
	}
	return mfs
}

// waitAcked waits until the server has seen node's ACK of version for
// the type (by its short name).
func (e *env) waitAcked(t testing.TB, node, typ, version string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, s := range e.srv.Streams() {
			for _, ts := range s.Types {
				if s.Node == node && ts.Type == typ && ts.AckedVersion == version {
					return
				}
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("the server did not see %s ACK %s version %s", node, typ, version)
}

// gaugeValue is the value of a gauge with one label value.
func gaugeValue(t testing.TB, e *env, name, label string) float64 {
	t.Helper()
	for _, mf := range gather(t, e) {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetValue() == label {
					return m.GetGauge().GetValue()
				}
			}
		}
	}
	return 0
}
