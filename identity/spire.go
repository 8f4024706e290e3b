package identity

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// SPIRESource is the control plane's identity in SPIRE mode (--identity spire
// --spire-socket PATH): its SVID and the trust bundle come from a SPIRE
// agent's Workload API and are kept current by go-spiffe's watcher. The
// control plane issues no SVIDs in this mode.
type SPIRESource struct {
	src *workloadapi.X509Source
	td  spiffeid.TrustDomain
}

var _ Source = (*SPIRESource)(nil)

// NewSPIRESource connects to the Workload API at socketPath (a path or a
// unix:// address) and waits, within ctx, for the first update. The agent must
// hand this workload an SVID for spiffe://<td>/control-plane; when it offers
// several, that one is picked, and when it offers none of them the
// registration entry is wrong and NewSPIRESource says so.
func NewSPIRESource(ctx context.Context, socketPath string, opts ...Option) (*SPIRESource, error) {
	o, err := newOptions(opts)
	if err != nil {
		return nil, err
	}
	addr, err := workloadAddr(socketPath)
	if err != nil {
		return nil, err
	}
	want := ControlPlaneID(o.trustDomain)
	src, err := workloadapi.NewX509Source(ctx,
		workloadapi.WithClientOptions(workloadapi.WithAddr(addr)),
		workloadapi.WithDefaultX509SVIDPicker(func(svids []*x509svid.SVID) *x509svid.SVID {
			for _, s := range svids {
				if s.ID == want {
					return s
				}
			}
			return nil
		}))
	if err != nil {
		return nil, fmt.Errorf("connect to SPIRE Workload API at %s: %w", addr, err)
	}
	s := &SPIRESource{src: src, td: o.trustDomain}
	if _, err := s.GetX509SVID(); err != nil {
		return nil, errors.Join(err, src.Close())
	}
	if _, err := s.GetX509BundleForTrustDomain(o.trustDomain); err != nil {
		return nil, errors.Join(err, src.Close())
	}
	o.logger.Info("using SPIRE Workload API", "addr", addr, "spiffe_id", want.String())
	return s, nil
}

func workloadAddr(socketPath string) (string, error) {
	if strings.HasPrefix(socketPath, "unix://") {
		return socketPath, nil
	}
	if socketPath == "" {
		return "", errors.New("SPIRE mode needs --spire-socket")
	}
	abs, err := filepath.Abs(socketPath)
	if err != nil {
		return "", fmt.Errorf("SPIRE socket path %s: %w", socketPath, err)
	}
	return "unix://" + abs, nil
}

// GetX509SVID implements x509svid.Source with the control plane's SVID.
func (s *SPIRESource) GetX509SVID() (*x509svid.SVID, error) {
	svid, err := s.src.GetX509SVID()
	if err != nil {
		return nil, fmt.Errorf("SPIRE gave no SVID for %s (check its registration entry): %w", ControlPlaneID(s.td), err)
	}
	return svid, nil
}

// GetX509BundleForTrustDomain implements x509bundle.Source.
func (s *SPIRESource) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	b, err := s.src.GetX509BundleForTrustDomain(td)
	if err != nil {
		return nil, fmt.Errorf("SPIRE bundle for %s: %w", td, err)
	}
	return b, nil
}

// Updated signals each update from the Workload API (SVID or bundle).
func (s *SPIRESource) Updated() <-chan struct{} { return s.src.Updated() }

// Close drops the Workload API connection.
func (s *SPIRESource) Close() error {
	if err := s.src.Close(); err != nil {
		return fmt.Errorf("close SPIRE source: %w", err)
	}
	return nil
}
