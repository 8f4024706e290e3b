package xds

import (
	"maps"
	"path"
	"slices"
	"testing"
	"time"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
)

// testRole builds a role from permission strings in the SPEC §1 grammar.
func testRole(t testing.TB, id string, perms ...string) *role {
	t.Helper()
	r := &role{id: id}
	for _, p := range perms {
		perm, err := parsePermission(p)
		if err != nil {
			t.Fatal(err)
		}
		r.perms = append(r.perms, perm)
		r.scoped = r.scoped || perm.glob != ""
	}
	return r
}

func TestGrantOn(t *testing.T) {
	all := []string{"GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"}
	tests := []struct {
		name  string
		perms []string
		fn    string
		grpc  bool
		any   bool
		want  []string
	}{
		{name: "execute", perms: []string{"execute"}, fn: "f", any: true},
		{name: "star", perms: []string{"*"}, fn: "f", any: true},
		{name: "read", perms: []string{"read"}, fn: "f", want: []string{"GET", "HEAD", "OPTIONS"}},
		{name: "write", perms: []string{"write"}, fn: "f", want: []string{"POST", "PUT", "PATCH", "DELETE"}},
		{name: "read and write", perms: []string{"write", "read"}, fn: "f", want: all},
		{name: "read twice", perms: []string{"read", "read:f"}, fn: "f", want: []string{"GET", "HEAD", "OPTIONS"}},
		{name: "execute wins over read", perms: []string{"read", "execute:f"}, fn: "f", any: true},
		{name: "scoped execute matches", perms: []string{"execute:ml_*"}, fn: "ml_train", any: true},
		{name: "scoped execute does not match", perms: []string{"execute:ml_*"}, fn: "data_ml_x"},
		{name: "scoped star matches", perms: []string{"*:job_?"}, fn: "job_a", any: true},
		{name: "scoped star does not match a longer id", perms: []string{"*:job_?"}, fn: "job_ab"},
		{name: "scoped read matches", perms: []string{"read:report_*"}, fn: "report_daily", want: []string{"GET", "HEAD", "OPTIONS"}},
		{name: "scoped read does not match", perms: []string{"read:report_*"}, fn: "train_model"},
		{name: "scoped write by class", perms: []string{"write:job_[bg]"}, fn: "job_g", want: []string{"POST", "PUT", "PATCH", "DELETE"}},
		{name: "scoped write by class does not match", perms: []string{"write:job_[bg]"}, fn: "job_c"},
		{name: "only the matching scope counts", perms: []string{"read:a*", "write:b*"}, fn: "beta", want: []string{"POST", "PUT", "PATCH", "DELETE"}},
		{name: "exact id glob", perms: []string{"execute:train_model"}, fn: "train_model", any: true},
		{name: "no permissions", fn: "f"},
		{name: "gRPC: execute grants", perms: []string{"execute"}, fn: "f", grpc: true, any: true},
		{name: "gRPC: read grants nothing", perms: []string{"read"}, fn: "f", grpc: true},
		{name: "gRPC: write grants nothing (calls are POST, but only execute grants gRPC)", perms: []string{"write"}, fn: "f", grpc: true},
		{name: "gRPC: scoped execute", perms: []string{"read", "execute:predict_*"}, fn: "predict_online", grpc: true, any: true},
		{name: "gRPC: scoped execute elsewhere", perms: []string{"read", "execute:predict_*"}, fn: "train", grpc: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := grantOn(testRole(t, "r", tt.perms...), tt.fn, tt.grpc)
			if g.any != tt.any || !slices.Equal(g.methods(), tt.want) {
				t.Fatalf("grant = %+v, want any=%v methods=%v", g, tt.any, tt.want)
			}
		})
	}
	if g := grantOn(nil, "f", false); !g.empty() {
		t.Fatalf("a missing role grants %+v", g)
	}
}

// TestPermissionCoversLikePathMatch: the prefix fast path decides exactly
// as path.Match would.
func TestPermissionCoversLikePathMatch(t *testing.T) {
	globs := []string{"*", "ml_*", "ml_", "ml_*_x", "ml?*", "[a-m]*", "a\\*", "report_*", "*_f00?", "s0*", "ml_**"}
	ids := []string{"ml_train", "ml_", "ml", "mlx_", "report_daily", "a*", "ab", "s03_m01_f001", "x_f001", "ML_train"}
	for _, g := range globs {
		perm, err := parsePermission("execute:" + g)
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range ids {
			want, _ := path.Match(g, id)
			if got := perm.covers(id); got != want {
				t.Errorf("glob %q, id %q: covers=%v, path.Match=%v", g, id, got, want)
			}
		}
	}
	if perm, _ := parsePermission("execute:report_*"); !perm.hasPrefix {
		t.Error("a plain prefix glob does not take the fast path")
	}
}

// rbacFixture is a model with roles and two policies for one function.
type rbacFixture struct {
	model *Model
	fn    *function
}

func newRBACFixture(t testing.TB, svc, ep *policy, grpc bool, roles ...*role) rbacFixture {
	t.Helper()
	m := &Model{roles: map[string]*role{}, endpoints: map[string]*endpoint{}}
	for _, r := range roles {
		m.roles[r.id] = r
	}
	e := &endpoint{id: "ep", policy: ep, grpc: grpc, host: "127.0.0.1", port: 17000, workloadHost: "127.0.0.1", workloadPort: 8080}
	f := &function{id: "job_a", endpoint: e, service: svc, timeout: time.Minute}
	e.functions = []*function{f}
	m.endpoints[e.id] = e
	m.functions = []*function{f}
	return rbacFixture{model: m, fn: f}
}

func enforcePolicy(id string, roles ...string) *policy {
	slices.Sort(roles)
	return &policy{id: id, roles: roles}
}

func auditPolicy(id string, roles ...string) *policy {
	p := enforcePolicy(id, roles...)
	p.audit = true
	return p
}

func openPolicy(id string) *policy { return &policy{id: id, open: true} }

func TestRouteRBAC(t *testing.T) {
	roles := func(t testing.TB) []*role {
		return []*role{
			testRole(t, "exec", "execute"),
			testRole(t, "reader", "read"),
			testRole(t, "writer", "write:job_*"),
			testRole(t, "elsewhere", "execute:other_*"),
		}
	}
	type want struct {
		disabled bool     // RBACPerRoute without rules: RBAC off for the route
		allowAll bool     // enforced rules are the allow-all policy
		rules    []string // otherwise the enforced rules' policy names
		shadow   []string // nil: no shadow rules
	}
	tests := []struct {
		name    string
		svc, ep *policy
		grpc    bool
		mode    rbacMode
		want    want
	}{
		{name: "open and open", svc: openPolicy("o1"), ep: openPolicy("o2"), mode: rbacEnvoy, want: want{disabled: true}},
		{name: "one policy for both", svc: enforcePolicy("p", "exec", "reader", "writer", "elsewhere"), mode: rbacEnvoy,
			want: want{rules: []string{"role/exec", "role/reader", "role/writer"}}},
		{name: "enforce and enforce: intersection of roles", svc: enforcePolicy("s", "exec", "reader"), ep: enforcePolicy("e", "reader", "writer"), mode: rbacEnvoy,
			want: want{rules: []string{"role/reader"}}},
		{name: "disjoint roles deny everyone", svc: enforcePolicy("s", "exec"), ep: enforcePolicy("e", "writer"), mode: rbacEnvoy,
			want: want{rules: []string{}}},
		{name: "open service, enforcing endpoint", svc: openPolicy("s"), ep: enforcePolicy("e", "exec", "writer"), mode: rbacEnvoy,
			want: want{rules: []string{"role/exec", "role/writer"}}},
		{name: "enforcing service, open endpoint", svc: enforcePolicy("s", "reader"), ep: openPolicy("e"), mode: rbacEnvoy,
			want: want{rules: []string{"role/reader"}}},
		{name: "roles without a grant on the function are left out", svc: enforcePolicy("s", "elsewhere", "exec"), ep: openPolicy("e"), mode: rbacEnvoy,
			want: want{rules: []string{"role/exec"}}},
		{name: "audit: allow all, enforce rules in the shadow", svc: auditPolicy("s", "reader", "exec"), ep: openPolicy("e"), mode: rbacEnvoy,
			want: want{allowAll: true, shadow: []string{"role/exec", "role/reader"}}},
		{name: "audit and enforce: enforce live, both in the shadow", svc: auditPolicy("s", "reader"), ep: enforcePolicy("e", "reader", "exec"), mode: rbacEnvoy,
			want: want{rules: []string{"role/exec", "role/reader"}, shadow: []string{"role/reader"}}},
		{name: "gRPC endpoint on Envoy: only execute grants", svc: enforcePolicy("s", "exec", "reader", "writer"), grpc: true, mode: rbacEnvoy,
			want: want{rules: []string{"role/exec"}}},
		{name: "gRPC server: only execute grants", svc: enforcePolicy("s", "exec", "reader", "writer"), mode: rbacGRPC,
			want: want{rules: []string{"role/exec"}}},
		{name: "gRPC server, audit: nothing enforced, no shadow", svc: auditPolicy("s", "exec"), ep: openPolicy("e"), mode: rbacGRPC,
			want: want{disabled: true}},
		{name: "gRPC server, audit and enforce: enforce only", svc: auditPolicy("s", "reader"), ep: enforcePolicy("e", "exec", "reader"), mode: rbacGRPC,
			want: want{rules: []string{"role/exec"}}},
		{name: "gRPC server, open", svc: openPolicy("s"), ep: openPolicy("e"), mode: rbacGRPC, want: want{disabled: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ep := tt.ep
			if ep == nil {
				ep = tt.svc
			}
			fx := newRBACFixture(t, tt.svc, ep, tt.grpc, roles(t)...)
			per := fx.model.routeRBAC(testTrustDomain, fx.fn, tt.mode)
			if err := new(checker).validate(per); err != nil {
				t.Fatalf("invalid RBACPerRoute: %v", err)
			}
			if tt.want.disabled {
				if per.GetRbac() != nil {
					t.Fatalf("want RBAC disabled for the route, got %v", per)
				}
				return
			}
			rules := per.GetRbac().GetRules()
			if rules == nil || rules.GetAction() != rbacv3.RBAC_ALLOW {
				t.Fatalf("want ALLOW rules, got %v", per)
			}
			names := slices.Sorted(maps.Keys(rules.GetPolicies()))
			if tt.want.allowAll {
				if !slices.Equal(names, []string{rbacAllowAllPolicy}) {
					t.Fatalf("want the allow-all policy, got %v", names)
				}
			} else if !slices.Equal(names, tt.want.rules) && !(len(names) == 0 && len(tt.want.rules) == 0) {
				t.Fatalf("rules = %v, want %v", names, tt.want.rules)
			}
			shadow := per.GetRbac().GetShadowRules()
			if (shadow != nil) != (tt.want.shadow != nil) {
				t.Fatalf("shadow rules = %v, want %v", shadow, tt.want.shadow)
			}
			if shadow != nil {
				if got := slices.Sorted(maps.Keys(shadow.GetPolicies())); !slices.Equal(got, tt.want.shadow) {
					t.Fatalf("shadow = %v, want %v", got, tt.want.shadow)
				}
				if per.GetRbac().GetShadowRulesStatPrefix() == "" {
					t.Fatal("shadow rules without a stat prefix cannot be told apart in Envoy's stats")
				}
			}
		})
	}
}

// TestRouteRBACDecisions evaluates generated rules for synthetic requests:
// who gets through with which method, by exact role ID, by the role prefix
// of an endpoint's sidecar, and not by look-alikes.
func TestRouteRBACDecisions(t *testing.T) {
	roles := []*role{
		testRole(t, "ops", "execute:job_*"),
		testRole(t, "ops-admin", "*"),
		testRole(t, "reader", "read"),
		testRole(t, "writer", "write"),
	}
	fx := newRBACFixture(t, enforcePolicy("s", "ops", "reader", "writer"), enforcePolicy("e", "ops", "reader", "writer", "ops-admin"), false, roles...)
	per := fx.model.routeRBAC(testTrustDomain, fx.fn, rbacEnvoy)
	td := testTrustDomain
	tests := []struct {
		principal, method string
		allowed           bool
	}{
		{"spiffe://" + td + "/role/ops", "DELETE", true},
		{"spiffe://" + td + "/role/ops/endpoint/ingest", "POST", true}, // a sidecar whose workload calls in ops
		{"spiffe://" + td + "/role/ops-admin", "GET", false},           // not in the service's policy; and not "ops" by prefix
		{"spiffe://" + td + "/role/opsx", "GET", false},
		{"spiffe://" + td + "/role/ops-admin/endpoint/x", "GET", false},
		{"spiffe://" + td + "/endpoint/ops", "GET", false}, // a roleless sidecar holds no role
		{"spiffe://other.example/role/ops", "GET", false},
		{"spiffe://" + td + "/role/reader", "GET", true},
		{"spiffe://" + td + "/role/reader", "HEAD", true},
		{"spiffe://" + td + "/role/reader", "OPTIONS", true},
		{"spiffe://" + td + "/role/reader", "POST", false},
		{"spiffe://" + td + "/role/reader", "PURGE", false},
		{"spiffe://" + td + "/role/writer", "POST", true},
		{"spiffe://" + td + "/role/writer", "PUT", true},
		{"spiffe://" + td + "/role/writer", "PATCH", true},
		{"spiffe://" + td + "/role/writer", "DELETE", true},
		{"spiffe://" + td + "/role/writer", "GET", false},
		{"", "GET", false}, // no certificate
	}
	for _, tt := range tests {
		got := evalRules(t, per.GetRbac().GetRules(), simRequest{principal: tt.principal, method: tt.method})
		if got != tt.allowed {
			t.Errorf("%s %s: allowed=%v, want %v", tt.principal, tt.method, got, tt.allowed)
		}
	}
}

func TestMayCall(t *testing.T) {
	roles := []*role{
		testRole(t, "exec", "execute"),
		testRole(t, "reader", "read"),
		testRole(t, "scoped", "execute:other_*"),
		testRole(t, "empty"),
	}
	tests := []struct {
		name    string
		svc, ep *policy
		grpc    bool
		role    string
		want    bool
	}{
		{"open admits anyone", openPolicy("s"), openPolicy("e"), false, "empty", true},
		{"open admits no role", openPolicy("s"), openPolicy("e"), false, "", true},
		{"enforce: listed role with a grant", enforcePolicy("s", "exec"), enforcePolicy("e", "exec"), false, "exec", true},
		{"enforce: read is enough for HTTP", enforcePolicy("s", "reader"), enforcePolicy("e", "reader"), false, "reader", true},
		{"enforce: read is not enough for gRPC", enforcePolicy("s", "reader"), enforcePolicy("e", "reader"), true, "reader", false},
		{"enforce: a role with no grant on the function", enforcePolicy("s", "scoped"), enforcePolicy("e", "scoped"), false, "scoped", false},
		{"enforce: a listed role with no permissions", enforcePolicy("s", "empty"), enforcePolicy("e", "empty"), false, "empty", false},
		{"enforce: only the service lists the role", enforcePolicy("s", "exec"), enforcePolicy("e", "reader"), false, "exec", false},
		{"enforce: only the endpoint lists the role", enforcePolicy("s", "reader"), enforcePolicy("e", "exec"), false, "exec", false},
		{"enforce: no role", enforcePolicy("s", "exec"), enforcePolicy("e", "exec"), false, "", false},
		{"enforce: unknown role", enforcePolicy("s", "ghost"), enforcePolicy("e", "ghost"), false, "ghost", false},
		{"audit lets through", auditPolicy("s", "exec"), auditPolicy("e", "exec"), false, "empty", true},
		{"audit does not lift the other policy", auditPolicy("s"), enforcePolicy("e", "exec"), false, "reader", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fx := newRBACFixture(t, tt.svc, tt.ep, tt.grpc, roles...)
			if got := fx.model.mayCall(tt.role, fx.fn); got != tt.want {
				t.Fatalf("mayCall(%q) = %v, want %v", tt.role, got, tt.want)
			}
		})
	}
}

// TestRouteListsHaveOnlyItemRules pins what validating outbound route
// configurations by parts relies on: protoc-gen-validate has no rule on
// RouteConfiguration.virtual_hosts or VirtualHost.routes as lists (no
// minimum, maximum or uniqueness), so a configuration is valid exactly
// when its own fields and each item are.
func TestRouteListsHaveOnlyItemRules(t *testing.T) {
	vh := &routev3.VirtualHost{Name: "v", Domains: []string{"v.cryptomesh"}}
	route := &routev3.Route{Match: prefixMatch("/"), Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "c"}}}}
	for name, m := range map[string]allValidator{
		"no virtual hosts":       &routev3.RouteConfiguration{Name: "r"},
		"repeated virtual hosts": &routev3.RouteConfiguration{Name: "r", VirtualHosts: []*routev3.VirtualHost{vh, vh}},
		"many virtual hosts":     &routev3.RouteConfiguration{Name: "r", VirtualHosts: slices.Repeat([]*routev3.VirtualHost{vh}, 20_000)},
		"no routes":              &routev3.VirtualHost{Name: "v", Domains: []string{"*"}},
		"repeated routes":        &routev3.VirtualHost{Name: "v", Domains: []string{"*"}, Routes: []*routev3.Route{route, route}},
		"many routes":            &routev3.VirtualHost{Name: "v", Domains: []string{"*"}, Routes: slices.Repeat([]*routev3.Route{route}, 20_000)},
	} {
		if err := m.ValidateAll(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	// Items are still checked one by one.
	bad := &routev3.RouteConfiguration{Name: "r", VirtualHosts: []*routev3.VirtualHost{vh, {Name: "no domains"}}}
	if err := bad.ValidateAll(); err == nil {
		t.Error("a virtual host without domains passed")
	}
}

// TestModelGrantTable: the per-function table NewModel fills answers as
// grantOn does, for every role and function, HTTP and gRPC.
func TestModelGrantTable(t *testing.T) {
	m, err := NewModel(simRegistry(t, "authz").View())
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, f := range m.functions {
		if len(f.grants) != len(m.roleList) {
			t.Fatalf("%s: %d grants for %d roles", f.id, len(f.grants), len(m.roleList))
		}
		for _, r := range m.roleList {
			for _, grpc := range []bool{false, true} {
				if got, want := m.grant(r, f, grpc), grantOn(r, f.id, grpc); got != want {
					t.Errorf("%s on %s (grpc %v): table %+v, grantOn %+v", r.id, f.id, grpc, got, want)
				}
				checked++
			}
		}
	}
	if checked == 0 {
		t.Fatal("nothing checked")
	}
}
