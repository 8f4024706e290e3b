package identity

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Key sizes accepted in CSRs. The upper RSA bound keeps a hostile CSR from
// making signature verification arbitrarily expensive.
const (
	minRSABits = 2048
	maxRSABits = 8192
)

var oidSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}

// Issued is a freshly signed X.509-SVID as the API answers it.
type Issued struct {
	ID spiffeid.ID
	// CertChainPEM is the SVID certificate alone: roots sign SVIDs directly,
	// and roots belong in the bundle, not in the chain.
	CertChainPEM []byte
	// BundlePEM is the trust bundle at signing time, to be installed with the SVID.
	BundlePEM []byte
	ExpiresAt time.Time
	Serial    *big.Int
}

// SignCSR signs an X.509-SVID for id from a CSR (PEM "CERTIFICATE REQUEST" or
// DER). It is the last line of defence, so it checks everything itself even
// though the API has authorized the caller: the CSR's signature (proof of
// possession), its key (ECDSA P-256/P-384 or RSA 2048-8192), that its only SAN
// is the URI id, and that id is a node ID of this trust domain, never the
// control plane's. Nothing from the CSR but the public key reaches the
// certificate.
func (c *CA) SignCSR(ctx context.Context, csr []byte, id spiffeid.ID) (*Issued, error) {
	if err := c.checkNodeID(id); err != nil {
		return nil, err
	}
	req, err := parseCSR(csr)
	if err != nil {
		return nil, err
	}
	if err := checkCSRKey(req.PublicKey); err != nil {
		return nil, err
	}
	if err := req.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: signature does not verify: %w", ErrMalformedCSR, err)
	}
	if err := checkCSRSANs(req, id); err != nil {
		return nil, err
	}
	return c.sign(ctx, req.PublicKey, id, nil, nil)
}

func (c *CA) checkNodeID(id spiffeid.ID) error {
	td := c.opts.trustDomain
	if id.IsZero() {
		return fmt.Errorf("%w: empty SPIFFE ID", ErrIDNotAllowed)
	}
	if id == ControlPlaneID(td) {
		return fmt.Errorf("%w: %s is reserved for the control plane", ErrIDNotAllowed, id)
	}
	if _, err := BindingFromID(td, id); err != nil {
		return fmt.Errorf("%w: %w", ErrIDNotAllowed, err)
	}
	return nil
}

// sign issues a leaf for pub. dnsNames and ips are only ever set for the
// control plane's serving certificate.
func (c *CA) sign(ctx context.Context, pub crypto.PublicKey, id spiffeid.ID, dnsNames []string, ips []net.IP) (*Issued, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("sign SVID for %s: %w", id, err)
	}
	v := c.current(ctx)
	if v.signer == nil {
		return nil, fmt.Errorf("sign SVID for %s: the CA has no usable root", id)
	}
	root := v.signer
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	now := c.opts.clock()
	if !now.Before(root.cert.NotAfter) {
		return nil, fmt.Errorf("sign SVID for %s: root %s expired at %s", id, root.name, root.cert.NotAfter)
	}
	notAfter := now.Add(c.opts.svidTTL)
	if notAfter.After(root.cert.NotAfter) {
		notAfter = root.cert.NotAfter
	}
	keyUsage := x509.KeyUsageDigitalSignature
	if _, isRSA := pub.(*rsa.PublicKey); isRSA {
		// RSA key exchange (TLS 1.2 without ECDHE) encrypts with the key.
		keyUsage |= x509.KeyUsageKeyEncipherment
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"CryptoMesh"}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              notAfter,
		KeyUsage:              keyUsage,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  false,
		URIs:                  []*url.URL{id.URL()},
		DNSNames:              dnsNames,
		IPAddresses:           ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, root.cert, pub, root.key)
	if err != nil {
		return nil, fmt.Errorf("sign SVID for %s: %w", id, err)
	}
	// The certificate's NotAfter is encoded with one-second precision.
	expiresAt := notAfter.Truncate(time.Second)
	c.opts.metrics.svidIssued(id, expiresAt)
	return &Issued{
		ID:           id,
		CertChainPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		BundlePEM:    bytes.Clone(v.bundlePEM),
		ExpiresAt:    expiresAt,
		Serial:       serial,
	}, nil
}

func parseCSR(data []byte) (*x509.CertificateRequest, error) {
	der := data
	if trimmed := strings.TrimSpace(string(data)); strings.HasPrefix(trimmed, "-----BEGIN") {
		block, rest := pem.Decode([]byte(trimmed))
		if block == nil {
			return nil, fmt.Errorf("%w: bad PEM", ErrMalformedCSR)
		}
		if block.Type != "CERTIFICATE REQUEST" && block.Type != "NEW CERTIFICATE REQUEST" {
			return nil, fmt.Errorf("%w: PEM block is %q, want CERTIFICATE REQUEST", ErrMalformedCSR, block.Type)
		}
		if len(strings.TrimSpace(string(rest))) != 0 {
			return nil, fmt.Errorf("%w: trailing data after the CSR", ErrMalformedCSR)
		}
		der = block.Bytes
	}
	req, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformedCSR, err)
	}
	return req, nil
}

func checkCSRKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return fmt.Errorf("%w: ECDSA curve %s, want P-256 or P-384", ErrUnsupportedKey, k.Curve.Params().Name)
		}
	case *rsa.PublicKey:
		if bits := k.N.BitLen(); bits < minRSABits || bits > maxRSABits {
			return fmt.Errorf("%w: RSA key of %d bits, want %d to %d", ErrUnsupportedKey, bits, minRSABits, maxRSABits)
		}
	default:
		return fmt.Errorf("%w: %T, want ECDSA P-256/P-384 or RSA >= %d", ErrUnsupportedKey, pub, minRSABits)
	}
	return nil
}

// checkCSRSANs demands exactly one SAN, the URI id. It reads the raw
// extension because crypto/x509 silently drops SAN kinds it does not model
// (otherName, directoryName, ...), and those must be refused too.
func checkCSRSANs(req *x509.CertificateRequest, id spiffeid.ID) error {
	var sanExts int
	for _, ext := range req.Extensions {
		if !ext.Id.Equal(oidSubjectAltName) {
			continue
		}
		sanExts++
		var names []asn1.RawValue
		if rest, err := asn1.Unmarshal(ext.Value, &names); err != nil || len(rest) != 0 {
			return fmt.Errorf("%w: unparsable SAN extension", ErrMalformedCSR)
		}
		if len(names) != 1 {
			return fmt.Errorf("%w: %d SANs, want only the URI %s", ErrSANMismatch, len(names), id)
		}
		// GeneralName uniformResourceIdentifier is [6] IA5String.
		if names[0].Class != asn1.ClassContextSpecific || names[0].Tag != 6 {
			return fmt.Errorf("%w: the SAN is not a URI, want %s", ErrSANMismatch, id)
		}
	}
	if sanExts != 1 {
		return fmt.Errorf("%w: %d SAN extensions, want one with the URI %s", ErrSANMismatch, sanExts, id)
	}
	if len(req.DNSNames)+len(req.IPAddresses)+len(req.EmailAddresses) != 0 || len(req.URIs) != 1 {
		return fmt.Errorf("%w: want only the URI %s", ErrSANMismatch, id)
	}
	if got := req.URIs[0].String(); got != id.String() {
		return fmt.Errorf("%w: CSR asks for %s, want %s", ErrSANMismatch, got, id)
	}
	return nil
}

// NeedsRenewal reports whether cert has reached half its lifetime at now,
// the point at which SVIDs are renewed: half a TTL of slack absorbs an outage
// of the control plane or a slow retry loop.
func NeedsRenewal(cert *x509.Certificate, now time.Time) bool {
	half := cert.NotBefore.Add(cert.NotAfter.Sub(cert.NotBefore) / 2)
	return !now.Before(half)
}

// Source is what the control plane needs of its identity provider for its own
// TLS: its SVID and the bundle to verify peers with. The built-in CA's
// ServingSource and SPIRE's workload API source both provide it, and both plug
// straight into go-spiffe's tlsconfig.
type Source interface {
	x509svid.Source
	x509bundle.Source
}

// ParseSANs splits the --san list into DNS names and IP addresses.
func ParseSANs(sans []string) ([]string, []net.IP, error) {
	var dns []string
	var ips []net.IP
	for _, s := range sans {
		s = strings.TrimSpace(s)
		switch {
		case s == "":
			continue
		case net.ParseIP(s) != nil:
			ips = append(ips, net.ParseIP(s))
		default:
			// Wildcards are allowed as the leftmost label only, as in TLS.
			host := strings.TrimPrefix(s, "*.")
			if strings.ContainsAny(host, "*/: ") || strings.Contains(host, "..") || strings.HasPrefix(host, ".") || strings.HasSuffix(host, ".") {
				return nil, nil, fmt.Errorf("bad --san %q: neither an IP address nor a DNS name", s)
			}
			dns = append(dns, s)
		}
	}
	return dns, ips, nil
}

// ServingSource keeps the control plane's own serving SVID fresh: URI SAN
// spiffe://<td>/control-plane plus the DNS names and IPs it is reached by
// (gRPC clients check those against their server_uri), renewed at half-life
// with a new key each time.
type ServingSource struct {
	ca       *CA
	dnsNames []string
	ips      []net.IP

	mu   sync.Mutex
	svid *x509svid.SVID
}

// ServingSource returns the control plane's serving identity for the given
// --san values (default localhost and 127.0.0.1 when empty).
func (c *CA) ServingSource(sans []string) (*ServingSource, error) {
	if len(sans) == 0 {
		sans = []string{"localhost", "127.0.0.1"}
	}
	dns, ips, err := ParseSANs(sans)
	if err != nil {
		return nil, err
	}
	s := &ServingSource{ca: c, dnsNames: dns, ips: ips}
	if _, err := s.GetX509SVID(); err != nil {
		return nil, err
	}
	return s, nil
}

// GetX509SVID implements x509svid.Source.
func (s *ServingSource) GetX509SVID() (*x509svid.SVID, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.svid != nil && !NeedsRenewal(s.svid.Certificates[0], s.ca.opts.clock()) {
		return s.svid, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate control-plane key: %w", err)
	}
	id := ControlPlaneID(s.ca.opts.trustDomain)
	issued, err := s.ca.sign(context.Background(), key.Public(), id, s.dnsNames, s.ips)
	if err != nil {
		return nil, fmt.Errorf("issue control-plane SVID: %w", err)
	}
	block, _ := pem.Decode(issued.CertChainPEM)
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse control-plane SVID: %w", err)
	}
	s.svid = &x509svid.SVID{ID: id, Certificates: []*x509.Certificate{cert}, PrivateKey: key}
	s.ca.log.Info("issued control-plane serving SVID", "spiffe_id", id.String(), "expires_at", issued.ExpiresAt)
	return s.svid, nil
}

// GetX509BundleForTrustDomain implements x509bundle.Source.
func (s *ServingSource) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	return s.ca.GetX509BundleForTrustDomain(td)
}
