package xds

import (
	"fmt"
	"iter"
	"maps"
	"net"
	"net/netip"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/cryptomesh/cryptomesh/registry"
)

// Source is the part of a registry view the translation reads.
// *registry.View implements it. It is declared here, at its only point of
// use, so that the translation depends on two read methods rather than on
// the registry's storage, and so that one consistent view (one revision) is
// read exactly once per Model.
type Source interface {
	All(k registry.Kind) iter.Seq[*registry.Object]
	Latest(k registry.Kind, owner string) (any, error)
}

// Model is one registry revision resolved for translation: references
// followed, permissions parsed, functions grouped by endpoint, health read
// from the latest endpoint states. It is built once per revision and then
// shared, read-only, by the translation of every node, so that per-node
// work never walks the registry and translation can be tested without one.
type Model struct {
	roles     map[string]*role
	roleList  []*role // by id
	endpoints map[string]*endpoint
	functions []*function // by id
	warnings  []string
}

// role is a registry role with its permissions parsed.
type role struct {
	id    string
	index int // in Model.roleList, and in function.grants
	perms []permission
	// scoped: some permission has a glob, so what the role is granted
	// depends on the function.
	scoped bool
}

// action is what a permission lets a caller do (SPEC §1 grammar).
type action int

const (
	actExecute action = iota + 1 // any method or protocol; also "*"
	actRead                      // GET, HEAD, OPTIONS
	actWrite                     // POST, PUT, PATCH, DELETE
)

// permission is one parsed entry of a role's permissions.
type permission struct {
	action action
	glob   string // "" when unscoped; else a path.Match pattern over function ids
	// prefix is set when glob is a plain prefix followed by one '*' (the
	// usual `execute:ml_*`), which matches exactly the ids with that
	// prefix: path.Match's '*' stops only at '/', which ids cannot hold.
	prefix    string
	hasPrefix bool
}

// covers reports whether the permission's scope includes function fn.
func (p permission) covers(fn string) bool {
	switch {
	case p.glob == "":
		return true
	case p.hasPrefix:
		return strings.HasPrefix(fn, p.prefix)
	}
	// A malformed glob was refused by the registry; if one slipped
	// through, the error makes it match nothing (fail closed).
	ok, err := path.Match(p.glob, fn)
	return err == nil && ok
}

// policy is a security policy reduced to what authorization needs.
type policy struct {
	id    string
	open  bool // requires_authentication: false — anyone, no permission checked
	audit bool // mode audit — let through, count what enforce would deny
	roles []string
}

// endpoint is a registry endpoint with its functions and health.
type endpoint struct {
	id     string
	policy *policy
	role   string // the role its workload calls out in; "" when none
	grpc   bool
	// host and port of its address (where its inbound side is reached);
	// port is 0 when the endpoint has no address yet.
	host string
	port uint32
	// workloadHost and workloadPort are where its workload listens.
	workloadHost string
	workloadPort uint32
	health       corev3.HealthStatus
	functions    []*function // by id
}

// function is a routable function: it has an endpoint and a service.
type function struct {
	id       string
	endpoint *endpoint
	service  *policy // the policy of the function's service
	timeout  time.Duration
	// grants holds what each role is granted on the function, by
	// role.index: worked out once per revision, since reachability, RBAC
	// rules and the keys that share them all ask again and again.
	grants []grant
}

// NewModel reads one consistent view of the registry. Functions that cannot
// be routed are left out and reported by Warnings, never fail the whole
// model: one half-declared function must not take the mesh's configuration
// down with it.
func NewModel(src Source) (*Model, error) {
	m := &Model{roles: map[string]*role{}, endpoints: map[string]*endpoint{}}

	for o := range src.All(registry.KindRole) {
		r, ok := o.Value.(*registry.Role)
		if !ok {
			return nil, fmt.Errorf("role %q: unexpected value %T", o.ID, o.Value)
		}
		parsed := &role{id: o.ID}
		for _, p := range r.Permissions {
			perm, err := parsePermission(p)
			if err != nil {
				// The registry validates permissions on write, so this is a
				// registry bug; skipping the entry fails closed.
				m.warn("role %s: permission %q ignored: %v", o.ID, p, err)
				continue
			}
			parsed.perms = append(parsed.perms, perm)
			parsed.scoped = parsed.scoped || perm.glob != ""
		}
		m.roles[o.ID] = parsed
	}

	policies := map[string]*policy{}
	for o := range src.All(registry.KindSecurityPolicy) {
		p, ok := o.Value.(*registry.SecurityPolicy)
		if !ok {
			return nil, fmt.Errorf("security policy %q: unexpected value %T", o.ID, o.Value)
		}
		roles := slices.Clone(p.Roles)
		slices.Sort(roles)
		policies[o.ID] = &policy{
			id:    o.ID,
			open:  !p.RequiresAuthentication,
			audit: p.Mode == "audit",
			roles: slices.Compact(roles),
		}
	}

	for o := range src.All(registry.KindEndpoint) {
		e, ok := o.Value.(*registry.Endpoint)
		if !ok {
			return nil, fmt.Errorf("endpoint %q: unexpected value %T", o.ID, o.Value)
		}
		ep := &endpoint{id: o.ID, role: e.Role, grpc: e.Protocol == "grpc", policy: policies[e.SecurityPolicy]}
		if ep.policy == nil {
			m.warn("endpoint %s: security policy %q does not exist; its functions are not routed", o.ID, e.SecurityPolicy)
			continue
		}
		if e.Address != "" {
			host, port, err := splitHostPort(e.Address)
			if err != nil {
				m.warn("endpoint %s: address: %v; it is not reachable", o.ID, err)
			} else {
				ep.host, ep.port = host, port
				if _, err := netip.ParseAddr(host); err != nil {
					m.warn("endpoint %s: address host %q is not an IP address: Envoy resolves no names in EDS, so only gRPC nodes and the proxy can reach it", o.ID, host)
				}
			}
		}
		workload := e.WorkloadAddress
		if workload == "" {
			workload = defaultWorkloadAddress
		}
		host, port, err := splitHostPort(workload)
		if err != nil {
			m.warn("endpoint %s: workload_address: %v; its sidecar does not serve", o.ID, err)
		} else {
			ep.workloadHost, ep.workloadPort = host, port
		}
		ep.health, err = healthOf(src, o.ID)
		if err != nil {
			return nil, err
		}
		m.endpoints[o.ID] = ep
	}

	microservices := map[string]string{} // microservice → service
	for o := range src.All(registry.KindMicroservice) {
		ms, ok := o.Value.(*registry.Microservice)
		if !ok {
			return nil, fmt.Errorf("microservice %q: unexpected value %T", o.ID, o.Value)
		}
		microservices[o.ID] = ms.ServiceID
	}
	services := map[string]*policy{}
	for o := range src.All(registry.KindService) {
		s, ok := o.Value.(*registry.Service)
		if !ok {
			return nil, fmt.Errorf("service %q: unexpected value %T", o.ID, o.Value)
		}
		services[o.ID] = policies[s.SecurityPolicy]
	}

	// Authorities are case-insensitive, function ids are not: two ids that
	// differ only by case cannot be told apart by :authority, and Envoy
	// refuses a route configuration whose domains collide. Such functions
	// are left out rather than have one NACK break every node's routes.
	byFold := map[string][]string{}
	for o := range src.All(registry.KindFunction) {
		byFold[strings.ToLower(o.ID)] = append(byFold[strings.ToLower(o.ID)], o.ID)
	}

	for o := range src.All(registry.KindFunction) {
		f, ok := o.Value.(*registry.Function)
		if !ok {
			return nil, fmt.Errorf("function %q: unexpected value %T", o.ID, o.Value)
		}
		if ids := byFold[strings.ToLower(o.ID)]; len(ids) > 1 {
			m.warn("function %s: not routed: its authority is ambiguous with %s (ids differing only by case)", o.ID, strings.Join(slices.DeleteFunc(slices.Clone(ids), func(s string) bool { return s == o.ID }), ", "))
			continue
		}
		if f.EndpointID == "" {
			continue // not deployed anywhere: nothing to route to
		}
		ep := m.endpoints[f.EndpointID]
		if ep == nil {
			m.warn("function %s: endpoint %q is not usable; not routed", o.ID, f.EndpointID)
			continue
		}
		// §5 needs both S's and E's policy. A function outside any service
		// (a forward-declared tree) has no S policy to consult: it is not
		// routed rather than guarded by E's policy alone.
		svc := microservices[f.MicroserviceID]
		sp := services[svc]
		if sp == nil {
			m.warn("function %s: no service security policy (microservice %q, service %q); not routed", o.ID, f.MicroserviceID, svc)
			continue
		}
		timeout, err := parseTimeout(f.Timeout)
		if err != nil {
			m.warn("function %s: timeout: %v; not routed", o.ID, err)
			continue
		}
		fn := &function{id: o.ID, endpoint: ep, service: sp, timeout: timeout}
		m.functions = append(m.functions, fn)
		ep.functions = append(ep.functions, fn)
	}
	for _, id := range slices.Sorted(maps.Keys(m.roles)) {
		r := m.roles[id]
		r.index = len(m.roleList)
		m.roleList = append(m.roleList, r)
	}
	// What an unscoped role is granted is the same on every function.
	unscoped := make([]grant, len(m.roleList))
	for _, r := range m.roleList {
		if !r.scoped {
			unscoped[r.index] = grantOn(r, "", false)
		}
	}
	for _, fn := range m.functions {
		fn.grants = slices.Clone(unscoped)
		for _, r := range m.roleList {
			if r.scoped {
				fn.grants[r.index] = grantOn(r, fn.id, false)
			}
		}
	}
	// All yields in id order already; sorting keeps the model's order a
	// property of the model, not of the source.
	slices.SortFunc(m.functions, func(a, b *function) int { return strings.Compare(a.id, b.id) })
	for _, ep := range m.endpoints {
		slices.SortFunc(ep.functions, func(a, b *function) int { return strings.Compare(a.id, b.id) })
	}
	return m, nil
}

// Warnings lists what the model left out or cannot serve to every kind of
// node, in a stable order, for the control plane to log.
func (m *Model) Warnings() []string { return slices.Clone(m.warnings) }

func (m *Model) warn(format string, args ...any) {
	m.warnings = append(m.warnings, fmt.Sprintf(format, args...))
}

// defaultWorkloadAddress is the registry's default (SPEC §1), repeated here
// for endpoints stored before the default existed.
const defaultWorkloadAddress = "127.0.0.1:8080"

// defaultTimeout is a function's timeout when the stored entity has none
// (SPEC §1).
const defaultTimeout = 60 * time.Second

func parseTimeout(s string) (time.Duration, error) {
	if s == "" {
		return defaultTimeout, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q: %w", s, err)
	}
	if d < 0 {
		return 0, fmt.Errorf("%q is negative", s)
	}
	return d, nil
}

func splitHostPort(s string) (string, uint32, error) {
	host, portStr, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, fmt.Errorf("%q: %w", s, err)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil || port == 0 || host == "" {
		return "", 0, fmt.Errorf("%q is not host:port with a port in 1-65535", s)
	}
	return host, uint32(port), nil
}

// healthOf maps an endpoint's latest state to an xDS health status.
// unhealthy and draining take the endpoint out of load balancing (SPEC §6).
// warm is HEALTHY. No state yet, cold and starting are UNKNOWN: nobody has
// confirmed the workload serves, but both Envoy and grpc-go route to UNKNOWN
// hosts, so a fresh endpoint is reachable before its first health report.
func healthOf(src Source, endpointID string) (corev3.HealthStatus, error) {
	v, err := src.Latest(registry.KindEndpointState, endpointID)
	if err != nil {
		if registry.CodeOf(err) == registry.CodeNotFound {
			return corev3.HealthStatus_UNKNOWN, nil
		}
		return 0, fmt.Errorf("latest state of endpoint %q: %w", endpointID, err)
	}
	st, ok := v.(*registry.EndpointState)
	if !ok {
		return 0, fmt.Errorf("latest state of endpoint %q: unexpected value %T", endpointID, v)
	}
	switch st.State {
	case "warm":
		return corev3.HealthStatus_HEALTHY, nil
	case "unhealthy":
		return corev3.HealthStatus_UNHEALTHY, nil
	case "draining":
		return corev3.HealthStatus_DRAINING, nil
	}
	return corev3.HealthStatus_UNKNOWN, nil
}

func parsePermission(p string) (permission, error) {
	act, glob, err := registry.ParsePermission(p)
	if err != nil {
		return permission{}, fmt.Errorf("parse permission: %w", err)
	}
	perm := permission{glob: glob}
	if head, ok := strings.CutSuffix(glob, "*"); ok && !strings.ContainsAny(head, `*?[\`) {
		perm.prefix, perm.hasPrefix = head, true
	}
	switch act {
	case "execute", "*":
		perm.action = actExecute
	case "read":
		perm.action = actRead
	case "write":
		perm.action = actWrite
	}
	return perm, nil
}
