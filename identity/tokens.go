package identity

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/cryptomesh/cryptomesh/identity/internal/atomicfile"
)

// TokenKeyFile is the join-token signing key in the CA directory (0600).
const TokenKeyFile = "token-signing.key"

const (
	// maxTokenLen bounds what Verify parses; real tokens are ~500 bytes.
	maxTokenLen = 8 << 10
	// tokenIATLeeway tolerates clock skew between replicas for iat/nbf only;
	// exp is enforced to the second because an expired token must not work.
	tokenIATLeeway = time.Minute
)

// Token errors. Every refusal wraps ErrInvalidToken (401 for the API);
// expiry and revocation add a more precise reason.
var (
	ErrInvalidToken = errors.New("invalid join token")
	ErrTokenExpired = errors.New("join token expired")
	ErrTokenRevoked = errors.New("join token revoked")
)

// Revocations answers whether a join token has been revoked. The durable list
// lives in the registry; Verify asks it on every use and fails closed when it
// cannot answer.
type Revocations interface {
	IsRevoked(ctx context.Context, jti string) (bool, error)
}

// Claims are the verified contents of a join token. Binding never carries an
// endpoint role: the token names the endpoint, and its role is looked up when
// the token is used.
type Claims struct {
	JTI       string
	Node      string
	Binding   Binding
	Issuer    string
	IssuedAt  time.Time
	ExpiresAt time.Time
}

// TokenRecord is a minted token as listed by GET /api/v1/identity/tokens and
// stored by the registry; it never contains the token itself.
type TokenRecord struct {
	JTI       string    `json:"jti"`
	Node      string    `json:"node"`
	Endpoint  string    `json:"endpoint,omitempty"`
	Role      string    `json:"role,omitempty"`
	IssuedAt  time.Time `json:"issued_at"`
	ExpiresAt time.Time `json:"expires_at"`
	Revoked   bool      `json:"revoked"`
}

// Binding is the record's binding (without an endpoint role).
func (r TokenRecord) Binding() Binding {
	if r.Endpoint != "" {
		return EndpointBinding(r.Endpoint, "")
	}
	return RoleBinding(r.Role)
}

// tokenClaims are the private claims: exactly one of endpoint and role.
type tokenClaims struct {
	Endpoint string `json:"endpoint,omitempty"`
	Role     string `json:"role,omitempty"`
}

// TokenAuthority mints and verifies join tokens (SPEC §4): ES256 JWTs signed
// with a P-256 key kept in the CA directory, so that every replica sharing the
// directory verifies every replica's tokens.
type TokenAuthority struct {
	key    *ecdsa.PrivateKey
	kid    string
	signer jose.Signer
	rev    Revocations
	opts   *options
}

// NewTokenAuthority loads the signing key from dir (creating it if absent).
// rev is required: there is no way to use tokens without a revocation list.
func NewTokenAuthority(dir string, rev Revocations, opts ...Option) (*TokenAuthority, error) {
	if rev == nil {
		return nil, errors.New("token authority: a revocation list is required")
	}
	o, err := newOptions(opts)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return nil, fmt.Errorf("create CA directory %s: %w", dir, err)
	}
	key, err := loadOrCreateTokenKey(context.Background(), dir)
	if err != nil {
		return nil, err
	}
	thumb, err := (&jose.JSONWebKey{Key: key.Public()}).Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("token key thumbprint: %w", err)
	}
	kid := base64.RawURLEncoding.EncodeToString(thumb)
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader(jose.HeaderKey("kid"), kid))
	if err != nil {
		return nil, fmt.Errorf("token signer: %w", err)
	}
	return &TokenAuthority{key: key, kid: kid, signer: signer, rev: rev, opts: o}, nil
}

// Mint signs a join token for node with binding b, valid for ttl. An endpoint
// binding's role is not put in the token (it is looked up at each use).
func (a *TokenAuthority) Mint(node string, b Binding, ttl time.Duration) (string, TokenRecord, error) {
	if err := ValidateName("node", node); err != nil {
		return "", TokenRecord{}, fmt.Errorf("mint token: %w", err)
	}
	b.EndpointRole = ""
	if err := b.Validate(); err != nil {
		return "", TokenRecord{}, fmt.Errorf("mint token for node %s: %w", node, err)
	}
	if ttl <= 0 {
		return "", TokenRecord{}, fmt.Errorf("mint token for node %s: ttl %s must be positive", node, ttl)
	}
	now := a.opts.clock().Truncate(time.Second)
	rec := TokenRecord{JTI: rand.Text(), Node: node, IssuedAt: now.UTC(), ExpiresAt: now.Add(ttl).UTC()}
	var priv tokenClaims
	if b.Kind == BindEndpoint {
		rec.Endpoint, priv.Endpoint = b.Name, b.Name
	} else {
		rec.Role, priv.Role = b.Name, b.Name
	}
	std := jwt.Claims{
		Issuer:   a.opts.issuer,
		Subject:  node,
		Audience: jwt.Audience{a.opts.audience},
		Expiry:   jwt.NewNumericDate(rec.ExpiresAt),
		IssuedAt: jwt.NewNumericDate(rec.IssuedAt),
		ID:       rec.JTI,
	}
	tok, err := jwt.Signed(a.signer).Claims(std).Claims(priv).Serialize()
	if err != nil {
		return "", TokenRecord{}, fmt.Errorf("sign token for node %s: %w", node, err)
	}
	return tok, rec, nil
}

// Verify checks a join token: ES256 only (alg none, HS* and everything else
// are refused before any key is used), signature, iss, aud, exp against the
// clock, the claims' shape and, last, the revocation list.
func (a *TokenAuthority) Verify(ctx context.Context, token string) (Claims, error) {
	if len(token) > maxTokenLen {
		return Claims{}, fmt.Errorf("%w: longer than %d bytes", ErrInvalidToken, maxTokenLen)
	}
	tok, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		return Claims{}, fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	if len(tok.Headers) != 1 {
		return Claims{}, fmt.Errorf("%w: %d signatures, want 1", ErrInvalidToken, len(tok.Headers))
	}
	if kid := tok.Headers[0].KeyID; kid != "" && kid != a.kid {
		return Claims{}, fmt.Errorf("%w: signed by unknown key %q", ErrInvalidToken, kid)
	}
	var std jwt.Claims
	var priv tokenClaims
	if err := tok.Claims(&a.key.PublicKey, &std, &priv); err != nil {
		return Claims{}, fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	now := a.opts.clock()
	if std.Expiry == nil {
		return Claims{}, fmt.Errorf("%w: no exp claim", ErrInvalidToken)
	}
	exp := std.Expiry.Time()
	if !now.Before(exp) {
		return Claims{}, fmt.Errorf("%w: %w at %s", ErrInvalidToken, ErrTokenExpired, exp.UTC().Format(time.RFC3339))
	}
	if err := std.ValidateWithLeeway(jwt.Expected{
		Issuer:      a.opts.issuer,
		AnyAudience: jwt.Audience{a.opts.audience},
		Time:        now,
	}, tokenIATLeeway); err != nil {
		return Claims{}, fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	if std.ID == "" {
		return Claims{}, fmt.Errorf("%w: no jti claim", ErrInvalidToken)
	}
	if err := ValidateName("node", std.Subject); err != nil {
		return Claims{}, fmt.Errorf("%w: sub: %w", ErrInvalidToken, err)
	}
	var b Binding
	switch {
	case priv.Endpoint != "" && priv.Role == "":
		b = EndpointBinding(priv.Endpoint, "")
	case priv.Role != "" && priv.Endpoint == "":
		b = RoleBinding(priv.Role)
	default:
		return Claims{}, fmt.Errorf("%w: want exactly one of the endpoint and role claims", ErrInvalidToken)
	}
	if err := b.Validate(); err != nil {
		return Claims{}, fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	revoked, err := a.rev.IsRevoked(ctx, std.ID)
	if err != nil {
		return Claims{}, fmt.Errorf("%w: check revocation of %s: %w", ErrInvalidToken, std.ID, err)
	}
	if revoked {
		return Claims{}, fmt.Errorf("%w: %w: jti %s", ErrInvalidToken, ErrTokenRevoked, std.ID)
	}
	c := Claims{JTI: std.ID, Node: std.Subject, Binding: b, Issuer: std.Issuer, ExpiresAt: exp}
	if std.IssuedAt != nil {
		c.IssuedAt = std.IssuedAt.Time()
	}
	return c, nil
}

// loadOrCreateTokenKey reads the token key, creating it under the directory
// lock so that replicas starting together agree on one key.
func loadOrCreateTokenKey(ctx context.Context, dir string) (*ecdsa.PrivateKey, error) {
	path := filepath.Join(dir, TokenKeyFile)
	unlock, err := lockDir(ctx, dir)
	if err != nil {
		return nil, err
	}
	defer unlock()
	signer, err := readPrivateKey(path)
	switch {
	case err == nil:
		key, ok := signer.(*ecdsa.PrivateKey)
		if !ok || key.Curve != elliptic.P256() {
			return nil, fmt.Errorf("token key %s is not ECDSA P-256", path)
		}
		return key, nil
	case !errors.Is(err, fs.ErrNotExist):
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate token key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("marshal token key: %w", err)
	}
	if err := atomicfile.Write(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), keyFileMode); err != nil {
		return nil, err
	}
	return key, nil
}
