package identity

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

type tokenEnv struct {
	ca     *testCA
	tokens *TokenAuthority
	rev    *memRevocations
	auth   *Authenticator
	roles  mapRoles
}

func newTokenEnv(t *testing.T) *tokenEnv {
	t.Helper()
	clock := newFakeClock(t0)
	ca := newTestCA(t, clock)
	rev := newMemRevocations()
	tokens, err := NewTokenAuthority(ca.dir, rev, WithClock(clock.Now))
	if err != nil {
		t.Fatal(err)
	}
	roles := mapRoles{"e1": "svc", "e2": ""}
	auth, err := NewAuthenticator(tokens, ca.CA, roles, WithClock(clock.Now))
	if err != nil {
		t.Fatal(err)
	}
	return &tokenEnv{ca: ca, tokens: tokens, rev: rev, auth: auth, roles: roles}
}

// issueWithToken is the API's path for POST /identity/svids: authenticate,
// authorize the requested ID, sign.
func (e *tokenEnv) issueWithToken(ctx context.Context, t *testing.T, token string, requested spiffeid.ID) (*Issued, error) {
	cred, err := e.auth.FromToken(ctx, token)
	if err != nil {
		return nil, err
	}
	if !MayIssue(cred, requested) {
		return nil, errors.New("forbidden: not the caller's own ID")
	}
	return e.ca.SignCSR(ctx, csrPEM(t, newP256(t), x509.CertificateRequest{}, requested), requested)
}

// signWith crafts a token from raw claims with the authority's own key, to
// produce well-signed tokens whose contents Mint would never write.
func (e *tokenEnv) signWith(t *testing.T, claims map[string]any) string {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: e.tokens.key},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", e.tokens.kid))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Signed(signer).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestTokenMintVerify(t *testing.T) {
	e := newTokenEnv(t)
	ctx := context.Background()
	fi, err := os.Stat(filepath.Join(e.ca.dir, TokenKeyFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token key file: %v, mode %v", err, fi.Mode())
	}
	tests := []struct {
		name    string
		binding Binding
		wantID  string
	}{
		{"endpoint with role", EndpointBinding("e1", "ignored"), "spiffe://cryptomesh.local/role/svc/endpoint/e1"},
		{"endpoint without role", EndpointBinding("e2", ""), "spiffe://cryptomesh.local/endpoint/e2"},
		{"role", RoleBinding("ml"), "spiffe://cryptomesh.local/role/ml"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, rec, err := e.tokens.Mint("node-1", tt.binding, 24*time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			if len(strings.Split(tok, ".")) != 3 || len(rec.JTI) < 20 || rec.Node != "node-1" || !rec.ExpiresAt.Equal(t0.Add(24*time.Hour)) || rec.Revoked {
				t.Fatalf("token %q record %+v", tok, rec)
			}
			// The header says ES256 with our key id, as grpc-go's
			// jwt_token_file call credentials and Envoy need a plain JWT.
			hdr, _ := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[0])
			var h map[string]string
			if err := json.Unmarshal(hdr, &h); err != nil || h["alg"] != "ES256" || h["typ"] != "JWT" || h["kid"] == "" {
				t.Fatalf("header %s", hdr)
			}
			claims, err := e.tokens.Verify(ctx, tok)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			want := tt.binding
			want.EndpointRole = ""
			if claims.Node != "node-1" || claims.Binding != want || claims.JTI != rec.JTI || !claims.ExpiresAt.Equal(rec.ExpiresAt) || claims.Issuer != DefaultTokenIssuer {
				t.Fatalf("claims %+v, record %+v", claims, rec)
			}
			if rec.Binding() != want {
				t.Fatalf("record binding %+v, want %+v", rec.Binding(), want)
			}
			cred, err := e.auth.FromToken(ctx, tok)
			if err != nil {
				t.Fatal(err)
			}
			if cred.SPIFFEID.String() != tt.wantID || cred.Node != "node-1" {
				t.Fatalf("credential %+v, want ID %s", cred, tt.wantID)
			}
			// Tokens are reusable until they expire: nodes reconnect.
			for range 3 {
				if _, err := e.issueWithToken(ctx, t, tok, cred.SPIFFEID); err != nil {
					t.Fatalf("issue with token: %v", err)
				}
			}
		})
	}

	// A token shared by another replica (same CA directory) verifies there.
	replica, err := NewTokenAuthority(e.ca.dir, e.rev, WithClock(e.ca.clock.Now))
	if err != nil {
		t.Fatal(err)
	}
	tok, _, _ := e.tokens.Mint("node-1", RoleBinding("ml"), time.Hour)
	if _, err := replica.Verify(ctx, tok); err != nil {
		t.Fatalf("replica refuses a token: %v", err)
	}

	for _, bad := range []struct {
		node string
		b    Binding
		ttl  time.Duration
	}{
		{"", RoleBinding("ml"), time.Hour},
		{"n/1", RoleBinding("ml"), time.Hour},
		{"n", RoleBinding(""), time.Hour},
		{"n", Binding{Kind: "x", Name: "y"}, time.Hour},
		{"n", RoleBinding("ml"), 0},
	} {
		if _, _, err := e.tokens.Mint(bad.node, bad.b, bad.ttl); err == nil {
			t.Errorf("Mint(%q, %+v, %s) succeeded", bad.node, bad.b, bad.ttl)
		}
	}
	if _, err := NewTokenAuthority(t.TempDir(), nil); err == nil {
		t.Error("token authority without a revocation list")
	}
}

func TestTokenRefusals(t *testing.T) {
	e := newTokenEnv(t)
	ctx := context.Background()
	clock := e.ca.clock
	mlID := roleID(t, "ml")
	good, goodRec, err := e.tokens.Mint("node-1", RoleBinding("ml"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	base := func() map[string]any {
		return map[string]any{
			"iss": DefaultTokenIssuer, "aud": []string{DefaultTokenAudience}, "sub": "node-1", "jti": "j-1",
			"iat": t0.Unix(), "exp": t0.Add(time.Hour).Unix(), "role": "ml",
		}
	}
	with := func(mod func(map[string]any)) string {
		c := base()
		mod(c)
		return e.signWith(t, c)
	}
	parts := strings.Split(good, ".")
	b64 := base64.RawURLEncoding.EncodeToString

	// Another control plane's authority: a different key in its own dir.
	stranger, err := NewTokenAuthority(t.TempDir(), e.rev, WithClock(clock.Now))
	if err != nil {
		t.Fatal(err)
	}
	strangerTok, _, _ := stranger.Mint("node-1", RoleBinding("ml"), time.Hour)
	// The stranger's key under our key id.
	forgedKid := func() string {
		signer, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: stranger.key},
			(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", e.tokens.kid))
		tok, _ := jwt.Signed(signer).Claims(base()).Serialize()
		return tok
	}()
	// HS256 keyed with our public key: the classic algorithm confusion.
	hsConfused := func() string {
		pub, _ := x509.MarshalPKIXPublicKey(e.tokens.key.Public())
		signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: pub}, nil)
		if err != nil {
			t.Fatal(err)
		}
		tok, _ := jwt.Signed(signer).Claims(base()).Serialize()
		return tok
	}()
	tamperedPayload := func() string {
		payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
		payload = []byte(strings.Replace(string(payload), `"role":"ml"`, `"role":"admin"`, 1))
		return parts[0] + "." + b64(payload) + "." + parts[2]
	}()
	algNone := b64([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + parts[1] + "."

	tests := []struct {
		name      string
		token     func() string
		requested spiffeid.ID
		want      error
	}{
		{"garbage", func() string { return "abc" }, mlID, ErrInvalidToken},
		{"oversized", func() string { return strings.Repeat("a", 10000) }, mlID, ErrInvalidToken},
		{"expired", func() string { clock.Set(t0.Add(time.Hour)); return good }, mlID, ErrTokenExpired},
		{"revoked", func() string { e.rev.Revoke(goodRec.JTI); return good }, mlID, ErrTokenRevoked},
		{"revocation list unavailable", func() string { e.rev.err = errors.New("store down"); return good }, mlID, ErrInvalidToken},
		{"alg none", func() string { return algNone }, mlID, ErrInvalidToken},
		{"HS256 with the public key", func() string { return hsConfused }, mlID, ErrInvalidToken},
		{"signed by another authority", func() string { return strangerTok }, mlID, ErrInvalidToken},
		{"forged with our key id", func() string { return forgedKid }, mlID, ErrInvalidToken},
		{"tampered payload", func() string { return tamperedPayload }, roleID(t, "admin"), ErrInvalidToken},
		{"wrong issuer", func() string { return with(func(c map[string]any) { c["iss"] = "someone-else" }) }, mlID, ErrInvalidToken},
		{"wrong audience", func() string { return with(func(c map[string]any) { c["aud"] = []string{"other"} }) }, mlID, ErrInvalidToken},
		{"no exp", func() string { return with(func(c map[string]any) { delete(c, "exp") }) }, mlID, ErrInvalidToken},
		{"no jti", func() string { return with(func(c map[string]any) { delete(c, "jti") }) }, mlID, ErrInvalidToken},
		{"issued in the future", func() string { return with(func(c map[string]any) { c["iat"] = t0.Add(10 * time.Minute).Unix() }) }, mlID, ErrInvalidToken},
		{"bad subject", func() string { return with(func(c map[string]any) { c["sub"] = "../x" }) }, mlID, ErrInvalidToken},
		{"two bindings", func() string { return with(func(c map[string]any) { c["endpoint"] = "e1" }) }, mlID, ErrInvalidToken},
		{"no binding", func() string { return with(func(c map[string]any) { delete(c, "role") }) }, mlID, ErrInvalidToken},
		{"role token asks for another role", func() string { return good }, roleID(t, "admin"), nil},
		{"role token asks for an endpoint", func() string { return good }, endpointID(t, "e1", "svc"), nil},
		{"role token asks for the control plane", func() string { return good }, ControlPlaneID(testTD), nil},
		{"endpoint token asks for a stale role", func() string {
			tok, _, _ := e.tokens.Mint("node-2", EndpointBinding("e1", ""), time.Hour)
			return tok
		}, endpointID(t, "e1", "oldrole"), nil},
		{"endpoint token of a deleted endpoint", func() string {
			tok, _, _ := e.tokens.Mint("node-2", EndpointBinding("gone", ""), time.Hour)
			return tok
		}, endpointID(t, "gone", ""), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock.Set(t0)
			e.rev = newMemRevocations()
			e.tokens.rev = e.rev
			before := e.ca.issuedCount()
			tok := tt.token()
			if tt.want != nil {
				if _, err := e.tokens.Verify(ctx, tok); !errors.Is(err, tt.want) || !errors.Is(err, ErrInvalidToken) {
					t.Fatalf("Verify = %v, want %v", err, tt.want)
				}
			}
			issued, err := e.issueWithToken(ctx, t, tok, tt.requested)
			if err == nil || issued != nil {
				t.Fatalf("issued %v for a refused token", issued)
			}
			if got := e.ca.issuedCount(); got != before {
				t.Fatalf("issued counter moved %v -> %v", before, got)
			}
		})
	}
	// The good token still works once the environment is sane again: the
	// refusals above were about the tokens, not a broken setup.
	clock.Set(t0)
	e.rev = newMemRevocations()
	e.tokens.rev = e.rev
	if _, err := e.issueWithToken(ctx, t, good, mlID); err != nil {
		t.Fatalf("good token refused: %v", err)
	}
}
