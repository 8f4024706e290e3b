package ads

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/url"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/cryptomesh/cryptomesh/identity"
	"github.com/cryptomesh/cryptomesh/xds"
)

// issueTimeout bounds one signing.
const issueTimeout = 10 * time.Second

// issued is a stream's own SVID for SDS: a key made here for this stream
// alone (so no node ever receives another node's key, whatever node id it
// claims), renewed at half-life like every SVID.
type issued struct {
	id      spiffeid.ID
	creds   *xds.Credentials
	renewAt time.Time
}

// credentials returns the stream's SVID for generation g, issuing one when
// it has none, when it is due for renewal, or when the node's SPIFFE ID
// changed (an endpoint's role changed). nil for gRPC nodes and when no
// signer is configured. A failed signing is logged and the node is
// translated without secrets.
func (st *stream) credentials(g *generation) *issued {
	if st.srv.signer == nil || st.node.kind == xds.GRPC {
		return nil
	}
	want, err := st.expectedID(g)
	if err != nil {
		st.log.Error("xDS: no SPIFFE ID for the node's binding", "error", err)
		return nil
	}
	st.mu.Lock()
	cur := st.creds
	st.mu.Unlock()
	if cur != nil && cur.id == want && time.Now().Before(cur.renewAt) {
		return cur
	}
	ctx, cancel := context.WithTimeout(context.Background(), issueTimeout)
	defer cancel()
	fresh, err := issue(ctx, st.srv.signer, want)
	if err != nil {
		st.log.Error("xDS: SVID for SDS not issued", "spiffe_id", want.String(), "error", err)
		return cur
	}
	st.mu.Lock()
	st.creds = fresh
	st.mu.Unlock()
	return fresh
}

// expectedID is the SPIFFE ID of the stream's binding at g's revision.
func (st *stream) expectedID(g *generation) (spiffeid.ID, error) {
	b := st.cred.Binding
	if b.Kind == identity.BindEndpoint {
		role, ok := g.endpointRole(b.Name)
		if !ok {
			return spiffeid.ID{}, fmt.Errorf("endpoint %s does not exist", b.Name)
		}
		return identity.EndpointID(st.srv.td, b.Name, role)
	}
	return identity.RoleID(st.srv.td, b.Name)
}

// renewAt is when the stream's SVID is due for renewal (zero: none).
func (st *stream) renewAt() time.Time {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.creds == nil {
		return time.Time{}
	}
	return st.creds.renewAt
}

// issue makes a key and has an SVID for id signed.
func issue(ctx context.Context, signer Signer, id spiffeid.ID) (*issued, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key for %s: %w", id, err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{id.URL()}}, key)
	if err != nil {
		return nil, fmt.Errorf("CSR for %s: %w", id, err)
	}
	got, err := signer.SignCSR(ctx, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr}), id)
	if err != nil {
		return nil, fmt.Errorf("sign SVID for %s: %w", id, err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode key for %s: %w", id, err)
	}
	now := time.Now()
	return &issued{
		id: id,
		creds: &xds.Credentials{
			CertChainPEM: got.CertChainPEM,
			KeyPEM:       pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}),
			BundlePEM:    got.BundlePEM,
		},
		renewAt: now.Add(got.ExpiresAt.Sub(now) / 2),
	}, nil
}
