// Package registrytest is test support for the registry and its stores:
// small helpers to build operations and compare registries, and the
// contract every replicated store must meet, run by the registry's own
// tests on an in-memory shared log and by the etcd store on a real etcd.
package registrytest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cryptomesh/cryptomesh/registry"
)

// Body decodes a JSON object as the API does (numbers as json.Number).
func Body(t testing.TB, s string) map[string]any {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("bad test body %s: %v", s, err)
	}
	return m
}

// Create is an OpCreate of kind with the JSON body js.
func Create(t testing.TB, kind registry.Kind, js string) registry.Op {
	t.Helper()
	return registry.Op{Type: registry.OpCreate, Kind: kind, Body: Body(t, js)}
}

// MustDo applies ops atomically or fails the test.
func MustDo(t testing.TB, r *registry.Registry, ops ...registry.Op) []registry.Result {
	t.Helper()
	res, err := r.Do(context.Background(), ops...)
	if err != nil {
		t.Fatalf("do: %v", err)
	}
	return res
}

// Seed builds a small mesh: two roles, a policy, an endpoint, a service
// with a microservice and a function (f1 on e1, in m1 of s1).
func Seed(t testing.TB, r *registry.Registry) {
	t.Helper()
	MustDo(t, r,
		Create(t, registry.KindRole, `{"role_id":"ml-engineer","name":"ML engineer","permissions":["execute"]}`),
		Create(t, registry.KindRole, `{"role_id":"analyst","name":"Analyst","permissions":["read:report_*"]}`),
		Create(t, registry.KindSecurityPolicy, `{"sp_id":"sp1","roles":["ml-engineer","analyst"],"requires_authentication":true}`),
		Create(t, registry.KindEndpoint, `{"endpoint_id":"e1","security_policy":"sp1","address":"127.0.0.1:9001","resources":{"cpu":2,"ram":"1GB"}}`),
		Create(t, registry.KindService, `{"service_id":"s1","security_policy":"sp1"}`),
		Create(t, registry.KindMicroservice, `{"microservice_id":"m1","service_id":"s1"}`),
		Create(t, registry.KindFunction, `{"function_id":"f1","microservice_id":"m1","endpoint_id":"e1","resources":{"cpu":1,"ram":"512MB"}}`),
	)
}

// Dump renders every entity of every public kind, for comparing
// registries byte for byte.
func Dump(t testing.TB, r *registry.Registry) string {
	t.Helper()
	v := r.View()
	var b bytes.Buffer
	for _, k := range registry.Kinds() {
		items, total, err := v.List(k, registry.ListOptions{Limit: registry.MaxListLimit})
		if err != nil {
			t.Fatalf("list %s: %v", k, err)
		}
		raw, _ := json.Marshal(items)
		fmt.Fprintf(&b, "%s %d %s\n", k, total, raw)
	}
	return b.String()
}

// WaitConverged waits (generously) until every registry is at revision
// rev, then checks that they hold the same entities.
func WaitConverged(t testing.TB, rs []*registry.Registry, rev uint64) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for i, r := range rs {
		for r.Revision() < rev {
			if time.Now().After(deadline) {
				t.Fatalf("replica %d stuck at revision %d, want %d", i, r.Revision(), rev)
			}
			time.Sleep(time.Millisecond)
		}
	}
	want := Dump(t, rs[0])
	for i, r := range rs[1:] {
		if r.Revision() != rs[0].Revision() {
			t.Fatalf("replica %d at revision %d, replica 0 at %d", i+1, r.Revision(), rs[0].Revision())
		}
		if got := Dump(t, r); got != want {
			t.Fatalf("replica %d differs:\n%s\nvs\n%s", i+1, got, want)
		}
	}
}

// Cluster is a replicated store under test: Open opens one more registry
// (a replica) on it, Head reads the newest committed revision.
type Cluster interface {
	Open(t *testing.T) *registry.Registry
	Head(t *testing.T) uint64
}

func replicas(t *testing.T, c Cluster, n int) []*registry.Registry {
	t.Helper()
	rs := make([]*registry.Registry, n)
	for i := range rs {
		rs[i] = c.Open(t)
	}
	return rs
}

// RunReplicated runs the replicated-store contract on the cluster that
// newCluster makes (a fresh one per scenario).
func RunReplicated(t *testing.T, newCluster func(t *testing.T) Cluster) {
	t.Run("ReplicasSeeEachOthersWrites", func(t *testing.T) { seeEachOthersWrites(t, newCluster(t)) })
	t.Run("ConflictingWritesHaveOneWinner", func(t *testing.T) { oneWinner(t, newCluster(t)) })
	t.Run("ReferentialIntegrityAcrossReplicas", func(t *testing.T) { integrity(t, newCluster(t)) })
}

func seeEachOthersWrites(t *testing.T, c Cluster) {
	rs := replicas(t, c, 3)
	Seed(t, rs[0])
	// rs[1] may not have applied the seed yet: its refusal is re-checked
	// against the store's head before it is reported.
	MustDo(t, rs[1], Create(t, registry.KindFunction, `{"function_id":"f2","microservice_id":"m1"}`))
	// Read-your-writes on the writing replica, and the others follow.
	if _, err := rs[1].View().Get(registry.KindFunction, "f2"); err != nil {
		t.Fatalf("own write not visible: %v", err)
	}
	WaitConverged(t, rs, rs[1].Revision())
	if _, err := rs[2].View().Get(registry.KindFunction, "f2"); err != nil {
		t.Fatalf("other replica's write not visible: %v", err)
	}
	// A replica opened later loads everything, then follows.
	late := c.Open(t)
	rs = append(rs, late)
	WaitConverged(t, rs, rs[1].Revision())
	MustDo(t, late, Create(t, registry.KindRole, `{"role_id":"late","name":"late"}`))
	WaitConverged(t, rs, late.Revision())
}

func oneWinner(t *testing.T, c Cluster) {
	rs := replicas(t, c, 3)
	Seed(t, rs[0])
	WaitConverged(t, rs, rs[0].Revision())
	const ids = 40
	var created, conflicts atomic.Int64
	var wg sync.WaitGroup
	for i, r := range rs {
		wg.Go(func() {
			for j := range ids {
				_, err := r.Do(context.Background(), Create(t, registry.KindRole, fmt.Sprintf(`{"role_id":"race-%d","name":"from %d"}`, j, i)))
				switch registry.CodeOf(err) {
				case 0:
					created.Add(1)
				case registry.CodeConflict:
					conflicts.Add(1)
				default:
					t.Errorf("replica %d, role %d: %v", i, j, err)
				}
			}
		})
	}
	wg.Wait()
	if created.Load() != ids || conflicts.Load() != 2*ids {
		t.Fatalf("created %d (want %d), conflicts %d (want %d)", created.Load(), ids, conflicts.Load(), 2*ids)
	}
	WaitConverged(t, rs, c.Head(t))
	for j := range ids {
		if _, err := rs[2].View().Get(registry.KindRole, fmt.Sprintf("race-%d", j)); err != nil {
			t.Fatalf("role race-%d: %v", j, err)
		}
	}
}

// integrity: a function created on one replica while its microservice is
// deleted on another. Whichever commits second is resolved again on top
// of the first, so no replica ever holds a dangling reference.
func integrity(t *testing.T, c Cluster) {
	rs := replicas(t, c, 2)
	Seed(t, rs[0])
	wins := map[string]int{}
	for round := range 30 {
		ms := fmt.Sprintf("ms-%d", round)
		MustDo(t, rs[0], Create(t, registry.KindMicroservice, fmt.Sprintf(`{"microservice_id":%q,"service_id":"s1"}`, ms)))
		WaitConverged(t, rs, rs[0].Revision())
		var wg sync.WaitGroup
		var createErr, deleteErr error
		start := make(chan struct{})
		wg.Go(func() {
			<-start
			_, createErr = rs[0].Do(context.Background(), Create(t, registry.KindFunction, fmt.Sprintf(`{"function_id":"fn-%d","microservice_id":%q}`, round, ms)))
		})
		wg.Go(func() {
			<-start
			_, deleteErr = rs[1].Do(context.Background(), registry.Op{Type: registry.OpDelete, Kind: registry.KindMicroservice, ID: ms})
		})
		close(start)
		wg.Wait()
		// Exactly one of the two wins: the function exists (and the
		// delete was refused) or the microservice is gone (and the
		// create found no parent).
		switch {
		case createErr == nil && registry.CodeOf(deleteErr) == registry.CodeConflict:
			wins["create"]++
		case deleteErr == nil && registry.CodeOf(createErr) == registry.CodeInvalid:
			wins["delete"]++
		default:
			t.Fatalf("round %d: create: %v, delete: %v", round, createErr, deleteErr)
		}
		WaitConverged(t, rs, c.Head(t))
		for _, r := range rs {
			v := r.View()
			for o := range v.All(registry.KindFunction) {
				if ms := o.Value.(*registry.Function).MicroserviceID; ms != "" && v.Object(registry.KindMicroservice, ms) == nil {
					t.Fatalf("round %d: function %s references deleted microservice %s", round, o.ID, ms)
				}
			}
		}
	}
	t.Logf("winners over 30 rounds: %v", wins)
}
