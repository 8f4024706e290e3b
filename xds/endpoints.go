package xds

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// loadAssignment is ClusterLoadAssignment `cryptomesh.endpoint.<E>`
// (SPEC §6): E's address with the health of its latest state, shared by
// every node of every kind. An endpoint without an address has no hosts:
// its functions are routed but answer "no healthy upstream" until it gets
// one, and giving it one changes only this resource.
func (t *Translator) loadAssignment(e *endpoint) (*Resource, error) {
	return t.resources.get("eds/"+e.id, func() (*Resource, error) {
		name := endpointClusterName(e.id)
		cla := &endpointv3.ClusterLoadAssignment{ClusterName: name}
		if e.port != 0 {
			cla.Endpoints = []*endpointv3.LocalityLbEndpoints{{
				// grpc-go needs a locality and drops one without a weight.
				Locality:            &corev3.Locality{},
				LoadBalancingWeight: wrapperspb.UInt32(1),
				LbEndpoints:         []*endpointv3.LbEndpoint{lbEndpoint(e.host, e.port, e.health)},
			}}
		}
		return t.chk.newResource(resourcev3.EndpointType, name, cla)
	})
}

func lbEndpoint(host string, port uint32, health corev3.HealthStatus) *endpointv3.LbEndpoint {
	return &endpointv3.LbEndpoint{
		HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: socketAddress(host, port)}},
		HealthStatus:   health,
	}
}

func socketAddress(host string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Protocol:      corev3.SocketAddress_TCP,
		Address:       host,
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}
