package ads_test

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"

	"github.com/cryptomesh/cryptomesh/identity"
	"github.com/cryptomesh/cryptomesh/registry"
	"github.com/cryptomesh/cryptomesh/xds"
	"github.com/cryptomesh/cryptomesh/xds/ads"
)

// TestAuthentication: a stream needs a join token or an SVID, the first
// request's node.id must be the token's node, a certificate that comes with
// a token must be for the same binding, and a revoked token is refused.
func TestAuthentication(t *testing.T) {
	e := newEnv(t)
	tok, jti := e.token(t, "n1", identity.RoleBinding("caller"))
	otherTok, _ := e.token(t, "n2", identity.RoleBinding("caller"))
	callerCert := e.svid(t, spiffeidOf(t, identity.RoleBinding("caller")))
	e1Cert := e.svid(t, spiffeidOf(t, identity.EndpointBinding("e1", "")))

	tests := []struct {
		name string
		d    dialOpts
		node string
		ua   string
		want codes.Code
	}{
		{"no credential", dialOpts{}, "n1", grpcUA, codes.Unauthenticated},
		{"not a JWT", dialOpts{token: "admin-token"}, "n1", grpcUA, codes.Unauthenticated},
		{"token of another node", dialOpts{token: otherTok}, "n1", grpcUA, codes.PermissionDenied},
		{"certificate of another binding", dialOpts{token: tok, cert: &e1Cert}, "n1", grpcUA, codes.PermissionDenied},
		{"unknown user agent", dialOpts{token: tok}, "n1", "curl", codes.InvalidArgument},
		{"token", dialOpts{token: tok}, "n1", grpcUA, codes.OK},
		{"token and its certificate", dialOpts{token: tok, cert: &callerCert}, "n1", grpcUA, codes.OK},
		{"SVID alone, any node name", dialOpts{cert: &callerCert}, "anything", grpcUA, codes.OK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := e.open(t, tt.d, tt.node, tt.ua)
			c.ask(listenerType, "fn1.cryptomesh")
			if tt.want == codes.OK {
				if r := c.recv(); !slices.Equal(names(r), []string{"fn1.cryptomesh"}) {
					t.Fatalf("got %s", fmtNames(names(r)))
				}
				return
			}
			if st := c.ended(); st.Code() != tt.want {
				t.Fatalf("status %v, want %v", st, tt.want)
			}
		})
	}

	t.Run("revoked token", func(t *testing.T) {
		live := e.open(t, dialOpts{token: tok}, "n1", grpcUA)
		live.ask(listenerType, "fn1.cryptomesh")
		live.recv()
		if err := e.store.Revoke(context.Background(), jti); err != nil {
			t.Fatal(err)
		}
		// The open stream ends: its token is checked again when token
		// records change.
		if st := live.ended(); st.Code() != codes.Unauthenticated {
			t.Fatalf("open stream: %v, want Unauthenticated", st)
		}
		c := e.open(t, dialOpts{token: tok}, "n1", grpcUA)
		c.ask(listenerType, "fn1.cryptomesh")
		if st := c.ended(); st.Code() != codes.Unauthenticated || !strings.Contains(st.Message(), "revoked") {
			t.Fatalf("new stream: %v, want Unauthenticated naming the revocation", st)
		}
	})
}

func spiffeidOf(t *testing.T, b identity.Binding) spiffeid.ID {
	t.Helper()
	id, err := b.ID(testTD)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// TestNodeSwitching: every request is checked against the node the stream
// began with, also on a stream authenticated by SVID (which names no node).
func TestNodeSwitching(t *testing.T) {
	e := newEnv(t)
	tok, _ := e.token(t, "n1", identity.RoleBinding("caller"))
	cert := e.svid(t, spiffeidOf(t, identity.RoleBinding("caller")))
	for _, tt := range []struct {
		name string
		d    dialOpts
		next string
		ua   string
	}{
		{"token: another id", dialOpts{token: tok}, "n2", grpcUA},
		{"SVID: another id", dialOpts{cert: &cert}, "n2", grpcUA},
		{"token: another user agent", dialOpts{token: tok}, "n1", "envoy"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := e.open(t, tt.d, "n1", grpcUA)
			c.ask(listenerType, "fn1.cryptomesh")
			r := c.recv()
			c.node = nodeProto("n1", grpcUA) // the same node again is fine
			c.ack(r, "fn1.cryptomesh")
			c.node = nodeProto(tt.next, tt.ua)
			c.ask(clusterType, "cryptomesh.endpoint.e1")
			if st := c.ended(); st.Code() != codes.PermissionDenied {
				t.Fatalf("status %v, want PermissionDenied", st)
			}
		})
	}
}

// TestResourceSetsByKind: each kind gets only its resources, a gRPC node
// exactly what it names, an Envoy node its wildcard set with its own SVID,
// and a node's binding (not its name) decides.
func TestResourceSetsByKind(t *testing.T) {
	e := newEnv(t)

	t.Run("gRPC client in role caller", func(t *testing.T) {
		tok, _ := e.token(t, "g1", identity.RoleBinding("caller"))
		c := e.open(t, dialOpts{token: tok}, "g1", grpcUA)
		c.ask(listenerType, "fn2.cryptomesh")
		if got := names(c.recv()); !slices.Equal(got, []string{"fn2.cryptomesh"}) {
			t.Fatalf("named subscription: got %s", fmtNames(got))
		}
		c.ask(listenerType) // nothing named: the whole set of its kind
		got := names(c.recv())
		if !slices.Equal(got, []string{"fn1.cryptomesh", "fn2.cryptomesh"}) {
			t.Fatalf("wildcard: got %s; want the API listeners of the gRPC functions role caller may call", fmtNames(got))
		}
		c.ask(secretType, "default", "ROOTCA")
		if r := c.recv(); len(r.Resources) != 0 {
			t.Fatalf("a gRPC node got secrets: %s", fmtNames(names(r)))
		}
	})

	t.Run("gRPC server of e1", func(t *testing.T) {
		tok, _ := e.token(t, "srv1", identity.EndpointBinding("e1", ""))
		c := e.open(t, dialOpts{token: tok}, "srv1", grpcUA)
		name := "grpc/server?xds.resource.listening_address=127.0.0.1:17101"
		c.ask(listenerType, name, "grpc/server?xds.resource.listening_address=127.0.0.1:17102")
		if got := names(c.recv()); !slices.Equal(got, []string{name}) {
			t.Fatalf("got %s; want only e1's server listener", fmtNames(got))
		}
	})

	t.Run("Envoy sidecar of web", func(t *testing.T) {
		tok, _ := e.token(t, "sidecar", identity.EndpointBinding("web", ""))
		c := e.open(t, dialOpts{token: tok}, "sidecar", "envoy").withOutbound("127.0.0.1:25001")
		c.ask(listenerType)
		if got := names(c.recv()); !slices.Equal(got, []string{"cryptomesh.inbound", "cryptomesh.outbound"}) {
			t.Fatalf("listeners %s; want the outbound and inbound listeners and no API listener", fmtNames(got))
		}
		c.ask(secretType, "default", "ROOTCA")
		r := c.recv()
		if got := names(r); !slices.Equal(got, []string{"ROOTCA", "default"}) {
			t.Fatalf("secrets %s", fmtNames(got))
		}
		var sec tlsv3.Secret
		if err := r.Resources[1].UnmarshalTo(&sec); err != nil {
			t.Fatal(err)
		}
		block, _ := pem.Decode(sec.GetTlsCertificate().GetCertificateChain().GetInlineBytes())
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		if len(cert.URIs) != 1 || cert.URIs[0].String() != "spiffe://cryptomesh.local/endpoint/web" {
			t.Fatalf("SVID for %v, want web's ID", cert.URIs)
		}
		// Another stream of the same node gets a key of its own.
		c2 := e.open(t, dialOpts{token: tok}, "sidecar", "envoy")
		c2.ask(secretType, "default")
		var sec2 tlsv3.Secret
		if err := c2.recv().Resources[0].UnmarshalTo(&sec2); err != nil {
			t.Fatal(err)
		}
		if string(sec2.GetTlsCertificate().GetPrivateKey().GetInlineBytes()) == string(sec.GetTlsCertificate().GetPrivateKey().GetInlineBytes()) {
			t.Fatal("two streams share a private key")
		}
	})

	t.Run("the binding decides, not the name", func(t *testing.T) {
		// A node named like e1's server but bound to role other gets what
		// role other may call, and no server listener.
		tok, _ := e.token(t, "e1", identity.RoleBinding("other"))
		c := e.open(t, dialOpts{token: tok}, "e1", grpcUA)
		c.ask(listenerType)
		if got := names(c.recv()); !slices.Equal(got, []string{"other_fn.cryptomesh"}) {
			t.Fatalf("got %s", fmtNames(got))
		}
	})
}

// TestSharedBytes: nodes of the same kind and binding receive the very
// bytes the translation marshalled once.
func TestSharedBytes(t *testing.T) {
	e := newEnv(t)
	var got [][]byte
	for _, n := range []string{"a", "b"} {
		tok, _ := e.token(t, n, identity.RoleBinding("caller"))
		c := e.open(t, dialOpts{token: tok}, n, grpcUA)
		c.ask(routeType, "fn1.cryptomesh")
		r := c.recv()
		if len(r.Resources) != 1 {
			t.Fatalf("node %s: %s", n, fmtNames(names(r)))
		}
		got = append(got, r.Resources[0].Value)
	}
	if string(got[0]) != string(got[1]) {
		t.Fatal("two nodes of one binding got different route bytes")
	}
}

// TestPushOnlyToAffectedNodes: a change reaches the nodes whose resources
// it changes, once, and no other node; an EndpointState write that does
// not change health pushes nothing.
func TestPushOnlyToAffectedNodes(t *testing.T) {
	e := newEnv(t)
	subscribe := func(node string, b identity.Binding, fn string) *client {
		tok, _ := e.token(t, node, b)
		c := e.open(t, dialOpts{token: tok}, node, grpcUA)
		c.ask(routeType, fn+".cryptomesh")
		c.ack(c.recv(), fn+".cryptomesh")
		c.ask(endpointType, "cryptomesh.endpoint.e2")
		r := c.recv()
		c.ack(r, "cryptomesh.endpoint.e2")
		return c
	}
	caller := subscribe("caller-node", identity.RoleBinding("caller"), "fn1")
	other := subscribe("other-node", identity.RoleBinding("other"), "other_fn")

	update(t, e.reg, registry.KindFunction, "fn1", map[string]any{"timeout": "7s"})
	r := caller.recv()
	if r.TypeUrl != routeType || !slices.Equal(names(r), []string{"fn1.cryptomesh"}) {
		t.Fatalf("caller got %s %s", r.TypeUrl, fmtNames(names(r)))
	}
	caller.ack(r, "fn1.cryptomesh")
	other.quiet(400 * time.Millisecond)
	caller.quiet(100 * time.Millisecond)

	// A state that keeps e2 routable (no state → starting: both UNKNOWN)
	// changes nothing; unhealthy takes it out, for both nodes.
	report := func(state string) {
		if _, err := e.reg.Do(context.Background(), registry.Op{Type: registry.OpCreate, Kind: registry.KindEndpointState,
			Body: map[string]any{"endpoint_id": "e2", "state": state}}); err != nil {
			t.Fatal(err)
		}
	}
	report("starting")
	caller.quiet(400 * time.Millisecond)
	report("unhealthy")
	for _, c := range []*client{caller, other} {
		if r := c.recv(); r.TypeUrl != endpointType {
			t.Fatalf("got %s after e2 became unhealthy", r.TypeUrl)
		}
	}
	if n := histogramCount(t, e, "cryptomesh_xds_convergence_seconds"); n < 1 {
		t.Fatalf("convergence observations: %v", n)
	}
}

// TestDebounce: a burst of writes closer together than the quiet period
// is one translation and one push.
func TestDebounce(t *testing.T) {
	e := newEnv(t, ads.WithDebounce(150*time.Millisecond, 2*time.Second))
	tok, _ := e.token(t, "n", identity.RoleBinding("caller"))
	c := e.open(t, dialOpts{token: tok}, "n", grpcUA)
	c.ask(routeType, "fn1.cryptomesh")
	c.ack(c.recv(), "fn1.cryptomesh")
	builds := histogramCount(t, e, "cryptomesh_xds_build_seconds")
	for i := range 5 {
		update(t, e.reg, registry.KindFunction, "fn1", map[string]any{"timeout": fmt.Sprintf("%ds", i+1)})
		time.Sleep(30 * time.Millisecond)
	}
	r := c.recv()
	c.ack(r, "fn1.cryptomesh")
	c.quiet(400 * time.Millisecond)
	if got := histogramCount(t, e, "cryptomesh_xds_build_seconds") - builds; got != 1 {
		t.Fatalf("%d translations for one burst, want 1", got)
	}
}

// TestNACK: a node that rejects a version is not sent it again — not on
// the stream, not on its other streams — keeps its last good version, and
// gets the next change; the NACK is counted and shown in the status.
func TestNACK(t *testing.T) {
	var corrupt atomic.Bool
	hook := func(_ xds.Node, r *xds.Resource) *xds.Resource {
		if !corrupt.Load() || r.Name != "fn1.cryptomesh" || r.TypeURL != routeType {
			return r
		}
		bad := *r
		bad.Bytes = []byte{0xff, 0xff, 0xff}
		bad.Version = "corrupt-" + r.Version
		return &bad
	}
	e := newEnv(t, ads.WithTestResourceHook(hook))
	tok, _ := e.token(t, "n", identity.RoleBinding("caller"))
	c := e.open(t, dialOpts{token: tok}, "n", grpcUA)
	c.ask(routeType, "fn1.cryptomesh")
	good := c.recv()
	c.ack(good, "fn1.cryptomesh")
	e.waitAcked(t, "n", "route", good.VersionInfo)

	corrupt.Store(true)
	update(t, e.reg, registry.KindFunction, "fn1", map[string]any{"timeout": "9s"})
	bad := c.recv()
	c.nack(bad, good.VersionInfo, "fn1.cryptomesh")
	// A client that keeps asking (grpc-go re-requests on NACK) is not
	// answered with the rejected version.
	for range 3 {
		c.nack(bad, good.VersionInfo, "fn1.cryptomesh")
	}
	c.quiet(500 * time.Millisecond)
	// Another stream of the same node is not sent it either.
	c2 := e.open(t, dialOpts{token: tok}, "n", grpcUA)
	c2.ask(routeType, "fn1.cryptomesh")
	c2.quiet(300 * time.Millisecond)

	if got := counter(t, e, "cryptomesh_xds_rejects_total", "route"); got != 1 {
		t.Fatalf("rejects_total{type=route} = %v, want 1 (stale repeats are not NACKs of a new response)", got)
	}
	var st *ads.TypeStatus
	for _, s := range e.srv.Streams() {
		for i := range s.Types {
			if s.Types[i].Type == "route" && s.Types[i].Nacks > 0 {
				st = &s.Types[i]
			}
		}
	}
	if st == nil || st.Nacks != 1 || st.LastNack == nil || st.LastNack.Version != bad.VersionInfo ||
		st.AckedVersion != good.VersionInfo || !strings.Contains(st.LastNack.Error, "injected") {
		t.Fatalf("status of the route type: %+v", st)
	}

	corrupt.Store(false)
	update(t, e.reg, registry.KindFunction, "fn1", map[string]any{"timeout": "11s"})
	if r := c.recv(); r.VersionInfo == bad.VersionInfo || r.VersionInfo == good.VersionInfo {
		t.Fatalf("after the fix got version %s", r.VersionInfo)
	}
}

// TestStreamsStatus: the status lists each stream with its node, binding,
// SPIFFE ID, kind, credential, connection time and per-type versions.
func TestStreamsStatus(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	e := newEnv(t, ads.WithClock(func() time.Time { return now }))
	tok, _ := e.token(t, "srv1", identity.EndpointBinding("e1", ""))
	c := e.open(t, dialOpts{token: tok}, "srv1", grpcUA)
	name := "grpc/server?xds.resource.listening_address=127.0.0.1:17101"
	c.ask(listenerType, name)
	r := c.recv()
	c.ack(r, name)
	e.waitAcked(t, "srv1", "listener", r.VersionInfo)
	cert := e.svid(t, spiffeidOf(t, identity.RoleBinding("reader")))
	c2 := e.open(t, dialOpts{cert: &cert}, "reader-1", "envoy")
	c2.ask(clusterType)
	c2.recv()

	got := e.srv.Streams()
	if len(got) != 2 {
		t.Fatalf("%d streams: %+v", len(got), got)
	}
	reader, srv := got[0], got[1]
	if srv.Node != "srv1" || srv.Binding != "endpoint:e1" || srv.SPIFFEID != "spiffe://cryptomesh.local/endpoint/e1" ||
		srv.Kind != "grpc" || srv.Credential != ads.CredentialJoinToken || !srv.ConnectedAt.Equal(now) || len(srv.Types) != 1 {
		t.Fatalf("server stream: %+v", srv)
	}
	lt := srv.Types[0]
	if lt.Type != "listener" || lt.Wildcard || !slices.Equal(lt.Names, []string{name}) || lt.SentVersion != r.VersionInfo ||
		lt.AckedVersion != r.VersionInfo || !lt.AckedAt.Equal(now) || lt.Nacks != 0 || lt.LastNack != nil || lt.Requests != 2 {
		t.Fatalf("listener status: %+v", lt)
	}
	if reader.Node != "reader-1" || reader.Binding != "role:reader" || reader.Kind != "envoy" || reader.Credential != ads.CredentialSVID ||
		len(reader.Types) != 1 || !reader.Types[0].Wildcard || reader.Types[0].AckedVersion != "" || reader.Types[0].SentVersion == "" {
		t.Fatalf("reader stream: %+v", reader)
	}
	if got := gaugeValue(t, e, "cryptomesh_xds_connected_streams", "grpc"); got != 1 {
		t.Fatalf("connected_streams{kind=grpc} = %v", got)
	}
}

// TestOutboundAddress: an Envoy node's outbound listener goes where its
// metadata says, and an address Envoy could not bind refuses the stream.
func TestOutboundAddress(t *testing.T) {
	e := newEnv(t)
	tok, _ := e.token(t, "client-1", identity.RoleBinding("caller"))
	c := e.open(t, dialOpts{token: tok}, "client-1", "envoy").withOutbound("127.0.0.1:25001")
	c.ask(listenerType, "cryptomesh.outbound")
	r := c.recv()
	var lis listenerv3.Listener
	if err := r.Resources[0].UnmarshalTo(&lis); err != nil {
		t.Fatal(err)
	}
	if got := lis.GetAddress().GetSocketAddress().GetPortValue(); got != 25001 {
		t.Fatalf("outbound port %d, want 25001", got)
	}
	bad := e.open(t, dialOpts{token: tok}, "client-1", "envoy").withOutbound("localhost:1")
	bad.ask(listenerType)
	if st := bad.ended(); st.Code() != codes.InvalidArgument {
		t.Fatalf("status %v, want InvalidArgument", st)
	}
}
