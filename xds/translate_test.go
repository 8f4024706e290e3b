package xds

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rbacfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/cryptomesh/cryptomesh/registry"
)

func vhostNames(rc *routev3.RouteConfiguration) []string {
	var names []string
	for _, vh := range rc.GetVirtualHosts() {
		if vh.GetName() != prefixVirtualHost {
			names = append(names, vh.GetName())
		}
	}
	return names
}

func routeConfig(t testing.TB, s *Snapshot, name string) *routev3.RouteConfiguration {
	t.Helper()
	r := s.Get(resourcev3.RouteType, name)
	if r == nil {
		t.Fatalf("no route configuration %q", name)
	}
	return r.Message.(*routev3.RouteConfiguration)
}

func names(rs []*Resource) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.Name)
	}
	return out
}

// TestAnalystLeastPrivilege: the analyst (read:report_*, read:batch_*)
// can reach report_daily and batch_score, and healthz, which is open —
// nothing else is in its configuration, train_model least of all.
func TestAnalystLeastPrivilege(t *testing.T) {
	tr := exampleTranslator(t, mlPipeline)
	for _, kind := range []ClientKind{Envoy, Proxy} {
		s := translate(t, tr, Node{ID: "analyst", Kind: kind, Binding: RoleBinding("analyst")})
		rc := routeConfig(t, s, outboundName)
		if got, want := vhostNames(rc), []string{"batch_score", "healthz", "report_daily"}; !slices.Equal(got, want) {
			t.Fatalf("%s: virtual hosts %v, want %v", kind, got, want)
		}
		if got, want := names(s.Resources(resourcev3.ClusterType)), []string{"cryptomesh.endpoint.batch-node", "cryptomesh.endpoint.health-node", "cryptomesh.endpoint.reports-node"}; !slices.Equal(got, want) {
			t.Fatalf("%s: clusters %v, want %v", kind, got, want)
		}
		for _, typeURL := range TypeURLs() {
			for _, r := range s.Resources(typeURL) {
				for _, banned := range []string{"train_model", "gpu-trainer", "predict_online", "ingest_"} {
					if bytes.Contains(r.Bytes, []byte(banned)) {
						t.Errorf("%s: %s %s mentions %s", kind, shortType(typeURL), r.Name, banned)
					}
				}
			}
		}
	}
	// And the analyst's read permission is all the batch endpoint grants it.
	sidecar := translate(t, tr, Node{ID: "batch", Kind: Envoy, Binding: EndpointBinding("batch-node")})
	lis := listenerOf(t, sidecar, inboundName)
	for method, want := range map[string]bool{"GET": true, "HEAD": true, "OPTIONS": true, "POST": false, "DELETE": false} {
		res := simulateInbound(t, lis, simRequest{principal: roleSPIFFEID(testTrustDomain, "analyst"), method: method, authority: "batch_score.cryptomesh"})
		if res.allowed != want {
			t.Errorf("analyst %s batch_score: allowed=%v, want %v", method, res.allowed, want)
		}
	}
	// gRPC: predict_* needs execute, which the analyst lacks.
	g := translate(t, tr, Node{ID: "analyst-grpc", Kind: GRPC, Binding: RoleBinding("analyst")})
	for _, typeURL := range TypeURLs() {
		if rs := g.Resources(typeURL); len(rs) != 0 {
			t.Errorf("gRPC analyst has %s %v", shortType(typeURL), names(rs))
		}
	}
}

// TestSharing: nodes with the same needs receive the very same resources
// (built and marshalled once); only `default` is per node; the proxy gets
// exactly what Envoy gets.
func TestSharing(t *testing.T) {
	tr := exampleTranslator(t, mlPipeline)
	ca := newTestCA(t)
	a := translate(t, tr, Node{ID: "a", Kind: Envoy, Binding: RoleBinding("ml-engineer"), Credentials: ca.issue(t, roleSPIFFEID(testTrustDomain, "ml-engineer"))})
	b := translate(t, tr, Node{ID: "b", Kind: Proxy, Binding: RoleBinding("ml-engineer"), Credentials: ca.issue(t, roleSPIFFEID(testTrustDomain, "ml-engineer"))})
	for _, typeURL := range TypeURLs() {
		ra, rb := a.Resources(typeURL), b.Resources(typeURL)
		if !slices.Equal(names(ra), names(rb)) {
			t.Fatalf("%s: envoy has %v, proxy %v", shortType(typeURL), names(ra), names(rb))
		}
		for i := range ra {
			if ra[i].Name == secretCertName {
				if ra[i] == rb[i] || bytes.Equal(ra[i].Bytes, rb[i].Bytes) {
					t.Fatal("two nodes share a `default` secret")
				}
				continue
			}
			if ra[i] != rb[i] {
				t.Errorf("%s %s built twice", shortType(typeURL), ra[i].Name)
			}
		}
	}
	// Two sidecars of one endpoint share its inbound listener.
	s1 := translate(t, tr, Node{ID: "i1", Kind: Envoy, Binding: EndpointBinding("ingest-node")})
	s2 := translate(t, tr, Node{ID: "i2", Kind: Proxy, Binding: EndpointBinding("ingest-node")})
	if s1.Get(resourcev3.ListenerType, inboundName) != s2.Get(resourcev3.ListenerType, inboundName) {
		t.Error("inbound listener built twice")
	}
	// Clusters differ by client family: gRPC's use certificate providers.
	g := translate(t, tr, Node{ID: "g", Kind: GRPC, Binding: RoleBinding("ml-engineer")})
	ec, gc := a.Get(resourcev3.ClusterType, "cryptomesh.endpoint.online-node"), g.Get(resourcev3.ClusterType, "cryptomesh.endpoint.online-node")
	if ec == nil || gc == nil || ec.Version == gc.Version {
		t.Fatal("Envoy and gRPC nodes must get different variants of a cluster")
	}
	if a.Get(resourcev3.EndpointType, "cryptomesh.endpoint.online-node") != g.Get(resourcev3.EndpointType, "cryptomesh.endpoint.online-node") {
		t.Error("load assignments are shared by every kind")
	}
}

// TestVersionsAreContentHashes: versions are hashes of deterministic
// bytes, equal across independent builds, and change exactly with content.
func TestVersionsAreContentHashes(t *testing.T) {
	r := exampleRegistry(t, mlPipeline)
	node := Node{ID: "n", Kind: Envoy, Binding: RoleBinding("pipeline-scheduler")}
	s1 := translate(t, translatorFor(t, r, Options{}), node)
	s2 := translate(t, translatorFor(t, exampleRegistry(t, mlPipeline), Options{}), node)
	for _, typeURL := range TypeURLs() {
		if s1.Version(typeURL) != s2.Version(typeURL) {
			t.Errorf("%s: version differs between two builds of the same registry", shortType(typeURL))
		}
		for _, res := range s1.Resources(typeURL) {
			want, err := proto.MarshalOptions{Deterministic: true}.Marshal(res.Message)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(res.Bytes, want) || res.Version != hashHex(res.Bytes) {
				t.Errorf("%s %s: bytes or version are not the deterministic marshalling and its hash", shortType(typeURL), res.Name)
			}
			if !proto.Equal(res.Any(), mustAny(t, res)) {
				t.Errorf("%s %s: Any() is not the resource", shortType(typeURL), res.Name)
			}
		}
	}

	// A new timeout changes the routes, and nothing else.
	updateEntity(t, r, registry.KindFunction, "batch_score", `{"timeout": "3h"}`)
	s3 := translate(t, translatorFor(t, r, Options{}), node)
	if s3.Version(resourcev3.RouteType) == s1.Version(resourcev3.RouteType) {
		t.Error("route version unchanged after a timeout change")
	}
	for _, typeURL := range []string{resourcev3.ListenerType, resourcev3.ClusterType, resourcev3.EndpointType} {
		if s3.Version(typeURL) != s1.Version(typeURL) {
			t.Errorf("%s version changed with a route timeout", shortType(typeURL))
		}
	}
}

func mustAny(t testing.TB, r *Resource) proto.Message {
	t.Helper()
	a := &anypb.Any{}
	if err := anypb.MarshalFrom(a, r.Message, proto.MarshalOptions{Deterministic: true}); err != nil {
		t.Fatal(err)
	}
	return a
}

func jsonBody(t testing.TB, js string) map[string]any {
	t.Helper()
	var m map[string]any
	dec := json.NewDecoder(strings.NewReader(js))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil {
		t.Fatal(err)
	}
	return m
}

func updateEntity(t testing.TB, r *registry.Registry, k registry.Kind, id, patch string) {
	t.Helper()
	if _, err := r.Do(context.Background(), registry.Op{Type: registry.OpUpdate, Kind: k, ID: id, Body: jsonBody(t, patch)}); err != nil {
		t.Fatalf("update %s %s: %v", k, id, err)
	}
}

func createEntity(t testing.TB, r *registry.Registry, k registry.Kind, body string) {
	t.Helper()
	if _, err := r.Do(context.Background(), registry.Op{Type: registry.OpCreate, Kind: k, Body: jsonBody(t, body)}); err != nil {
		t.Fatalf("create %s: %v", k, err)
	}
}

// TestEndpointHealth: the load assignment follows the latest state.
func TestEndpointHealth(t *testing.T) {
	tests := []struct {
		states []string
		want   corev3.HealthStatus
	}{
		{nil, corev3.HealthStatus_UNKNOWN},
		{[]string{"cold"}, corev3.HealthStatus_UNKNOWN},
		{[]string{"starting"}, corev3.HealthStatus_UNKNOWN},
		{[]string{"warm"}, corev3.HealthStatus_HEALTHY},
		{[]string{"unhealthy"}, corev3.HealthStatus_UNHEALTHY},
		{[]string{"draining"}, corev3.HealthStatus_DRAINING},
		{[]string{"unhealthy", "warm"}, corev3.HealthStatus_HEALTHY},
		{[]string{"warm", "draining"}, corev3.HealthStatus_DRAINING},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.states, "-then-"), func(t *testing.T) {
			r := exampleRegistry(t, mlPipeline)
			for _, st := range tt.states {
				createEntity(t, r, registry.KindEndpointState, fmt.Sprintf(`{"endpoint_id": "batch-node", "state": %q}`, st))
			}
			s := translate(t, translatorFor(t, r, Options{}), Node{ID: "n", Kind: Envoy, Binding: RoleBinding("analyst")})
			cla := s.Get(resourcev3.EndpointType, "cryptomesh.endpoint.batch-node").Message.(*endpointv3.ClusterLoadAssignment)
			lbs := cla.GetEndpoints()
			if len(lbs) != 1 || lbs[0].GetLoadBalancingWeight().GetValue() != 1 || lbs[0].GetLocality() == nil || len(lbs[0].GetLbEndpoints()) != 1 {
				t.Fatalf("want one weighted locality with one host, got %v", cla)
			}
			if got := lbs[0].GetLbEndpoints()[0].GetHealthStatus(); got != tt.want {
				t.Fatalf("health %v, want %v", got, tt.want)
			}
		})
	}
}

func TestCredentialsAreTheNodesOwn(t *testing.T) {
	tr := exampleTranslator(t, mlPipeline)
	ca := newTestCA(t)
	td := testTrustDomain
	sidecarID := endpointSPIFFEID(td, "ingest-node", "pipeline-scheduler")
	good := ca.issue(t, sidecarID)
	other := ca.issue(t, sidecarID)
	tests := []struct {
		name  string
		node  Node
		creds *Credentials
		ok    bool
	}{
		{"sidecar with its SVID", Node{Kind: Envoy, Binding: EndpointBinding("ingest-node")}, good, true},
		{"client with its SVID", Node{Kind: Proxy, Binding: RoleBinding("analyst")}, ca.issue(t, roleSPIFFEID(td, "analyst")), true},
		{"sidecar with the SVID of its role", Node{Kind: Envoy, Binding: EndpointBinding("ingest-node")}, ca.issue(t, roleSPIFFEID(td, "pipeline-scheduler")), false},
		{"sidecar without the role prefix its endpoint has", Node{Kind: Envoy, Binding: EndpointBinding("ingest-node")}, ca.issue(t, endpointSPIFFEID(td, "ingest-node", "")), false},
		{"client with another role's SVID", Node{Kind: Envoy, Binding: RoleBinding("analyst")}, ca.issue(t, roleSPIFFEID(td, "ml-engineer")), false},
		{"client with an endpoint's SVID", Node{Kind: Envoy, Binding: RoleBinding("pipeline-scheduler")}, good, false},
		{"another trust domain", Node{Kind: Envoy, Binding: RoleBinding("analyst")}, ca.issue(t, roleSPIFFEID("other.example", "analyst")), false},
		{"two URI SANs", Node{Kind: Envoy, Binding: RoleBinding("analyst")}, ca.issue(t, roleSPIFFEID(td, "analyst"), roleSPIFFEID(td, "ml-engineer")), false},
		{"someone else's key", Node{Kind: Envoy, Binding: EndpointBinding("ingest-node")}, &Credentials{CertChainPEM: good.CertChainPEM, KeyPEM: other.KeyPEM, BundlePEM: good.BundlePEM}, false},
		{"no bundle", Node{Kind: Envoy, Binding: EndpointBinding("ingest-node")}, &Credentials{CertChainPEM: good.CertChainPEM, KeyPEM: good.KeyPEM}, false},
		{"a key in the bundle", Node{Kind: Envoy, Binding: EndpointBinding("ingest-node")}, &Credentials{CertChainPEM: good.CertChainPEM, KeyPEM: good.KeyPEM, BundlePEM: append(slices.Clone(good.BundlePEM), good.KeyPEM...)}, false},
		{"garbage chain", Node{Kind: Envoy, Binding: EndpointBinding("ingest-node")}, &Credentials{CertChainPEM: []byte("hello"), KeyPEM: good.KeyPEM, BundlePEM: good.BundlePEM}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := tt.node
			n.ID, n.Credentials = "n", tt.creds
			s, err := tr.Translate(n)
			if tt.ok {
				if err != nil {
					t.Fatal(err)
				}
				def := s.Get(resourcev3.SecretType, secretCertName).Message.(*tlsv3.Secret)
				if !bytes.Equal(def.GetTlsCertificate().GetPrivateKey().GetInlineBytes(), tt.creds.KeyPEM) {
					t.Fatal("`default` does not hold the node's key")
				}
				root := s.Get(resourcev3.SecretType, secretRootCAName).Message.(*tlsv3.Secret)
				if !bytes.Equal(root.GetValidationContext().GetTrustedCa().GetInlineBytes(), tt.creds.BundlePEM) {
					t.Fatal("`ROOTCA` does not hold the bundle")
				}
				return
			}
			if !errors.Is(err, ErrCredentials) {
				t.Fatalf("want ErrCredentials, got %v", err)
			}
		})
	}
}

func TestInvalidNodes(t *testing.T) {
	tr := exampleTranslator(t, mlPipeline)
	creds := fixtureCredentials(t, "analyst")
	for name, n := range map[string]Node{
		"no binding":             {Kind: Envoy},
		"two bindings":           {Kind: Envoy, Binding: Binding{Endpoint: "ingest-node", Role: "analyst"}},
		"bad endpoint id":        {Kind: Envoy, Binding: EndpointBinding("../x")},
		"bad role id":            {Kind: Envoy, Binding: RoleBinding("a/b")},
		"unknown kind":           {Kind: ClientKind(9), Binding: RoleBinding("analyst")},
		"gRPC with credentials":  {Kind: GRPC, Binding: RoleBinding("analyst"), Credentials: creds},
		"gRPC outbound address":  {Kind: GRPC, Binding: RoleBinding("analyst"), OutboundAddress: "127.0.0.1:1"},
		"outbound address name":  {Kind: Envoy, Binding: RoleBinding("analyst"), OutboundAddress: "localhost:15001"},
		"outbound address noise": {Kind: Envoy, Binding: RoleBinding("analyst"), OutboundAddress: "15001"},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := tr.Translate(n); !errors.Is(err, ErrInvalidNode) {
				t.Fatalf("want ErrInvalidNode, got %v", err)
			}
		})
	}
}

// TestUnknownBindingsFailClosed: a binding to a role or endpoint that is
// not in the registry (deleted, or never there) gets nothing to call and
// nothing to serve.
func TestUnknownBindingsFailClosed(t *testing.T) {
	tr := exampleTranslator(t, mlPipeline)
	for _, n := range []Node{
		{ID: "ghost", Kind: Envoy, Binding: RoleBinding("ghost")},
		{ID: "ghost", Kind: Envoy, Binding: EndpointBinding("ghost")},
		{ID: "ghost", Kind: GRPC, Binding: RoleBinding("ghost")},
		{ID: "ghost", Kind: GRPC, Binding: EndpointBinding("ghost")},
	} {
		s := translate(t, tr, n)
		want := map[string][]string{}
		if n.Kind == Envoy {
			// Only the open health probe, which anyone may call, and the
			// reports in audit mode, which let anyone through.
			want = map[string][]string{
				resourcev3.ListenerType: {outboundName}, resourcev3.RouteType: {outboundName},
				resourcev3.ClusterType:  {"cryptomesh.endpoint.health-node", "cryptomesh.endpoint.reports-node"},
				resourcev3.EndpointType: {"cryptomesh.endpoint.health-node", "cryptomesh.endpoint.reports-node"},
			}
		}
		for _, typeURL := range TypeURLs() {
			if got := names(s.Resources(typeURL)); !slices.Equal(got, want[typeURL]) {
				t.Errorf("%s %s: %s %v, want %v", n.Kind, n.Binding, shortType(typeURL), got, want[typeURL])
			}
		}
	}
}

// TestEnvoyAndGRPCGetOnlyTheirOwnKinds: Envoy rejects API listeners and
// would bind gRPC server listeners; grpc-go NACKs SDS.
func TestEnvoyAndGRPCGetOnlyTheirOwnKinds(t *testing.T) {
	tr := exampleTranslator(t, mlPipeline)
	for _, b := range []Binding{RoleBinding("ml-engineer"), RoleBinding("inference-client"), EndpointBinding("online-node"), EndpointBinding("gpu-trainer")} {
		for _, kind := range []ClientKind{Envoy, Proxy, GRPC} {
			s := translate(t, tr, Node{ID: "n", Kind: kind, Binding: b})
			for _, r := range s.Resources(resourcev3.ListenerType) {
				lis := r.Message.(*listenerv3.Listener)
				isAPI := lis.GetApiListener() != nil
				isServer := strings.HasPrefix(lis.GetName(), grpcServerPrefix)
				if kind != GRPC && (isAPI || isServer) {
					t.Errorf("%s %s got gRPC listener %s", kind, b, r.Name)
				}
				if kind == GRPC && !isAPI && !isServer {
					t.Errorf("%s %s got Envoy listener %s", kind, b, r.Name)
				}
			}
			sds := 0
			for _, typeURL := range TypeURLs() {
				for _, r := range s.Resources(typeURL) {
					sds += countMessages(t, r.Message, "envoy.extensions.transport_sockets.tls.v3.SdsSecretConfig")
				}
			}
			if kind == GRPC && sds != 0 {
				t.Errorf("%s %s: %d SDS secret configs in a gRPC snapshot", kind, b, sds)
			}
			if kind != GRPC && sds == 0 {
				t.Errorf("%s %s: no SDS secret configs", kind, b)
			}
		}
	}
}

// countMessages counts messages of a full name anywhere in m, looking
// inside Anys too.
func countMessages(t testing.TB, m proto.Message, name protoreflect.FullName) int {
	t.Helper()
	n := 0
	var walk func(protoreflect.Message)
	visit := func(msg protoreflect.Message) {
		if a, ok := msg.Interface().(interface{ UnmarshalNew() (proto.Message, error) }); ok {
			inner, err := a.UnmarshalNew()
			if err != nil {
				t.Fatal(err)
			}
			walk(inner.ProtoReflect())
			return
		}
		walk(msg)
	}
	walk = func(msg protoreflect.Message) {
		if msg.Descriptor().FullName() == name {
			n++
		}
		msg.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
			switch {
			case fd.IsList() && fd.Message() != nil:
				for i := 0; i < v.List().Len(); i++ {
					visit(v.List().Get(i).Message())
				}
			case fd.IsMap() && fd.MapValue().Message() != nil:
				v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
					visit(mv.Message())
					return true
				})
			case !fd.IsList() && !fd.IsMap() && fd.Message() != nil:
				visit(v.Message())
			}
			return true
		})
	}
	walk(m.ProtoReflect())
	return n
}

// TestClusterTLS: mutual TLS, the server checked by its ID suffix in both
// SAN fields (grpc-go reads only the legacy one), HTTP/2 for gRPC
// endpoints; SDS for Envoy, certificate providers for gRPC.
func TestClusterTLS(t *testing.T) {
	tr := exampleTranslator(t, mlPipeline)
	envoy := translate(t, tr, Node{ID: "e", Kind: Envoy, Binding: RoleBinding("ml-engineer")})
	grpc := translate(t, tr, Node{ID: "g", Kind: GRPC, Binding: RoleBinding("ml-engineer")})
	for _, tc := range []struct {
		s        *Snapshot
		endpoint string
		grpc     bool
	}{{envoy, "batch-node", false}, {envoy, "online-node", true}, {grpc, "online-node", true}} {
		c := tc.s.Get(resourcev3.ClusterType, endpointClusterName(tc.endpoint)).Message.(*clusterv3.Cluster)
		if c.GetType() != clusterv3.Cluster_EDS || c.GetEdsClusterConfig().GetEdsConfig().GetAds() == nil {
			t.Errorf("%s: not EDS over ADS", c.GetName())
		}
		var utc tlsv3.UpstreamTlsContext
		unpack(t, c.GetTransportSocket().GetTypedConfig(), &utc)
		common := utc.GetCommonTlsContext()
		vc := common.GetValidationContext()
		if tc.s == envoy {
			vc = common.GetCombinedValidationContext().GetDefaultValidationContext()
			if common.GetCombinedValidationContext().GetValidationContextSdsSecretConfig().GetName() != secretRootCAName ||
				len(common.GetTlsCertificateSdsSecretConfigs()) != 1 || common.GetTlsCertificateSdsSecretConfigs()[0].GetName() != secretCertName {
				t.Errorf("%s: Envoy cluster does not use SDS default/ROOTCA: %v", c.GetName(), common)
			}
		} else if common.GetTlsCertificateProviderInstance().GetInstanceName() != secretCertName || vc.GetCaCertificateProviderInstance().GetInstanceName() != secretRootCAName {
			t.Errorf("%s: gRPC cluster does not use provider instances default/ROOTCA: %v", c.GetName(), common)
		}
		suffix := "/endpoint/" + tc.endpoint
		legacy := vc.GetMatchSubjectAltNames() // deprecated: the field grpc-go enforces
		typed := vc.GetMatchTypedSubjectAltNames()
		if len(legacy) != 1 || legacy[0].GetSuffix() != suffix {
			t.Errorf("%s: match_subject_alt_names = %v", c.GetName(), legacy)
		}
		if len(typed) != 1 || typed[0].GetSanType() != tlsv3.SubjectAltNameMatcher_URI || typed[0].GetMatcher().GetSuffix() != suffix {
			t.Errorf("%s: match_typed_subject_alt_names = %v", c.GetName(), typed)
		}
		opts, hasH2 := c.GetTypedExtensionProtocolOptions()[httpProtocolOptionsKey]
		if hasH2 != tc.grpc {
			t.Errorf("%s: HTTP/2 options present=%v, want %v", c.GetName(), hasH2, tc.grpc)
		}
		if hasH2 {
			var hpo upstreamhttpv3.HttpProtocolOptions
			unpack(t, opts, &hpo)
			if hpo.GetExplicitHttpConfig().GetHttp2ProtocolOptions() == nil {
				t.Errorf("%s: protocol options are not explicit HTTP/2", c.GetName())
			}
		}
	}
}

// TestGRPCServerListener checks what grpc-go insists on.
func TestGRPCServerListener(t *testing.T) {
	r := simRegistry(t, "authz")
	tr := translatorFor(t, r, Options{})
	for _, tc := range []struct {
		endpoint, addr string
		requireCert    bool
	}{{"ep-grpc", "127.0.0.1:17104", true}, {"ep-grpc-audit", "127.0.0.1:17105", false}} {
		s := translate(t, tr, Node{ID: "srv", Kind: GRPC, Binding: EndpointBinding(tc.endpoint)})
		lis := listenerOf(t, s, "grpc/server?xds.resource.listening_address="+tc.addr)
		sa := lis.GetAddress().GetSocketAddress()
		if got := fmt.Sprintf("%s:%d", sa.GetAddress(), sa.GetPortValue()); got != tc.addr {
			t.Errorf("%s: address %s, want %s", tc.endpoint, got, tc.addr)
		}
		var dtc tlsv3.DownstreamTlsContext
		unpack(t, lis.GetFilterChains()[0].GetTransportSocket().GetTypedConfig(), &dtc)
		if dtc.GetRequireClientCertificate().GetValue() != tc.requireCert {
			t.Errorf("%s: require_client_certificate=%v, want %v", tc.endpoint, dtc.GetRequireClientCertificate().GetValue(), tc.requireCert)
		}
		vc := dtc.GetCommonTlsContext().GetValidationContext()
		if vc.GetCaCertificateProviderInstance().GetInstanceName() != secretRootCAName {
			t.Errorf("%s: no CA provider instance in the validation context", tc.endpoint)
		}
		if len(vc.GetMatchSubjectAltNames()) != 0 || len(vc.GetMatchTypedSubjectAltNames()) != 0 { // deprecated: grpc-go NACKs it here
			t.Errorf("%s: SAN matchers in a server context", tc.endpoint)
		}
		hcm := listenerHCM(t, lis)
		filters := hcm.GetHttpFilters()
		if len(filters) != 2 || filters[0].GetName() != wellknown.HTTPRoleBasedAccessControl || filters[1].GetName() != wellknown.Router {
			t.Errorf("%s: filters %v, want RBAC then router", tc.endpoint, filters)
		}
		for _, vh := range hcm.GetRouteConfig().GetVirtualHosts() {
			for _, rt := range vh.GetRoutes() {
				if rt.GetNonForwardingAction() == nil {
					t.Errorf("%s: route %s forwards", tc.endpoint, rt.GetName())
				}
				var per rbacfilterv3.RBACPerRoute
				unpack(t, rt.GetTypedPerFilterConfig()[wellknown.HTTPRoleBasedAccessControl], &per)
				if per.GetRbac().GetShadowRules() != nil {
					t.Errorf("%s: shadow rules on a gRPC server", tc.endpoint)
				}
			}
		}
	}
	// The base RBAC filter denies what no route allows.
	s := translate(t, tr, Node{ID: "srv", Kind: GRPC, Binding: EndpointBinding("ep-grpc")})
	var base rbacfilterv3.RBAC
	unpack(t, listenerHCM(t, listenerOf(t, s, grpcServerPrefix+"127.0.0.1:17104")).GetHttpFilters()[0].GetTypedConfig(), &base)
	if base.GetRules().GetAction() != rbacv3.RBAC_ALLOW || len(base.GetRules().GetPolicies()) != 0 {
		t.Errorf("base RBAC is not deny-all: %v", &base)
	}
	// An authority the server does not host is not routed.
	if res := simulateInbound(t, listenerOf(t, s, grpcServerPrefix+"127.0.0.1:17104"), simRequest{principal: roleSPIFFEID(testTrustDomain, "ops-admin"), method: "POST", authority: "job_a.cryptomesh"}); res.routed {
		t.Error("a function of another endpoint is routed")
	}
}

// TestTimeouts: every route carries its function's timeout, 0 for none;
// gRPC routes also as max_stream_duration, which is what grpc-go applies.
func TestTimeouts(t *testing.T) {
	r := simRegistry(t, "authz")
	tr := translatorFor(t, r, Options{})
	envoy := translate(t, tr, Node{ID: "e", Kind: Envoy, Binding: RoleBinding("ops-admin")})
	rc := routeConfig(t, envoy, outboundName)
	want := map[string]time.Duration{"job_a": time.Minute, "rpc_a": 0}
	for _, vh := range rc.GetVirtualHosts() {
		for _, rt := range vh.GetRoutes() {
			fn := strings.TrimPrefix(rt.GetName(), prefixVirtualHost)
			d, ok := want[fn]
			if !ok {
				continue
			}
			if rt.GetRoute().GetTimeout() == nil || rt.GetRoute().GetTimeout().AsDuration() != d {
				t.Errorf("route %s: timeout %v, want %v", rt.GetName(), rt.GetRoute().GetTimeout(), d)
			}
			if rt.GetRoute().GetRetryPolicy() != nil || vh.GetRetryPolicy() != nil {
				t.Errorf("route %s retries", rt.GetName())
			}
		}
	}
	g := translate(t, tr, Node{ID: "g", Kind: GRPC, Binding: RoleBinding("ops-admin")})
	rpcA := routeConfig(t, g, "rpc_a.cryptomesh").GetVirtualHosts()[0].GetRoutes()[0].GetRoute()
	if rpcA.GetMaxStreamDuration() != nil || rpcA.GetTimeout().AsDuration() != 0 {
		t.Errorf("rpc_a (timeout 0): %v", rpcA)
	}
	rpcAB := routeConfig(t, g, "rpc_ab.cryptomesh").GetVirtualHosts()[0].GetRoutes()[0].GetRoute()
	if rpcAB.GetMaxStreamDuration().GetMaxStreamDuration().AsDuration() != time.Minute {
		t.Errorf("rpc_ab (default 60s): %v", rpcAB)
	}
}

func TestOutboundAddress(t *testing.T) {
	tr := exampleTranslator(t, mlPipeline)
	def := translate(t, tr, Node{ID: "a", Kind: Envoy, Binding: RoleBinding("analyst")})
	custom := translate(t, tr, Node{ID: "b", Kind: Envoy, Binding: RoleBinding("analyst"), OutboundAddress: "127.0.0.2:16001"})
	for s, want := range map[*Snapshot]string{def: "127.0.0.1:15001", custom: "127.0.0.2:16001"} {
		sa := listenerOf(t, s, outboundName).GetAddress().GetSocketAddress()
		if got := fmt.Sprintf("%s:%d", sa.GetAddress(), sa.GetPortValue()); got != want {
			t.Errorf("outbound listener at %s, want %s", got, want)
		}
	}
	if def.Get(resourcev3.RouteType, outboundName) != custom.Get(resourcev3.RouteType, outboundName) {
		t.Error("the route configuration is per role, not per address")
	}
}

// TestSDSCluster: in SPIRE mode Envoy fetches default/ROOTCA from the
// agent, and the snapshot has no secrets.
func TestSDSCluster(t *testing.T) {
	tr := translatorFor(t, exampleRegistry(t, mlPipeline), Options{SDSCluster: "spire_agent"})
	s := translate(t, tr, Node{ID: "n", Kind: Envoy, Binding: EndpointBinding("ingest-node")})
	if rs := s.Resources(resourcev3.SecretType); len(rs) != 0 {
		t.Fatalf("secrets in SPIRE mode: %v", names(rs))
	}
	c := s.Get(resourcev3.ClusterType, "cryptomesh.endpoint.batch-node").Message.(*clusterv3.Cluster)
	var utc tlsv3.UpstreamTlsContext
	unpack(t, c.GetTransportSocket().GetTypedConfig(), &utc)
	src := utc.GetCommonTlsContext().GetTlsCertificateSdsSecretConfigs()[0].GetSdsConfig()
	if got := src.GetApiConfigSource().GetGrpcServices()[0].GetEnvoyGrpc().GetClusterName(); got != "spire_agent" {
		t.Fatalf("SDS from %q, want spire_agent", got)
	}
	if _, err := tr.Translate(Node{ID: "n", Kind: Envoy, Binding: RoleBinding("analyst"), Credentials: fixtureCredentials(t, "analyst")}); !errors.Is(err, ErrInvalidNode) {
		t.Fatalf("credentials in SPIRE mode: %v", err)
	}
	if _, err := NewTranslator(tr.Model(), Options{TrustDomain: testTrustDomain, SDSCluster: "spire agent"}); err == nil {
		t.Fatal("a cluster name with a space was accepted")
	}
	if _, err := NewTranslator(tr.Model(), Options{TrustDomain: "Not A Domain"}); err == nil {
		t.Fatal("a bad trust domain was accepted")
	}
}

// TestModelLeavesOutWhatCannotBeRouted, and says so.
func TestModelLeavesOutWhatCannotBeRouted(t *testing.T) {
	r := openRegistry(t)
	applyDoc(t, r, []byte(`
roles: {exec: {name: exec, permissions: [execute]}}
security_policies: {p: {requires_authentication: true, roles: [exec]}}
endpoints:
  ep: {security_policy: p, address: 127.0.0.1:17001}
  named: {security_policy: p, address: "node-7.internal:17002", protocol: grpc}
  bare: {security_policy: p}
services: {s: {security_policy: p}}
microservices:
  m: {service_id: s}
  orphan-ms: {}
functions:
  Predict: {microservice_id: m, endpoint_id: ep}
  predict: {microservice_id: m, endpoint_id: ep}
  orphan: {microservice_id: orphan-ms, endpoint_id: ep}
  nowhere: {microservice_id: m}
  ok: {microservice_id: m, endpoint_id: ep}
  far: {microservice_id: m, endpoint_id: named}
  unplaced: {microservice_id: m, endpoint_id: bare}
`))
	m, err := NewModel(r.View())
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, f := range m.functions {
		ids = append(ids, f.id)
	}
	if want := []string{"far", "ok", "unplaced"}; !slices.Equal(ids, want) {
		t.Fatalf("routed functions %v, want %v", ids, want)
	}
	warnings := strings.Join(m.Warnings(), "\n")
	for _, w := range []string{"function Predict: not routed: its authority is ambiguous with predict", "function orphan: no service security policy", `endpoint named: address host "node-7.internal" is not an IP address`} {
		if !strings.Contains(warnings, w) {
			t.Errorf("warnings lack %q:\n%s", w, warnings)
		}
	}
	tr, err := NewTranslator(m, Options{TrustDomain: testTrustDomain})
	if err != nil {
		t.Fatal(err)
	}
	// An endpoint without an address: routed, but with no host yet.
	s := translate(t, tr, Node{ID: "n", Kind: Envoy, Binding: RoleBinding("exec")})
	if cla := s.Get(resourcev3.EndpointType, "cryptomesh.endpoint.bare").Message.(*endpointv3.ClusterLoadAssignment); len(cla.GetEndpoints()) != 0 {
		t.Errorf("an endpoint without address has hosts: %v", cla)
	}
	// A sidecar of it has nothing to listen on.
	s = translate(t, tr, Node{ID: "n", Kind: Envoy, Binding: EndpointBinding("bare")})
	if s.Get(resourcev3.ListenerType, inboundName) != nil {
		t.Error("inbound listener for an endpoint without address")
	}
	// A gRPC server cannot bind a host name.
	s = translate(t, tr, Node{ID: "n", Kind: GRPC, Binding: EndpointBinding("named")})
	if rs := s.Resources(resourcev3.ListenerType); len(rs) != 0 {
		t.Errorf("gRPC server listener for a host name: %v", names(rs))
	}
}

// TestInvalidResourcesAreNotPublished: validation reaches into Anys (where
// ValidateAll alone does not look), however deep, and the error names the
// resource; pack refuses to pack what is invalid.
func TestInvalidResourcesAreNotPublished(t *testing.T) {
	var c checker
	badRBAC := &rbacfilterv3.RBAC{Rules: &rbacv3.RBAC{Policies: map[string]*rbacv3.Policy{"empty": {}}}}
	if _, err := c.pack(badRBAC); err == nil {
		t.Fatal("an RBAC policy without permissions and principals was packed")
	}
	// Anys made elsewhere are not trusted: they are unpacked and checked.
	untrusted := func(m proto.Message) *anypb.Any {
		a, err := anypb.New(m)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	hcm := untrusted(&hcmv3.HttpConnectionManager{
		StatPrefix:     "x",
		RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: &routev3.RouteConfiguration{Name: "x"}},
		HttpFilters: []*hcmv3.HttpFilter{
			{Name: wellknown.HTTPRoleBasedAccessControl, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: untrusted(badRBAC)}},
			{Name: wellknown.Router, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: untrusted(&routerv3.Router{})}},
		},
	})
	lis := &listenerv3.Listener{
		Name:         "bad",
		Address:      socketAddress("127.0.0.1", 1),
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{Name: wellknown.HTTPConnectionManager, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: hcm}}}}},
	}
	if err := lis.ValidateAll(); err != nil {
		t.Fatalf("the outer message alone is valid, the test needs that: %v", err)
	}
	res, err := c.newResource(resourcev3.ListenerType, "bad", lis)
	if err == nil || res != nil {
		t.Fatal("a listener with an invalid RBAC policy two Anys deep was published")
	}
	for _, want := range []string{`Listener "bad"`, "HttpConnectionManager", "envoy.extensions.filters.http.rbac.v3.RBAC", "Permissions"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	// An Any in a map deep inside a message that is otherwise plain (the
	// encoding scan must find it there, too).
	badPerRoute := untrusted(&rbacfilterv3.RBACPerRoute{Rbac: &rbacfilterv3.RBAC{Rules: &rbacv3.RBAC{Policies: map[string]*rbacv3.Policy{"empty": {}}}}})
	rc := &routev3.RouteConfiguration{Name: "r", VirtualHosts: []*routev3.VirtualHost{{
		Name: "v", Domains: []string{"*"},
		Routes: []*routev3.Route{{
			Match:                prefixMatch("/"),
			Action:               &routev3.Route_NonForwardingAction{NonForwardingAction: &routev3.NonForwardingAction{}},
			TypedPerFilterConfig: map[string]*anypb.Any{wellknown.HTTPRoleBasedAccessControl: badPerRoute},
		}},
	}}}
	if err := rc.ValidateAll(); err != nil {
		t.Fatalf("the outer message alone is valid, the test needs that: %v", err)
	}
	if _, err := c.newResource(resourcev3.RouteType, "r", rc); err == nil || !strings.Contains(err.Error(), "typed_per_filter_config") {
		t.Fatalf("an invalid per-route RBAC in a map was published or not named: %v", err)
	}
	// The same holds with the field table of a Translator's checker.
	if _, err := newChecker(generatedTypes()...).newResource(resourcev3.RouteType, "r", rc); err == nil {
		t.Fatal("an invalid per-route RBAC in a map was published")
	}
	// The outermost message is validated too.
	if _, err := c.newResource(resourcev3.ClusterType, "", &clusterv3.Cluster{}); err == nil {
		t.Fatal("a cluster without a name was published")
	}
}

func TestSnapshotReferenceCheck(t *testing.T) {
	var c checker
	rc, err := c.newResource(resourcev3.RouteType, "r", &routev3.RouteConfiguration{Name: "r"}, clusterRef("missing"))
	if err != nil {
		t.Fatal(err)
	}
	b := newSnapshotBuilder()
	if err := b.add(rc); err != nil {
		t.Fatal(err)
	}
	if _, err := b.build(false); err == nil || !strings.Contains(err.Error(), `Cluster "missing"`) {
		t.Fatalf("a dangling reference was not caught: %v", err)
	}
	other, err := c.newResource(resourcev3.RouteType, "r", &routev3.RouteConfiguration{Name: "r", ValidateClusters: nil, VirtualHosts: []*routev3.VirtualHost{{Name: "v", Domains: []string{"*"}}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.add(other); err == nil {
		t.Fatal("two different resources with one name were accepted")
	}
}

// TestConcurrentTranslation: many nodes at once against one Translator
// (run with -race) get what one-at-a-time translation gives.
func TestConcurrentTranslation(t *testing.T) {
	r := simRegistry(t, "authz")
	var nodes []Node
	for _, kind := range []ClientKind{Envoy, Proxy, GRPC} {
		for _, b := range []Binding{RoleBinding("ops"), RoleBinding("reader"), RoleBinding("ops-admin"), EndpointBinding("ep-enforce"), EndpointBinding("ep-grpc"), EndpointBinding("ep-audit")} {
			nodes = append(nodes, Node{ID: kind.String() + b.String(), Kind: kind, Binding: b})
		}
	}
	want := map[string]string{}
	serial := translatorFor(t, r, Options{})
	for _, n := range nodes {
		want[n.ID] = snapshotDigest(translate(t, serial, n))
	}
	shared := translatorFor(t, r, Options{})
	var wg sync.WaitGroup
	errs := make(chan error, 8*len(nodes))
	for range 8 {
		for _, n := range nodes {
			wg.Go(func() {
				s, err := shared.Translate(n)
				if err != nil {
					errs <- err
					return
				}
				if got := snapshotDigest(s); got != want[n.ID] {
					errs <- fmt.Errorf("%s: concurrent result differs", n.ID)
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func snapshotDigest(s *Snapshot) string {
	var b strings.Builder
	for _, typeURL := range TypeURLs() {
		b.WriteString(s.Version(typeURL))
	}
	return b.String()
}

// TestEndpointRoleDecidesOutbound: a sidecar's workload calls out in its
// endpoint's role, and an endpoint without a role calls only what lets
// anyone through; changing the role changes the outbound side and the
// SVID the sidecar must hold, not the inbound side.
func TestEndpointRoleDecidesOutbound(t *testing.T) {
	r := exampleRegistry(t, mlPipeline)
	tr := translatorFor(t, r, Options{})
	outbound := func(tr *Translator, ep string) []string {
		return vhostNames(routeConfig(t, translate(t, tr, Node{ID: ep, Kind: Envoy, Binding: EndpointBinding(ep)}), outboundName))
	}
	if got, want := outbound(tr, "reports-node"), []string{"healthz", "report_daily"}; !slices.Equal(got, want) {
		t.Errorf("roleless reports-node calls %v, want %v", got, want)
	}
	scheduler := outbound(tr, "ingest-node")
	if !slices.Contains(scheduler, "train_model") || slices.Contains(scheduler, "predict_online") {
		t.Errorf("ingest-node (pipeline-scheduler) calls %v", scheduler)
	}
	before := translate(t, tr, Node{ID: "b", Kind: Envoy, Binding: EndpointBinding("reports-node")})

	updateEntity(t, r, registry.KindEndpoint, "reports-node", `{"role": "analyst"}`)
	tr2 := translatorFor(t, r, Options{})
	if got, want := outbound(tr2, "reports-node"), []string{"batch_score", "healthz", "report_daily"}; !slices.Equal(got, want) {
		t.Errorf("reports-node in role analyst calls %v, want %v", got, want)
	}
	after := translate(t, tr2, Node{ID: "b", Kind: Envoy, Binding: EndpointBinding("reports-node")})
	if before.Get(resourcev3.ListenerType, inboundName).Version != after.Get(resourcev3.ListenerType, inboundName).Version {
		t.Error("the endpoint's own role changed its inbound side")
	}
	// Its old SVID no longer fits: spiffe://td/endpoint/reports-node is
	// now spiffe://td/role/analyst/endpoint/reports-node.
	ca := newTestCA(t)
	if _, err := tr2.Translate(Node{ID: "b", Kind: Envoy, Binding: EndpointBinding("reports-node"), Credentials: ca.issue(t, endpointSPIFFEID(testTrustDomain, "reports-node", ""))}); !errors.Is(err, ErrCredentials) {
		t.Errorf("an SVID without the new role prefix was accepted: %v", err)
	}
	translate(t, tr2, Node{ID: "b", Kind: Envoy, Binding: EndpointBinding("reports-node"), Credentials: ca.issue(t, endpointSPIFFEID(testTrustDomain, "reports-node", "analyst"))})
}
