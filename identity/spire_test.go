package identity

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// fakeWorkloadAPI is a SPIFFE Workload API server (the part a SPIRE agent
// serves to X509Source) whose answer the test can replace at any time.
type fakeWorkloadAPI struct {
	workload.UnimplementedSpiffeWorkloadAPIServer

	mu      sync.Mutex
	resp    *workload.X509SVIDResponse
	changed chan struct{}
}

func (f *fakeWorkloadAPI) set(resp *workload.X509SVIDResponse) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.resp = resp
	close(f.changed)
	f.changed = make(chan struct{})
}

func (f *fakeWorkloadAPI) FetchX509SVID(_ *workload.X509SVIDRequest, stream workload.SpiffeWorkloadAPI_FetchX509SVIDServer) error {
	// A real agent refuses clients that do not mark themselves as
	// workloads; go-spiffe always sends the header.
	md, _ := metadata.FromIncomingContext(stream.Context())
	if v := md.Get("workload.spiffe.io"); len(v) != 1 || v[0] != "true" {
		return status.Error(codes.InvalidArgument, "security header missing from request")
	}
	for {
		f.mu.Lock()
		resp, changed := f.resp, f.changed
		f.mu.Unlock()
		if err := stream.Send(resp); err != nil {
			return err
		}
		select {
		case <-changed:
		case <-stream.Context().Done():
			return nil
		}
	}
}

func startWorkloadAPI(t *testing.T, resp *workload.X509SVIDResponse) (*fakeWorkloadAPI, string) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "agent.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	api := &fakeWorkloadAPI{resp: resp, changed: make(chan struct{})}
	srv := grpc.NewServer()
	workload.RegisterSpiffeWorkloadAPIServer(srv, api)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return api, sock
}

// workloadResponse encodes SVIDs and the bundle as the Workload API does:
// DER certificate chains, PKCS#8 keys, DER-concatenated bundles.
func workloadResponse(t *testing.T, bundle *x509bundle.Bundle, svids ...*x509svid.SVID) *workload.X509SVIDResponse {
	t.Helper()
	var rawBundle []byte
	for _, c := range bundle.X509Authorities() {
		rawBundle = append(rawBundle, c.Raw...)
	}
	resp := &workload.X509SVIDResponse{}
	for _, s := range svids {
		certs, key, err := s.MarshalRaw()
		if err != nil {
			t.Fatal(err)
		}
		resp.Svids = append(resp.Svids, &workload.X509SVID{SpiffeId: s.ID.String(), X509Svid: certs, X509SvidKey: key, Bundle: rawBundle})
	}
	return resp
}

// controlPlaneSVID plays the SPIRE server: it signs the control plane's ID,
// which SignCSR rightly refuses to do for anyone.
func controlPlaneSVID(t *testing.T, ca *CA) *x509svid.SVID {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id := ControlPlaneID(testTD)
	issued, err := ca.sign(context.Background(), key.Public(), id, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return &x509svid.SVID{ID: id, Certificates: []*x509.Certificate{parseCertPEM(t, issued.CertChainPEM)}, PrivateKey: key}
}

func TestSPIRESource(t *testing.T) {
	// SPIRE's SVIDs are checked by tlsconfig at wall-clock time.
	ca := newTestCA(t, newFakeClock(time.Now()))
	bundle, _ := ca.Bundle()
	node, _ := issueSVID(t, ca.CA, roleID(t, "ml"))
	first := controlPlaneSVID(t, ca.CA)
	// The agent lists another SVID first: the source must pick ours.
	api, sock := startWorkloadAPI(t, workloadResponse(t, bundle, node, first))

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	src, err := NewSPIRESource(ctx, sock, WithTrustDomain(testTD))
	if err != nil {
		t.Fatalf("NewSPIRESource: %v", err)
	}
	defer src.Close()
	var _ Source = src

	got, err := src.GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != ControlPlaneID(testTD) || got.Certificates[0].SerialNumber.Cmp(first.Certificates[0].SerialNumber) != 0 {
		t.Fatalf("SVID %s serial %v, want the control plane's", got.ID, got.Certificates[0].SerialNumber)
	}
	b, err := src.GetX509BundleForTrustDomain(testTD)
	if err != nil || !b.Equal(bundle) {
		t.Fatalf("bundle %v, %v; want the CA's", b, err)
	}

	// The same Source drives the control plane's TLS: a node of the trust
	// domain completes a handshake with it.
	srvCfg := tlsconfig.MTLSServerConfig(src, src, tlsconfig.AdaptMatcher(RoleMatcher(testTD, "ml")))
	cliCfg := tlsconfig.MTLSClientConfig(node, ca, tlsconfig.AuthorizeID(ControlPlaneID(testTD)))
	if serr, cerr := handshake(t, srvCfg, cliCfg); serr != nil || cerr != nil {
		t.Fatalf("handshake with the SPIRE-backed server: server %v, client %v", serr, cerr)
	}

	// The agent rotates the SVID; the source follows without a restart.
	second := controlPlaneSVID(t, ca.CA)
	api.set(workloadResponse(t, bundle, second))
	deadline := time.Now().Add(15 * time.Second)
	for {
		got, err := src.GetX509SVID()
		if err == nil && got.Certificates[0].SerialNumber.Cmp(second.Certificates[0].SerialNumber) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("source did not pick up the rotated SVID")
		}
		select {
		case <-src.Updated():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func TestSPIRESourceRefusals(t *testing.T) {
	ca := newTestCA(t, newFakeClock(time.Now()))
	bundle, _ := ca.Bundle()
	node, _ := issueSVID(t, ca.CA, roleID(t, "ml"))

	t.Run("no control-plane SVID", func(t *testing.T) {
		_, sock := startWorkloadAPI(t, workloadResponse(t, bundle, node))
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_, err := NewSPIRESource(ctx, sock, WithTrustDomain(testTD))
		if err == nil || !strings.Contains(err.Error(), "registration entry") {
			t.Fatalf("err = %v, want a hint at the registration entry", err)
		}
	})
	t.Run("no agent", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		_, err := NewSPIRESource(ctx, filepath.Join(t.TempDir(), "missing.sock"), WithTrustDomain(testTD))
		if !errors.Is(err, context.DeadlineExceeded) && (err == nil || !strings.Contains(err.Error(), "deadline")) {
			t.Fatalf("err = %v, want the context's deadline", err)
		}
	})
	t.Run("no socket configured", func(t *testing.T) {
		if _, err := NewSPIRESource(context.Background(), ""); err == nil {
			t.Fatal("empty socket path accepted")
		}
	})
}
