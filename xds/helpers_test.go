package xds

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/cryptomesh/cryptomesh/registry"
	"github.com/cryptomesh/cryptomesh/registry/mesh"
	"github.com/cryptomesh/cryptomesh/registry/store/memstore"
)

const testTrustDomain = "cryptomesh.local"

// The two example documents the golden files are made from.
const (
	mlPipeline = "ml-pipeline/mesh.yaml"
	legacy     = "legacy/sentiment.yaml"
)

func openRegistry(t testing.TB) *registry.Registry {
	t.Helper()
	r, err := registry.Open(context.Background(), memstore.New(), registry.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// applyDoc applies a mesh document (YAML or JSON) to r.
func applyDoc(t testing.TB, r *registry.Registry, data []byte) {
	t.Helper()
	doc, err := mesh.Parse(data, 0)
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	if _, err := mesh.Apply(context.Background(), r, doc, false); err != nil {
		t.Fatalf("apply: %v", err)
	}
}

func readExample(t testing.TB, rel string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "examples", rel))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// exampleRegistry is a registry holding one example document.
func exampleRegistry(t testing.TB, rel string) *registry.Registry {
	t.Helper()
	r := openRegistry(t)
	applyDoc(t, r, readExample(t, rel))
	return r
}

func translatorFor(t testing.TB, r *registry.Registry, opts Options) *Translator {
	t.Helper()
	m, err := NewModel(r.View())
	if err != nil {
		t.Fatalf("model: %v", err)
	}
	if opts.TrustDomain == "" {
		opts.TrustDomain = testTrustDomain
	}
	tr, err := NewTranslator(m, opts)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

func exampleTranslator(t testing.TB, rel string) *Translator {
	t.Helper()
	return translatorFor(t, exampleRegistry(t, rel), Options{})
}

// translate translates for n and checks what every snapshot must satisfy:
// each resource's bytes are the deterministic marshalling of its message
// (also where they were assembled from parts), its version their hash, and
// the message passes ValidateAll as a whole and everything packed in it
// too (also where it was validated by parts).
func translate(t testing.TB, tr *Translator, n Node) *Snapshot {
	t.Helper()
	s, err := tr.Translate(n)
	if err != nil {
		t.Fatalf("translate: %v", err)
	}
	var fresh checker // trusts no Any: unpacks and validates every one
	for _, typeURL := range TypeURLs() {
		for _, r := range s.Resources(typeURL) {
			want, err := proto.MarshalOptions{Deterministic: true}.Marshal(r.Message)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(r.Bytes, want) {
				t.Fatalf("%s %s: Bytes are not the deterministic marshalling of the message", shortType(typeURL), r.Name)
			}
			if r.Version != hashHex(r.Bytes) {
				t.Fatalf("%s %s: version is not the hash of the bytes", shortType(typeURL), r.Name)
			}
			if err := fresh.validate(r.Message); err != nil {
				t.Fatalf("%s %s does not validate as a whole: %v", shortType(typeURL), r.Name, err)
			}
		}
	}
	return s
}

// fixtureCredentials are the fixed SVIDs of testdata/pki, by file stem.
func fixtureCredentials(t testing.TB, stem string) *Credentials {
	t.Helper()
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join("testdata", "pki", name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	return &Credentials{
		CertChainPEM: read(stem + ".pem"),
		KeyPEM:       read(stem + "-key.pem"),
		BundlePEM:    read("bundle.pem"),
	}
}

// testCA issues fresh SVIDs for tests that need an identity the fixtures
// do not have.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t testing.TB) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue returns credentials for the given URI SANs (usually one).
func (ca *testCA) issue(t testing.TB, uris ...string) *Credentials {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	for _, u := range uris {
		parsed, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, parsed)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return &Credentials{
		CertChainPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:       pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}),
		BundlePEM:    ca.pem,
	}
}
