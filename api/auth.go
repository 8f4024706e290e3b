package api

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Authenticator turns the credential of a request into a Principal.
//
// It returns an error wrapping ErrUnauthenticated when the request carries
// no credential it recognises (none at all, not its kind, or a bad one);
// the server then asks the next Authenticator, and answers 401 when none
// accepts the request. Any other error means the Authenticator could not
// decide (a backend is down) and is answered 503.
type Authenticator interface {
	Authenticate(r *http.Request) (Principal, error)
}

// ErrUnauthenticated is wrapped by Authenticators that do not accept a
// request's credential.
var ErrUnauthenticated = errors.New("unauthenticated")

// PrincipalKind says what sort of caller a Principal is.
type PrincipalKind int

// Principal kinds. The zero value is no kind at all and may do nothing, so
// a Principal that an Authenticator forgot to fill in fails closed.
const (
	// PrincipalAdmin may call everything.
	PrincipalAdmin PrincipalKind = iota + 1
	// PrincipalNode is a proxy or gRPC node bound to one endpoint or one
	// role (SPEC §4); it may only report for, and get identities of, its
	// own binding.
	PrincipalNode
)

// Principal is an authenticated caller. Handlers never look at the
// credential, only at the Principal, so new credential types (join
// tokens, client certificates) add Authenticators, not handler code.
type Principal struct {
	Kind PrincipalKind
	// Name identifies the caller in logs ("admin", or the node's name). It
	// must never be a secret.
	Name string
	// Endpoint and Role are a node's binding; at most one is set.
	Endpoint string
	Role     string
	// SPIFFEID is the one identity a node may be issued (SPEC §4); zero
	// for administrators.
	SPIFFEID spiffeid.ID
	// Credential says what the caller authenticated with, for logs and
	// answers: CredentialAdminToken, CredentialJoinToken or CredentialSVID.
	Credential string
}

// What a Principal authenticated with.
const (
	CredentialAdminToken = "admin-token"
	CredentialJoinToken  = "join-token"
	CredentialSVID       = "svid"
)

// access is who may call one method of one route.
type access int

const (
	// accessPublic needs no credential: probes, metrics.
	accessPublic access = iota + 1
	// accessAdmin is for administrators only.
	accessAdmin
	// accessNode is for administrators and nodes; the handler then decides
	// what a node may touch (its own endpoint's functions).
	accessNode
	// accessNodeOnly is for nodes alone: routes about the caller's own
	// identity, which an administrator does not have (identity.go).
	accessNodeOnly
)

// may reports whether p may call a route with access a.
func (p Principal) may(a access) bool {
	switch a {
	case accessPublic:
		return true
	case accessAdmin:
		return p.Kind == PrincipalAdmin
	case accessNode:
		return p.Kind == PrincipalAdmin || p.Kind == PrincipalNode
	case accessNodeOnly:
		return p.Kind == PrincipalNode
	}
	return false
}

// mayReportOn reports whether p may report states and results for things
// deployed on endpoint: admins for any endpoint, a node only for the
// endpoint it is bound to.
func (p Principal) mayReportOn(endpoint string) bool {
	switch p.Kind {
	case PrincipalAdmin:
		return true
	case PrincipalNode:
		return p.Endpoint != "" && p.Endpoint == endpoint
	}
	return false
}

// bearerToken returns the token of an `Authorization: Bearer` header.
func bearerToken(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

// authorize authenticates r and checks that its principal may use a route
// with access a: 401 without an accepted credential, 403 when the
// principal is known but not allowed.
func (s *Server) authorize(r *http.Request, a access) (Principal, error) {
	if a == accessPublic {
		return Principal{}, nil
	}
	p, err := s.authenticate(r)
	if err != nil {
		return Principal{}, err
	}
	if !p.may(a) {
		if a == accessNodeOnly && p.Kind == PrincipalAdmin {
			return p, errorf(http.StatusForbidden, "%s may not call %s %s: it is about the caller's own node identity, "+
				"which an admin token does not have; mint a join token for the node (POST %s/identity/tokens) and call it with that",
				p.describe(), r.Method, routeOf(r), apiPrefix)
		}
		return p, errorf(http.StatusForbidden, "%s may not call %s %s", p.describe(), r.Method, routeOf(r))
	}
	return p, nil
}

// rejection is an ErrUnauthenticated for a credential an Authenticator
// recognised as its own kind (a JWT, a client certificate) and refused. Its
// reason reaches the client, so it says what to fix (expired, revoked, signed
// by an unknown CA); it never contains the credential.
type rejection struct {
	reason string
	cause  error
}

func (e *rejection) Error() string   { return e.reason }
func (e *rejection) Unwrap() []error { return []error{ErrUnauthenticated, e.cause} }

func (s *Server) authenticate(r *http.Request) (Principal, error) {
	var refused *rejection
	for _, a := range s.authn {
		p, err := a.Authenticate(r)
		if err == nil {
			return p, nil
		}
		if !errors.Is(err, ErrUnauthenticated) {
			return Principal{}, &httpError{status: http.StatusServiceUnavailable, message: "authentication is unavailable", cause: err}
		}
		if refused == nil {
			errors.As(err, &refused)
		}
	}
	if refused != nil {
		return Principal{}, &httpError{status: http.StatusUnauthorized, message: "invalid credentials: " + refused.reason, cause: refused.cause}
	}
	if _, ok := bearerToken(r); !ok {
		return Principal{}, errorf(http.StatusUnauthorized, "missing credentials; send Authorization: Bearer <token>")
	}
	return Principal{}, errorf(http.StatusUnauthorized, "invalid credentials")
}

func (p Principal) describe() string {
	switch p.Kind {
	case PrincipalAdmin:
		return "an administrator"
	case PrincipalNode:
		return "node '" + p.Name + "'"
	}
	return "this caller"
}

type principalKey struct{}

func withPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// principalOf returns the principal authenticated for r (the zero value,
// which may do nothing, on public routes).
func principalOf(ctx context.Context) Principal {
	p, _ := ctx.Value(principalKey{}).(Principal)
	return p
}
