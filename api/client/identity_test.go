package client_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/cryptomesh/cryptomesh/api"
	"github.com/cryptomesh/cryptomesh/api/client"
	"github.com/cryptomesh/cryptomesh/identity"
	"github.com/cryptomesh/cryptomesh/identity/idreg"
	"github.com/cryptomesh/cryptomesh/registry"
	"github.com/cryptomesh/cryptomesh/registry/store/memstore"
)

var td = spiffeid.RequireTrustDomainFromString(identity.DefaultTrustDomain)

// tlsServer is a real API server with the built-in CA, over TLS with the
// CA's serving certificate.
type tlsServer struct {
	url   string
	caDir string
}

func newTLSServer(t *testing.T) *tlsServer {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	reg, err := registry.Open(context.Background(), memstore.New(), registry.WithLogger(log))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Close() })
	b, err := idreg.NewBuiltin(reg, filepath.Join(t.TempDir(), "ca"), nil)
	if err != nil {
		t.Fatal(err)
	}
	admin, err := api.NewAdminTokens(nil, []string{token}, log)
	if err != nil {
		t.Fatal(err)
	}
	s, err := api.New(reg, api.WithLogger(log), api.WithAuthenticator(admin), api.WithIdentity(api.IdentityConfig{
		TrustDomain: td, Tokens: b.Tokens, Nodes: b.Nodes, Records: b.Records, Bundles: b.CA, Signer: b.CA,
	}))
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewUnstartedServer(s.Handler())
	hs.Listener = tls.NewListener(hs.Listener, api.TLSConfig(b.Serving))
	hs.Start()
	t.Cleanup(hs.Close)
	return &tlsServer{url: "https://" + hs.Listener.Addr().String(), caDir: b.Dir}
}

// TestIdentityCalls runs a node's enrolment and an administrator's token
// management through the client, over HTTPS trusted by the CA directory.
func TestIdentityCalls(t *testing.T) {
	ctx := context.Background()
	srv := newTLSServer(t)
	roots, err := client.LoadRootCAs(srv.caDir)
	if err != nil {
		t.Fatal(err)
	}
	admin := newClient(t, srv.url, client.WithRootCAs(roots))
	seedMesh(t, ctx, admin)

	anon, err := client.New(srv.url, client.WithRootCAs(roots))
	if err != nil {
		t.Fatal(err)
	}
	pemBundle, err := anon.Bundle(ctx)
	if err != nil {
		t.Fatalf("Bundle: %v", err)
	}
	bundle, err := x509bundle.Parse(td, pemBundle)
	if err != nil || len(bundle.X509Authorities()) != 1 {
		t.Fatalf("bundle %v: %s", err, pemBundle)
	}
	// The bundle file works as the trust of later clients.
	bundleFile := filepath.Join(t.TempDir(), "bundle.pem")
	if err := os.WriteFile(bundleFile, pemBundle, 0o644); err != nil {
		t.Fatal(err)
	}
	fromFile, err := client.LoadRootCAs(bundleFile)
	if err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	jt, err := admin.CreateToken(ctx, client.TokenRequest{Node: "n1", Endpoint: "e1", TTL: 2 * time.Hour})
	if err != nil {
		t.Fatalf("CreateToken: %v", err)
	}
	if d := jt.ExpiresAt.Sub(start); d < 2*time.Hour-2*time.Second || d > 2*time.Hour+2*time.Second {
		t.Errorf("token expires in %s, want 2h", d)
	}
	node := newClientWithToken(t, srv.url, jt.Token, client.WithRootCAs(fromFile))
	who, err := node.WhoAmI(ctx)
	if err != nil {
		t.Fatalf("WhoAmI: %v", err)
	}
	if who != (client.WhoAmI{Node: "n1", Binding: "endpoint:e1", SPIFFEID: "spiffe://cryptomesh.local/endpoint/e1"}) {
		t.Errorf("WhoAmI %+v", who)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(who.SPIFFEID)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{u}}, key)
	if err != nil {
		t.Fatal(err)
	}
	svid, err := node.SignCSR(ctx, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
	if err != nil {
		t.Fatalf("SignCSR: %v", err)
	}
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	parsed, err := x509svid.Parse(svid.CertChainPEM, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}))
	if err != nil {
		t.Fatal(err)
	}
	if parsed.ID.String() != who.SPIFFEID || svid.SPIFFEID != who.SPIFFEID || !svid.ExpiresAt.Equal(parsed.Certificates[0].NotAfter) {
		t.Errorf("SVID %s (answer %s, expires %s, certificate %s)", parsed.ID, svid.SPIFFEID, svid.ExpiresAt, parsed.Certificates[0].NotAfter)
	}
	if _, err := x509bundle.Parse(td, svid.BundlePEM); err != nil {
		t.Errorf("bundle of the SVID: %v", err)
	}

	// The node may not manage tokens; the administrator has no identity.
	wantStatus(t, ignore(node.ListTokens(ctx)), http.StatusForbidden)
	wantStatus(t, ignore(admin.WhoAmI(ctx)), http.StatusForbidden)
	wantStatus(t, ignore(admin.CreateToken(ctx, client.TokenRequest{Node: "n2", Endpoint: "nope"})), http.StatusUnprocessableEntity)

	recs, err := admin.ListTokens(ctx)
	if err != nil || len(recs) != 1 || recs[0].JTI != jt.JTI || recs[0].Node != "n1" || recs[0].Endpoint != "e1" || recs[0].Revoked {
		t.Fatalf("ListTokens %+v, %v", recs, err)
	}
	if err := admin.RevokeToken(ctx, jt.JTI); err != nil {
		t.Fatalf("RevokeToken: %v", err)
	}
	wantStatus(t, admin.RevokeToken(ctx, "no-such-jti"), http.StatusNotFound)
	e := wantStatus(t, ignore(node.WhoAmI(ctx)), http.StatusUnauthorized)
	if e.Message == "" {
		t.Error("401 without a reason")
	}
	if recs, _ := admin.ListTokens(ctx); len(recs) != 1 || !recs[0].Revoked {
		t.Errorf("after revoking: %+v", recs)
	}
}

// TestRootCAs: the client refuses a server its roots do not vouch for, and
// options and files are checked.
func TestRootCAs(t *testing.T) {
	ctx := context.Background()
	srv := newTLSServer(t)
	other := newTLSServer(t)
	wrong, err := client.LoadRootCAs(other.caDir)
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(srv.url, client.WithRootCAs(wrong))
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Bundle(ctx)
	var uerr x509.UnknownAuthorityError
	if !errors.As(err, &uerr) {
		t.Errorf("a server signed by another CA: %v, want an unknown authority", err)
	}
	if _, err := client.New(srv.url, client.WithRootCAs(wrong), client.WithHTTPClient(&http.Client{})); err == nil {
		t.Error("root CAs together with an HTTP client were accepted")
	}
	if _, err := client.New(srv.url, client.WithRootCAs(nil)); err == nil {
		t.Error("a nil pool was accepted")
	}
	empty := filepath.Join(t.TempDir(), "empty.pem")
	if err := os.WriteFile(empty, []byte("not a certificate\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{empty, t.TempDir(), filepath.Join(t.TempDir(), "missing.pem")} {
		if _, err := client.LoadRootCAs(p); err == nil {
			t.Errorf("LoadRootCAs(%s) found certificates", p)
		}
	}
}

func newClientWithToken(t *testing.T, url, tok string, opts ...client.Option) *client.Client {
	t.Helper()
	c, err := client.New(url, append([]client.Option{client.WithToken(tok)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func ignore[T any](_ T, err error) error { return err }
