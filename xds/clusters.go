package xds

import (
	"net/netip"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
)

// connectTimeout bounds connection setup to an endpoint. Envoy's default
// is 5 s too; it is set explicitly so the golden files say what applies.
const connectTimeout = 5 * time.Second

// httpProtocolOptionsKey is the extension name under which Envoy reads a
// cluster's upstream HTTP protocol options.
const httpProtocolOptionsKey = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

// endpointCluster is cluster `cryptomesh.endpoint.<E>` (SPEC §6): EDS over
// ADS, mutual TLS with the node's SVID, the server checked by its SPIFFE ID
// suffix /endpoint/<E>. Its content depends only on E and on the TLS
// variant, so every node of a client family shares it.
func (t *Translator) endpointCluster(e *endpoint, v tlsVariant) (*Resource, error) {
	return t.resources.get("cds/"+v.String()+"/"+e.id, func() (*Resource, error) {
		name := endpointClusterName(e.id)
		var alpn []string
		if e.grpc {
			alpn = []string{"h2"}
		}
		ts, err := t.transportSocket(&tlsv3.UpstreamTlsContext{CommonTlsContext: t.commonTLS(v, serverSANCheck(e.id), alpn)})
		if err != nil {
			return nil, err
		}
		c := &clusterv3.Cluster{
			Name:                 name,
			ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
			EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsSource()},
			ConnectTimeout:       durationpb.New(connectTimeout),
			LbPolicy:             clusterv3.Cluster_ROUND_ROBIN,
			TransportSocket:      ts,
		}
		if e.grpc {
			c.TypedExtensionProtocolOptions = t.http2
		}
		return t.chk.newResource(resourcev3.ClusterType, name, c, append([]ref{claRef(name)}, tlsRefs(v)...)...)
	})
}

// serverSANCheck accepts only endpoint E's server: an SVID whose ID ends in
// /endpoint/<E> (SPEC §4), whichever role prefix it has. The matcher is in
// both fields: grpc-go enforces only the deprecated
// match_subject_alt_names and silently ignores the typed one, while the
// typed one is what Envoy documents.
func serverSANCheck(endpointID string) *tlsv3.CertificateValidationContext {
	suffix := func() *matcherv3.StringMatcher {
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: endpointSuffix(endpointID)}}
	}
	return &tlsv3.CertificateValidationContext{
		MatchSubjectAltNames: []*matcherv3.StringMatcher{suffix()}, // deprecated, and the one grpc-go enforces
		MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{{
			SanType: tlsv3.SubjectAltNameMatcher_URI,
			Matcher: suffix(),
		}},
	}
}

// localCluster is cluster `cryptomesh.local.<E>`: the sidecar's own
// workload, in plain text. A workload address given by name is resolved by
// DNS, since a static cluster takes IP addresses only.
func (t *Translator) localCluster(e *endpoint) (*Resource, error) {
	return t.resources.get("cds/local/"+e.id, func() (*Resource, error) {
		name := localClusterName(e.id)
		c := &clusterv3.Cluster{
			Name:                 name,
			ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
			ConnectTimeout:       durationpb.New(connectTimeout),
			LbPolicy:             clusterv3.Cluster_ROUND_ROBIN,
			LoadAssignment:       &endpointv3.ClusterLoadAssignment{ClusterName: name},
		}
		if _, err := netip.ParseAddr(e.workloadHost); err != nil {
			c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STRICT_DNS}
			c.DnsLookupFamily = clusterv3.Cluster_V4_PREFERRED
		}
		if e.workloadPort != 0 {
			c.LoadAssignment.Endpoints = []*endpointv3.LocalityLbEndpoints{{
				LbEndpoints: []*endpointv3.LbEndpoint{lbEndpoint(e.workloadHost, e.workloadPort, corev3.HealthStatus_UNKNOWN)},
			}}
		}
		if e.grpc {
			// The workload serves gRPC in cleartext HTTP/2.
			c.TypedExtensionProtocolOptions = t.http2
		}
		return t.chk.newResource(resourcev3.ClusterType, name, c)
	})
}

// http2Options are the protocol options of clusters to gRPC endpoints,
// built once per Translator and shared (read-only) by all of them.
func (t *Translator) http2Options() (map[string]*anypb.Any, error) {
	opts, err := t.chk.pack(&upstreamhttpv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_{
			ExplicitHttpConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig{
				ProtocolConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{
					Http2ProtocolOptions: &corev3.Http2ProtocolOptions{},
				},
			},
		},
	})
	if err != nil {
		return nil, err
	}
	return map[string]*anypb.Any{httpProtocolOptionsKey: opts}, nil
}

// transportSocket wraps a TLS context (upstream or downstream).
func (t *Translator) transportSocket(tlsContext proto.Message) (*corev3.TransportSocket, error) {
	a, err := t.chk.pack(tlsContext)
	if err != nil {
		return nil, err
	}
	return &corev3.TransportSocket{
		Name:       wellknown.TransportSocketTLS,
		ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: a},
	}, nil
}
