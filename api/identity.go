package api

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/cryptomesh/cryptomesh/identity"
	"github.com/cryptomesh/cryptomesh/identity/idreg"
	"github.com/cryptomesh/cryptomesh/registry"
)

// The identity routes of SPEC §2 and §4, under /api/v1/identity:
//
//	GET    /bundle        public     the trust bundle (PEM)
//	GET    /whoami        node only  {"node", "binding", "spiffe_id"}
//	POST   /svids         node only  {"csr"} → {"spiffe_id", "cert_chain", "bundle", "expires_at"}
//	POST   /tokens        admin      {"node", "endpoint"|"role", "ttl"} → {"token", "jti", "expires_at"}
//	GET    /tokens        admin      the token records (never the tokens)
//	DELETE /tokens/{jti}  admin      revoke: 204
//
// whoami is not in SPEC's table: a node bound to an endpoint cannot know
// its SPIFFE ID (it depends on the endpoint's current role, registry state)
// and needs it for the CSR's only SAN; identity/agent asks it first.
//
// svids and whoami are for nodes only. An admin token names no identity, and
// letting an administrator name any ID here would be a second issuing path
// around the join tokens, whose records are the audit trail of who may hold
// what: an administrator who needs an SVID mints a token for the node.

// Join-token lifetimes accepted by POST /identity/tokens.
const (
	DefaultTokenTTL = 24 * time.Hour
	MinTokenTTL     = time.Minute
	MaxTokenTTL     = 30 * 24 * time.Hour
)

// pemContentType is the media type of the bundle.
const pemContentType = "application/x-pem-file"

// SVIDSigner signs node SVIDs from CSRs; *identity.CA is one.
type SVIDSigner interface {
	SignCSR(ctx context.Context, csr []byte, id spiffeid.ID) (*identity.Issued, error)
}

// IdentityConfig is what the identity routes and node authentication need.
type IdentityConfig struct {
	// TrustDomain of the control plane.
	TrustDomain spiffeid.TrustDomain
	// Tokens mints join tokens; its revocation list must be Records.
	Tokens *identity.TokenAuthority
	// Nodes authenticates join tokens and SVID client certificates.
	Nodes *identity.Authenticator
	// Records keeps the join-token records.
	Records *idreg.Store
	// Bundles serves GET /identity/bundle: the built-in CA, or SPIRE's source.
	Bundles x509bundle.Source
	// Signer signs node SVIDs. Nil when SVIDs come from SPIRE: POST
	// /identity/svids then answers 501 saying so.
	Signer SVIDSigner
}

// WithIdentity serves the identity routes and authenticates nodes by join
// token and by SVID client certificate. The node authenticator is asked
// after every WithAuthenticator one, so admin tokens are checked first (in
// constant time) and a bearer token that is not one is then tried as a JWT.
func WithIdentity(cfg IdentityConfig) Option {
	return func(c *config) {
		var missing []string
		if cfg.TrustDomain.IsZero() {
			missing = append(missing, "TrustDomain")
		}
		if cfg.Tokens == nil {
			missing = append(missing, "Tokens")
		}
		if cfg.Nodes == nil {
			missing = append(missing, "Nodes")
		}
		if cfg.Records == nil {
			missing = append(missing, "Records")
		}
		if cfg.Bundles == nil {
			missing = append(missing, "Bundles")
		}
		if len(missing) > 0 {
			c.errs = append(c.errs, fmt.Errorf("WithIdentity: missing %s", strings.Join(missing, ", ")))
			return
		}
		c.identity = &cfg
	}
}

// identityRoutes lists the identity routes (none without WithIdentity).
func (s *Server) identityRoutes() []route {
	if s.identity == nil {
		return nil
	}
	base := apiPrefix + "/identity"
	return []route{
		{base + "/bundle", map[string]method{http.MethodGet: {accessPublic, s.getBundle}}},
		{base + "/whoami", map[string]method{http.MethodGet: {accessNodeOnly, s.getWhoAmI}}},
		{base + "/svids", map[string]method{http.MethodPost: {accessNodeOnly, s.postSVID}}},
		{base + "/tokens", map[string]method{
			http.MethodGet:  {accessAdmin, s.listTokens},
			http.MethodPost: {accessAdmin, s.postToken},
		}},
		{base + "/tokens/{jti}", map[string]method{http.MethodDelete: {accessAdmin, s.deleteToken}}},
	}
}

// getBundle serves the trust bundle as PEM: every root a peer must trust now.
func (s *Server) getBundle(w http.ResponseWriter, r *http.Request) error {
	if _, err := queryOf(r); err != nil {
		return err
	}
	td := s.identity.TrustDomain
	b, err := s.identity.Bundles.GetX509BundleForTrustDomain(td)
	if err != nil {
		return &httpError{status: http.StatusServiceUnavailable, message: "the trust bundle is not available", cause: err}
	}
	raw, err := b.Marshal()
	if err != nil {
		return fmt.Errorf("encode the trust bundle of %s: %w", td, err)
	}
	h := w.Header()
	h.Set("Content-Type", pemContentType)
	h.Set("Content-Length", strconv.Itoa(len(raw)))
	h.Set("X-Content-Type-Options", "nosniff")
	// Roots rotate; a cached bundle must be revalidated.
	h.Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(raw)
	return nil
}

// whoAmI is the answer of GET /identity/whoami.
type whoAmI struct {
	// Node is the node name of a join token; empty for an SVID, which
	// names a binding, not a node.
	Node     string `json:"node,omitempty"`
	Binding  string `json:"binding"`
	SPIFFEID string `json:"spiffe_id"`
}

func bindingOf(p Principal) string {
	if p.Endpoint != "" {
		return identity.EndpointBinding(p.Endpoint, "").String()
	}
	return identity.RoleBinding(p.Role).String()
}

func (s *Server) getWhoAmI(w http.ResponseWriter, r *http.Request) error {
	if _, err := queryOf(r); err != nil {
		return err
	}
	p := principalOf(r.Context())
	out := whoAmI{Binding: bindingOf(p), SPIFFEID: p.SPIFFEID.String()}
	if p.Credential == CredentialJoinToken {
		out.Node = p.Name
	}
	return writeJSON(w, http.StatusOK, out)
}

// issuedSVID is the answer of POST /identity/svids.
type issuedSVID struct {
	SPIFFEID  string `json:"spiffe_id"`
	CertChain string `json:"cert_chain"`
	Bundle    string `json:"bundle"`
	ExpiresAt string `json:"expires_at"`
}

// postSVID signs a CSR for the caller's own ID, and for nothing else.
func (s *Server) postSVID(w http.ResponseWriter, r *http.Request) error {
	if _, err := queryOf(r); err != nil {
		return err
	}
	p := principalOf(r.Context())
	if s.identity.Signer == nil {
		return errorf(http.StatusNotImplemented, "this control plane issues no SVIDs: it runs with --identity spire, so %s gets its SVID "+
			"from a SPIRE agent's Workload API; register %s with SPIRE", p.describe(), p.SPIFFEID)
	}
	body, err := s.readObject(w, r)
	if err != nil {
		return err
	}
	fields := stringFields(body, "csr")
	if len(fields.errs) > 0 {
		return invalidInput("invalid SVID request", fields.errs...)
	}
	csr, ok := fields.values["csr"]
	if !ok || strings.TrimSpace(csr) == "" {
		return invalidInput("invalid SVID request", registry.FieldError{Field: "csr", Message: "is required: a PEM CERTIFICATE REQUEST"})
	}
	requested, err := requestedID(csr)
	if err != nil {
		return invalidInput("invalid SVID request", registry.FieldError{Field: "csr", Message: err.Error()})
	}
	if p.SPIFFEID.IsZero() {
		return errorf(http.StatusForbidden, "%s has no SPIFFE ID to be issued", p.describe())
	}
	if requested != "" {
		id, perr := spiffeid.FromString(requested)
		if perr != nil || !identity.MayIssue(identity.NodeCredential{SPIFFEID: p.SPIFFEID}, id) {
			why := "a node is only issued its own ID, " + p.SPIFFEID.String()
			if perr == nil && id == identity.ControlPlaneID(s.identity.TrustDomain) {
				why = "it is reserved for the control plane and never issued"
			}
			return errorf(http.StatusForbidden, "%s may not obtain an SVID for %s: %s", p.describe(), requested, why)
		}
	}
	issued, err := s.identity.Signer.SignCSR(r.Context(), []byte(csr), p.SPIFFEID)
	switch {
	case errors.Is(err, identity.ErrIDNotAllowed):
		return &httpError{status: http.StatusForbidden, message: err.Error()}
	case errors.Is(err, identity.ErrMalformedCSR), errors.Is(err, identity.ErrUnsupportedKey), errors.Is(err, identity.ErrSANMismatch):
		return invalidInput("invalid SVID request", registry.FieldError{Field: "csr", Message: err.Error()})
	case err != nil:
		return fmt.Errorf("sign an SVID for %s: %w", p.SPIFFEID, err)
	}
	s.log.InfoContext(r.Context(), "issued SVID", slog.String("spiffe_id", issued.ID.String()),
		slog.String("node", p.Name), slog.String("serial", issued.Serial.Text(16)),
		slog.Time("expires_at", issued.ExpiresAt))
	return writeJSON(w, http.StatusOK, issuedSVID{
		SPIFFEID:  issued.ID.String(),
		CertChain: string(issued.CertChainPEM),
		Bundle:    string(issued.BundlePEM),
		ExpiresAt: issued.ExpiresAt.UTC().Format(time.RFC3339),
	})
}

// requestedID reads the URI SAN a CSR asks for ("" when it names none or
// several; the CA refuses those with a precise message). Only the parsing
// happens here; the CA checks the signature, the key and the SANs again.
func requestedID(csr string) (string, error) {
	block, rest := pem.Decode([]byte(strings.TrimSpace(csr)))
	if block == nil {
		return "", errors.New("is not PEM: want a -----BEGIN CERTIFICATE REQUEST----- block")
	}
	if block.Type != "CERTIFICATE REQUEST" && block.Type != "NEW CERTIFICATE REQUEST" {
		return "", fmt.Errorf("is a PEM %q block, want CERTIFICATE REQUEST", block.Type)
	}
	if len(strings.TrimSpace(string(rest))) != 0 {
		return "", errors.New("has data after the CERTIFICATE REQUEST block")
	}
	req, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return "", fmt.Errorf("%w: %w", identity.ErrMalformedCSR, err)
	}
	if len(req.URIs) != 1 {
		return "", nil
	}
	return req.URIs[0].String(), nil
}

// tokenAnswer is the answer of POST /identity/tokens: the only time the
// token is ever shown.
type tokenAnswer struct {
	Token     string `json:"token"`
	JTI       string `json:"jti"`
	ExpiresAt string `json:"expires_at"`
}

// postToken mints a join token bound to an endpoint or a role that exists.
func (s *Server) postToken(w http.ResponseWriter, r *http.Request) error {
	if _, err := queryOf(r); err != nil {
		return err
	}
	body, err := s.readObject(w, r)
	if err != nil {
		return err
	}
	f := stringFields(body, "node", "endpoint", "role", "ttl")
	errs := f.errs
	node, hasNode := f.values["node"]
	endpoint, role := f.values["endpoint"], f.values["role"]
	switch {
	case !hasNode || node == "":
		if !f.bad["node"] {
			errs = append(errs, registry.FieldError{Field: "node", Message: "is required: the node's name (its xDS node id)"})
		}
	default:
		if err := identity.ValidateName("node", node); err != nil {
			errs = append(errs, registry.FieldError{Field: "node", Message: "must be 1-128 characters of A-Z a-z 0-9 . _ - starting with a letter or digit"})
		}
	}
	var b identity.Binding
	switch {
	case endpoint != "" && role != "":
		errs = append(errs, registry.FieldError{Field: "role", Message: "give endpoint or role, not both"})
	case endpoint != "":
		b = identity.EndpointBinding(endpoint, "")
	case role != "":
		b = identity.RoleBinding(role)
	case !f.bad["endpoint"] && !f.bad["role"]:
		errs = append(errs, registry.FieldError{Field: "endpoint", Message: "give endpoint (the node is that endpoint's sidecar) or role (the node calls in that role)"})
	}
	if b.Kind != "" {
		if err := b.Validate(); err != nil {
			errs = append(errs, registry.FieldError{Field: string(b.Kind), Message: "must be 1-128 characters of A-Z a-z 0-9 . _ - starting with a letter or digit"})
			b = identity.Binding{}
		}
	}
	ttl := DefaultTokenTTL
	if raw, ok := f.values["ttl"]; ok && raw != "" {
		d, err := time.ParseDuration(raw)
		switch {
		case err != nil:
			errs = append(errs, registry.FieldError{Field: "ttl", Message: fmt.Sprintf("%q is not a duration such as \"24h\" or \"90m\"", raw)})
		case d < MinTokenTTL || d > MaxTokenTTL:
			errs = append(errs, registry.FieldError{Field: "ttl", Message: fmt.Sprintf("%s is outside %s to %s (30 days)", d, MinTokenTTL, MaxTokenTTL)})
		default:
			ttl = d
		}
	}
	if b.Kind != "" && len(errs) == 0 {
		if err := s.identity.Records.CheckBinding(b); err != nil {
			return err
		}
	}
	if len(errs) > 0 {
		return invalidInput("invalid join token request", errs...)
	}
	token, rec, err := s.identity.Tokens.Mint(node, b, ttl)
	if err != nil {
		return fmt.Errorf("mint a join token: %w", err)
	}
	if err := s.identity.Records.Add(r.Context(), rec); err != nil {
		return err
	}
	s.log.InfoContext(r.Context(), "minted join token", slog.String("jti", rec.JTI), slog.String("node", node),
		slog.String("binding", b.String()), slog.Time("expires_at", rec.ExpiresAt))
	return writeJSON(w, http.StatusCreated, tokenAnswer{Token: token, JTI: rec.JTI, ExpiresAt: rec.ExpiresAt.Format(time.RFC3339)})
}

// listTokens lists every record, oldest first; the tokens themselves are
// never stored, so never shown.
func (s *Server) listTokens(w http.ResponseWriter, r *http.Request) error {
	if _, err := queryOf(r); err != nil {
		return err
	}
	recs := s.identity.Records.Records()
	if recs == nil {
		recs = []identity.TokenRecord{}
	}
	w.Header().Set("X-Total-Count", strconv.Itoa(len(recs)))
	return writeJSON(w, http.StatusOK, recs)
}

// deleteToken revokes a token: every later use is refused. The record stays
// (revoked) until the token expires, so the revocation outlives nothing it
// must cover.
func (s *Server) deleteToken(w http.ResponseWriter, r *http.Request) error {
	if _, err := queryOf(r); err != nil {
		return err
	}
	jti := r.PathValue("jti")
	if err := s.identity.Records.Revoke(r.Context(), jti); err != nil {
		return err
	}
	s.log.InfoContext(r.Context(), "revoked join token", slog.String("jti", jti))
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// fieldValues are the string fields of a small request body.
type fieldValues struct {
	values map[string]string
	// bad marks fields present with a wrong type (already in errs).
	bad  map[string]bool
	errs []registry.FieldError
}

// stringFields reads the allowed fields of body, each a string or null
// (null means absent), and reports unknown fields and wrong types.
func stringFields(body map[string]any, allowed ...string) fieldValues {
	out := fieldValues{values: map[string]string{}, bad: map[string]bool{}}
	for _, key := range sortedKeys(body) {
		known := false
		for _, a := range allowed {
			known = known || a == key
		}
		if !known {
			out.errs = append(out.errs, registry.FieldError{Field: key, Message: fmt.Sprintf("unknown field; allowed: %s", strings.Join(allowed, ", "))})
			continue
		}
		switch v := body[key].(type) {
		case nil:
		case string:
			out.values[key] = v
		default:
			out.bad[key] = true
			out.errs = append(out.errs, registry.FieldError{Field: key, Message: fmt.Sprintf("must be a string, not %s", registry.TypeName(v))})
		}
	}
	return out
}
