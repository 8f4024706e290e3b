package identity

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"net/url"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func benchCA(b *testing.B) *testCA {
	return newTestCA(b, newFakeClock(t0))
}

// rawTemplate is the certificate SignCSR makes, for the baseline loop.
func rawTemplate(b *testing.B, id spiffeid.ID) *x509.Certificate {
	serial, err := randomSerial()
	if err != nil {
		b.Fatal(err)
	}
	return &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{Organization: []string{"CryptoMesh"}},
		NotBefore: t0, NotAfter: t0.Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true, URIs: []*url.URL{id.URL()},
	}
}

// BenchmarkSignCSR is the whole issuance: parse the CSR, check its key,
// signature and SANs, sign, encode.
func BenchmarkSignCSR(b *testing.B) {
	ca := benchCA(b)
	id := roleID(b, "ml")
	csr := csrPEM(b, newP256(b), x509.CertificateRequest{}, id)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ca.SignCSR(ctx, csr, id); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "svids/s")
}

// BenchmarkRawCreateCertificate is the baseline: x509.CreateCertificate alone
// with the same root key and template.
func BenchmarkRawCreateCertificate(b *testing.B) {
	ca := benchCA(b)
	root := ca.roots[0]
	pub := newP256(b).Public()
	tmpl := rawTemplate(b, roleID(b, "ml"))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := x509.CreateCertificate(rand.Reader, tmpl, root.cert, pub, root.key); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "certs/s")
}

// BenchmarkSignCSRVsRaw measures both loops in alternating rounds of the
// same run and reports SignCSR's throughput as a fraction of the raw loop's,
// plus the fraction against the floor every safe issuer pays: the raw loop
// plus parsing and verifying the CSR (proof of possession).
func BenchmarkSignCSRVsRaw(b *testing.B) {
	ca := benchCA(b)
	root := ca.roots[0]
	id := roleID(b, "ml")
	key := newP256(b)
	csr := csrPEM(b, key, x509.CertificateRequest{}, id)
	block, _ := pem.Decode(csr)
	tmpl := rawTemplate(b, id)
	ctx := context.Background()
	const round = 50
	var tSign, tRaw, tFloor time.Duration
	for b.Loop() {
		start := time.Now()
		for range round {
			if _, err := ca.SignCSR(ctx, csr, id); err != nil {
				b.Fatal(err)
			}
		}
		tSign += time.Since(start)
		start = time.Now()
		for range round {
			if _, err := x509.CreateCertificate(rand.Reader, tmpl, root.cert, key.Public(), root.key); err != nil {
				b.Fatal(err)
			}
		}
		tRaw += time.Since(start)
		start = time.Now()
		for range round {
			req, err := x509.ParseCertificateRequest(block.Bytes)
			if err != nil || req.CheckSignature() != nil {
				b.Fatal("CSR")
			}
			if _, err := x509.CreateCertificate(rand.Reader, tmpl, root.cert, req.PublicKey, root.key); err != nil {
				b.Fatal(err)
			}
		}
		tFloor += time.Since(start)
	}
	b.ReportMetric(tRaw.Seconds()/tSign.Seconds(), "signcsr/raw")
	b.ReportMetric(tFloor.Seconds()/tSign.Seconds(), "signcsr/raw+csrcheck")
	b.ReportMetric(float64(b.N*round)/tSign.Seconds(), "svids/s")
	b.ReportMetric(float64(b.N*round)/tRaw.Seconds(), "raw-certs/s")
}

// BenchmarkReissue1000Endpoints is the control plane's share of every
// endpoint's sidecar renewing at once (after a root switch, say): 1,000
// CSRs, each for its own endpoint ID, signed by as many workers as there
// are CPUs, as concurrent API requests would be. Nodes make their keys and
// CSRs themselves, so that is done before the clock starts.
func BenchmarkReissue1000Endpoints(b *testing.B) {
	ca := benchCA(b)
	const n = 1000
	ids := make([]spiffeid.ID, n)
	csrs := make([][]byte, n)
	for i := range n {
		ids[i] = endpointID(b, fmt.Sprintf("ep-%04d", i), "svc")
		csrs[i] = csrPEM(b, newP256(b), x509.CertificateRequest{}, ids[i])
	}
	ctx := context.Background()
	workers := runtime.GOMAXPROCS(0)
	for b.Loop() {
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		for w := range workers {
			wg.Go(func() {
				for i := w; i < n; i += workers {
					if _, err := ca.SignCSR(ctx, csrs[i], ids[i]); err != nil {
						errs <- err
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		if err := <-errs; err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(b.Elapsed().Seconds()*1000/float64(b.N), "ms/1000-endpoints")
}
