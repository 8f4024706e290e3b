package identity

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

var t0 = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

func TestCAFilesAndReload(t *testing.T) {
	clock := newFakeClock(t0)
	var logs bytes.Buffer
	ca := newTestCA(t, clock, WithLogger(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))))

	info, err := os.Stat(ca.dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := info.Mode().Perm(); got != 0o700 {
		t.Errorf("CA dir mode %04o, want 0700", got)
	}
	entries, err := os.ReadDir(ca.dir)
	if err != nil {
		t.Fatal(err)
	}
	var keys, certs int
	for _, e := range entries {
		fi, _ := e.Info()
		mode := fi.Mode().Perm()
		switch {
		case strings.HasSuffix(e.Name(), ".key"):
			keys++
			if mode != 0o600 {
				t.Errorf("%s mode %04o, want 0600", e.Name(), mode)
			}
			// The logs must not contain key material in any encoding.
			data, _ := os.ReadFile(filepath.Join(ca.dir, e.Name()))
			block, _ := pem.Decode(data)
			if bytes.Contains(logs.Bytes(), []byte(base64.StdEncoding.EncodeToString(block.Bytes)[:40])) || bytes.Contains(logs.Bytes(), []byte("PRIVATE KEY")) {
				t.Errorf("logs contain key material of %s", e.Name())
			}
		case strings.HasSuffix(e.Name(), ".crt"):
			certs++
			if mode != 0o644 {
				t.Errorf("%s mode %04o, want 0644", e.Name(), mode)
			}
		case e.Name() == CAStateFile:
		default:
			t.Errorf("unexpected file %s in CA dir", e.Name())
		}
	}
	if keys != 1 || certs != 1 {
		t.Fatalf("want one root key and cert, got %d keys, %d certs", keys, certs)
	}
	if !strings.Contains(logs.String(), "created CA") {
		t.Errorf("creation not logged: %s", logs.String())
	}

	root := ca.roots[0].cert
	if root.NotAfter.Sub(root.NotBefore) < 365*24*time.Hour || !root.IsCA {
		t.Errorf("root: IsCA=%v lifetime %s, want a CA living a year", root.IsCA, root.NotAfter.Sub(root.NotBefore))
	}
	if pub, ok := root.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
		t.Errorf("root key is %T, want ECDSA P-256", root.PublicKey)
	}

	_, pem1 := ca.Bundle()
	again, err := LoadOrCreateCA(ca.dir, WithClock(clock.Now))
	if err != nil {
		t.Fatalf("reload: %v", err)
	}
	if _, pem2 := again.Bundle(); !bytes.Equal(pem1, pem2) {
		t.Fatal("reloaded CA has a different bundle")
	}

	t.Run("InitCA refuses an existing CA", func(t *testing.T) {
		if _, err := InitCA(ca.dir, WithClock(clock.Now)); !errors.Is(err, ErrCAExists) {
			t.Fatalf("InitCA on existing dir: %v, want ErrCAExists", err)
		}
	})
	t.Run("other trust domain refused", func(t *testing.T) {
		_, err := LoadOrCreateCA(ca.dir, WithClock(clock.Now), WithTrustDomain(spiffeid.RequireTrustDomainFromString("other.local")))
		if err == nil || !strings.Contains(err.Error(), "trust domain") {
			t.Fatalf("load with other trust domain: %v", err)
		}
	})
	t.Run("group-readable key refused", func(t *testing.T) {
		keyPath := filepath.Join(ca.dir, ca.roots[0].name+rootKeyExt)
		for _, mode := range []os.FileMode{0o640, 0o604, 0o644} {
			if err := os.Chmod(keyPath, mode); err != nil {
				t.Fatal(err)
			}
			if _, err := LoadOrCreateCA(ca.dir, WithClock(clock.Now)); !errors.Is(err, ErrInsecureKeyFile) {
				t.Errorf("load with key mode %04o: %v, want ErrInsecureKeyFile", mode, err)
			}
		}
		if err := os.Chmod(keyPath, 0o600); err != nil {
			t.Fatal(err)
		}
	})
}

func TestInitCAMakesTokenKey(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "secret")
	if _, err := InitCA(dir); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, TokenKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("token key mode %04o, want 0600", fi.Mode().Perm())
	}
}

func TestCAOptionsValidated(t *testing.T) {
	tests := []struct {
		name string
		opts []Option
	}{
		{"zero TTL", []Option{WithSVIDTTL(0)}},
		{"rotate at 1", []Option{WithRotateAt(1)}},
		{"rotate at 0", []Option{WithRotateAt(0)}},
		{"no room for lead and overlap", []Option{WithRootLifetime(3 * time.Hour), WithRotateAt(0.9)}},
		{"lead eats the tail", []Option{WithRootLifetime(30 * 24 * time.Hour), WithRootLead(15 * 24 * time.Hour)}},
		{"nil clock", []Option{WithClock(nil)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := LoadOrCreateCA(t.TempDir(), tt.opts...); err == nil {
				t.Fatal("want error")
			}
		})
	}
}

func TestSVIDShape(t *testing.T) {
	clock := newFakeClock(t0)
	ca := newTestCA(t, clock)
	id := endpointID(t, "e1", "svc")

	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serials := map[string]bool{}
	for _, tc := range []struct {
		name      string
		key       crypto.Signer
		wantUsage x509.KeyUsage
	}{
		{"P-256", newP256(t), x509.KeyUsageDigitalSignature},
		{"P-384", p384, x509.KeyUsageDigitalSignature},
		{"RSA 2048", rsaKey, x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := ca.issuedCount()
			issued, err := ca.SignCSR(context.Background(), csrPEM(t, tc.key, x509.CertificateRequest{
				Subject: pkix.Name{CommonName: "ignored", Organization: []string{"ignored"}},
			}, id), id)
			if err != nil {
				t.Fatalf("SignCSR: %v", err)
			}
			if got := ca.issuedCount(); got != before+1 {
				t.Errorf("issued counter %v -> %v, want +1", before, got)
			}
			cert := parseCertPEM(t, issued.CertChainPEM)
			if len(cert.URIs) != 1 || cert.URIs[0].String() != id.String() {
				t.Errorf("URIs = %v, want exactly %s", cert.URIs, id)
			}
			if len(cert.DNSNames)+len(cert.IPAddresses)+len(cert.EmailAddresses) != 0 {
				t.Errorf("unexpected SANs %v %v %v", cert.DNSNames, cert.IPAddresses, cert.EmailAddresses)
			}
			if cert.Subject.CommonName != "" {
				t.Errorf("subject copied from CSR: %v", cert.Subject)
			}
			if cert.KeyUsage != tc.wantUsage {
				t.Errorf("KeyUsage = %b, want %b", cert.KeyUsage, tc.wantUsage)
			}
			if len(cert.ExtKeyUsage) != 2 || cert.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth || cert.ExtKeyUsage[1] != x509.ExtKeyUsageClientAuth {
				t.Errorf("ExtKeyUsage = %v, want server+client auth", cert.ExtKeyUsage)
			}
			if cert.IsCA || !cert.BasicConstraintsValid {
				t.Errorf("IsCA=%v BasicConstraintsValid=%v, want a non-CA leaf", cert.IsCA, cert.BasicConstraintsValid)
			}
			if ttl := cert.NotAfter.Sub(clock.Now()); ttl != time.Hour {
				t.Errorf("NotAfter is now+%s, want now+1h", ttl)
			}
			if !issued.ExpiresAt.Equal(cert.NotAfter) {
				t.Errorf("ExpiresAt %s != NotAfter %s", issued.ExpiresAt, cert.NotAfter)
			}
			if cert.NotBefore.After(clock.Now()) {
				t.Errorf("NotBefore %s is after now", cert.NotBefore)
			}
			if cert.SerialNumber.BitLen() > 128 || cert.SerialNumber.BitLen() < 64 {
				t.Errorf("serial has %d bits, want a random 128-bit number", cert.SerialNumber.BitLen())
			}
			if serials[cert.SerialNumber.String()] {
				t.Error("serial number repeated")
			}
			serials[cert.SerialNumber.String()] = true
			if !cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(tc.key.Public()) {
				t.Error("certificate is not for the CSR's key")
			}
			bundle, bundlePEM := ca.Bundle()
			if !bytes.Equal(bundlePEM, issued.BundlePEM) {
				t.Error("issued bundle differs from Bundle()")
			}
			if _, _, err := x509svid.Verify([]*x509.Certificate{cert}, bundle, x509svid.WithTime(clock.Now())); err != nil {
				t.Errorf("SVID does not verify against the bundle: %v", err)
			}
		})
	}
}

// TestSVIDNeverOutlivesRoot breaks the CA directory so that no successor root
// can be prepared, then signs near the root's end: the SVID must be cut at
// the root's NotAfter, and signing must go on while the directory is broken.
func TestSVIDNeverOutlivesRoot(t *testing.T) {
	clock := newFakeClock(t0)
	ca := newTestCA(t, clock, WithRootLifetime(10*time.Hour), WithRotateAt(0.5))
	state := filepath.Join(ca.dir, CAStateFile)
	if err := os.Remove(state); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(state, 0o700); err != nil {
		t.Fatal(err)
	}
	rootNotAfter := ca.roots[0].cert.NotAfter
	clock.Set(rootNotAfter.Add(-20 * time.Minute))
	_, issued := issueSVID(t, ca.CA, roleID(t, "ml"))
	if !issued.ExpiresAt.Equal(rootNotAfter) {
		t.Fatalf("SVID expires %s, want the root's NotAfter %s", issued.ExpiresAt, rootNotAfter)
	}
	if n := len(ca.roots); n != 1 {
		t.Fatalf("%d roots, want 1 (rotation cannot be persisted)", n)
	}
	// Past the root's end nothing valid can be signed: refuse rather than
	// produce a certificate that expires before it starts.
	clock.Set(rootNotAfter.Add(time.Second))
	before := ca.issuedCount()
	if issued, err := ca.SignCSR(context.Background(), csrPEM(t, newP256(t), x509.CertificateRequest{}, roleID(t, "ml")), roleID(t, "ml")); err == nil {
		t.Fatalf("signed %v with an expired root", issued.ExpiresAt)
	}
	if ca.issuedCount() != before {
		t.Fatal("issued counter moved")
	}
}

// TestReplicasAdoptEachOthersRoots runs two replicas on one CA directory with
// different rotation points: the one that rotates later learns of the other's
// new root through Maintain, long before that root signs anything.
func TestReplicasAdoptEachOthersRoots(t *testing.T) {
	clock := newFakeClock(t0)
	day := 24 * time.Hour
	early := newTestCA(t, clock, WithRootLifetime(30*day), WithRotateAt(0.5))
	late, err := LoadOrCreateCA(early.dir, WithClock(clock.Now), WithRootLifetime(30*day), WithRotateAt(0.8))
	if err != nil {
		t.Fatal(err)
	}
	clock.Set(t0.Add(15 * day))
	b, _ := early.Bundle()
	if len(b.X509Authorities()) != 2 {
		t.Fatal("early replica did not prepare a root")
	}
	if b, _ := late.Bundle(); len(b.X509Authorities()) != 1 {
		t.Fatal("late replica saw the new root without rereading the directory")
	}
	clock.Add(time.Minute)
	if err := late.Maintain(context.Background()); err != nil {
		t.Fatal(err)
	}
	lb, lpem := late.Bundle()
	_, epem := early.Bundle()
	if len(lb.X509Authorities()) != 2 || !bytes.Equal(lpem, epem) {
		t.Fatal("late replica did not adopt the early replica's root")
	}
	if len(late.roots) != 2 {
		t.Fatalf("late replica holds %d roots, want 2 (no second successor)", len(late.roots))
	}
	// After the lead time both sign with the new root.
	clock.Add(time.Hour)
	sa, _ := issueSVID(t, early.CA, roleID(t, "a"))
	sb, _ := issueSVID(t, late, roleID(t, "b"))
	if !bytes.Equal(sa.Certificates[0].AuthorityKeyId, sb.Certificates[0].AuthorityKeyId) ||
		!bytes.Equal(sa.Certificates[0].AuthorityKeyId, late.roots[1].cert.SubjectKeyId) {
		t.Fatal("replicas sign with different roots after the switch")
	}
}

func TestSignCSRRefusals(t *testing.T) {
	clock := newFakeClock(t0)
	ca := newTestCA(t, clock)
	ctx := context.Background()
	id := roleID(t, "ml")
	other := roleID(t, "admin")
	cp := ControlPlaneID(testTD)
	foreign := spiffeid.RequireFromString("spiffe://other.local/role/ml")
	key := newP256(t)
	good := csrPEM(t, key, x509.CertificateRequest{}, id)

	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	p224, err := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tampered := func() []byte {
		block, _ := pem.Decode(good)
		der := bytes.Clone(block.Bytes)
		der[len(der)-3] ^= 0xff // inside the signature
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	}()
	otherNameSAN := func() []byte {
		// A URI SAN plus an otherName SAN, which crypto/x509 does not model.
		uri := asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 6, Bytes: []byte(id.String())}
		other := asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: mustASN1(t, struct {
			OID asn1.ObjectIdentifier
			V   asn1.RawValue `asn1:"tag:0,explicit"`
		}{asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 20, 2, 3}, asn1.RawValue{Tag: asn1.TagUTF8String, Bytes: []byte("admin@x")}})[2:]}
		val := mustASN1(t, []asn1.RawValue{uri, other})
		return csrPEM(t, key, x509.CertificateRequest{ExtraExtensions: []pkix.Extension{{Id: oidSubjectAltName, Value: val}}})
	}()

	tests := []struct {
		name string
		csr  []byte
		id   spiffeid.ID
		want error
	}{
		{"garbage", []byte("not a csr"), id, ErrMalformedCSR},
		{"empty", nil, id, ErrMalformedCSR},
		{"certificate PEM", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1, 2}}), id, ErrMalformedCSR},
		{"truncated DER", func() []byte { b, _ := pem.Decode(good); return b.Bytes[:len(b.Bytes)/2] }(), id, ErrMalformedCSR},
		{"two PEM blocks", append(bytes.Clone(good), good...), id, ErrMalformedCSR},
		{"bad signature", tampered, id, ErrMalformedCSR},
		{"CSR for another ID", csrPEM(t, key, x509.CertificateRequest{}, other), id, ErrSANMismatch},
		{"control plane ID", csrPEM(t, key, x509.CertificateRequest{}, cp), cp, ErrIDNotAllowed},
		{"control plane ID in CSR only", csrPEM(t, key, x509.CertificateRequest{}, cp), id, ErrSANMismatch},
		{"other trust domain", csrPEM(t, key, x509.CertificateRequest{}, foreign), foreign, ErrIDNotAllowed},
		{"not a node ID", csrPEM(t, key, x509.CertificateRequest{}, spiffeid.RequireFromString("spiffe://cryptomesh.local/admin")), spiffeid.RequireFromString("spiffe://cryptomesh.local/admin"), ErrIDNotAllowed},
		{"RSA 1024", csrPEM(t, rsa1024, x509.CertificateRequest{}, id), id, ErrUnsupportedKey},
		{"P-224", csrPEM(t, p224, x509.CertificateRequest{}, id), id, ErrUnsupportedKey},
		{"Ed25519", csrPEM(t, edKey, x509.CertificateRequest{}, id), id, ErrUnsupportedKey},
		{"extra DNS SAN", csrPEM(t, key, x509.CertificateRequest{DNSNames: []string{"evil.example"}}, id), id, ErrSANMismatch},
		{"extra IP SAN", csrPEM(t, key, x509.CertificateRequest{IPAddresses: []net.IP{net.IPv4(10, 0, 0, 1)}}, id), id, ErrSANMismatch},
		{"extra email SAN", csrPEM(t, key, x509.CertificateRequest{EmailAddresses: []string{"a@b.c"}}, id), id, ErrSANMismatch},
		{"second URI SAN", csrPEM(t, key, x509.CertificateRequest{}, id, cp), id, ErrSANMismatch},
		{"no SAN", csrPEM(t, key, x509.CertificateRequest{Subject: pkix.Name{CommonName: id.String()}}), id, ErrSANMismatch},
		{"otherName SAN", otherNameSAN, id, ErrSANMismatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := ca.issuedCount()
			issued, err := ca.SignCSR(ctx, tt.csr, tt.id)
			if !errors.Is(err, tt.want) {
				t.Fatalf("SignCSR = %v, %v; want %v", issued, err, tt.want)
			}
			if issued != nil {
				t.Fatal("refusal returned a certificate")
			}
			if err.Error() == tt.want.Error() {
				t.Errorf("error %q carries no detail", err)
			}
			if got := ca.issuedCount(); got != before {
				t.Fatalf("issued counter moved %v -> %v on refusal", before, got)
			}
		})
	}
	// The same CA signs the good CSR, so the refusals above are not an
	// artefact of a broken CA.
	if _, err := ca.SignCSR(ctx, good, id); err != nil {
		t.Fatalf("good CSR refused: %v", err)
	}
}

func mustASN1(t testing.TB, v any) []byte {
	t.Helper()
	b, err := asn1.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestNeedsRenewal(t *testing.T) {
	cert := &x509.Certificate{NotBefore: t0, NotAfter: t0.Add(time.Hour)}
	tests := []struct {
		at   time.Duration
		want bool
	}{
		{0, false},
		{29*time.Minute + 59*time.Second, false},
		{30 * time.Minute, true},
		{59 * time.Minute, true},
		{2 * time.Hour, true},
	}
	for _, tt := range tests {
		if got := NeedsRenewal(cert, t0.Add(tt.at)); got != tt.want {
			t.Errorf("NeedsRenewal at +%s = %v, want %v", tt.at, got, tt.want)
		}
	}
}

func TestServingSource(t *testing.T) {
	clock := newFakeClock(t0)
	ca := newTestCA(t, clock)
	src, err := ca.ServingSource([]string{"localhost", "127.0.0.1", "cp.cryptomesh.svc", "::1"})
	if err != nil {
		t.Fatal(err)
	}
	svid, err := src.GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	cert := svid.Certificates[0]
	if svid.ID != ControlPlaneID(testTD) || len(cert.URIs) != 1 || cert.URIs[0].String() != ControlPlaneID(testTD).String() {
		t.Fatalf("serving SVID ID %s URIs %v", svid.ID, cert.URIs)
	}
	bundle, err := src.GetX509BundleForTrustDomain(testTD)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	for _, r := range bundle.X509Authorities() {
		pool.AddCert(r)
	}
	// gRPC clients with ca_certificate_file check the host against server_uri.
	for _, host := range []string{"localhost", "127.0.0.1", "cp.cryptomesh.svc", "::1"} {
		if _, err := cert.Verify(x509.VerifyOptions{DNSName: host, Roots: pool, CurrentTime: clock.Now()}); err != nil {
			t.Errorf("serving cert not valid for %s: %v", host, err)
		}
	}
	if _, err := cert.Verify(x509.VerifyOptions{DNSName: "evil.example", Roots: pool, CurrentTime: clock.Now()}); err == nil {
		t.Error("serving cert valid for a host it was not made for")
	}
	if ca.issuedCount() != 1 {
		t.Errorf("issued counter %v, want 1", ca.issuedCount())
	}
	if _, ok := ca.expirySeries(t)[ControlPlaneID(testTD).String()]; !ok {
		t.Error("no expiry series for the control plane's SVID")
	}

	clock.Add(29 * time.Minute)
	if again, _ := src.GetX509SVID(); again != svid {
		t.Error("serving SVID renewed before half-life")
	}
	clock.Add(time.Minute)
	renewed, err := src.GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	if renewed == svid || renewed.PrivateKey == svid.PrivateKey {
		t.Error("serving SVID (and key) not renewed at half-life")
	}

	if _, err := ca.ServingSource([]string{"bad host/name"}); err == nil {
		t.Error("bad --san accepted")
	}
}

func TestExpiryMetricDropsExpired(t *testing.T) {
	clock := newFakeClock(t0)
	ca := newTestCA(t, clock)
	a := roleID(t, "a")
	b := roleID(t, "b")
	_, ia := issueSVID(t, ca.CA, a)
	clock.Add(40 * time.Minute)
	_, ib := issueSVID(t, ca.CA, b)

	got := ca.expirySeries(t)
	if len(got) != 2 || got[a.String()] != float64(ia.ExpiresAt.Unix()) || got[b.String()] != float64(ib.ExpiresAt.Unix()) {
		t.Fatalf("series %v, want a=%d b=%d", got, ia.ExpiresAt.Unix(), ib.ExpiresAt.Unix())
	}
	clock.Add(30 * time.Minute) // a expired, b not
	got = ca.expirySeries(t)
	if _, ok := got[a.String()]; ok || len(got) != 1 {
		t.Fatalf("series after a expired: %v", got)
	}
	if ca.issuedCount() != 2 {
		t.Fatalf("issued counter %v, want 2", ca.issuedCount())
	}
}
