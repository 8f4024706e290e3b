package xds

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
)

// The bootstraps of SPEC §6: what a node needs to find the control plane,
// authenticate to it, and read what the ADS server then sends. They live
// beside the translation because they must agree with it — the certificate
// provider instance names, the server listener names — and tests hold them
// to it.

// DefaultXDSServer is where nodes reach the ADS server unless told otherwise.
const DefaultXDSServer = "127.0.0.1:18000"

// GRPCBootstrapServerListenerTemplate is the server listener name template
// of gRPC bootstraps: grpc-go replaces %s by the exact address a server
// bound, which the translation names the endpoint's listener by.
const GRPCBootstrapServerListenerTemplate = grpcServerPrefix + "%s"

// GRPCBootstrap describes a proxyless gRPC node's bootstrap. The files are
// those `cryptomesh agent` keeps fresh.
type GRPCBootstrap struct {
	Node string
	// Server is the ADS server's host:port; the host must be a name or IP
	// the control plane's serving certificate carries (grpc-go checks it).
	Server string
	// CertFile and KeyFile are the node's SVID and key: its client
	// certificate towards the control plane and the `default` certificate
	// provider instance of its TLS contexts.
	CertFile, KeyFile string
	// BundleFile is the trust bundle: the `ROOTCA` instance.
	BundleFile string
	// ServerCAFile verifies the control plane (default BundleFile).
	ServerCAFile string
	// TokenFile is the join token, sent as call credentials.
	TokenFile string
	// RefreshInterval is how often grpc-go re-reads the files (default 1m).
	RefreshInterval string
}

// GRPCBootstrapJSON returns the bootstrap grpc-go reads from
// GRPC_XDS_BOOTSTRAP. Paths are made absolute: the node may run elsewhere.
func GRPCBootstrapJSON(b GRPCBootstrap) ([]byte, error) {
	if b.Node == "" {
		return nil, errors.New("gRPC bootstrap: no node")
	}
	if _, _, err := net.SplitHostPort(b.Server); err != nil {
		return nil, fmt.Errorf("gRPC bootstrap: xDS server %q: %w", b.Server, err)
	}
	paths := map[string]*string{"certificate": &b.CertFile, "key": &b.KeyFile, "bundle": &b.BundleFile, "token": &b.TokenFile}
	if b.ServerCAFile == "" {
		b.ServerCAFile = b.BundleFile
	}
	paths["server CA"] = &b.ServerCAFile
	for what, p := range paths {
		if *p == "" {
			return nil, fmt.Errorf("gRPC bootstrap: no %s file", what)
		}
		abs, err := filepath.Abs(*p)
		if err != nil {
			return nil, fmt.Errorf("gRPC bootstrap: %s file: %w", what, err)
		}
		*p = abs
	}
	if b.RefreshInterval == "" {
		b.RefreshInterval = "60s"
	}
	type obj = map[string]any
	doc := obj{
		"xds_servers": []any{obj{
			"server_uri": b.Server,
			// TLS to the control plane, presenting the node's SVID; the
			// token is sent too, since call credentials work only over TLS.
			"channel_creds": []any{obj{"type": "tls", "config": obj{
				"ca_certificate_file": b.ServerCAFile,
				"certificate_file":    b.CertFile,
				"private_key_file":    b.KeyFile,
			}}},
			"call_creds": []any{obj{"type": "jwt_token_file", "config": obj{"jwt_token_file": b.TokenFile}}},
			// grpc-go 1.85 knows ignore_resource_deletion and
			// trusted_xds_server. Neither is wanted: a listener the node may
			// no longer use must go away, not linger.
			"server_features": []any{},
		}},
		"node": obj{"id": b.Node, "cluster": "cryptomesh"},
		"certificate_providers": obj{
			secretCertName: obj{"plugin_name": "file_watcher", "config": obj{
				"certificate_file": b.CertFile, "private_key_file": b.KeyFile, "refresh_interval": b.RefreshInterval,
			}},
			secretRootCAName: obj{"plugin_name": "file_watcher", "config": obj{
				"ca_certificate_file": b.BundleFile, "refresh_interval": b.RefreshInterval,
			}},
		},
		"server_listener_resource_name_template": GRPCBootstrapServerListenerTemplate,
	}
	out, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("gRPC bootstrap: %w", err)
	}
	return append(out, '\n'), nil
}

// EnvoyBootstrap describes an Envoy node's bootstrap.
type EnvoyBootstrap struct {
	Node string
	// Server is the ADS server's host:port.
	Server string
	// ServerCAFile verifies the control plane's certificate, whose SPIFFE
	// ID must be the control plane's of TrustDomain.
	ServerCAFile string
	TrustDomain  string
	// Token is the join token, sent as gRPC initial metadata.
	Token string
	// AdminAddress is Envoy's admin listener (default 127.0.0.1:15000); it
	// must be a loopback IP and port.
	AdminAddress string
	// OutboundAddress, when set, is sent as node metadata for the ADS
	// server to put the outbound listener there.
	OutboundAddress string
	// OutboundAddressKey is the node metadata field that carries it.
	OutboundAddressKey string
}

// xdsClusterName is the bootstrap's static cluster of the control plane.
const xdsClusterName = "cryptomesh.xds"

// DefaultEnvoyAdminAddress is Envoy's admin listener unless told otherwise.
const DefaultEnvoyAdminAddress = "127.0.0.1:15000"

// EnvoyBootstrapConfig returns the Envoy v3 bootstrap, validated (with
// everything packed in it) as every resource of the package is.
func EnvoyBootstrapConfig(b EnvoyBootstrap) (*bootstrapv3.Bootstrap, error) {
	if b.Node == "" || b.Token == "" || b.ServerCAFile == "" {
		return nil, errors.New("Envoy bootstrap: node, token and server CA file are required")
	}
	td, err := spiffeid.TrustDomainFromString(b.TrustDomain)
	if err != nil {
		return nil, fmt.Errorf("Envoy bootstrap: trust domain %q: %w", b.TrustDomain, err)
	}
	host, portStr, err := net.SplitHostPort(b.Server)
	if err != nil {
		return nil, fmt.Errorf("Envoy bootstrap: xDS server %q: %w", b.Server, err)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil || port == 0 {
		return nil, fmt.Errorf("Envoy bootstrap: xDS server %q: bad port", b.Server)
	}
	admin := b.AdminAddress
	if admin == "" {
		admin = DefaultEnvoyAdminAddress
	}
	adminAP, err := netip.ParseAddrPort(admin)
	if err != nil || !adminAP.Addr().IsLoopback() {
		return nil, fmt.Errorf("Envoy bootstrap: admin address %q must be a loopback IP:port", admin)
	}
	caFile, err := filepath.Abs(b.ServerCAFile)
	if err != nil {
		return nil, fmt.Errorf("Envoy bootstrap: server CA file: %w", err)
	}

	var chk checker
	controlPlane, err := spiffeid.FromSegments(td, "control-plane")
	if err != nil {
		return nil, fmt.Errorf("Envoy bootstrap: %w", err)
	}
	tlsCtx, err := chk.pack(&tlsv3.UpstreamTlsContext{
		Sni: host,
		CommonTlsContext: &tlsv3.CommonTlsContext{
			AlpnProtocols: []string{"h2"},
			ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
				TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: caFile}},
				// The control plane is known by its SPIFFE ID, not only by a
				// chain to the bundle that every workload's SVID also has.
				MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{{
					SanType: tlsv3.SubjectAltNameMatcher_URI,
					Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: controlPlane.String()}},
				}},
			}},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("Envoy bootstrap: %w", err)
	}
	h2, err := chk.pack(&upstreamhttpv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_{
			ExplicitHttpConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig{
				ProtocolConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{
					Http2ProtocolOptions: &corev3.Http2ProtocolOptions{},
				},
			},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("Envoy bootstrap: %w", err)
	}
	discovery := clusterv3.Cluster_STATIC
	if _, err := netip.ParseAddr(host); err != nil {
		discovery = clusterv3.Cluster_STRICT_DNS
	}
	xdsCluster := &clusterv3.Cluster{
		Name:                          xdsClusterName,
		ClusterDiscoveryType:          &clusterv3.Cluster_Type{Type: discovery},
		ConnectTimeout:                durationpb.New(5e9),
		TypedExtensionProtocolOptions: map[string]*anypb.Any{httpProtocolOptionsKey: h2},
		TransportSocket: &corev3.TransportSocket{
			Name:       wellknown.TransportSocketTLS,
			ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: tlsCtx},
		},
		LoadAssignment: &endpointv3.ClusterLoadAssignment{
			ClusterName: xdsClusterName,
			Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{{
				HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
					Address: socketAddress(host, uint32(port)),
				}},
			}}}},
		},
	}
	ads := &corev3.ConfigSource{
		ResourceApiVersion:    corev3.ApiVersion_V3,
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
	}
	node := &corev3.Node{Id: b.Node, Cluster: "cryptomesh"}
	if b.OutboundAddress != "" {
		if _, err := netip.ParseAddrPort(b.OutboundAddress); err != nil {
			return nil, fmt.Errorf("Envoy bootstrap: outbound address %q is not IP:port: %w", b.OutboundAddress, err)
		}
		if b.OutboundAddressKey == "" {
			return nil, errors.New("Envoy bootstrap: an outbound address needs the metadata key to send it under")
		}
		node.Metadata = &structpb.Struct{Fields: map[string]*structpb.Value{b.OutboundAddressKey: structpb.NewStringValue(b.OutboundAddress)}}
	}
	bs := &bootstrapv3.Bootstrap{
		Node: node,
		Admin: &bootstrapv3.Admin{
			Address: socketAddress(adminAP.Addr().String(), uint32(adminAP.Port())),
		},
		StaticResources: &bootstrapv3.Bootstrap_StaticResources{Clusters: []*clusterv3.Cluster{xdsCluster}},
		DynamicResources: &bootstrapv3.Bootstrap_DynamicResources{
			AdsConfig: &corev3.ApiConfigSource{
				ApiType:             corev3.ApiConfigSource_GRPC,
				TransportApiVersion: corev3.ApiVersion_V3,
				GrpcServices: []*corev3.GrpcService{{
					TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: xdsClusterName}},
					InitialMetadata: []*corev3.HeaderValue{{Key: "authorization", Value: "Bearer " + b.Token}},
				}},
				SetNodeOnFirstMessageOnly: true,
			},
			LdsConfig: ads,
			CdsConfig: ads,
		},
	}
	if err := chk.validate(bs); err != nil {
		return nil, fmt.Errorf("Envoy bootstrap is invalid: %w", err)
	}
	return bs, nil
}
