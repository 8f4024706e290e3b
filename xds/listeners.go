package xds

import (
	"net"
	"net/netip"
	"strconv"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rbacfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Stat prefixes of the generated connection managers.
const (
	outboundStatPrefix = "outbound"
	inboundStatPrefix  = "inbound"
)

// outboundListener is Listener `cryptomesh.outbound` of Envoy and proxy
// nodes (SPEC §6): plain HTTP from the local application, routed by RDS
// `cryptomesh.outbound`. It depends only on the address, so nodes on the
// default address share it.
func (t *Translator) outboundListener(addr string) (*Resource, error) {
	return t.resources.get("lds/outbound/"+addr, func() (*Resource, error) {
		ap := netip.MustParseAddrPort(addr) // checked with the node
		hcm, err := t.hcmFilter(&hcmv3.HttpConnectionManager{
			StatPrefix: outboundStatPrefix,
			CodecType:  hcmv3.HttpConnectionManager_AUTO,
			RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
				ConfigSource:    adsSource(),
				RouteConfigName: outboundName,
			}},
		})
		if err != nil {
			return nil, err
		}
		lis := &listenerv3.Listener{
			Name:             outboundName,
			Address:          socketAddress(ap.Addr().String(), uint32(ap.Port())),
			TrafficDirection: corev3.TrafficDirection_OUTBOUND,
			FilterChains:     []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{hcm}}},
		}
		return t.chk.newResource(resourcev3.ListenerType, outboundName, lis, routeRef(outboundName))
	})
}

// inboundListener is Listener `cryptomesh.inbound` of endpoint E's Envoy or
// proxy sidecar (SPEC §6): TLS on every interface at the port of E's
// address, a route per function of E with its RBAC, forwarding to the
// local workload. Every sidecar of E shares it.
func (t *Translator) inboundListener(e *endpoint) (*Resource, error) {
	return t.resources.get("lds/inbound/"+e.id, func() (*Resource, error) {
		rc, err := t.inboundRoutes(e, rbacEnvoy)
		if err != nil {
			return nil, err
		}
		chain, err := t.inboundChain(e, tlsSDS, rc, []string{"h2", "http/1.1"})
		if err != nil {
			return nil, err
		}
		lis := &listenerv3.Listener{
			Name:             inboundName,
			Address:          socketAddress("0.0.0.0", e.port),
			TrafficDirection: corev3.TrafficDirection_INBOUND,
			FilterChains:     []*listenerv3.FilterChain{chain},
		}
		return t.chk.newResource(resourcev3.ListenerType, inboundName, lis, append([]ref{clusterRef(localClusterName(e.id))}, tlsRefs(tlsSDS)...)...)
	})
}

// grpcServerListener is the Listener of a grpc-go server hosting E's
// functions (SPEC §6): named after, and at, exactly the address the server
// binds — grpc-go compares both with its own — with certificate provider
// instances, per-function RBAC and non-forwarding routes.
func (t *Translator) grpcServerListener(e *endpoint) (*Resource, error) {
	return t.resources.get("lds/grpc-server/"+e.id, func() (*Resource, error) {
		rc, err := t.inboundRoutes(e, rbacGRPC)
		if err != nil {
			return nil, err
		}
		// grpc-go negotiates h2 itself and ignores ALPN settings.
		chain, err := t.inboundChain(e, tlsProviders, rc, nil)
		if err != nil {
			return nil, err
		}
		name := grpcServerPrefix + net.JoinHostPort(e.host, strconv.FormatUint(uint64(e.port), 10))
		lis := &listenerv3.Listener{
			Name:             name,
			Address:          socketAddress(e.host, e.port),
			TrafficDirection: corev3.TrafficDirection_INBOUND,
			FilterChains:     []*listenerv3.FilterChain{chain},
		}
		return t.chk.newResource(resourcev3.ListenerType, name, lis)
	})
}

// inboundChain is the one filter chain of an inbound or gRPC server
// listener: downstream TLS, then a connection manager whose RBAC filter
// denies what no route's own rules allow, and the router last (grpc-go
// NACKs any other order).
func (t *Translator) inboundChain(e *endpoint, v tlsVariant, rc *routev3.RouteConfiguration, alpn []string) (*listenerv3.FilterChain, error) {
	ts, err := t.transportSocket(&tlsv3.DownstreamTlsContext{
		// The validation context is always there, so a client
		// certificate that is presented is verified even when none is
		// required; grpc-go also NACKs require_client_certificate without
		// one. No SAN matchers: callers are authorized by RBAC.
		CommonTlsContext:         t.commonTLS(v, nil, alpn),
		RequireClientCertificate: wrapperspb.Bool(requiresClientCert(e.policy)),
	})
	if err != nil {
		return nil, err
	}
	rbac, err := t.chk.pack(&rbacfilterv3.RBAC{Rules: denyAllRules()})
	if err != nil {
		return nil, err
	}
	hcm, err := t.hcmFilter(&hcmv3.HttpConnectionManager{
		StatPrefix:     inboundStatPrefix,
		CodecType:      hcmv3.HttpConnectionManager_AUTO,
		RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: rc},
	}, &hcmv3.HttpFilter{
		Name:       wellknown.HTTPRoleBasedAccessControl,
		ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: rbac},
	})
	if err != nil {
		return nil, err
	}
	return &listenerv3.FilterChain{TransportSocket: ts, Filters: []*listenerv3.Filter{hcm}}, nil
}

// requiresClientCert follows SPEC §5: without a certificate no connection
// is made where E's policy requires authentication and enforces it. In
// audit mode the certificate is optional so that calls without one are let
// through (and counted by the shadow rules); an open policy needs none.
func requiresClientCert(p *policy) bool { return !p.open && !p.audit }

// apiListener is the Listener `<F>.cryptomesh` a gRPC client looks up for
// target xds:///<F>.cryptomesh (SPEC §6): an API listener whose connection
// manager fetches RouteConfiguration `<F>.cryptomesh` over ADS.
func (t *Translator) apiListener(f *function) (*Resource, error) {
	return t.resources.get("lds/api/"+f.id, func() (*Resource, error) {
		host := functionHost(f.id)
		hcm, err := t.chk.pack(&hcmv3.HttpConnectionManager{
			// grpc-go ignores it; validation requires it.
			StatPrefix: f.id,
			RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
				ConfigSource:    adsSource(),
				RouteConfigName: host,
			}},
			HttpFilters: []*hcmv3.HttpFilter{t.router},
		})
		if err != nil {
			return nil, err
		}
		lis := &listenerv3.Listener{
			Name:        host,
			ApiListener: &listenerv3.ApiListener{ApiListener: hcm},
		}
		return t.chk.newResource(resourcev3.ListenerType, host, lis, routeRef(host))
	})
}

// hcmFilter packs a connection manager with the given HTTP filters followed
// by the router.
func (t *Translator) hcmFilter(hcm *hcmv3.HttpConnectionManager, filters ...*hcmv3.HttpFilter) (*listenerv3.Filter, error) {
	hcm.HttpFilters = append(filters, t.router)
	a, err := t.chk.pack(hcm)
	if err != nil {
		return nil, err
	}
	return &listenerv3.Filter{
		Name:       wellknown.HTTPConnectionManager,
		ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: a},
	}, nil
}

// routerFilter is the router, last in every filter chain; one per
// Translator, shared (read-only) by every connection manager.
func (t *Translator) routerFilter() (*hcmv3.HttpFilter, error) {
	a, err := t.chk.pack(&routerv3.Router{})
	if err != nil {
		return nil, err
	}
	return &hcmv3.HttpFilter{Name: wellknown.Router, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: a}}, nil
}
