package identity

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Defaults of SPEC §4.
const (
	DefaultRootLifetime = 365 * 24 * time.Hour
	DefaultSVIDTTL      = time.Hour
	// DefaultRotateAt is the fraction of the active root's life after which a
	// successor is prepared. At 2/3 of a year there are four months left for
	// the lead time and the overlap, which dwarf any SVID TTL.
	DefaultRotateAt = 2.0 / 3.0
	// DefaultTokenIssuer and DefaultTokenAudience go into every join token.
	DefaultTokenIssuer   = "cryptomesh-control-plane"
	DefaultTokenAudience = "cryptomesh"
)

// Option configures the CA, the token authority and the authenticator. One
// option type serves all three so that cmd can hand the same clock, logger and
// trust domain to each; an option that does not concern a constructor is
// ignored by it.
type Option func(*options)

type options struct {
	clock        func() time.Time
	logger       *slog.Logger
	trustDomain  spiffeid.TrustDomain
	rootLifetime time.Duration
	svidTTL      time.Duration
	rotateAt     float64
	rootLead     time.Duration
	metrics      *Metrics
	issuer       string
	audience     string
}

func newOptions(opts []Option) (*options, error) {
	o := &options{
		clock:        time.Now,
		logger:       slog.New(slog.DiscardHandler),
		trustDomain:  spiffeid.RequireTrustDomainFromString(DefaultTrustDomain),
		rootLifetime: DefaultRootLifetime,
		svidTTL:      DefaultSVIDTTL,
		rotateAt:     DefaultRotateAt,
		issuer:       DefaultTokenIssuer,
		audience:     DefaultTokenAudience,
	}
	for _, opt := range opts {
		opt(o)
	}
	if o.clock == nil {
		return nil, fmt.Errorf("identity options: clock must not be nil")
	}
	if o.logger == nil {
		return nil, fmt.Errorf("identity options: logger must not be nil")
	}
	if o.trustDomain.IsZero() {
		return nil, fmt.Errorf("identity options: trust domain must not be empty")
	}
	if o.issuer == "" || o.audience == "" {
		return nil, fmt.Errorf("identity options: token issuer and audience must not be empty")
	}
	return o, nil
}

// WithClock replaces time.Now, so that tests can run a year of rotations in
// milliseconds. Every time decision of the package goes through it.
func WithClock(now func() time.Time) Option {
	return func(o *options) { o.clock = now }
}

// WithLogger sets the logger; by default nothing is logged.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) { o.logger = l }
}

// WithTrustDomain sets the trust domain (default cryptomesh.local).
func WithTrustDomain(td spiffeid.TrustDomain) Option {
	return func(o *options) { o.trustDomain = td }
}

// WithRootLifetime sets the lifetime of each new root (default 1 year).
func WithRootLifetime(d time.Duration) Option {
	return func(o *options) { o.rootLifetime = d }
}

// WithSVIDTTL sets the lifetime of issued X.509-SVIDs (default 1 hour).
func WithSVIDTTL(d time.Duration) Option {
	return func(o *options) { o.svidTTL = d }
}

// WithRotateAt sets the fraction (0 < f < 1) of the active root's life after
// which its successor is prepared (default 2/3).
func WithRotateAt(f float64) Option {
	return func(o *options) { o.rotateAt = f }
}

// WithRootLead sets how long a prepared root sits in the bundle before it
// signs anything. It is never less than the SVID TTL (the default), because
// nodes pick up the bundle when they renew, at the latest one TTL apart.
func WithRootLead(d time.Duration) Option {
	return func(o *options) { o.rootLead = d }
}

// WithMetrics records issuance in m.
func WithMetrics(m *Metrics) Option {
	return func(o *options) { o.metrics = m }
}
