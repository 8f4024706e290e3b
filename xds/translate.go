// Package xds translates the registry into the xDS resources of SPEC §6: for
// one node — an Envoy sidecar or client, our own proxy, or a proxyless
// grpc-go client or server — the listeners, routes, clusters, endpoints and
// secrets its binding entitles it to, and nothing else.
//
// Translation is pure: a Model (one registry revision, resolved) and a
// Node go in, a Snapshot of validated, marshalled resources comes out; no
// I/O, no goroutines. A Translator serves one Model and builds every
// resource that several nodes share exactly once, so that nodes in the same
// role or of the same endpoint receive the same *Resource, marshalled once,
// whose Version is a hash of its bytes. Serving snapshots over ADS, and
// keeping resources across revisions, is the ADS server's business.
//
// One file per resource kind: listeners.go, routes.go, clusters.go,
// endpoints.go, secrets.go. The authorization of SPEC §5 is in rbac.go, the
// registry's reading in model.go, the validation every message passes on
// its way out in validate.go, and the output (Resource, Snapshot) in
// snapshot.go.
package xds

import (
	"errors"
	"fmt"
	"net/netip"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rbacfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/cryptomesh/cryptomesh/registry"
)

// ClientKind is what kind of xDS client a node is; each kind is served only
// the resources it understands (SPEC §6).
type ClientKind int

const (
	// Envoy is an Envoy sidecar or client, fed SDS secrets.
	Envoy ClientKind = iota + 1
	// Proxy is CryptoMesh's own Go proxy, which serves the subset of
	// Envoy's API that this package generates: it gets what Envoy gets.
	Proxy
	// GRPC is a proxyless grpc-go client or server: API listeners instead of
	// an outbound listener, certificate provider instances instead of SDS,
	// and a server listener instead of an inbound one.
	GRPC
)

func (k ClientKind) String() string {
	switch k {
	case Envoy:
		return "envoy"
	case Proxy:
		return "proxy"
	case GRPC:
		return "grpc"
	}
	return fmt.Sprintf("ClientKind(%d)", int(k))
}

// Binding is what a node is bound to (SPEC §4): exactly one of Endpoint
// (a sidecar or gRPC server of that endpoint, whose workload calls out in
// the endpoint's role) and Role (a client calling in that role).
//
// It carries names only, not identity's Binding with its EndpointRole: an
// endpoint's role is registry state, and the translation takes it from the
// very Model it translates, never from a credential minted earlier.
type Binding struct {
	Endpoint string
	Role     string
}

// EndpointBinding binds a node to endpoint e.
func EndpointBinding(e string) Binding { return Binding{Endpoint: e} }

// RoleBinding binds a node to role r.
func RoleBinding(r string) Binding { return Binding{Role: r} }

func (b Binding) String() string {
	if b.Endpoint != "" {
		return "endpoint:" + b.Endpoint
	}
	return "role:" + b.Role
}

// Credentials are a node's own SVID and the trust bundle, in PEM, for the
// SDS secrets of Envoy and proxy nodes. The translation never creates keys;
// it checks that the SVID is the node's (SPEC §6: no node ever receives
// another node's key).
type Credentials struct {
	CertChainPEM []byte
	KeyPEM       []byte
	BundlePEM    []byte
}

// DefaultOutboundAddress is where the outbound listener of Envoy and proxy
// nodes listens unless the node says otherwise (SPEC §6, --outbound-addr).
const DefaultOutboundAddress = "127.0.0.1:15001"

// Node is one xDS client to translate for.
type Node struct {
	// ID is the node id, used in errors only: the binding, not the name,
	// decides what a node gets.
	ID      string
	Kind    ClientKind
	Binding Binding
	// OutboundAddress overrides DefaultOutboundAddress (Envoy, Proxy); it
	// must be an IP address and port, since Envoy binds it.
	OutboundAddress string
	// Credentials, for Envoy and Proxy nodes when secrets are served over
	// ADS, yield the `default` and `ROOTCA` secrets. Without them the
	// snapshot has no secrets and the caller serves them separately.
	// gRPC nodes read theirs from files and must not be given any.
	Credentials *Credentials
}

// Options configure a Translator.
type Options struct {
	// TrustDomain of every SPIFFE ID (required; SPEC §4 --trust-domain).
	TrustDomain string
	// SDSCluster, when set, is the name of a cluster in Envoy's bootstrap
	// that serves SDS (a SPIRE agent, SPEC §4 SPIRE mode): TLS contexts of
	// Envoy and proxy nodes then fetch `default` and `ROOTCA` from it
	// instead of over ADS, and snapshots carry no secrets. SPIRE's agent
	// serves exactly these two names by default.
	SDSCluster string
}

// ErrInvalidNode reports a node that cannot be translated for as given.
var ErrInvalidNode = errors.New("invalid node")

// Translator translates one Model for any number of nodes, concurrently.
// It keeps every shared resource it builds, so it lives as long as its
// Model's revision is current; a new revision gets a new Translator.
type Translator struct {
	model *Model
	td    string
	sds   string

	chk       *checker
	resources memo[*Resource]
	reach     memo[reachable]
	fnRoutes  memo[functionRoutes]

	// Pieces every resource of their kind holds, built once and shared
	// read-only.
	router    *hcmv3.HttpFilter
	http2     map[string]*anypb.Any
	rootMatch *routev3.RouteMatch // prefix "/"
}

// NewTranslator returns a Translator for m.
func NewTranslator(m *Model, opts Options) (*Translator, error) {
	if m == nil {
		return nil, errors.New("xds: nil model")
	}
	td, err := spiffeid.TrustDomainFromString(opts.TrustDomain)
	if err != nil {
		return nil, fmt.Errorf("xds: trust domain %q: %w", opts.TrustDomain, err)
	}
	if opts.SDSCluster != "" && !registry.ValidID(opts.SDSCluster) {
		return nil, fmt.Errorf("xds: SDS cluster name %q: use 1-128 characters of A-Z a-z 0-9 . _ -", opts.SDSCluster)
	}
	t := &Translator{model: m, td: td.Name(), sds: opts.SDSCluster, chk: newChecker(generatedTypes()...), rootMatch: prefixMatch("/")}
	if t.router, err = t.routerFilter(); err != nil {
		return nil, fmt.Errorf("xds: %w", err)
	}
	if t.http2, err = t.http2Options(); err != nil {
		return nil, fmt.Errorf("xds: %w", err)
	}
	return t, nil
}

// Model returns the model the translator serves.
func (t *Translator) Model() *Model { return t.model }

// Translate returns everything node n is entitled to. A binding that names
// an endpoint or role absent from the model fails closed: the node gets no
// inbound side and can call nothing, rather than an error that would leave
// it on an older, more permissive configuration.
func (t *Translator) Translate(n Node) (*Snapshot, error) {
	if err := t.check(n); err != nil {
		return nil, fmt.Errorf("node %q (%s, %s): %w", n.ID, n.Kind, n.Binding, err)
	}
	snap, err := t.translate(n)
	if err != nil {
		return nil, fmt.Errorf("node %q (%s, %s): %w", n.ID, n.Kind, n.Binding, err)
	}
	return snap, nil
}

func (t *Translator) check(n Node) error {
	switch n.Kind {
	case Envoy, Proxy:
		if n.OutboundAddress != "" {
			if _, err := netip.ParseAddrPort(n.OutboundAddress); err != nil {
				return fmt.Errorf("%w: outbound address %q is not IP:port: %w", ErrInvalidNode, n.OutboundAddress, err)
			}
		}
		if n.Credentials != nil && t.sds != "" {
			return fmt.Errorf("%w: credentials given while secrets come from SDS cluster %q", ErrInvalidNode, t.sds)
		}
	case GRPC:
		if n.Credentials != nil {
			return fmt.Errorf("%w: gRPC nodes read their SVID from files; no secrets are served to them", ErrInvalidNode)
		}
		if n.OutboundAddress != "" {
			return fmt.Errorf("%w: gRPC nodes have no outbound listener", ErrInvalidNode)
		}
	default:
		return fmt.Errorf("%w: unknown client kind %d", ErrInvalidNode, int(n.Kind))
	}
	b := n.Binding
	switch {
	case (b.Endpoint == "") == (b.Role == ""):
		return fmt.Errorf("%w: the binding must name exactly one of an endpoint and a role", ErrInvalidNode)
	case b.Endpoint != "" && !registry.ValidID(b.Endpoint):
		return fmt.Errorf("%w: endpoint %q is not a valid id", ErrInvalidNode, b.Endpoint)
	case b.Role != "" && !registry.ValidID(b.Role):
		return fmt.Errorf("%w: role %q is not a valid id", ErrInvalidNode, b.Role)
	}
	return nil
}

func (t *Translator) translate(n Node) (*Snapshot, error) {
	// callerRole is the role the node's outgoing calls are made in.
	callerRole := n.Binding.Role
	var ep *endpoint
	if n.Binding.Endpoint != "" {
		ep = t.model.endpoints[n.Binding.Endpoint]
		if ep != nil {
			callerRole = ep.role
		}
	}
	b := newSnapshotBuilder()
	if n.Kind == GRPC {
		if err := t.grpcNode(b, callerRole, ep); err != nil {
			return nil, err
		}
		return b.build(false)
	}
	if err := t.envoyNode(b, n, callerRole, ep); err != nil {
		return nil, err
	}
	return b.build(t.sds != "" || n.Credentials == nil)
}

// envoyNode adds what an Envoy or proxy node gets: the outbound side for its
// role, the inbound side of its endpoint, and its secrets.
func (t *Translator) envoyNode(b *snapshotBuilder, n Node, callerRole string, ep *endpoint) error {
	addr := n.OutboundAddress
	if addr == "" {
		addr = DefaultOutboundAddress
	}
	lis, err := t.outboundListener(addr)
	if err != nil {
		return err
	}
	routes, err := t.outboundRoutes(callerRole)
	if err != nil {
		return err
	}
	if err := b.add(lis, routes); err != nil {
		return err
	}
	reach, err := t.callable(callerRole, false)
	if err != nil {
		return err
	}
	for _, e := range reach.endpoints {
		if err := t.addUpstream(b, e, tlsSDS); err != nil {
			return err
		}
	}
	if ep != nil && ep.port != 0 {
		in, err := t.inboundListener(ep)
		if err != nil {
			return err
		}
		local, err := t.localCluster(ep)
		if err != nil {
			return err
		}
		if err := b.add(in, local); err != nil {
			return err
		}
	}
	if n.Credentials != nil {
		expected := roleSPIFFEID(t.td, callerRole)
		if n.Binding.Endpoint != "" {
			expected = endpointSPIFFEID(t.td, n.Binding.Endpoint, callerRole)
		}
		secrets, err := t.secrets(expected, n.Credentials)
		if err != nil {
			return err
		}
		if err := b.add(secrets...); err != nil {
			return err
		}
	}
	return nil
}

// grpcNode adds what a grpc-go node gets: an API listener and route per
// function its role may call, and, for a node bound to an endpoint, the
// server listener of that endpoint.
func (t *Translator) grpcNode(b *snapshotBuilder, callerRole string, ep *endpoint) error {
	reach, err := t.callable(callerRole, true)
	if err != nil {
		return err
	}
	for _, f := range reach.functions {
		lis, err := t.apiListener(f)
		if err != nil {
			return err
		}
		rc, err := t.apiRoutes(f)
		if err != nil {
			return err
		}
		if err := b.add(lis, rc); err != nil {
			return err
		}
	}
	for _, e := range reach.endpoints {
		if err := t.addUpstream(b, e, tlsProviders); err != nil {
			return err
		}
	}
	if ep != nil && ep.port != 0 {
		if _, err := netip.ParseAddr(ep.host); err != nil {
			// A gRPC server binds an IP address, and the listener's name
			// and address must be exactly what it bound; a host name has no
			// such listener. The model already warned about the address.
			return nil
		}
		lis, err := t.grpcServerListener(ep)
		if err != nil {
			return err
		}
		return b.add(lis)
	}
	return nil
}

// addUpstream adds endpoint e's cluster and its load assignment.
func (t *Translator) addUpstream(b *snapshotBuilder, e *endpoint, v tlsVariant) error {
	c, err := t.endpointCluster(e, v)
	if err != nil {
		return err
	}
	cla, err := t.loadAssignment(e)
	if err != nil {
		return err
	}
	return b.add(c, cla)
}

// reachable is what a caller in one role may call.
type reachable struct {
	functions []*function // in id order
	endpoints []*endpoint // theirs, each once, in order of first use
}

// callable works out what a caller in roleID may call, once per role and
// client family. gRPC clients only get functions on endpoints whose
// protocol is grpc: a channel cannot speak anything else, so any other
// route would only be dead configuration.
func (t *Translator) callable(roleID string, grpcOnly bool) (reachable, error) {
	key := "callable/" + roleID
	if grpcOnly {
		key = "callable-grpc/" + roleID
	}
	return t.reach.get(key, func() (reachable, error) {
		var r reachable
		seen := map[*endpoint]bool{}
		for _, f := range t.model.functions {
			if grpcOnly && !f.endpoint.grpc {
				continue
			}
			if !t.model.mayCall(roleID, f) {
				continue
			}
			r.functions = append(r.functions, f)
			if !seen[f.endpoint] {
				seen[f.endpoint] = true
				r.endpoints = append(r.endpoints, f.endpoint)
			}
		}
		return r, nil
	})
}

// Resource names of SPEC §6.
const (
	outboundName     = "cryptomesh.outbound"
	inboundName      = "cryptomesh.inbound"
	endpointPrefix   = "cryptomesh.endpoint."
	localPrefix      = "cryptomesh.local."
	functionDomain   = ".cryptomesh"
	grpcServerPrefix = "grpc/server?xds.resource.listening_address="
	// The SDS secret names, and the certificate provider instance names
	// of gRPC bootstraps, of the node's SVID and of the trust bundle.
	secretCertName   = "default"
	secretRootCAName = "ROOTCA"
)

func endpointClusterName(e string) string { return endpointPrefix + e }
func localClusterName(e string) string    { return localPrefix + e }
func functionHost(f string) string        { return f + functionDomain }

func routeRef(name string) ref   { return ref{resourcev3.RouteType, name} }
func clusterRef(name string) ref { return ref{resourcev3.ClusterType, name} }
func claRef(name string) ref     { return ref{resourcev3.EndpointType, name} }
func secretRef(name string) ref  { return ref{resourcev3.SecretType, name} }

// generatedTypes are the message types this package builds: the five
// resource types and everything it packs into an Any.
func generatedTypes() []protoreflect.MessageDescriptor {
	return []protoreflect.MessageDescriptor{
		(&listenerv3.Listener{}).ProtoReflect().Descriptor(),
		(&routev3.RouteConfiguration{}).ProtoReflect().Descriptor(),
		(&clusterv3.Cluster{}).ProtoReflect().Descriptor(),
		(&endpointv3.ClusterLoadAssignment{}).ProtoReflect().Descriptor(),
		(&tlsv3.Secret{}).ProtoReflect().Descriptor(),
		(&hcmv3.HttpConnectionManager{}).ProtoReflect().Descriptor(),
		(&routerv3.Router{}).ProtoReflect().Descriptor(),
		(&rbacfilterv3.RBAC{}).ProtoReflect().Descriptor(),
		(&rbacfilterv3.RBACPerRoute{}).ProtoReflect().Descriptor(),
		(&tlsv3.UpstreamTlsContext{}).ProtoReflect().Descriptor(),
		(&tlsv3.DownstreamTlsContext{}).ProtoReflect().Descriptor(),
		(&upstreamhttpv3.HttpProtocolOptions{}).ProtoReflect().Descriptor(),
	}
}
