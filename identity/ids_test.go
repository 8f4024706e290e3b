package identity

import (
	"errors"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func TestIDs(t *testing.T) {
	tests := []struct {
		name    string
		binding Binding
		want    string
		wantErr bool
	}{
		{"role", RoleBinding("ml"), "spiffe://cryptomesh.local/role/ml", false},
		{"endpoint with role", EndpointBinding("gpu-1", "trainer"), "spiffe://cryptomesh.local/role/trainer/endpoint/gpu-1", false},
		{"endpoint without role", EndpointBinding("gpu-1", ""), "spiffe://cryptomesh.local/endpoint/gpu-1", false},
		{"dots and underscores", RoleBinding("a.b_c-1"), "spiffe://cryptomesh.local/role/a.b_c-1", false},
		{"empty role", RoleBinding(""), "", true},
		{"slash in name", RoleBinding("a/b"), "", true},
		{"leading dot", EndpointBinding(".x", ""), "", true},
		{"dot-dot", RoleBinding(".."), "", true},
		{"bad endpoint role", EndpointBinding("e", "r r"), "", true},
		{"role binding with endpoint role", Binding{Kind: BindRole, Name: "r", EndpointRole: "x"}, "", true},
		{"unknown kind", Binding{Kind: "node", Name: "n"}, "", true},
		{"too long", RoleBinding(string(make([]byte, 129))), "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := tt.binding.ID(testTD)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("ID() = %s, want error", id)
				}
				return
			}
			if err != nil {
				t.Fatalf("ID(): %v", err)
			}
			if id.String() != tt.want {
				t.Fatalf("ID() = %s, want %s", id, tt.want)
			}
			back, err := BindingFromID(testTD, id)
			if err != nil {
				t.Fatalf("BindingFromID(%s): %v", id, err)
			}
			if back != tt.binding {
				t.Fatalf("BindingFromID(%s) = %+v, want %+v", id, back, tt.binding)
			}
		})
	}
}

func TestControlPlaneIDIsNoNodeID(t *testing.T) {
	cp := ControlPlaneID(testTD)
	if cp.String() != "spiffe://cryptomesh.local/control-plane" {
		t.Fatalf("ControlPlaneID = %s", cp)
	}
	for _, s := range []string{
		"spiffe://cryptomesh.local/control-plane",
		"spiffe://other.local/role/ml",
		"spiffe://cryptomesh.local/role/ml/extra",
		"spiffe://cryptomesh.local/endpoint/e/role/r",
		"spiffe://cryptomesh.local/role",
		"spiffe://cryptomesh.local",
	} {
		if b, err := BindingFromID(testTD, spiffeid.RequireFromString(s)); !errors.Is(err, ErrNotNodeID) {
			t.Errorf("BindingFromID(%s) = %+v, %v; want ErrNotNodeID", s, b, err)
		}
	}
}

func TestMatchers(t *testing.T) {
	id := func(s string) spiffeid.ID { return spiffeid.RequireFromString("spiffe://cryptomesh.local" + s) }
	tests := []struct {
		name    string
		matcher spiffeid.Matcher
		id      spiffeid.ID
		ok      bool
	}{
		{"role exact", RoleMatcher(testTD, "ml"), id("/role/ml"), true},
		{"role endpoint under it", RoleMatcher(testTD, "ml"), id("/role/ml/endpoint/e1"), true},
		{"role name prefix is not the role", RoleMatcher(testTD, "ml"), id("/role/ml2"), false},
		{"other role", RoleMatcher(testTD, "ml"), id("/role/admin"), false},
		{"role in other trust domain", RoleMatcher(testTD, "ml"), spiffeid.RequireFromString("spiffe://evil.local/role/ml"), false},
		{"endpoint without role", EndpointMatcher(testTD, "e1"), id("/endpoint/e1"), true},
		{"endpoint with role", EndpointMatcher(testTD, "e1"), id("/role/ml/endpoint/e1"), true},
		{"other endpoint", EndpointMatcher(testTD, "e1"), id("/endpoint/e10"), false},
		{"role is no endpoint", EndpointMatcher(testTD, "e1"), id("/role/e1"), false},
		{"endpoint in other trust domain", EndpointMatcher(testTD, "e1"), spiffeid.RequireFromString("spiffe://evil.local/endpoint/e1"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.matcher(tt.id); (err == nil) != tt.ok {
				t.Fatalf("matcher(%s) = %v, want ok=%v", tt.id, err, tt.ok)
			}
		})
	}
}
