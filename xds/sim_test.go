package xds

import (
	"strings"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rbacfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// This file is a small evaluator of the configuration the package
// generates: it pushes a synthetic request through a listener the way
// Envoy (or grpc-go's server) would — TLS client-certificate requirement,
// virtual host by :authority, route, RBAC with per-route override and
// shadow rules — and says what happened. It understands exactly the
// matchers this package may emit and fails the test on anything else, so
// that a new kind of rule cannot be silently treated as a match.

// simRequest is one synthetic call.
type simRequest struct {
	// principal is the URI SAN of the client certificate; "" means the
	// client presents none.
	principal string
	method    string
	authority string
	path      string
}

// simResult is what the inbound side did with a request.
type simResult struct {
	connected bool // the TLS handshake succeeded
	routed    bool // a virtual host and route matched
	route     *routev3.Route
	allowed   bool // RBAC let the request through (what the caller sees)
	// shadowAllowed is what the shadow rules (audit mode) decided; it
	// equals allowed when the route has none.
	shadowAllowed bool
	hasShadow     bool
}

// simulateInbound evaluates req against an inbound (Envoy) or gRPC server
// listener.
func simulateInbound(t testing.TB, lis *listenerv3.Listener, req simRequest) simResult {
	t.Helper()
	if len(lis.GetFilterChains()) != 1 {
		t.Fatalf("listener %s: want one filter chain, have %d", lis.GetName(), len(lis.GetFilterChains()))
	}
	chain := lis.GetFilterChains()[0]
	var dtc tlsv3.DownstreamTlsContext
	unpack(t, chain.GetTransportSocket().GetTypedConfig(), &dtc)
	if dtc.GetRequireClientCertificate().GetValue() && req.principal == "" {
		return simResult{}
	}
	res := simResult{connected: true}
	hcm := listenerHCM(t, lis)
	route := findRoute(t, hcm.GetRouteConfig(), req)
	if route == nil {
		return res
	}
	res.routed, res.route = true, route

	var base *rbacfilterv3.RBAC
	for _, f := range hcm.GetHttpFilters() {
		if f.GetName() == wellknown.HTTPRoleBasedAccessControl {
			base = &rbacfilterv3.RBAC{}
			unpack(t, f.GetTypedConfig(), base)
		}
	}
	if base == nil {
		t.Fatalf("listener %s has no RBAC filter", lis.GetName())
	}
	cfg := base
	if a, ok := route.GetTypedPerFilterConfig()[wellknown.HTTPRoleBasedAccessControl]; ok {
		var per rbacfilterv3.RBACPerRoute
		unpack(t, a, &per)
		cfg = per.GetRbac() // nil: RBAC disabled for this route
	}
	res.allowed = evalRules(t, cfg.GetRules(), req)
	res.shadowAllowed = res.allowed
	if cfg.GetShadowRules() != nil {
		res.hasShadow = true
		res.shadowAllowed = evalRules(t, cfg.GetShadowRules(), req)
	}
	return res
}

// listenerHCM is the connection manager of a listener's only filter chain
// or of an API listener.
func listenerHCM(t testing.TB, lis *listenerv3.Listener) *hcmv3.HttpConnectionManager {
	t.Helper()
	var hcm hcmv3.HttpConnectionManager
	if api := lis.GetApiListener(); api != nil {
		unpack(t, api.GetApiListener(), &hcm)
		return &hcm
	}
	filters := lis.GetFilterChains()[0].GetFilters()
	if len(filters) != 1 || filters[0].GetName() != wellknown.HTTPConnectionManager {
		t.Fatalf("listener %s: want exactly the HTTP connection manager, have %v", lis.GetName(), filters)
	}
	unpack(t, filters[0].GetTypedConfig(), &hcm)
	return &hcm
}

// findRoute picks the virtual host the way Envoy does (exact domain, then
// the longest prefix wildcard "host:*" or suffix wildcard, then "*") and
// the first route whose prefix matches.
func findRoute(t testing.TB, rc *routev3.RouteConfiguration, req simRequest) *routev3.Route {
	t.Helper()
	authority := strings.ToLower(req.authority)
	var exact, wildcard, any *routev3.VirtualHost
	wildLen := 0
	for _, vh := range rc.GetVirtualHosts() {
		for _, d := range vh.GetDomains() {
			d = strings.ToLower(d)
			switch {
			case d == authority:
				exact = vh
			case d == "*":
				any = vh
			case strings.HasSuffix(d, "*") && strings.HasPrefix(authority, d[:len(d)-1]) && len(d) > wildLen:
				wildcard, wildLen = vh, len(d)
			case strings.HasPrefix(d, "*") && strings.HasSuffix(authority, d[1:]) && len(d) > wildLen:
				wildcard, wildLen = vh, len(d)
			}
		}
	}
	vh := exact
	if vh == nil {
		vh = wildcard
	}
	if vh == nil {
		vh = any
	}
	if vh == nil {
		return nil
	}
	path := req.path
	if path == "" {
		path = "/"
	}
	for _, r := range vh.GetRoutes() {
		p, ok := r.GetMatch().GetPathSpecifier().(*routev3.RouteMatch_Prefix)
		if !ok {
			t.Fatalf("route %s: the evaluator knows prefix matches only, not %T", r.GetName(), r.GetMatch().GetPathSpecifier())
		}
		if strings.HasPrefix(path, p.Prefix) {
			return r
		}
	}
	return nil
}

// evalRules is Envoy's RBAC engine: absent rules enforce nothing; ALLOW
// lets through what some policy matches, DENY what none matches.
func evalRules(t testing.TB, rules *rbacv3.RBAC, req simRequest) bool {
	t.Helper()
	if rules == nil {
		return true
	}
	matched := false
	for _, p := range rules.GetPolicies() {
		if policyMatches(t, p, req) {
			matched = true
		}
	}
	switch rules.GetAction() {
	case rbacv3.RBAC_ALLOW:
		return matched
	case rbacv3.RBAC_DENY:
		return !matched
	}
	t.Fatalf("RBAC action %v is not generated by this package", rules.GetAction())
	return false
}

func policyMatches(t testing.TB, p *rbacv3.Policy, req simRequest) bool {
	t.Helper()
	if p.GetCondition() != nil || p.GetCheckedCondition() != nil {
		t.Fatal("policy conditions are not generated by this package")
	}
	perm, princ := false, false
	for _, x := range p.GetPermissions() {
		perm = perm || permissionMatches(t, x, req)
	}
	for _, x := range p.GetPrincipals() {
		princ = princ || principalMatches(t, x, req)
	}
	return perm && princ
}

func permissionMatches(t testing.TB, p *rbacv3.Permission, req simRequest) bool {
	t.Helper()
	switch r := p.GetRule().(type) {
	case *rbacv3.Permission_Any:
		return r.Any
	case *rbacv3.Permission_Header:
		h := r.Header
		if h.GetInvertMatch() || h.GetName() != ":method" {
			t.Fatalf("header matcher %v is not generated by this package", h)
		}
		sm, ok := h.GetHeaderMatchSpecifier().(*routev3.HeaderMatcher_StringMatch)
		if !ok {
			t.Fatalf("header match %T is not generated by this package", h.GetHeaderMatchSpecifier())
		}
		return stringMatches(t, sm.StringMatch, req.method)
	case *rbacv3.Permission_OrRules:
		for _, x := range r.OrRules.GetRules() {
			if permissionMatches(t, x, req) {
				return true
			}
		}
		return false
	}
	t.Fatalf("permission %T is not generated by this package", p.GetRule())
	return false
}

func principalMatches(t testing.TB, p *rbacv3.Principal, req simRequest) bool {
	t.Helper()
	switch id := p.GetIdentifier().(type) {
	case *rbacv3.Principal_Any:
		return id.Any
	case *rbacv3.Principal_Authenticated_:
		if req.principal == "" {
			return false // no certificate, not authenticated
		}
		return stringMatches(t, id.Authenticated.GetPrincipalName(), req.principal)
	}
	t.Fatalf("principal %T is not generated by this package", p.GetIdentifier())
	return false
}

func stringMatches(t testing.TB, sm *matcherv3.StringMatcher, s string) bool {
	t.Helper()
	if sm.GetIgnoreCase() {
		t.Fatal("case-insensitive matchers are not generated by this package")
	}
	switch m := sm.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		return s == m.Exact
	case *matcherv3.StringMatcher_Prefix:
		return strings.HasPrefix(s, m.Prefix)
	case *matcherv3.StringMatcher_Suffix:
		return strings.HasSuffix(s, m.Suffix)
	}
	t.Fatalf("string matcher %T is not generated by this package", sm.GetMatchPattern())
	return false
}

func unpack(t testing.TB, a *anypb.Any, m proto.Message) {
	t.Helper()
	if a == nil {
		t.Fatalf("no %T where one was expected", m)
	}
	if err := a.UnmarshalTo(m); err != nil {
		t.Fatalf("unpack %s: %v", a.GetTypeUrl(), err)
	}
}
