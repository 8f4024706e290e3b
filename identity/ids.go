// Package identity owns CryptoMesh's workload identities (SPEC §4): the SPIFFE
// IDs derived from roles and endpoints, the built-in certificate authority that
// signs X.509-SVIDs and rotates its roots, the join tokens that enrol nodes,
// the mapping from a presented credential to what that node may be issued,
// the identity metrics, and the SPIRE Workload API alternative to the
// built-in CA. The node-side agent that keeps SVID files fresh lives in the
// agent subpackage.
//
// The package knows nothing about the registry: where it needs registry facts
// (an endpoint's role, the revocation list) it asks through small interfaces
// declared next to their use.
package identity

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// DefaultTrustDomain is the trust domain used when --trust-domain is not given.
const DefaultTrustDomain = "cryptomesh.local"

// Path segments of the IDs in SPEC §4.
const (
	segRole         = "role"
	segEndpoint     = "endpoint"
	segControlPlane = "control-plane"
)

// nameRE is the registry's id grammar (SPEC §1). Node names follow it too
// because they travel as xDS node ids and JWT subjects. Every name it accepts
// is also a valid SPIFFE path segment, and "." or ".." cannot occur because a
// name starts with a letter or digit.
var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// ErrInvalidName reports a node, role or endpoint name outside the id grammar.
var ErrInvalidName = errors.New("invalid name")

// ErrNotNodeID reports a SPIFFE ID that is not of a shape a node may hold.
var ErrNotNodeID = errors.New("not a node SPIFFE ID")

// ValidateName checks a node, role or endpoint name against the id grammar.
func ValidateName(kind, name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("%w: %s %q must be 1-128 characters of A-Z a-z 0-9 . _ - starting with a letter or digit", ErrInvalidName, kind, name)
	}
	return nil
}

// RoleID is the ID of a node that calls in role R: spiffe://<td>/role/<R>.
func RoleID(td spiffeid.TrustDomain, role string) (spiffeid.ID, error) {
	if err := ValidateName("role", role); err != nil {
		return spiffeid.ID{}, err
	}
	return spiffeid.FromSegments(td, segRole, role)
}

// EndpointID is the ID of the sidecar (or gRPC server) of endpoint E:
// spiffe://<td>/role/<R>/endpoint/<E> when E has role R, else
// spiffe://<td>/endpoint/<E>. The role prefix lets RBAC match a role by
// prefix, and the fixed suffix lets clients check a server by /endpoint/<E>.
func EndpointID(td spiffeid.TrustDomain, endpoint, role string) (spiffeid.ID, error) {
	if err := ValidateName("endpoint", endpoint); err != nil {
		return spiffeid.ID{}, err
	}
	if role == "" {
		return spiffeid.FromSegments(td, segEndpoint, endpoint)
	}
	if err := ValidateName("role", role); err != nil {
		return spiffeid.ID{}, err
	}
	return spiffeid.FromSegments(td, segRole, role, segEndpoint, endpoint)
}

// ControlPlaneID is the control plane's own ID, spiffe://<td>/control-plane.
// It is reserved: no node can ever be issued it.
func ControlPlaneID(td spiffeid.TrustDomain) spiffeid.ID {
	id, err := spiffeid.FromSegments(td, segControlPlane)
	if err != nil {
		// The segment is a constant that is always valid and td was already
		// validated by its constructor, so this cannot happen.
		panic(fmt.Sprintf("identity: control-plane ID for %q: %v", td, err))
	}
	return id
}

// BindingKind says what a node is bound to.
type BindingKind string

const (
	// BindEndpoint binds a node to an endpoint: it is that endpoint's sidecar.
	BindEndpoint BindingKind = "endpoint"
	// BindRole binds a node to a role: it is a client calling in that role.
	BindRole BindingKind = "role"
)

// Binding is what a node is bound to, which decides its SPIFFE ID. For an
// endpoint binding the endpoint's role is registry state that can change after
// the binding was made (a join token names only the endpoint), so the caller
// looks it up and fills EndpointRole before asking for the ID.
type Binding struct {
	Kind BindingKind
	// Name is the endpoint id or the role id.
	Name string
	// EndpointRole is the role of the bound endpoint ("" when it has none);
	// always empty for role bindings.
	EndpointRole string
}

// EndpointBinding binds a node to endpoint E, whose current role is role.
func EndpointBinding(endpoint, role string) Binding {
	return Binding{Kind: BindEndpoint, Name: endpoint, EndpointRole: role}
}

// RoleBinding binds a node to role R.
func RoleBinding(role string) Binding {
	return Binding{Kind: BindRole, Name: role}
}

// Validate checks the kind and the names.
func (b Binding) Validate() error {
	switch b.Kind {
	case BindEndpoint:
		if err := ValidateName("endpoint", b.Name); err != nil {
			return err
		}
		if b.EndpointRole != "" {
			return ValidateName("role", b.EndpointRole)
		}
		return nil
	case BindRole:
		if b.EndpointRole != "" {
			return fmt.Errorf("%w: a role binding has no endpoint role", ErrInvalidName)
		}
		return ValidateName("role", b.Name)
	default:
		return fmt.Errorf("%w: binding kind %q is neither %q nor %q", ErrInvalidName, b.Kind, BindEndpoint, BindRole)
	}
}

// ID is the SPIFFE ID a node with this binding holds in trust domain td.
func (b Binding) ID(td spiffeid.TrustDomain) (spiffeid.ID, error) {
	if err := b.Validate(); err != nil {
		return spiffeid.ID{}, err
	}
	if b.Kind == BindEndpoint {
		return EndpointID(td, b.Name, b.EndpointRole)
	}
	return RoleID(td, b.Name)
}

// String is "endpoint:E" or "role:R", for logs and errors.
func (b Binding) String() string {
	return string(b.Kind) + ":" + b.Name
}

// BindingFromID is the inverse of Binding.ID: it recovers the binding a node
// SPIFFE ID stands for. The control plane's ID and any other shape are refused
// with ErrNotNodeID.
func BindingFromID(td spiffeid.TrustDomain, id spiffeid.ID) (Binding, error) {
	if !id.MemberOf(td) {
		return Binding{}, fmt.Errorf("%w: %s is not in trust domain %s", ErrNotNodeID, id, td)
	}
	segs := strings.Split(strings.TrimPrefix(id.Path(), "/"), "/")
	var b Binding
	switch {
	case len(segs) == 2 && segs[0] == segRole:
		b = RoleBinding(segs[1])
	case len(segs) == 2 && segs[0] == segEndpoint:
		b = EndpointBinding(segs[1], "")
	case len(segs) == 4 && segs[0] == segRole && segs[2] == segEndpoint:
		b = EndpointBinding(segs[3], segs[1])
	default:
		return Binding{}, fmt.Errorf("%w: %s is neither /role/R, /endpoint/E nor /role/R/endpoint/E", ErrNotNodeID, id)
	}
	if err := b.Validate(); err != nil {
		return Binding{}, fmt.Errorf("%w: %s: %w", ErrNotNodeID, id, err)
	}
	return b, nil
}
