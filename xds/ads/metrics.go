package ads

import (
	"errors"
	"fmt"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the xDS metrics of SPEC §8, registered on the Registerer the
// server was given, never on the global default.
type metrics struct {
	streams     *prometheus.GaugeVec
	pushes      *prometheus.CounterVec
	rejects     *prometheus.CounterVec
	convergence prometheus.Histogram
	build       prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		streams: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "cryptomesh_xds_connected_streams",
			Help: "ADS streams open now, by client kind (envoy, proxy, grpc).",
		}, []string{"kind"}),
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cryptomesh_xds_pushes_total",
			Help: "DiscoveryResponses sent, by resource type.",
		}, []string{"type"}),
		rejects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cryptomesh_xds_rejects_total",
			Help: "NACKs received (a node refused a response), by resource type.",
		}, []string{"type"}),
		convergence: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "cryptomesh_xds_convergence_seconds",
			Help:    "From a registry change reaching the control plane to a node's ACK of the configuration it caused.",
			Buckets: []float64{.01, .025, .05, .1, .15, .2, .3, .5, .75, 1, 1.5, 2, 3, 5, 10},
		}),
		build: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "cryptomesh_xds_build_seconds",
			Help:    "Time to turn one registry revision into the configuration of every connected node.",
			Buckets: prometheus.ExponentialBuckets(.0005, 2, 16),
		}),
	}
	if reg == nil {
		return m, nil
	}
	var errs []error
	for _, c := range []prometheus.Collector{m.streams, m.pushes, m.rejects, m.convergence, m.build} {
		if err := reg.Register(c); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("register xDS metrics: %w", err)
	}
	return m, nil
}

// typeLabel is the short name of a resource type for metric labels and
// the proxies listing: listener, route, cluster, endpoint, secret.
func typeLabel(typeURL string) string {
	switch short := typeURL[strings.LastIndexByte(typeURL, '.')+1:]; short {
	case "RouteConfiguration":
		return "route"
	case "ClusterLoadAssignment":
		return "endpoint"
	default:
		return strings.ToLower(short)
	}
}
