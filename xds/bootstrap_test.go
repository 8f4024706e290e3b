package xds

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/encoding/protojson"
)

// grpcBootstrapDoc is the part of a gRPC bootstrap the tests read.
type grpcBootstrapDoc struct {
	XDSServers []struct {
		ServerURI    string `json:"server_uri"`
		ChannelCreds []struct {
			Type   string            `json:"type"`
			Config map[string]string `json:"config"`
		} `json:"channel_creds"`
		CallCreds []struct {
			Type   string            `json:"type"`
			Config map[string]string `json:"config"`
		} `json:"call_creds"`
		ServerFeatures []string `json:"server_features"`
	} `json:"xds_servers"`
	Node struct {
		ID string `json:"id"`
	} `json:"node"`
	CertificateProviders map[string]struct {
		PluginName string            `json:"plugin_name"`
		Config     map[string]string `json:"config"`
	} `json:"certificate_providers"`
	ServerListenerTemplate string `json:"server_listener_resource_name_template"`
}

// TestGRPCBootstrapAgreesWithTranslation: the bootstrap defines exactly
// the certificate provider instances the translation's TLS contexts name,
// over the agent's files, and its server listener template yields the
// name the translation gives the endpoint's server listener.
func TestGRPCBootstrapAgreesWithTranslation(t *testing.T) {
	dir := t.TempDir()
	out, err := GRPCBootstrapJSON(GRPCBootstrap{
		Node: "online-1", Server: "127.0.0.1:18000",
		CertFile: filepath.Join(dir, "svid.pem"), KeyFile: filepath.Join(dir, "svid-key.pem"),
		BundleFile: filepath.Join(dir, "bundle.pem"), TokenFile: filepath.Join(dir, "token"),
	})
	if err != nil {
		t.Fatal(err)
	}
	var doc grpcBootstrapDoc
	if err := json.Unmarshal(out, &doc); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	if len(doc.XDSServers) != 1 || doc.XDSServers[0].ServerURI != "127.0.0.1:18000" || doc.Node.ID != "online-1" {
		t.Fatalf("server or node: %s", out)
	}
	srv := doc.XDSServers[0]
	if len(srv.ChannelCreds) != 1 || srv.ChannelCreds[0].Type != "tls" ||
		srv.ChannelCreds[0].Config["ca_certificate_file"] != filepath.Join(dir, "bundle.pem") ||
		srv.ChannelCreds[0].Config["certificate_file"] != filepath.Join(dir, "svid.pem") ||
		srv.ChannelCreds[0].Config["private_key_file"] != filepath.Join(dir, "svid-key.pem") {
		t.Fatalf("channel_creds: %+v", srv.ChannelCreds)
	}
	if len(srv.CallCreds) != 1 || srv.CallCreds[0].Type != "jwt_token_file" || srv.CallCreds[0].Config["jwt_token_file"] != filepath.Join(dir, "token") {
		t.Fatalf("call_creds: %+v", srv.CallCreds)
	}
	if len(srv.ServerFeatures) != 0 {
		t.Fatalf("server_features %v: ignore_resource_deletion would keep listeners a node may no longer use", srv.ServerFeatures)
	}

	tr := exampleTranslator(t, mlPipeline)
	// The clusters a gRPC client gets name provider instances: each must be
	// a file_watcher of the bootstrap over the right files.
	client := translate(t, tr, Node{ID: "c", Kind: GRPC, Binding: RoleBinding("inference-client")})
	clusters := client.Resources(resourcev3.ClusterType)
	if len(clusters) == 0 {
		t.Fatal("the gRPC client has no cluster")
	}
	for _, r := range clusters {
		var up tlsv3.UpstreamTlsContext
		if err := r.Message.(*clusterv3.Cluster).GetTransportSocket().GetTypedConfig().UnmarshalTo(&up); err != nil {
			t.Fatal(err)
		}
		cert := up.GetCommonTlsContext().GetTlsCertificateProviderInstance().GetInstanceName()
		ca := up.GetCommonTlsContext().GetValidationContext().GetCaCertificateProviderInstance().GetInstanceName()
		p, ok := doc.CertificateProviders[cert]
		if !ok || p.PluginName != "file_watcher" || p.Config["certificate_file"] != filepath.Join(dir, "svid.pem") || p.Config["private_key_file"] != filepath.Join(dir, "svid-key.pem") {
			t.Fatalf("cluster %s names certificate instance %q; bootstrap has %+v", r.Name, cert, doc.CertificateProviders)
		}
		p, ok = doc.CertificateProviders[ca]
		if !ok || p.PluginName != "file_watcher" || p.Config["ca_certificate_file"] != filepath.Join(dir, "bundle.pem") {
			t.Fatalf("cluster %s names CA instance %q; bootstrap has %+v", r.Name, ca, doc.CertificateProviders)
		}
	}
	server := translate(t, tr, Node{ID: "s", Kind: GRPC, Binding: EndpointBinding("online-node")})
	want := strings.Replace(doc.ServerListenerTemplate, "%s", "127.0.0.1:17005", 1)
	if server.Get(resourcev3.ListenerType, want) == nil {
		t.Fatalf("no listener %q in the server's snapshot", want)
	}
}

// TestGRPCBootstrapRefuses: a bootstrap without a node, a server address
// or one of the files is an error, not a file grpc-go would reject later.
func TestGRPCBootstrapRefuses(t *testing.T) {
	full := GRPCBootstrap{Node: "n", Server: "127.0.0.1:18000", CertFile: "c", KeyFile: "k", BundleFile: "b", TokenFile: "t"}
	for name, mutate := range map[string]func(*GRPCBootstrap){
		"no node":       func(b *GRPCBootstrap) { b.Node = "" },
		"no port":       func(b *GRPCBootstrap) { b.Server = "127.0.0.1" },
		"no token file": func(b *GRPCBootstrap) { b.TokenFile = "" },
		"no key file":   func(b *GRPCBootstrap) { b.KeyFile = "" },
	} {
		t.Run(name, func(t *testing.T) {
			b := full
			mutate(&b)
			if _, err := GRPCBootstrapJSON(b); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

// TestEnvoyBootstrap: the bootstrap passes the protos' validation as a
// whole and after a round trip through JSON (what Envoy reads), connects
// ADS over TLS checked against the control plane's SPIFFE ID, sends the
// token as initial metadata and keeps the admin listener on loopback.
func TestEnvoyBootstrap(t *testing.T) {
	b := EnvoyBootstrap{Node: "web-1", Server: "cp.example.test:18000", ServerCAFile: "/etc/cm/bundle.pem",
		TrustDomain: "example.org", Token: "a.b.c", OutboundAddress: "127.0.0.1:25001", OutboundAddressKey: "outbound_address"}
	bs, err := EnvoyBootstrapConfig(b)
	if err != nil {
		t.Fatal(err)
	}
	out, err := protojson.Marshal(bs)
	if err != nil {
		t.Fatal(err)
	}
	var back bootstrapv3.Bootstrap
	if err := protojson.Unmarshal(out, &back); err != nil {
		t.Fatal(err)
	}
	var fresh checker // trusts no Any: unpacks and validates every one
	if err := fresh.validate(&back); err != nil {
		t.Fatalf("the bootstrap read back from JSON does not validate: %v", err)
	}
	ads := back.GetDynamicResources().GetAdsConfig()
	if md := ads.GetGrpcServices()[0].GetInitialMetadata(); len(md) != 1 || md[0].GetKey() != "authorization" || md[0].GetValue() != "Bearer a.b.c" {
		t.Fatalf("initial metadata %v", md)
	}
	c := back.GetStaticResources().GetClusters()[0]
	if c.GetName() != ads.GetGrpcServices()[0].GetEnvoyGrpc().GetClusterName() || c.GetType() != clusterv3.Cluster_STRICT_DNS {
		t.Fatalf("xDS cluster %s of type %v", c.GetName(), c.GetType())
	}
	var up tlsv3.UpstreamTlsContext
	if err := c.GetTransportSocket().GetTypedConfig().UnmarshalTo(&up); err != nil {
		t.Fatal(err)
	}
	vc := up.GetCommonTlsContext().GetValidationContext()
	if up.GetSni() != "cp.example.test" || vc.GetTrustedCa().GetFilename() != "/etc/cm/bundle.pem" ||
		vc.GetMatchTypedSubjectAltNames()[0].GetMatcher().GetExact() != "spiffe://example.org/control-plane" {
		t.Fatalf("TLS to the control plane: %v", &up)
	}
	if back.GetAdmin().GetAddress().GetSocketAddress().GetAddress() != "127.0.0.1" ||
		back.GetNode().GetMetadata().GetFields()["outbound_address"].GetStringValue() != "127.0.0.1:25001" {
		t.Fatalf("admin %v, node %v", back.GetAdmin(), back.GetNode())
	}

	for name, mutate := range map[string]func(*EnvoyBootstrap){
		"admin beyond loopback": func(b *EnvoyBootstrap) { b.AdminAddress = "0.0.0.0:15000" },
		"no token":              func(b *EnvoyBootstrap) { b.Token = "" },
		"outbound not an IP":    func(b *EnvoyBootstrap) { b.OutboundAddress = "localhost:1" },
		"bad trust domain":      func(b *EnvoyBootstrap) { b.TrustDomain = "Not A Domain" },
	} {
		t.Run(name, func(t *testing.T) {
			bad := b
			mutate(&bad)
			if _, err := EnvoyBootstrapConfig(bad); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}
