package api

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/cryptomesh/cryptomesh/identity"
)

// nodeAuthenticator authenticates nodes (SPEC §2, §4): a join token sent as
// `Authorization: Bearer <JWT>`, or the node's SVID as TLS client
// certificate. A bearer token decides on its own: a request that sends one
// is not let in on its certificate when the token is refused, so a revoked
// token never works "by accident".
type nodeAuthenticator struct {
	nodes *identity.Authenticator
}

func (a nodeAuthenticator) Authenticate(r *http.Request) (Principal, error) {
	if tok, ok := bearerToken(r); ok {
		if !looksLikeJWT(tok) {
			return Principal{}, fmt.Errorf("not a join token: %w", ErrUnauthenticated)
		}
		cred, err := a.nodes.FromToken(r.Context(), tok)
		if err != nil {
			return Principal{}, &rejection{reason: err.Error(), cause: err}
		}
		return nodePrincipal(cred, CredentialJoinToken), nil
	}
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		cred, err := a.nodes.FromCertificates(r.Context(), r.TLS.PeerCertificates)
		if err != nil {
			return Principal{}, &rejection{reason: err.Error(), cause: err}
		}
		return nodePrincipal(cred, CredentialSVID), nil
	}
	return Principal{}, fmt.Errorf("no join token or client certificate: %w", ErrUnauthenticated)
}

// looksLikeJWT tells a compact JWS (three dot-separated parts) from the
// opaque admin tokens, so an admin token that was mistyped gets "invalid
// credentials" rather than a JWT parser's complaint.
func looksLikeJWT(tok string) bool {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return false
	}
	for _, p := range parts {
		if p == "" {
			return false
		}
	}
	return true
}

func nodePrincipal(cred identity.NodeCredential, via string) Principal {
	p := Principal{Kind: PrincipalNode, Name: cred.Node, SPIFFEID: cred.SPIFFEID, Credential: via}
	if p.Name == "" {
		// An SVID names a binding, not a node: log the ID instead.
		p.Name = cred.SPIFFEID.String()
	}
	switch cred.Binding.Kind {
	case identity.BindEndpoint:
		p.Endpoint = cred.Binding.Name
	case identity.BindRole:
		p.Role = cred.Binding.Name
	}
	return p
}

// TLSConfig is the API's server-side TLS (SPEC §2, §4): the serving
// certificate comes from src at every handshake, so the built-in CA's
// ServingSource (renewed at half-life) or SPIRE's source (rotated by the
// agent) is always current without a restart. Client certificates are
// requested but optional: a node may authenticate with its SVID instead of a
// token. A presented chain must verify against src's bundle as an
// X.509-SVID (go-spiffe's x509svid.Verify, not Go's default verification,
// which knows nothing of SPIFFE IDs), or the handshake fails; the request
// is then authenticated per request by the node authenticator, which also
// checks the binding against the registry.
func TLSConfig(src identity.Source) *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: tlsconfig.GetCertificate(src),
		ClientAuth:     tls.RequestClientCert,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return nil
			}
			if _, _, err := x509svid.ParseAndVerify(raw, src, x509svid.WithTime(time.Now())); err != nil {
				return fmt.Errorf("%w: %w", identity.ErrInvalidSVID, err)
			}
			return nil
		},
	}
}
