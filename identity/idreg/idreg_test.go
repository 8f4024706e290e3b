package idreg_test

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/cryptomesh/cryptomesh/identity"
	"github.com/cryptomesh/cryptomesh/identity/idreg"
	"github.com/cryptomesh/cryptomesh/registry"
	"github.com/cryptomesh/cryptomesh/registry/store/memstore"
)

func newStore(t *testing.T) (*idreg.Store, *registry.Registry) {
	t.Helper()
	reg, err := registry.Open(context.Background(), memstore.New(), registry.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Close() })
	s, err := idreg.New(reg)
	if err != nil {
		t.Fatal(err)
	}
	return s, reg
}

func create(t *testing.T, reg *registry.Registry, k registry.Kind, body map[string]any) {
	t.Helper()
	if _, err := reg.Do(context.Background(), registry.Op{Type: registry.OpCreate, Kind: k, Body: body}); err != nil {
		t.Fatal(err)
	}
}

func TestRecordsAndRevocation(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	recs := []identity.TokenRecord{
		{JTI: "b", Node: "n2", Role: "r1", IssuedAt: now, ExpiresAt: now.Add(time.Hour)},
		{JTI: "a", Node: "n1", Endpoint: "e1", IssuedAt: now, ExpiresAt: now.Add(time.Hour)},
		{JTI: "c", Node: "n1", Endpoint: "e1", IssuedAt: now.Add(-time.Hour), ExpiresAt: now.Add(time.Hour)},
	}
	for _, r := range recs {
		if err := s.Add(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Add(ctx, recs[0]); registry.CodeOf(err) != registry.CodeConflict {
		t.Errorf("adding a jti twice: %v, want a conflict", err)
	}
	var order []string
	for _, r := range s.Records() {
		order = append(order, r.JTI)
	}
	if !slices.Equal(order, []string{"c", "a", "b"}) {
		t.Errorf("records in order %v, want oldest first then by jti", order)
	}
	if got, _ := s.Get("b"); got != recs[0] {
		t.Errorf("record %+v, want %+v", got, recs[0])
	}

	tests := []struct {
		name    string
		jti     string
		revoked bool
		err     error
	}{
		{"recorded", "a", false, nil},
		{"unknown fails closed", "zzz", false, idreg.ErrNoRecord},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			revoked, err := s.IsRevoked(ctx, tt.jti)
			if revoked != tt.revoked || !errors.Is(err, tt.err) {
				t.Errorf("IsRevoked(%s) = %v, %v; want %v, %v", tt.jti, revoked, err, tt.revoked, tt.err)
			}
		})
	}
	for range 2 { // revoking twice is fine
		if err := s.Revoke(ctx, "a"); err != nil {
			t.Fatal(err)
		}
	}
	if revoked, err := s.IsRevoked(ctx, "a"); !revoked || err != nil {
		t.Errorf("after Revoke: %v, %v", revoked, err)
	}
	if err := s.Revoke(ctx, "zzz"); registry.CodeOf(err) != registry.CodeNotFound {
		t.Errorf("revoking an unknown jti: %v, want not found", err)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.IsRevoked(cancelled, "b"); err == nil {
		t.Error("IsRevoked answered for a cancelled context")
	}
}

// TestSweep: records of expired tokens go, revoked or not; unexpired ones
// stay, revoked or not, so a revocation lasts as long as its token.
func TestSweep(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	add := func(jti string, expires time.Time, revoked bool) {
		t.Helper()
		if err := s.Add(ctx, identity.TokenRecord{JTI: jti, Node: "n", Role: "r", IssuedAt: now.Add(-48 * time.Hour), ExpiresAt: expires}); err != nil {
			t.Fatal(err)
		}
		if revoked {
			if err := s.Revoke(ctx, jti); err != nil {
				t.Fatal(err)
			}
		}
	}
	add("expired", now.Add(-time.Hour), false)
	add("expired-revoked", now.Add(-time.Hour), true)
	add("expires-now", now, false)
	add("live", now.Add(time.Hour), false)
	add("live-revoked", now.Add(time.Hour), true)

	n, err := s.Sweep(ctx, now)
	if err != nil || n != 3 {
		t.Fatalf("Sweep = %d, %v; want 3", n, err)
	}
	var left []string
	for _, r := range s.Records() {
		left = append(left, r.JTI)
	}
	slices.Sort(left)
	if !slices.Equal(left, []string{"live", "live-revoked"}) {
		t.Errorf("left %v", left)
	}
	if revoked, _ := s.IsRevoked(ctx, "live-revoked"); !revoked {
		t.Error("a revoked, unexpired record lost its revocation")
	}
	if n, err := s.Sweep(ctx, now); n != 0 || err != nil {
		t.Errorf("second Sweep = %d, %v", n, err)
	}
}

func TestEndpointRolesAndBindings(t *testing.T) {
	ctx := context.Background()
	s, reg := newStore(t)
	create(t, reg, registry.KindRole, map[string]any{"role_id": "r1", "name": "r1"})
	create(t, reg, registry.KindSecurityPolicy, map[string]any{"sp_id": "p1", "requires_authentication": false})
	create(t, reg, registry.KindEndpoint, map[string]any{"endpoint_id": "e1", "security_policy": "p1"})
	create(t, reg, registry.KindEndpoint, map[string]any{"endpoint_id": "e2", "security_policy": "p1", "role": "r1"})

	tests := []struct {
		endpoint, role string
		ok             bool
	}{
		{"e1", "", true},
		{"e2", "r1", true},
		{"e9", "", false},
	}
	for _, tt := range tests {
		role, err := s.EndpointRole(ctx, tt.endpoint)
		if role != tt.role || (err == nil) != tt.ok {
			t.Errorf("EndpointRole(%s) = %q, %v", tt.endpoint, role, err)
		}
	}

	bindings := []struct {
		b     identity.Binding
		field string // "" when it exists
	}{
		{identity.EndpointBinding("e1", ""), ""},
		{identity.RoleBinding("r1"), ""},
		{identity.EndpointBinding("e9", ""), "endpoint"},
		{identity.RoleBinding("r9"), "role"},
		{identity.EndpointBinding("r1", ""), "endpoint"},
	}
	for _, tt := range bindings {
		err := s.CheckBinding(tt.b)
		var re *registry.Error
		switch {
		case tt.field == "" && err != nil:
			t.Errorf("CheckBinding(%s): %v", tt.b, err)
		case tt.field != "" && (!errors.As(err, &re) || re.Code != registry.CodeInvalid || re.Fields[0].Field != tt.field):
			t.Errorf("CheckBinding(%s) = %v, want an invalid %s", tt.b, err, tt.field)
		}
	}
}
