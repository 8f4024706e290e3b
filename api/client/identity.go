package client

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// The identity routes (SPEC §4): the trust bundle, a node's own identity
// and SVIDs (with a join token or an SVID as credential), and the join
// tokens an administrator mints, lists and revokes.

// WhoAmI is the identity of the caller's node credential.
type WhoAmI struct {
	// Node is the node name of a join token; empty for an SVID.
	Node string `json:"node"`
	// Binding is "endpoint:<E>" or "role:<R>".
	Binding string `json:"binding"`
	// SPIFFEID is the one ID the node may be issued: its CSR's only SAN.
	SPIFFEID string `json:"spiffe_id"`
}

// WhoAmI asks which SPIFFE ID the client's node credential may be issued.
func (c *Client) WhoAmI(ctx context.Context) (WhoAmI, error) {
	var out WhoAmI
	_, err := c.call(ctx, http.MethodGet, "/api/v1/identity/whoami", nil, nil, &out)
	return out, err
}

// SVID is a signed X.509-SVID with the bundle to install beside it.
type SVID struct {
	SPIFFEID     string
	CertChainPEM []byte
	BundlePEM    []byte
	ExpiresAt    time.Time
}

// SignCSR has a PEM CSR signed as the node's SVID. The CSR's only SAN must
// be the node's own ID (WhoAmI).
func (c *Client) SignCSR(ctx context.Context, csrPEM []byte) (SVID, error) {
	var out struct {
		SPIFFEID  string    `json:"spiffe_id"`
		CertChain string    `json:"cert_chain"`
		Bundle    string    `json:"bundle"`
		ExpiresAt time.Time `json:"expires_at"`
	}
	if _, err := c.call(ctx, http.MethodPost, "/api/v1/identity/svids", nil, map[string]string{"csr": string(csrPEM)}, &out); err != nil {
		return SVID{}, err
	}
	return SVID{SPIFFEID: out.SPIFFEID, CertChainPEM: []byte(out.CertChain), BundlePEM: []byte(out.Bundle), ExpiresAt: out.ExpiresAt}, nil
}

// Bundle returns the trust bundle (PEM). It needs no credential.
func (c *Client) Bundle(ctx context.Context) ([]byte, error) {
	return c.raw(ctx, "/api/v1/identity/bundle", "application/x-pem-file")
}

// TokenRequest asks for a join token: a node bound to exactly one of an
// endpoint and a role, valid for TTL (0: the server's default, 24 h).
type TokenRequest struct {
	Node     string
	Endpoint string
	Role     string
	TTL      time.Duration
}

// JoinToken is a freshly minted token, shown only this once.
type JoinToken struct {
	Token     string    `json:"token"`
	JTI       string    `json:"jti"`
	ExpiresAt time.Time `json:"expires_at"`
}

// CreateToken mints a join token (admin).
func (c *Client) CreateToken(ctx context.Context, req TokenRequest) (JoinToken, error) {
	body := map[string]string{"node": req.Node}
	if req.Endpoint != "" {
		body["endpoint"] = req.Endpoint
	}
	if req.Role != "" {
		body["role"] = req.Role
	}
	if req.TTL != 0 {
		body["ttl"] = req.TTL.String()
	}
	var out JoinToken
	_, err := c.call(ctx, http.MethodPost, "/api/v1/identity/tokens", nil, body, &out)
	return out, err
}

// TokenRecord is what the server keeps of a minted token (never the token).
type TokenRecord struct {
	JTI       string    `json:"jti"`
	Node      string    `json:"node"`
	Endpoint  string    `json:"endpoint,omitempty"`
	Role      string    `json:"role,omitempty"`
	IssuedAt  time.Time `json:"issued_at"`
	ExpiresAt time.Time `json:"expires_at"`
	Revoked   bool      `json:"revoked"`
}

// ListTokens lists the token records, oldest first (admin).
func (c *Client) ListTokens(ctx context.Context) ([]TokenRecord, error) {
	var out []TokenRecord
	_, err := c.call(ctx, http.MethodGet, "/api/v1/identity/tokens", nil, nil, &out)
	return out, err
}

// RevokeToken revokes a token by its jti (admin): every later use is
// refused. An unknown jti is a 404 *Error.
func (c *Client) RevokeToken(ctx context.Context, jti string) error {
	_, err := c.call(ctx, http.MethodDelete, "/api/v1/identity/tokens/"+url.PathEscape(jti), nil, nil, nil)
	return err
}

// LoadRootCAs reads the certificates a client trusts the control plane by:
// a PEM file (the bundle of GET /api/v1/identity/bundle, or the agent's
// bundle.pem), or a directory whose *.crt and *.pem files are read (a
// server's --ca-dir holds its roots as root-*.crt).
func LoadRootCAs(paths ...string) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	n := 0
	for _, p := range paths {
		info, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("read CA certificates: %w", err)
		}
		files := []string{p}
		if info.IsDir() {
			files = nil
			for _, glob := range []string{"*.crt", "*.pem"} {
				m, err := filepath.Glob(filepath.Join(p, glob))
				if err != nil {
					return nil, fmt.Errorf("list CA certificates in %s: %w", p, err)
				}
				files = append(files, m...)
			}
		}
		for _, f := range files {
			raw, err := os.ReadFile(f)
			if err != nil {
				return nil, fmt.Errorf("read CA certificates: %w", err)
			}
			for block, rest := pem.Decode(raw); block != nil; block, rest = pem.Decode(rest) {
				if block.Type != "CERTIFICATE" {
					continue
				}
				cert, err := x509.ParseCertificate(block.Bytes)
				if err != nil {
					return nil, fmt.Errorf("CA certificate in %s: %w", f, err)
				}
				pool.AddCert(cert)
				n++
			}
		}
	}
	if n == 0 {
		return nil, errors.New("no CA certificate found in " + fmt.Sprint(paths))
	}
	return pool, nil
}
