package xds

import (
	"slices"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rbacfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
)

// This file holds SPEC §5 twice: as a decision (may role R call function F
// at all? — for least-privilege outbound configuration) and as Envoy RBAC
// (which requests to F does the inbound side let through?). Both read the
// same grant computation so they cannot drift apart.

// Policy names inside generated RBAC configs.
const (
	rbacAllowAllPolicy = "allow-all"
	rbacRolePolicy     = "role/" // + role id
	// rbacShadowStatPrefix names Envoy's shadow-rule stats, which is how
	// audit mode counts what enforce mode would deny.
	rbacShadowStatPrefix = "cryptomesh_audit_"
)

// readMethods and writeMethods are the HTTP methods of SPEC §1.
func readMethods() []string  { return []string{"GET", "HEAD", "OPTIONS"} }
func writeMethods() []string { return []string{"POST", "PUT", "PATCH", "DELETE"} }

// grant is what a role's permissions allow on one function.
type grant struct {
	any   bool // every method and protocol (execute, *)
	read  bool // otherwise the read methods
	write bool // and/or the write methods
}

func (g grant) empty() bool { return !g.any && !g.read && !g.write }

// methods are the HTTP methods a grant without any allows, in SPEC order.
func (g grant) methods() []string {
	var ms []string
	if g.read {
		ms = append(ms, readMethods()...)
	}
	if g.write {
		ms = append(ms, writeMethods()...)
	}
	return ms
}

// grantOn evaluates r's permissions for function fn. Scoped permissions are
// decided here, at translation time, because every route serves exactly one
// function: a glob either covers it or the permission does not exist for the
// route. grpcCall limits the grant to execute, since every gRPC call is a
// POST that only execute (or *) may make (SPEC §1). A nil role grants
// nothing.
func grantOn(r *role, fn string, grpcCall bool) grant {
	if r == nil {
		return grant{}
	}
	var g grant
	for _, p := range r.perms {
		if !p.covers(fn) {
			continue
		}
		switch p.action {
		case actExecute:
			return grant{any: true}
		case actRead:
			g.read = true
		case actWrite:
			g.write = true
		}
	}
	if grpcCall {
		return grant{}
	}
	return g
}

// grant is grantOn for a role of the model, from the function's table when
// the model has one.
func (m *Model) grant(r *role, f *function, grpcCall bool) grant {
	if r == nil {
		return grant{}
	}
	if r.index >= len(f.grants) || m.roleList[r.index] != r {
		return grantOn(r, f.id, grpcCall)
	}
	g := f.grants[r.index]
	if grpcCall && !g.any {
		return grant{}
	}
	return g
}

// policiesOf returns the distinct policies guarding f: its service's and its
// endpoint's (one when both name the same policy).
func policiesOf(f *function) []*policy {
	if f.service == f.endpoint.policy {
		return []*policy{f.service}
	}
	return []*policy{f.service, f.endpoint.policy}
}

// mayCall decides whether a caller in roleID ("" for none) is let through
// to f for at least one method, which is what puts f into the caller's
// outbound configuration. A policy in audit mode lets every call through
// (SPEC §5), so it does not narrow reachability either: were its function
// hidden from callers outside its roles, switching a policy to audit could
// never show what enforcing it would break — the reason audit mode exists.
func (m *Model) mayCall(roleID string, f *function) bool {
	var r *role
	if roleID != "" {
		r = m.roles[roleID]
	}
	needGrant := false
	for _, p := range policiesOf(f) {
		if p.open || p.audit {
			continue
		}
		if r == nil || !p.hasRole(roleID) {
			return false
		}
		needGrant = true
	}
	return !needGrant || !m.grant(r, f, f.endpoint.grpc).empty()
}

func (p *policy) hasRole(id string) bool {
	_, ok := slices.BinarySearch(p.roles, id)
	return ok
}

// rbacMode says which RBAC dialect a route's rules are for.
type rbacMode int

const (
	// rbacEnvoy is Envoy's (and our proxy's): audit mode becomes shadow
	// rules beside allow-all rules.
	rbacEnvoy rbacMode = iota + 1
	// rbacGRPC is grpc-go's server: it has no shadow rules, so a policy in
	// audit mode is not enforced and nothing counts what it would deny; and
	// every call is gRPC, which only execute grants.
	rbacGRPC
)

// routeRBAC builds the per-route RBAC override of function f's inbound
// route. The HCM-level RBAC filter denies everything; every route replaces
// that with its own rules, so a route added without rules is closed.
//
//   - Both policies open: an empty override, which disables RBAC for the
//     route (Envoy: "if absent, the RBAC policy is disabled for this route";
//     grpc-go: no rules, no enforcement).
//   - Otherwise the enforced rules are the AND of the policies in enforce
//     mode (allow-all when there are none), and the shadow rules, for Envoy,
//     the AND of every policy that requires authentication, as if audit
//     were enforce. Shadow rules appear only when they differ.
func (m *Model) routeRBAC(td string, f *function, mode rbacMode) *rbacfilterv3.RBACPerRoute {
	grpcCall := f.endpoint.grpc || mode == rbacGRPC
	var enforced, authenticated []*policy
	for _, p := range policiesOf(f) {
		if p.open {
			continue
		}
		authenticated = append(authenticated, p)
		if !p.audit {
			enforced = append(enforced, p)
		}
	}
	switch {
	case len(authenticated) == 0:
		return &rbacfilterv3.RBACPerRoute{}
	case len(enforced) == len(authenticated):
		return &rbacfilterv3.RBACPerRoute{Rbac: &rbacfilterv3.RBAC{Rules: m.rolesRules(td, f, grpcCall, enforced)}}
	case mode == rbacGRPC && len(enforced) == 0:
		return &rbacfilterv3.RBACPerRoute{}
	case mode == rbacGRPC:
		return &rbacfilterv3.RBACPerRoute{Rbac: &rbacfilterv3.RBAC{Rules: m.rolesRules(td, f, grpcCall, enforced)}}
	}
	live := allowAllRules()
	if len(enforced) > 0 {
		live = m.rolesRules(td, f, grpcCall, enforced)
	}
	return &rbacfilterv3.RBACPerRoute{Rbac: &rbacfilterv3.RBAC{
		Rules:                 live,
		ShadowRules:           m.rolesRules(td, f, grpcCall, authenticated),
		ShadowRulesStatPrefix: rbacShadowStatPrefix,
	}}
}

// rbacKey identifies what routeRBAC(f, mode) depends on besides f's
// endpoint: the service's policy and what each role of either policy is
// granted on f — which differs between functions only for roles with
// scoped permissions. Two functions of one endpoint with the same key get
// the same rules.
// The key is appended to b, so that a caller can reuse one buffer.
func (m *Model) rbacKey(b []byte, f *function, mode rbacMode) []byte {
	grpcCall := f.endpoint.grpc || mode == rbacGRPC
	b = append(b, f.service.id...)
	for _, p := range policiesOf(f) {
		for _, id := range p.roles {
			r := m.roles[id]
			if r == nil || !r.scoped {
				continue
			}
			g := m.grant(r, f, grpcCall)
			b = append(b, 0)
			b = append(b, id...)
			switch {
			case g.any:
				b = append(b, "=*"...)
			case g.read && g.write:
				b = append(b, "=rw"...)
			case g.read:
				b = append(b, "=r"...)
			case g.write:
				b = append(b, "=w"...)
			}
		}
	}
	return b
}

// rolesRules allows a request to f when its caller holds a role that every
// one of pols names and whose permissions cover the request. A caller has
// one identity and so one role, which turns the AND of the policies into
// the intersection of their role lists. An empty result denies everything
// (ALLOW with no policies).
func (m *Model) rolesRules(td string, f *function, grpcCall bool, pols []*policy) *rbacv3.RBAC {
	rules := &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW, Policies: map[string]*rbacv3.Policy{}}
	for _, id := range pols[0].roles {
		inAll := true
		for _, p := range pols[1:] {
			inAll = inAll && p.hasRole(id)
		}
		if !inAll {
			continue
		}
		g := m.grant(m.roles[id], f, grpcCall)
		if g.empty() {
			continue
		}
		rules.Policies[rbacRolePolicy+id] = &rbacv3.Policy{
			Permissions: grantPermissions(g),
			Principals:  rolePrincipals(td, id),
		}
	}
	return rules
}

// denyAllRules is the filter-level configuration under every per-route
// override: ALLOW with no policy matches nothing.
func denyAllRules() *rbacv3.RBAC {
	return &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW, Policies: map[string]*rbacv3.Policy{}}
}

func allowAllRules() *rbacv3.RBAC {
	return &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW, Policies: map[string]*rbacv3.Policy{
		rbacAllowAllPolicy: {
			Permissions: []*rbacv3.Permission{{Rule: &rbacv3.Permission_Any{Any: true}}},
			Principals:  []*rbacv3.Principal{{Identifier: &rbacv3.Principal_Any{Any: true}}},
		},
	}}
}

// rolePrincipals matches a caller in role R: a client holding exactly
// spiffe://td/role/R, or an endpoint's sidecar whose workload calls out in
// R, spiffe://td/role/R/endpoint/E (SPEC §4). The prefix keeps its trailing
// slash so that role "a" does not match role "ab".
func rolePrincipals(td, roleID string) []*rbacv3.Principal {
	id := roleSPIFFEID(td, roleID)
	return []*rbacv3.Principal{
		principalName(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: id}}),
		principalName(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: id + "/"}}),
	}
}

func principalName(sm *matcherv3.StringMatcher) *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_Authenticated_{
		Authenticated: &rbacv3.Principal_Authenticated{PrincipalName: sm},
	}}
}

func grantPermissions(g grant) []*rbacv3.Permission {
	if g.any {
		return []*rbacv3.Permission{{Rule: &rbacv3.Permission_Any{Any: true}}}
	}
	methods := g.methods()
	perms := make([]*rbacv3.Permission, 0, len(methods))
	for _, method := range methods {
		perms = append(perms, &rbacv3.Permission{Rule: &rbacv3.Permission_Header{Header: &routev3.HeaderMatcher{
			Name: ":method",
			HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
				MatchPattern: &matcherv3.StringMatcher_Exact{Exact: method},
			}},
		}}})
	}
	return perms
}

// roleSPIFFEID is spiffe://td/role/R (SPEC §4).
func roleSPIFFEID(td, roleID string) string { return "spiffe://" + td + "/role/" + roleID }

// endpointSPIFFEID is the ID of endpoint E's sidecar or gRPC server.
func endpointSPIFFEID(td, endpointID, roleID string) string {
	if roleID == "" {
		return "spiffe://" + td + endpointSuffix(endpointID)
	}
	return roleSPIFFEID(td, roleID) + endpointSuffix(endpointID)
}

// endpointSuffix is how a client recognises endpoint E's server.
func endpointSuffix(endpointID string) string { return "/endpoint/" + endpointID }
