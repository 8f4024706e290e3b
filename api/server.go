// Package api serves the control plane's REST API (SPEC §2): the entity
// routes of every registry kind, latest states, batched reports from
// proxies, mesh documents (apply and export), the OpenAPI description of
// all of it, health and readiness probes and the Prometheus metrics.
//
// It owns the HTTP side only: routing, body and query parsing, the error
// shape, authentication and authorization, CORS, request metrics and
// logs. Every rule about the entities themselves lives in package
// registry; the API passes bodies through as decoded JSON and maps the
// registry's error codes to HTTP statuses.
//
// A request passes, outside in: instrument (panic recovery, metrics,
// request log) → cors → cleanPaths (no redirects) → the ServeMux → the
// route's method dispatch (405, preflight) → authorize (401/403) → the
// handler.
package api

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/cryptomesh/cryptomesh/registry"
	"github.com/prometheus/client_golang/prometheus"
)

// Server is the REST API over one registry.
type Server struct {
	reg       *registry.Registry
	log       *slog.Logger
	authn     []Authenticator
	origins   map[string]bool
	maxBody   int64
	maxApply  int64
	readiness []readinessCheck
	gatherer  prometheus.Gatherer
	metrics   *metrics
	identity  *IdentityConfig // nil: no identity routes, no node authentication
	proxies   ProxySource     // nil: no xDS server, no proxies to list
	handler   http.Handler
}

// config collects the options before New checks them together.
type config struct {
	log        *slog.Logger
	registerer prometheus.Registerer
	gatherer   prometheus.Gatherer
	authn      []Authenticator
	origins    []string
	maxBody    int64
	maxApply   int64
	readiness  []readinessCheck
	identity   *IdentityConfig
	proxies    ProxySource
	// errs collects invalid options so New can report them all at once.
	errs []error
}

// Option configures a Server.
type Option func(*config)

// WithLogger sets the logger for request logs and server-side errors.
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.log = l } }

// WithRegisterer registers the API metrics on reg instead of a private
// registry. If reg is also a prometheus.Gatherer (a *prometheus.Registry
// is) /metrics serves it, unless WithGatherer says otherwise.
func WithRegisterer(reg prometheus.Registerer) Option {
	return func(c *config) { c.registerer = reg }
}

// WithGatherer sets what /metrics serves; it should include the
// registerer's metrics and those of the registry and other components.
func WithGatherer(g prometheus.Gatherer) Option { return func(c *config) { c.gatherer = g } }

// WithAuthenticator adds an Authenticator. They are asked in the order
// given; at least one is required, since the API has no unauthenticated
// mode (SPEC §2).
func WithAuthenticator(a Authenticator) Option {
	return func(c *config) {
		if a == nil {
			c.errs = append(c.errs, errors.New("WithAuthenticator: nil authenticator"))
			return
		}
		c.authn = append(c.authn, a)
	}
}

// WithCORSOrigins sets the browser origins allowed to call the API
// (`--cors-origins`), each exactly as browsers send it
// ("https://ui.example.com"). Requests from other origins are refused.
func WithCORSOrigins(origins []string) Option {
	return func(c *config) { c.origins = append(c.origins, origins...) }
}

// WithMaxBodyBytes sets the request body limit (default 1 MiB).
func WithMaxBodyBytes(n int64) Option {
	return func(c *config) {
		if n <= 0 {
			c.errs = append(c.errs, fmt.Errorf("WithMaxBodyBytes: limit must be positive, not %d", n))
			return
		}
		c.maxBody = n
	}
}

// WithMaxApplyBytes sets the body limit of POST /api/v1/apply
// (`--max-apply-bytes`, default 64 MiB): a mesh document may describe a
// whole ML system, far beyond the 1 MiB of a single entity.
func WithMaxApplyBytes(n int64) Option {
	return func(c *config) {
		if n <= 0 {
			c.errs = append(c.errs, fmt.Errorf("WithMaxApplyBytes: limit must be positive, not %d", n))
			return
		}
		c.maxApply = n
	}
}

// WithReadiness adds a component to /readyz: check returns nil while the
// component serves, else what is wrong, which /readyz shows under name.
// Checks are called on every probe and must be quick.
func WithReadiness(name string, check func() error) Option {
	return func(c *config) {
		if name == "" || name == "registry" || check == nil {
			c.errs = append(c.errs, fmt.Errorf("WithReadiness: need a name other than %q and a check", "registry"))
			return
		}
		c.readiness = append(c.readiness, readinessCheck{name: name, check: check})
	}
}

// New returns the API server for reg.
func New(reg *registry.Registry, opts ...Option) (*Server, error) {
	if reg == nil {
		return nil, errors.New("api: no registry")
	}
	c := &config{maxBody: DefaultMaxBodyBytes, maxApply: DefaultMaxApplyBytes}
	for _, o := range opts {
		o(c)
	}
	if c.identity != nil {
		// Last: admin tokens are tried first, then join tokens and SVIDs.
		c.authn = append(c.authn, nodeAuthenticator{nodes: c.identity.Nodes})
	}
	if len(c.authn) == 0 {
		c.errs = append(c.errs, errors.New("no authenticator: the API has no unauthenticated mode; use WithAuthenticator"))
	}
	origins, err := checkOrigins(c.origins)
	if err != nil {
		c.errs = append(c.errs, err)
	}
	if len(c.errs) > 0 {
		return nil, fmt.Errorf("api: %w", errors.Join(c.errs...))
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.registerer == nil {
		// A private registry rather than the global default: library code
		// never registers globally, and tests may build many servers.
		private := prometheus.NewRegistry()
		c.registerer = private
		if c.gatherer == nil {
			c.gatherer = private
		}
	}
	if c.gatherer == nil {
		g, ok := c.registerer.(prometheus.Gatherer)
		if !ok {
			return nil, errors.New("api: the registerer is not a Gatherer; add WithGatherer for /metrics")
		}
		c.gatherer = g
	}
	m, err := newMetrics(c.registerer)
	if err != nil {
		return nil, fmt.Errorf("api: %w", err)
	}
	s := &Server{
		reg:       reg,
		log:       c.log,
		authn:     c.authn,
		origins:   origins,
		maxBody:   c.maxBody,
		maxApply:  c.maxApply,
		readiness: c.readiness,
		gatherer:  c.gatherer,
		metrics:   m,
		identity:  c.identity,
		proxies:   c.proxies,
	}
	s.handler = s.instrument(s.cors(s.cleanPaths(s.buildMux())))
	return s, nil
}

// Handler returns the HTTP handler of the whole API.
func (s *Server) Handler() http.Handler { return s.handler }
