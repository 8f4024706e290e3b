package registry_test

import (
	"context"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cryptomesh/cryptomesh/registry"
	"github.com/cryptomesh/cryptomesh/registry/registrytest"
)

func TestMetrics(t *testing.T) {
	prom := prometheus.NewRegistry()
	r := open(t, &logStore{}, registry.WithRegisterer(prom), registry.WithLogger(quiet))
	registrytest.Seed(t, r)
	for _, st := range []string{"running", "completed", "running", "failed"} {
		registrytest.MustDo(t, r, create(registry.KindFunctionState, `{"function_id":"f1","state":"`+st+`"}`)(t))
	}
	registrytest.MustDo(t, r, create(registry.KindEndpointState, `{"endpoint_id":"e1","state":"warm"}`)(t))
	registrytest.MustDo(t, r, create(registry.KindEndpointState, `{"endpoint_id":"e1","state":"draining"}`)(t))

	want := `
# HELP cryptomesh_endpoint_state 1 for the latest reported state of each endpoint, 0 for its other states.
# TYPE cryptomesh_endpoint_state gauge
cryptomesh_endpoint_state{endpoint="e1",state="cold"} 0
cryptomesh_endpoint_state{endpoint="e1",state="draining"} 1
cryptomesh_endpoint_state{endpoint="e1",state="starting"} 0
cryptomesh_endpoint_state{endpoint="e1",state="unhealthy"} 0
cryptomesh_endpoint_state{endpoint="e1",state="warm"} 0
# HELP cryptomesh_function_states_total Function states committed, by function and state.
# TYPE cryptomesh_function_states_total counter
cryptomesh_function_states_total{function="f1",state="completed"} 1
cryptomesh_function_states_total{function="f1",state="failed"} 1
cryptomesh_function_states_total{function="f1",state="running"} 2
# HELP cryptomesh_registry_objects Entities in the registry, by kind.
# TYPE cryptomesh_registry_objects gauge
cryptomesh_registry_objects{kind="endpoint_states"} 2
cryptomesh_registry_objects{kind="endpoints"} 1
cryptomesh_registry_objects{kind="function_results"} 0
cryptomesh_registry_objects{kind="function_states"} 4
cryptomesh_registry_objects{kind="functions"} 1
cryptomesh_registry_objects{kind="microservices"} 1
cryptomesh_registry_objects{kind="roles"} 2
cryptomesh_registry_objects{kind="security_policies"} 1
cryptomesh_registry_objects{kind="services"} 1
cryptomesh_registry_objects{kind="storage"} 0
`
	if err := testutil.GatherAndCompare(prom, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
	// Deleting the function drops its series: labels stay bounded.
	if _, err := r.Do(context.Background(), registry.Op{Type: registry.OpDelete, Kind: registry.KindFunction, ID: "f1"}); err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(prom, "cryptomesh_function_states_total"); n != 0 {
		t.Fatalf("%d series left for a deleted function", n)
	}
}
