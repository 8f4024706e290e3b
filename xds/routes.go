package xds

import (
	"slices"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
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
func (t *Translator) outboundRoutes(roleID string) (*Resource, error) {
	return t.resources.get("rds/outbound/"+roleID, func() (*Resource, error) {
		fns, err := t.callable(roleID, false)
		if err != nil {
			return nil, err
		}
		rc := &routev3.RouteConfiguration{Name: outboundName}
		var byPrefix []*routev3.Route
		var refs []ref
		for _, f := range fns {
			cluster := endpointClusterName(f.endpoint.id)
			host := functionHost(f.id)
			rc.VirtualHosts = append(rc.VirtualHosts, &routev3.VirtualHost{
				Name: f.id,
				// The port wildcard lets an application address
				// F.cryptomesh:15001, or any port, as it likes.
				Domains: []string{host, host + ":*"},
				Routes: []*routev3.Route{{
					Name:   f.id,
					Match:  prefixMatch("/"),
					Action: &routev3.Route_Route{Route: outboundAction(f, cluster)},
				}},
			})
			prefixed := outboundAction(f, cluster)
			prefixed.PrefixRewrite = "/"
			byPrefix = append(byPrefix, &routev3.Route{
				Name:   prefixVirtualHost + f.id,
				Match:  prefixMatch("/fn/" + f.id + "/"),
				Action: &routev3.Route_Route{Route: prefixed},
			})
			refs = append(refs, clusterRef(cluster))
		}
		if len(byPrefix) > 0 {
			rc.VirtualHosts = append(rc.VirtualHosts, &routev3.VirtualHost{
				Name:    prefixVirtualHost,
				Domains: []string{"*"},
				Routes:  byPrefix,
			})
		}
		return newResource(resourcev3.RouteType, outboundName, rc, compactRefs(refs)...)
	})
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
					Match:  prefixMatch("/"),
					Action: &routev3.Route_Route{Route: action},
				}},
			}},
		}
		return newResource(resourcev3.RouteType, host, rc, clusterRef(cluster))
	})
}

// inboundRoutes is the route configuration inside an endpoint's inbound
// listener (Envoy) or gRPC server listener: a virtual host per function of
// E, chosen by :authority <F>.cryptomesh, each with its own RBAC (SPEC §5).
// Envoy forwards to the local workload; a gRPC server must be told
// non_forwarding_action, since it is the workload (a forwarding route is
// accepted by grpc-go and then fails every RPC).
func (t *Translator) inboundRoutes(e *endpoint, mode rbacMode) (*routev3.RouteConfiguration, error) {
	rc := &routev3.RouteConfiguration{Name: inboundName}
	for _, f := range e.functions {
		override, err := pack(t.model.routeRBAC(t.td, f, mode))
		if err != nil {
			return nil, err
		}
		route := &routev3.Route{
			Name:                 f.id,
			Match:                prefixMatch("/"),
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

// compactRefs drops repeated references (several functions on one
// endpoint), keeping the first-seen order.
func compactRefs(refs []ref) []ref {
	seen := make(map[ref]bool, len(refs))
	return slices.DeleteFunc(refs, func(r ref) bool {
		if seen[r] {
			return true
		}
		seen[r] = true
		return false
	})
}
