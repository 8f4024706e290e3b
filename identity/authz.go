package identity

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// ErrInvalidSVID reports a client certificate chain that is not a valid node
// SVID of this trust domain (401 for the API).
var ErrInvalidSVID = errors.New("invalid client SVID")

// EndpointRoles looks up an endpoint's current role in the registry ("" when
// it has none, an error when the endpoint does not exist). An endpoint binding
// maps to an ID only through it, so a role change takes effect at the node's
// next renewal.
type EndpointRoles interface {
	EndpointRole(ctx context.Context, endpoint string) (string, error)
}

// NodeCredential is an authenticated node: what it is bound to and the one
// SPIFFE ID it may hold. Node is empty when the node authenticated with an
// SVID, which names a binding, not a node.
type NodeCredential struct {
	Node     string
	Binding  Binding
	SPIFFEID spiffeid.ID
}

// Authenticator turns presented credentials (a join token or an SVID client
// certificate chain) into NodeCredentials.
type Authenticator struct {
	td      spiffeid.TrustDomain
	tokens  *TokenAuthority
	bundles x509bundle.Source
	roles   EndpointRoles
	opts    *options
}

// NewAuthenticator wires the token authority, the bundle to verify client
// SVIDs against (the CA, or SPIRE's source) and the endpoint-role lookup.
func NewAuthenticator(tokens *TokenAuthority, bundles x509bundle.Source, roles EndpointRoles, opts ...Option) (*Authenticator, error) {
	if tokens == nil || bundles == nil || roles == nil {
		return nil, errors.New("authenticator: token authority, bundle source and endpoint roles are required")
	}
	o, err := newOptions(opts)
	if err != nil {
		return nil, err
	}
	return &Authenticator{td: o.trustDomain, tokens: tokens, bundles: bundles, roles: roles, opts: o}, nil
}

// FromToken authenticates a join token (verified and checked against the
// revocation list) and resolves its binding to a SPIFFE ID.
func (a *Authenticator) FromToken(ctx context.Context, token string) (NodeCredential, error) {
	claims, err := a.tokens.Verify(ctx, token)
	if err != nil {
		return NodeCredential{}, err
	}
	cred, err := a.resolve(ctx, claims.Binding)
	if err != nil {
		return NodeCredential{}, fmt.Errorf("token %s of node %s: %w", claims.JTI, claims.Node, err)
	}
	cred.Node = claims.Node
	return cred, nil
}

// FromCertificates authenticates a client certificate chain (leaf first) as a
// node SVID: it must verify against the bundle at the clock's time and carry
// a node ID; the control plane's own ID is not a node credential.
func (a *Authenticator) FromCertificates(ctx context.Context, chain []*x509.Certificate) (NodeCredential, error) {
	id, _, err := x509svid.Verify(chain, a.bundles, x509svid.WithTime(a.opts.clock()))
	if err != nil {
		return NodeCredential{}, fmt.Errorf("%w: %w", ErrInvalidSVID, err)
	}
	b, err := BindingFromID(a.td, id)
	if err != nil {
		return NodeCredential{}, fmt.Errorf("%w: %w", ErrInvalidSVID, err)
	}
	cred, err := a.resolve(ctx, b)
	if err != nil {
		return NodeCredential{}, fmt.Errorf("SVID %s: %w", id, err)
	}
	return cred, nil
}

// resolve fills an endpoint binding's current role and derives the ID. For an
// SVID the role in its path may be stale; the binding (the endpoint) is what
// the node is, so it gets the endpoint's current ID.
func (a *Authenticator) resolve(ctx context.Context, b Binding) (NodeCredential, error) {
	if b.Kind == BindEndpoint {
		role, err := a.roles.EndpointRole(ctx, b.Name)
		if err != nil {
			return NodeCredential{}, fmt.Errorf("look up role of endpoint %s: %w", b.Name, err)
		}
		b.EndpointRole = role
	}
	id, err := b.ID(a.td)
	if err != nil {
		return NodeCredential{}, fmt.Errorf("binding %s: %w", b, err)
	}
	return NodeCredential{Binding: b, SPIFFEID: id}, nil
}

// MayIssue reports whether a node with cred may be issued requested: only its
// own ID, and never the control plane's.
func MayIssue(cred NodeCredential, requested spiffeid.ID) bool {
	if cred.SPIFFEID.IsZero() || requested != cred.SPIFFEID {
		return false
	}
	return requested != ControlPlaneID(requested.TrustDomain())
}

// RoleMatcher matches the IDs that act in role: the role's own ID and every
// endpoint ID under it (spiffe://<td>/role/<R>/...), as RBAC principals do.
// A plain string prefix would let role "ml" match "ml2"; the separator is
// part of the prefix for that reason.
func RoleMatcher(td spiffeid.TrustDomain, role string) spiffeid.Matcher {
	return func(id spiffeid.ID) error {
		want, err := RoleID(td, role)
		if err != nil {
			return err
		}
		if id == want || (id.MemberOf(td) && strings.HasPrefix(id.Path(), want.Path()+"/")) {
			return nil
		}
		return fmt.Errorf("%s does not act in role %s", id, role)
	}
}

// EndpointMatcher matches the server identity of endpoint E by the suffix
// /endpoint/<E> (whatever E's role), as clients check servers.
func EndpointMatcher(td spiffeid.TrustDomain, endpoint string) spiffeid.Matcher {
	return func(id spiffeid.ID) error {
		b, err := BindingFromID(td, id)
		if err != nil {
			return err
		}
		if b.Kind != BindEndpoint || b.Name != endpoint {
			return fmt.Errorf("%s is not endpoint %s", id, endpoint)
		}
		return nil
	}
}
