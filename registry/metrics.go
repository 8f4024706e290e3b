package registry

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the registry's Prometheus metrics (SPEC §8). Gauges are
// computed from the newest durable revision at scrape time; the function
// state counter counts states as their revisions are published.
type metrics struct {
	functionStates *prometheus.CounterVec
}

// collector exports cryptomesh_registry_objects{kind} from the maintained
// counters and cryptomesh_endpoint_state{endpoint,state} (1 for each
// endpoint's latest state, 0 for the others) from the newest durable
// revision.
type collector struct {
	r             *Registry
	objects       *prometheus.Desc
	endpointState *prometheus.Desc
}

func newCollector(r *Registry) *collector {
	return &collector{
		r:             r,
		objects:       prometheus.NewDesc("cryptomesh_registry_objects", "Entities in the registry, by kind.", []string{"kind"}, nil),
		endpointState: prometheus.NewDesc("cryptomesh_endpoint_state", "1 for the latest reported state of each endpoint, 0 for its other states.", []string{"endpoint", "state"}, nil),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.objects
	ch <- c.endpointState
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	v := c.r.View()
	for _, k := range Kinds() {
		ch <- prometheus.MustNewConstMetric(c.objects, prometheus.GaugeValue, float64(v.Count(k)), string(k))
	}
	states := schemaOf(KindEndpointState)
	f, _ := states.field("state")
	for o := range v.All(KindEndpoint) {
		current := ""
		if latest, err := v.Latest(KindEndpointState, o.ID); err == nil {
			current = latest.(*EndpointState).State
		}
		if current == "" {
			continue // nothing reported yet: no series
		}
		for _, s := range f.enum {
			val := 0.0
			if s == current {
				val = 1
			}
			ch <- prometheus.MustNewConstMetric(c.endpointState, prometheus.GaugeValue, val, o.ID, s)
		}
	}
}

func newMetrics() *metrics {
	return &metrics{functionStates: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cryptomesh_function_states_total",
		Help: "Function states committed, by function and state.",
	}, []string{"function", "state"})}
}

// count updates the counters for a published revision. A deleted
// function's series are dropped, so the label set stays bounded by the
// functions that exist.
func (m *metrics) count(v *View, changes []Change) {
	for _, c := range changes {
		switch {
		case c.Kind == KindFunctionState && !c.Deleted:
			if o := v.Object(KindFunctionState, c.ID); o != nil {
				st := o.Value.(*FunctionState)
				m.functionStates.WithLabelValues(st.FunctionID, st.State).Inc()
			}
		case c.Kind == KindFunction && c.Deleted:
			m.functionStates.DeletePartialMatch(prometheus.Labels{"function": c.ID})
		}
	}
}
