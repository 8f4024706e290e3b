package xds

import (
	"encoding/binary"
	"fmt"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
)

// prefixVirtualHost names the virtual host of the /fn/<F>/ routes. A
// function id cannot contain '/', so it never collides with a function's
// virtual host.
const prefixVirtualHost = "/fn/"

// outboundRoutes is RouteConfiguration `cryptomesh.outbound` for callers in
// roleID (SPEC §6): a virtual host per function the role may call, and
// nothing else, so a caller cannot even name a function it may not call.
// It depends on the role only and is shared by every Envoy and proxy node
// calling in it.
//
// A function's virtual host and prefix route are the same in the
// configuration of every role that may call it, so they are built,
// validated and marshalled once (functionRoutes), and each role's
// configuration is assembled from them:
//   - validation by parts: the configuration's own fields and its
//     catch-all virtual host here, the shared parts once. That is exactly
//     ValidateAll of the whole, because protoc-gen-validate has no rule on
//     virtual_hosts or routes as lists, only on each item
//     (TestRouteListsHaveOnlyItemRules pins it).
//   - bytes by concatenation: deterministic marshalling writes fields in
//     field-number order, so appending the parts' encodings in that order
//     gives the bytes proto.Marshal would (every test translation checks
//     Bytes against proto.Marshal).
func (t *Translator) outboundRoutes(roleID string) (*Resource, error) {
	return t.resources.get("rds/outbound/"+roleID, func() (*Resource, error) {
		reach, err := t.callable(roleID, false)
		if err != nil {
			return nil, err
		}
		fns := reach.functions
		invalid := func(err error) error {
			return fmt.Errorf("%s %q is invalid: %w", shortType(resourcev3.RouteType), outboundName, err)
		}
		parts := make([]functionRoutes, 0, len(fns))
		vhostsSize, prefixSize := 0, 0
		for _, f := range fns {
			fr, err := t.functionRoutes(f)
			if err != nil {
				return nil, err
			}
			parts = append(parts, fr)
			vhostsSize += len(fr.vhostBytes) + 1 + binary.MaxVarintLen32
			prefixSize += len(fr.byPrefixBytes) + 1 + binary.MaxVarintLen32
		}
		refs := make([]ref, 0, len(reach.endpoints))
		for _, e := range reach.endpoints {
			refs = append(refs, clusterRef(endpointClusterName(e.id)))
		}

		rc := &routev3.RouteConfiguration{Name: outboundName, VirtualHosts: make([]*routev3.VirtualHost, 0, len(parts)+1)}
		if err := t.chk.validate(rc); err != nil {
			return nil, invalid(err)
		}
		b := make([]byte, 0, vhostsSize+prefixSize+1024)
		if b, err = deterministic().MarshalAppend(b, rc); err != nil {
			return nil, fmt.Errorf("marshal %s: %w", outboundName, err)
		}
		for _, fr := range parts {
			rc.VirtualHosts = append(rc.VirtualHosts, fr.vhost)
			b = appendMessageField(b, fieldNumber(rc, "virtual_hosts"), fr.vhostBytes)
		}
		if len(parts) > 0 {
			catchAll := &routev3.VirtualHost{Name: prefixVirtualHost, Domains: []string{"*"}}
			if err := t.chk.validate(catchAll); err != nil {
				return nil, invalid(err)
			}
			vb, err := deterministic().MarshalAppend(make([]byte, 0, prefixSize+64), catchAll)
			if err != nil {
				return nil, fmt.Errorf("marshal %s: %w", outboundName, err)
			}
			catchAll.Routes = make([]*routev3.Route, 0, len(parts))
			for _, fr := range parts {
				catchAll.Routes = append(catchAll.Routes, fr.byPrefix)
				vb = appendMessageField(vb, fieldNumber(catchAll, "routes"), fr.byPrefixBytes)
			}
			rc.VirtualHosts = append(rc.VirtualHosts, catchAll)
			b = appendMessageField(b, fieldNumber(rc, "virtual_hosts"), vb)
		}
		return assembledResource(resourcev3.RouteType, outboundName, rc, b, refs...), nil
	})
}

// functionRoutes are the two ways to reach F on the outbound side, with
// their encodings.
type functionRoutes struct {
	vhost         *routev3.VirtualHost // by :authority
	byPrefix      *routev3.Route       // by /fn/<F>/ on any host
	vhostBytes    []byte
	byPrefixBytes []byte
}

// functionRoutes builds, validates and marshals F's outbound routes once
// per Translator, for the configurations of every role that may call F to
// share (read-only).
func (t *Translator) functionRoutes(f *function) (functionRoutes, error) {
	return t.fnRoutes.get(f.id, func() (functionRoutes, error) {
		cluster := endpointClusterName(f.endpoint.id)
		host := functionHost(f.id)
		prefixed := outboundAction(f, cluster)
		prefixed.PrefixRewrite = "/"
		fr := functionRoutes{
			vhost: &routev3.VirtualHost{
				Name: f.id,
				// The port wildcard lets an application address
				// F.cryptomesh:15001, or any port, as it likes.
				Domains: []string{host, host + ":*"},
				Routes: []*routev3.Route{{
					Name:   f.id,
					Match:  t.rootMatch,
					Action: &routev3.Route_Route{Route: outboundAction(f, cluster)},
				}},
			},
			byPrefix: &routev3.Route{
				Name:   prefixVirtualHost + f.id,
				Match:  prefixMatch("/fn/" + f.id + "/"),
				Action: &routev3.Route_Route{Route: prefixed},
			},
		}
		var err error
		if fr.vhostBytes, err = t.chk.marshalValid(fr.vhost); err != nil {
			return functionRoutes{}, fmt.Errorf("virtual host of function %s: %w", f.id, err)
		}
		if fr.byPrefixBytes, err = t.chk.marshalValid(fr.byPrefix); err != nil {
			return functionRoutes{}, fmt.Errorf("prefix route of function %s: %w", f.id, err)
		}
		return fr, nil
	})
}

// appendMessageField appends one length-delimited field holding an
// encoded message.
func appendMessageField(b []byte, num protowire.Number, msg []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, msg)
}

// fieldNumber is the number of m's field called name, from the descriptor
// rather than hard-coded.
func fieldNumber(m proto.Message, name protoreflect.Name) protowire.Number {
	return m.ProtoReflect().Descriptor().Fields().ByName(name).Number()
}

// outboundAction routes to F's endpoint with F's timeout and with the
// :authority the inbound side routes by. Retries are deliberately absent:
// a function call is not known to be idempotent.
func outboundAction(f *function, cluster string) *routev3.RouteAction {
	return &routev3.RouteAction{
		ClusterSpecifier:     &routev3.RouteAction_Cluster{Cluster: cluster},
		Timeout:              routeTimeout(f),
		HostRewriteSpecifier: &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: functionHost(f.id)},
	}
}

// routeTimeout is always set: Envoy's default when it is absent is 15 s,
// not "none", and a zero duration is how Envoy spells "none" — which is
// what timeout 0 (streams) means in the registry.
func routeTimeout(f *function) *durationpb.Duration { return durationpb.New(f.timeout) }

// apiRoutes is RouteConfiguration `<F>.cryptomesh` of a gRPC client (SPEC
// §6). grpc-go ignores RouteAction.timeout and bounds calls by
// max_stream_duration instead, so both carry F's timeout (none for 0).
func (t *Translator) apiRoutes(f *function) (*Resource, error) {
	return t.resources.get("rds/api/"+f.id, func() (*Resource, error) {
		host := functionHost(f.id)
		cluster := endpointClusterName(f.endpoint.id)
		action := &routev3.RouteAction{
			ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster},
			Timeout:          routeTimeout(f),
		}
		if f.timeout > 0 {
			action.MaxStreamDuration = &routev3.RouteAction_MaxStreamDuration{MaxStreamDuration: durationpb.New(f.timeout)}
		}
		rc := &routev3.RouteConfiguration{
			Name: host,
			VirtualHosts: []*routev3.VirtualHost{{
				Name:    f.id,
				Domains: []string{host},
				Routes: []*routev3.Route{{
					Name:   f.id,
					Match:  t.rootMatch,
					Action: &routev3.Route_Route{Route: action},
				}},
			}},
		}
		return t.chk.newResource(resourcev3.RouteType, host, rc, clusterRef(cluster))
	})
}

// inboundRoutes is the route configuration inside an endpoint's inbound
// listener (Envoy) or gRPC server listener: a virtual host per function of
// E, chosen by :authority <F>.cryptomesh, each with its own RBAC (SPEC §5).
// Envoy forwards to the local workload; a gRPC server must be told
// non_forwarding_action, since it is the workload (a forwarding route is
// accepted by grpc-go and then fails every RPC).
func (t *Translator) inboundRoutes(e *endpoint, mode rbacMode) (*routev3.RouteConfiguration, error) {
	rc := &routev3.RouteConfiguration{Name: inboundName, VirtualHosts: make([]*routev3.VirtualHost, 0, len(e.functions))}
	// Functions whose rules come out the same share one packed override:
	// usually most of an endpoint's functions, unless scoped permissions
	// tell them apart.
	overrides := map[string]*anypb.Any{}
	var key []byte
	for _, f := range e.functions {
		key = t.model.rbacKey(key[:0], f, mode)
		override, ok := overrides[string(key)]
		if !ok {
			var err error
			if override, err = t.chk.pack(t.model.routeRBAC(t.td, f, mode)); err != nil {
				return nil, err
			}
			overrides[string(key)] = override
		}
		route := &routev3.Route{
			Name:                 f.id,
			Match:                t.rootMatch,
			TypedPerFilterConfig: map[string]*anypb.Any{wellknown.HTTPRoleBasedAccessControl: override},
		}
		if mode == rbacGRPC {
			route.Action = &routev3.Route_NonForwardingAction{NonForwardingAction: &routev3.NonForwardingAction{}}
		} else {
			route.Action = &routev3.Route_Route{Route: &routev3.RouteAction{
				ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: localClusterName(e.id)},
				// The inbound side enforces F's timeout too, so callers
				// without an outbound sidecar (gRPC clients) are bound by it.
				Timeout: routeTimeout(f),
			}}
		}
		rc.VirtualHosts = append(rc.VirtualHosts, &routev3.VirtualHost{
			Name:    f.id,
			Domains: []string{functionHost(f.id)},
			Routes:  []*routev3.Route{route},
		})
	}
	return rc, nil
}

func prefixMatch(prefix string) *routev3.RouteMatch {
	return &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: prefix}}
}
