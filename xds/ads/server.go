// Package ads serves the configuration package xds translates over the
// Aggregated Discovery Service, state of the world (SPEC §6), to Envoy
// sidecars, CryptoMesh's proxy and proxyless grpc-go nodes.
//
// It owns everything between the registry and the wire: the change feed,
// debounced (cache.go) into generations, one per translated registry
// revision; the authentication of every stream and the node check on every
// request (auth.go); the per-stream state machine that answers
// subscriptions by name and pushes only what changed (stream.go); the NACK
// bookkeeping that never re-sends a rejected version to the node that
// rejected it (nack.go); the SVIDs handed to Envoy and proxy nodes over SDS
// (creds.go); the metrics (metrics.go) and the status of connected streams
// (status.go).
//
// The ADS service is implemented here on go-control-plane's protos rather
// than with its server and snapshot cache: that cache re-sends a NACKed
// version forever, ignores partial named subscriptions in ADS mode (grpc-go
// subscribes by name), lets a stream change its node mid-way and marshals
// every resource per client. Here a resource shared by many nodes travels
// as the bytes the translation marshalled once.
//
// Delta xDS is not served: grpc-go speaks only state of the world, and the
// other clients (Envoy, the proxy) speak it too.
package ads

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cryptomesh/cryptomesh/identity"
	"github.com/cryptomesh/cryptomesh/registry"
	"github.com/cryptomesh/cryptomesh/xds"
)

// Registry is what the server reads of the registry: consistent views to
// translate and the change feed that says when to translate again.
// *registry.Registry implements it.
type Registry interface {
	View() *registry.View
	Subscribe(kinds ...registry.Kind) *registry.Subscription
}

// Authenticator turns a stream's credentials into the node they stand for.
// *identity.Authenticator implements it.
type Authenticator interface {
	FromToken(ctx context.Context, token string) (identity.NodeCredential, error)
	FromCertificates(ctx context.Context, chain []*x509.Certificate) (identity.NodeCredential, error)
}

// Signer signs the SVIDs that Envoy and proxy nodes receive over SDS. The
// built-in CA (*identity.CA) implements it.
type Signer interface {
	SignCSR(ctx context.Context, csr []byte, id spiffeid.ID) (*identity.Issued, error)
}

// ResourceHook may replace a resource on its way to one node. It exists for
// tests only, to publish a resource that passed validation and is then made
// invalid, and so prove what happens to a NACK.
type ResourceHook func(n xds.Node, r *xds.Resource) *xds.Resource

// Defaults of the debounce of SPEC §6.
const (
	DefaultQuiet    = 100 * time.Millisecond
	DefaultMaxDelay = time.Second
)

// Server is the ADS server. Run follows the registry; Register puts the
// service on a gRPC server.
type Server struct {
	discoveryv3.UnimplementedAggregatedDiscoveryServiceServer

	reg     Registry
	auth    Authenticator
	td      spiffeid.TrustDomain
	xopts   xds.Options
	signer  Signer
	log     *slog.Logger
	metrics *metrics
	hook    ResourceHook
	quiet   time.Duration
	maxWait time.Duration
	now     func() time.Time

	gen     atomic.Pointer[generation]
	started chan struct{} // closed once the first generation is published

	mu      sync.Mutex
	streams map[*stream]struct{}
	nodes   map[string]*nodeState // by node id, while it has streams
	closed  bool
	nextID  uint64
}

type config struct {
	log        *slog.Logger
	registerer prometheus.Registerer
	td         string
	signer     Signer
	hook       ResourceHook
	quiet      time.Duration
	maxWait    time.Duration
	now        func() time.Time
}

// Option configures a Server.
type Option func(*config)

// WithLogger sets the logger.
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.log = l } }

// WithRegisterer registers the xDS metrics of SPEC §8 on reg.
func WithRegisterer(reg prometheus.Registerer) Option { return func(c *config) { c.registerer = reg } }

// WithTrustDomain sets the trust domain of every SPIFFE ID (default
// cryptomesh.local).
func WithTrustDomain(td string) Option { return func(c *config) { c.td = td } }

// WithSigner has Envoy and proxy nodes served their own SVID and the bundle
// over SDS, each stream with a key of its own, renewed at half-life.
func WithSigner(s Signer) Option { return func(c *config) { c.signer = s } }

// WithDebounce sets how long the registry must be quiet before a change is
// translated, and the longest a change may wait under a steady stream of
// others (defaults DefaultQuiet and DefaultMaxDelay).
func WithDebounce(quiet, maxDelay time.Duration) Option {
	return func(c *config) { c.quiet, c.maxWait = quiet, maxDelay }
}

// WithClock replaces time.Now for the times the status reports.
func WithClock(now func() time.Time) Option { return func(c *config) { c.now = now } }

// WithTestResourceHook installs a ResourceHook. For tests only.
func WithTestResourceHook(h ResourceHook) Option { return func(c *config) { c.hook = h } }

// New returns a server over reg that authenticates streams with auth.
func New(reg Registry, auth Authenticator, opts ...Option) (*Server, error) {
	if reg == nil || auth == nil {
		return nil, errors.New("ads: a registry and an authenticator are required")
	}
	c := config{td: identity.DefaultTrustDomain, quiet: DefaultQuiet, maxWait: DefaultMaxDelay, now: time.Now}
	for _, o := range opts {
		o(&c)
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	td, err := spiffeid.TrustDomainFromString(c.td)
	if err != nil {
		return nil, fmt.Errorf("ads: trust domain %q: %w", c.td, err)
	}
	if c.quiet <= 0 || c.maxWait < c.quiet {
		return nil, fmt.Errorf("ads: debounce quiet %s and maximum %s: want 0 < quiet <= maximum", c.quiet, c.maxWait)
	}
	m, err := newMetrics(c.registerer)
	if err != nil {
		return nil, err
	}
	s := &Server{
		reg: reg, auth: auth, td: td, signer: c.signer, log: c.log, metrics: m, hook: c.hook,
		xopts: xds.Options{TrustDomain: td.Name()},
		quiet: c.quiet, maxWait: c.maxWait, now: c.now,
		started: make(chan struct{}),
		streams: map[*stream]struct{}{},
		nodes:   map[string]*nodeState{},
	}
	if c.signer == nil {
		s.log.Warn("xDS: no signer (SPIRE mode): Envoy and proxy nodes get no secrets and cannot serve TLS")
	}
	return s, nil
}

// Register adds the ADS service to g.
func (s *Server) Register(g *grpc.Server) {
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(g, s)
}

// Ready reports whether the server has configuration to serve.
func (s *Server) Ready() error {
	select {
	case <-s.started:
		return nil
	default:
		return errors.New("no registry revision translated yet")
	}
}

// Close ends every stream (Unavailable: the node reconnects, to another
// replica if there is one) and refuses new ones, so that a gRPC server's
// GracefulStop need not wait for streams that never end by themselves.
func (s *Server) Close() {
	s.mu.Lock()
	s.closed = true
	streams := make([]*stream, 0, len(s.streams))
	for st := range s.streams {
		streams = append(streams, st)
	}
	s.mu.Unlock()
	for _, st := range streams {
		st.cancel(status.Error(codes.Unavailable, "the control plane is shutting down"))
	}
}

// DeltaAggregatedResources is not served: see the package comment.
func (s *Server) DeltaAggregatedResources(discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	return status.Error(codes.Unimplemented, "delta xDS is not served; use state-of-the-world ADS")
}
