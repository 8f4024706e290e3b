// Package idreg keeps the identity facts that live in the registry: the
// durable record of every join token minted (the revocation list, SPEC §4)
// and the endpoint roles that turn an endpoint binding into a SPIFFE ID. It
// adapts the registry to the small interfaces package identity declares
// (identity.Revocations, identity.EndpointRoles), so that the token
// authority, the API and the xDS server all read the same records.
//
// The records are the registry's internal kind registry.KindJoinToken: every
// replica sharing a store sees a revocation as soon as it is committed, and a
// record survives restarts like any other write. A token whose record is
// missing is refused, as is a revoked one: the list fails closed.
package idreg

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/cryptomesh/cryptomesh/identity"
	"github.com/cryptomesh/cryptomesh/registry"
)

// ErrNoRecord reports a join token the registry holds no record of: never
// minted by this control plane's store, or swept after expiring.
var ErrNoRecord = errors.New("no record of the join token")

// Store reads and writes join-token records and endpoint roles.
type Store struct {
	reg *registry.Registry
}

var (
	_ identity.Revocations   = (*Store)(nil)
	_ identity.EndpointRoles = (*Store)(nil)
)

// New returns the store over reg.
func New(reg *registry.Registry) (*Store, error) {
	if reg == nil {
		return nil, errors.New("idreg: no registry")
	}
	return &Store{reg: reg}, nil
}

// IsRevoked implements identity.Revocations: a revoked record answers true,
// a missing one an error wrapping ErrNoRecord (both refuse the token).
func (s *Store) IsRevoked(ctx context.Context, jti string) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, fmt.Errorf("check join token %s: %w", jti, err)
	}
	rec, ok := s.Get(jti)
	if !ok {
		return false, fmt.Errorf("%w %s: it was not minted here or has expired and been swept", ErrNoRecord, jti)
	}
	return rec.Revoked, nil
}

// EndpointRole implements identity.EndpointRoles: the role endpoint acts in
// now ("" when it has none), or an error when the endpoint does not exist.
func (s *Store) EndpointRole(ctx context.Context, endpoint string) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("look up endpoint %s: %w", endpoint, err)
	}
	o := s.reg.View().Object(registry.KindEndpoint, endpoint)
	if o == nil {
		return "", fmt.Errorf("endpoint '%s' does not exist (any more)", endpoint)
	}
	ep, ok := o.Value.(*registry.Endpoint)
	if !ok {
		return "", fmt.Errorf("endpoint '%s': stored as %T", endpoint, o.Value)
	}
	return ep.Role, nil
}

// CheckBinding reports whether the endpoint or role a binding names exists,
// as a *registry.Error (CodeInvalid, naming the field "endpoint" or "role")
// when it does not: a token for something that does not exist would
// authenticate a node that can be issued nothing.
func (s *Store) CheckBinding(b identity.Binding) error {
	k, field := registry.KindRole, "role"
	if b.Kind == identity.BindEndpoint {
		k, field = registry.KindEndpoint, "endpoint"
	}
	if s.reg.View().Object(k, b.Name) == nil {
		return &registry.Error{Code: registry.CodeInvalid, Message: "the binding names nothing that exists",
			Fields: []registry.FieldError{{Field: field, Message: fmt.Sprintf("%s '%s' does not exist", k.Singular(), b.Name)}}}
	}
	return nil
}

// Add stores the record of a freshly minted token. The token may only be
// handed out once this has returned nil: until its record is durable, the
// token would be refused.
func (s *Store) Add(ctx context.Context, rec identity.TokenRecord) error {
	body := map[string]any{
		"jti":        rec.JTI,
		"node":       rec.Node,
		"issued_at":  rec.IssuedAt.UTC().Format(time.RFC3339),
		"expires_at": rec.ExpiresAt.UTC().Format(time.RFC3339),
		"revoked":    rec.Revoked,
	}
	if rec.Endpoint != "" {
		body["endpoint"] = rec.Endpoint
	}
	if rec.Role != "" {
		body["role"] = rec.Role
	}
	if _, err := s.reg.Do(ctx, registry.Op{Type: registry.OpCreate, Kind: registry.KindJoinToken, Body: body}); err != nil {
		return fmt.Errorf("record join token %s: %w", rec.JTI, err)
	}
	return nil
}

// Revoke marks a token revoked; every later use is refused. Revoking twice
// is not an error. An unknown jti is a registry not-found error.
func (s *Store) Revoke(ctx context.Context, jti string) error {
	if rec, ok := s.Get(jti); ok && rec.Revoked {
		return nil
	}
	_, err := s.reg.Do(ctx, registry.Op{Type: registry.OpUpdate, Kind: registry.KindJoinToken, ID: jti,
		Body: map[string]any{"revoked": true}})
	if err != nil {
		return fmt.Errorf("revoke join token %s: %w", jti, err)
	}
	return nil
}

// Get returns the record of jti.
func (s *Store) Get(jti string) (identity.TokenRecord, bool) {
	o := s.reg.View().Object(registry.KindJoinToken, jti)
	if o == nil {
		return identity.TokenRecord{}, false
	}
	jt, ok := o.Value.(*registry.JoinToken)
	if !ok {
		return identity.TokenRecord{}, false
	}
	return toRecord(jt), true
}

// Records lists every record, oldest first (by issue time, then jti).
func (s *Store) Records() []identity.TokenRecord {
	var out []identity.TokenRecord
	for o := range s.reg.View().All(registry.KindJoinToken) {
		if jt, ok := o.Value.(*registry.JoinToken); ok {
			out = append(out, toRecord(jt))
		}
	}
	slices.SortFunc(out, func(a, b identity.TokenRecord) int {
		if c := a.IssuedAt.Compare(b.IssuedAt); c != 0 {
			return c
		}
		return strings.Compare(a.JTI, b.JTI)
	})
	return out
}

// Sweep deletes the records of tokens that expired at or before now,
// revoked or not (an expired token is refused on its exp claim alone, so its
// record no longer matters), and returns how many it deleted. Records a
// concurrent sweep of another replica already deleted are not an error.
func (s *Store) Sweep(ctx context.Context, now time.Time) (int, error) {
	var ops []registry.Op
	for _, rec := range s.Records() {
		if !now.Before(rec.ExpiresAt) {
			ops = append(ops, registry.Op{Type: registry.OpDelete, Kind: registry.KindJoinToken, ID: rec.JTI})
		}
	}
	if len(ops) == 0 {
		return 0, nil
	}
	results, err := s.reg.DoEach(ctx, ops...)
	if err != nil {
		return 0, fmt.Errorf("sweep expired join tokens: %w", err)
	}
	n := 0
	for _, r := range results {
		switch {
		case r.Err == nil:
			n++
		case registry.CodeOf(r.Err) != registry.CodeNotFound:
			return n, fmt.Errorf("sweep expired join tokens: %w", r.Err)
		}
	}
	return n, nil
}

// toRecord converts the registry's entity. Timestamps were validated as
// RFC 3339 when written; a value that does not parse reads as the zero time,
// which Sweep treats as expired.
func toRecord(jt *registry.JoinToken) identity.TokenRecord {
	issued, _ := time.Parse(time.RFC3339, jt.IssuedAt)
	expires, _ := time.Parse(time.RFC3339, jt.ExpiresAt)
	return identity.TokenRecord{
		JTI: jt.JTI, Node: jt.Node, Endpoint: jt.Endpoint, Role: jt.Role,
		IssuedAt: issued.UTC(), ExpiresAt: expires.UTC(), Revoked: jt.Revoked,
	}
}
