package api_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/cryptomesh/cryptomesh/api"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

func scrape(t *testing.T, e *env) (map[string]*dto.MetricFamily, string) {
	t.Helper()
	r := e.must(e.send(req{method: "GET", path: "/metrics", token: noToken()}), http.StatusOK)
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(string(r.body)))
	if err != nil {
		t.Fatalf("parse /metrics: %v\n%s", err, r.body)
	}
	return fams, string(r.body)
}

// sample returns the value of the series of family name with exactly the
// given labels, and whether it exists.
func sample(fams map[string]*dto.MetricFamily, name string, labels map[string]string) (float64, bool) {
	f, ok := fams[name]
	if !ok {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		if len(m.GetLabel()) != len(labels) {
			continue
		}
		for _, l := range m.GetLabel() {
			if labels[l.GetName()] != l.GetValue() {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount()), true
		}
	}
	return 0, false
}

func TestMetrics(t *testing.T) {
	e := newEnv(t)
	e.seed()
	e.must(e.get("/api/v1/functions/f1"), http.StatusOK)
	e.must(e.get("/api/v1/functions/f1/"), http.StatusOK)
	errorOf(t, e.get("/api/v1/functions/ghost-id-123"), http.StatusNotFound)
	errorOf(t, e.get("/no/such/path/secret-looking-xyz"), http.StatusNotFound)
	errorOf(t, e.send(req{method: "GET", path: "/api/v1/roles", token: noToken()}), http.StatusUnauthorized)
	errorOf(t, e.send(req{method: "BREW", path: "/api/v1/roles"}), http.StatusMethodNotAllowed)

	fams, text := scrape(t, e)
	counters := []struct {
		labels map[string]string
		want   float64
	}{
		{map[string]string{"route": "/api/v1/functions/{id}", "method": "GET", "code": "200"}, 2},
		{map[string]string{"route": "/api/v1/functions/{id}", "method": "GET", "code": "404"}, 1},
		{map[string]string{"route": "/api/v1/functions", "method": "POST", "code": "201"}, 1},
		{map[string]string{"route": "/api/v1/roles", "method": "GET", "code": "401"}, 1},
		{map[string]string{"route": "/api/v1/roles", "method": "OTHER", "code": "405"}, 1},
		{map[string]string{"route": "unmatched", "method": "GET", "code": "404"}, 1},
	}
	for _, c := range counters {
		got, ok := sample(fams, "cryptomesh_api_requests_total", c.labels)
		if !ok || got != c.want {
			t.Errorf("cryptomesh_api_requests_total%v = %v (present %v), want %v", c.labels, got, ok, c.want)
		}
	}
	if n, ok := sample(fams, "cryptomesh_api_request_duration_seconds", map[string]string{"route": "/api/v1/functions/{id}", "method": "GET"}); !ok || n != 3 {
		t.Errorf("duration histogram count %v (present %v), want 3", n, ok)
	}
	if f := fams["cryptomesh_api_request_duration_seconds"]; f == nil || f.GetType() != dto.MetricType_HISTOGRAM {
		t.Error("cryptomesh_api_request_duration_seconds is not a histogram")
	}
	for kind, want := range map[string]float64{"functions": 1, "roles": 1, "function_states": 1, "services": 1} {
		if got, ok := sample(fams, "cryptomesh_registry_objects", map[string]string{"kind": kind}); !ok || got != want {
			t.Errorf("cryptomesh_registry_objects{kind=%q} = %v (present %v), want %v", kind, got, ok, want)
		}
	}
	// Raw paths, ids and tokens never become labels.
	for _, leak := range []string{"ghost-id-123", "secret-looking-xyz", "/api/v1/functions/f1", adminToken, "BREW"} {
		if strings.Contains(text, leak) {
			t.Errorf("/metrics contains %q", leak)
		}
	}
}

func TestMetricsRegistration(t *testing.T) {
	reg := openRegistry(t)
	prom := prometheus.NewRegistry()
	if _, err := api.New(reg, api.WithAuthenticator(nodeAuth{}), api.WithRegisterer(prom)); err != nil {
		t.Fatal(err)
	}
	// A second server on the same Registerer is a configuration error,
	// reported rather than panicking.
	if _, err := api.New(reg, api.WithAuthenticator(nodeAuth{}), api.WithRegisterer(prom)); err == nil {
		t.Error("two servers registered the same metrics")
	}
	// A Registerer that cannot gather needs WithGatherer.
	wrapped := prometheus.WrapRegistererWith(prometheus.Labels{"replica": "a"}, prometheus.NewRegistry())
	if _, err := api.New(reg, api.WithAuthenticator(nodeAuth{}), api.WithRegisterer(wrapped)); err == nil {
		t.Error("a Registerer without a Gatherer was accepted")
	}
	inner := prometheus.NewRegistry()
	wrapped = prometheus.WrapRegistererWith(prometheus.Labels{"replica": "a"}, inner)
	if _, err := api.New(reg, api.WithAuthenticator(nodeAuth{}), api.WithRegisterer(wrapped), api.WithGatherer(inner)); err != nil {
		t.Errorf("Registerer with Gatherer: %v", err)
	}
	// Without any, the server uses a private registry: building two must
	// not collide on a global one.
	for range 2 {
		if _, err := api.New(reg, api.WithAuthenticator(nodeAuth{})); err != nil {
			t.Fatalf("server with private metrics: %v", err)
		}
	}
}
