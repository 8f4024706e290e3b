package xds

import (
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/cryptomesh/cryptomesh/registry"
)

// oracle is SPEC §5 written down directly over registry entities, with no
// code shared with the package, to check the generated configuration
// against.
type oracle struct {
	roles     map[string]*registry.Role
	policies  map[string]*registry.SecurityPolicy
	endpoints map[string]*registry.Endpoint
	functions map[string]*registry.Function
	svcPolicy map[string]string // function → its service's policy
}

func newOracle(t testing.TB, r *registry.Registry) *oracle {
	t.Helper()
	v := r.View()
	o := &oracle{
		roles: map[string]*registry.Role{}, policies: map[string]*registry.SecurityPolicy{},
		endpoints: map[string]*registry.Endpoint{}, functions: map[string]*registry.Function{},
		svcPolicy: map[string]string{},
	}
	for obj := range v.All(registry.KindRole) {
		o.roles[obj.ID] = obj.Value.(*registry.Role)
	}
	for obj := range v.All(registry.KindSecurityPolicy) {
		o.policies[obj.ID] = obj.Value.(*registry.SecurityPolicy)
	}
	for obj := range v.All(registry.KindEndpoint) {
		o.endpoints[obj.ID] = obj.Value.(*registry.Endpoint)
	}
	for obj := range v.All(registry.KindFunction) {
		f := obj.Value.(*registry.Function)
		o.functions[obj.ID] = f
		ms := v.Object(registry.KindMicroservice, f.MicroserviceID).Value.(*registry.Microservice)
		svc := v.Object(registry.KindService, ms.ServiceID).Value.(*registry.Service)
		o.svcPolicy[obj.ID] = svc.SecurityPolicy
	}
	return o
}

// allows says whether policy p lets a caller in role (""= none) call fn
// with method; enforceAudit treats audit mode as enforce (shadow rules).
func (o *oracle) allows(p *registry.SecurityPolicy, role, fn, method string, grpc, enforceAudit bool) bool {
	if !p.RequiresAuthentication {
		return true
	}
	if p.Mode == "audit" && !enforceAudit {
		return true
	}
	if role == "" || !slices.Contains(p.Roles, role) {
		return false
	}
	for _, perm := range o.roles[role].Permissions {
		act, glob, _ := strings.Cut(perm, ":")
		if glob != "" {
			if ok, _ := path.Match(glob, fn); !ok {
				continue
			}
		}
		switch {
		case act == "execute" || act == "*":
			return true
		case grpc:
			// gRPC calls are POST and only execute grants them.
		case act == "read" && slices.Contains([]string{"GET", "HEAD", "OPTIONS"}, method):
			return true
		case act == "write" && slices.Contains([]string{"POST", "PUT", "PATCH", "DELETE"}, method):
			return true
		}
	}
	return false
}

// call decides a call to fn: both the service's and the endpoint's policy
// must allow it.
func (o *oracle) call(role, fn, method string, enforceAudit bool) bool {
	f := o.functions[fn]
	e := o.endpoints[f.EndpointID]
	grpc := e.Protocol == "grpc"
	return o.allows(o.policies[o.svcPolicy[fn]], role, fn, method, grpc, enforceAudit) &&
		o.allows(o.policies[e.SecurityPolicy], role, fn, method, grpc, enforceAudit)
}

// reachable: some method gets through (what puts fn into a role's config).
func (o *oracle) reachable(role, fn string) bool {
	for _, m := range simMethods() {
		if o.call(role, fn, m, false) {
			return true
		}
	}
	return false
}

func (o *oracle) sortedFunctions() []string {
	var ids []string
	for id := range o.functions {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

func simMethods() []string {
	return []string{"GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE", "PURGE"}
}

// simCaller is an identity a request can come with, and the role the
// oracle should see in it.
type simCaller struct {
	name, principal, role string
}

// simCallers are, for every role: a client in it, and the sidecar of an
// endpoint whose workload calls in it; a sidecar of an endpoint without a
// role; a look-alike role name (a prefix trap); and no certificate.
func simCallers(roles []string) []simCaller {
	var cs []simCaller
	for _, r := range roles {
		cs = append(cs,
			simCaller{"client " + r, roleSPIFFEID(testTrustDomain, r), r},
			simCaller{"sidecar in " + r, endpointSPIFFEID(testTrustDomain, "some-endpoint", r), r},
			simCaller{"look-alike of " + r, roleSPIFFEID(testTrustDomain, r) + "x", ""},
		)
	}
	return append(cs,
		simCaller{"roleless sidecar", endpointSPIFFEID(testTrustDomain, "some-endpoint", ""), ""},
		simCaller{"other trust domain", roleSPIFFEID("elsewhere.example", roles[0]), ""},
		simCaller{"no certificate", "", ""},
	)
}

// TestSimulatedInboundMatchesSpec pushes every caller × method × function
// through the inbound side generated for the function's endpoint — the
// Envoy sidecar's listener and, for gRPC endpoints, the grpc-go server's —
// and compares what RBAC does (and what its shadow rules say in audit
// mode) with the oracle.
func TestSimulatedInboundMatchesSpec(t *testing.T) {
	for _, doc := range []string{"ml-pipeline", "authz"} {
		t.Run(doc, func(t *testing.T) {
			r := simRegistry(t, doc)
			o := newOracle(t, r)
			tr := translatorFor(t, r, Options{})
			var roles []string
			for id := range o.roles {
				roles = append(roles, id)
			}
			slices.Sort(roles)
			checked := 0
			for _, fn := range o.sortedFunctions() {
				f := o.functions[fn]
				e := o.endpoints[f.EndpointID]
				grpc := e.Protocol == "grpc"
				ep := o.policies[e.SecurityPolicy]
				requireCert := ep.RequiresAuthentication && ep.Mode != "audit"

				sidecar := translate(t, tr, Node{ID: "sidecar", Kind: Envoy, Binding: EndpointBinding(e.EndpointID)})
				listeners := map[string]*listenerv3.Listener{"envoy": listenerOf(t, sidecar, inboundName)}
				if grpc {
					server := translate(t, tr, Node{ID: "server", Kind: GRPC, Binding: EndpointBinding(e.EndpointID)})
					listeners["grpc"] = listenerOf(t, server, grpcServerPrefix+e.Address)
				}
				for kind, lis := range listeners {
					methods := simMethods()
					if kind == "grpc" {
						methods = []string{"POST"} // grpc-go's RBAC sees every call as POST
					}
					for _, c := range simCallers(roles) {
						for _, m := range methods {
							req := simRequest{principal: c.principal, method: m, authority: functionHost(fn)}
							got := simulateInbound(t, lis, req)
							where := kind + " " + fn + " " + c.name + " " + m
							if got.connected != (c.principal != "" || !requireCert) {
								t.Fatalf("%s: connected=%v, policy requires a certificate: %v", where, got.connected, requireCert)
							}
							if !got.connected {
								continue
							}
							if !got.routed {
								t.Fatalf("%s: not routed", where)
							}
							live := o.call(c.role, fn, m, false)
							shadow := o.call(c.role, fn, m, true)
							if kind == "grpc" {
								// grpc-go has no shadow rules: audit is simply not enforced.
								shadow = live
							}
							if got.allowed != live || got.shadowAllowed != shadow {
								t.Errorf("%s: allowed=%v shadow=%v, spec says %v and %v", where, got.allowed, got.shadowAllowed, live, shadow)
							}
							if kind == "grpc" && got.hasShadow {
								t.Errorf("%s: shadow rules on a gRPC server", where)
							}
							checked++
						}
					}
				}
			}
			t.Logf("%d requests checked", checked)
		})
	}
}

// TestSimulatedOutboundIsLeastPrivilege checks every role's outbound
// configuration, Envoy's and gRPC's, against the oracle: a function is
// there exactly when some method of some call to it would be let through,
// and its routes lead to its endpoint's cluster.
func TestSimulatedOutboundIsLeastPrivilege(t *testing.T) {
	for _, doc := range []string{"ml-pipeline", "authz"} {
		t.Run(doc, func(t *testing.T) {
			r := simRegistry(t, doc)
			o := newOracle(t, r)
			tr := translatorFor(t, r, Options{})
			for role := range o.roles {
				envoy := translate(t, tr, Node{ID: "c", Kind: Envoy, Binding: RoleBinding(role)})
				grpc := translate(t, tr, Node{ID: "g", Kind: GRPC, Binding: RoleBinding(role)})
				rc := envoy.Get(resourcev3.RouteType, outboundName).Message.(*routev3.RouteConfiguration)
				for _, fn := range o.sortedFunctions() {
					want := o.reachable(role, fn)
					cluster := endpointClusterName(o.functions[fn].EndpointID)
					for _, req := range []simRequest{
						{authority: functionHost(fn)},
						{authority: functionHost(fn) + ":15001"},
						{authority: "127.0.0.1:15001", path: "/fn/" + fn + "/predict"},
					} {
						route := findRoute(t, rc, req)
						if (route != nil) != want {
							t.Errorf("role %s, %+v: routed=%v, spec says reachable=%v", role, req, route != nil, want)
							continue
						}
						if route != nil && route.GetRoute().GetCluster() != cluster {
							t.Errorf("role %s, %+v: routed to %s, want %s", role, req, route.GetRoute().GetCluster(), cluster)
						}
					}
					if got := envoy.Get(resourcev3.ClusterType, cluster) != nil; want && !got {
						t.Errorf("role %s: reachable %s but no cluster %s", role, fn, cluster)
					}
					wantGRPC := want && o.endpoints[o.functions[fn].EndpointID].Protocol == "grpc"
					if got := grpc.Get(resourcev3.ListenerType, functionHost(fn)) != nil; got != wantGRPC {
						t.Errorf("role %s: gRPC API listener for %s present=%v, want %v", role, fn, got, wantGRPC)
					}
				}
				// Nothing beyond what the routes use.
				used := map[string]bool{}
				for _, vh := range rc.GetVirtualHosts() {
					for _, rt := range vh.GetRoutes() {
						used[rt.GetRoute().GetCluster()] = true
					}
				}
				for _, c := range envoy.Resources(resourcev3.ClusterType) {
					if !used[c.Name] {
						t.Errorf("role %s: cluster %s is in the config but no route uses it", role, c.Name)
					}
				}
			}
		})
	}
}

func simRegistry(t testing.TB, doc string) *registry.Registry {
	t.Helper()
	if doc == "ml-pipeline" {
		return exampleRegistry(t, mlPipeline)
	}
	data, err := os.ReadFile(filepath.Join("testdata", doc+".yaml"))
	if err != nil {
		t.Fatal(err)
	}
	r := openRegistry(t)
	applyDoc(t, r, data)
	return r
}

func listenerOf(t testing.TB, s *Snapshot, name string) *listenerv3.Listener {
	t.Helper()
	res := s.Get(resourcev3.ListenerType, name)
	if res == nil {
		t.Fatalf("no listener %q in the snapshot", name)
	}
	return res.Message.(*listenerv3.Listener)
}
