package identity

import (
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Metrics holds the identity metrics of SPEC §8. Create it once with
// NewMetrics and pass it to the CA with WithMetrics.
type Metrics struct {
	issued prometheus.Counter
	expiry *expiryCollector
}

// NewMetrics registers the identity metrics on reg (never the global registry:
// tests and several control planes in one process each bring their own).
// clock decides which SVIDs have expired; nil means time.Now.
func NewMetrics(reg prometheus.Registerer, clock func() time.Time) (*Metrics, error) {
	if clock == nil {
		clock = time.Now
	}
	m := &Metrics{
		issued: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cryptomesh_identity_svids_issued_total",
			Help: "X.509-SVIDs signed by the built-in CA, for nodes and for the control plane itself.",
		}),
		expiry: &expiryCollector{
			desc: prometheus.NewDesc(
				"cryptomesh_identity_svid_expiry_timestamp_seconds",
				"Expiry (Unix seconds) of the newest unexpired X.509-SVID issued or held by the control plane, per SPIFFE ID.",
				[]string{"spiffe_id"}, nil),
			clock:    clock,
			expiries: map[string]time.Time{},
		},
	}
	for _, c := range []prometheus.Collector{m.issued, m.expiry} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register identity metrics: %w", err)
		}
	}
	return m, nil
}

// svidIssued counts one signed SVID and tracks its expiry.
func (m *Metrics) svidIssued(id spiffeid.ID, notAfter time.Time) {
	if m == nil {
		return
	}
	m.issued.Inc()
	m.expiry.observe(id.String(), notAfter)
}

// expiryCollector exports one series per SPIFFE ID with an unexpired SVID.
// It is a custom collector rather than a GaugeVec so that expired IDs vanish
// at scrape time without a sweeper: cardinality is bounded by the IDs that
// currently hold a valid SVID, i.e. by the endpoints and roles in use.
type expiryCollector struct {
	desc  *prometheus.Desc
	clock func() time.Time

	mu       sync.Mutex
	expiries map[string]time.Time
}

func (c *expiryCollector) observe(id string, notAfter time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	// Several nodes may share a role ID; the newest SVID is the one whose
	// expiry matters for "will this identity keep working".
	if notAfter.After(c.expiries[id]) {
		c.expiries[id] = notAfter
	}
}

func (c *expiryCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *expiryCollector) Collect(ch chan<- prometheus.Metric) {
	now := c.clock()
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, exp := range c.expiries {
		if !now.Before(exp) {
			delete(c.expiries, id)
			continue
		}
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(exp.Unix()), id)
	}
}
