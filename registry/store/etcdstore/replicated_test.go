package etcdstore_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cryptomesh/cryptomesh/registry"
	"github.com/cryptomesh/cryptomesh/registry/store/etcdstore/etcdtest"
)

// The scenarios of the registry's replicated-mode tests (which run on an
// in-memory shared log), on a real etcd.

func TestReplicasSeeEachOthersWrites(t *testing.T) {
	srv := etcdtest.Start(t)
	rs := openRegistries(t, srv, 3)
	seed(t, rs[0])
	// rs[1] sees the seed before it writes on top of it. Without this wait
	// the registry's catch-up on a refusal (Do asks Head and retries) is
	// racy: if the follower applies the missing revision between the
	// refusal and the Head call, Do compares Head with the new revision
	// and returns the stale refusal.
	waitConverged(t, rs, rs[0].Revision())
	mustDo(t, rs[1], create(t, registry.KindFunction, `{"function_id":"f2","microservice_id":"m1"}`))
	// Read-your-writes on the writing replica, and the others follow.
	if _, err := rs[1].View().Get(registry.KindFunction, "f2"); err != nil {
		t.Fatalf("own write not visible: %v", err)
	}
	waitConverged(t, rs, rs[1].Revision())
	if _, err := rs[2].View().Get(registry.KindFunction, "f2"); err != nil {
		t.Fatalf("other replica's write not visible: %v", err)
	}
	// A replica opened later loads everything, then follows.
	late := openRegistries(t, srv, 1)
	rs = append(rs, late...)
	waitConverged(t, rs, rs[1].Revision())
	mustDo(t, late[0], create(t, registry.KindRole, `{"role_id":"late","name":"late"}`))
	waitConverged(t, rs, late[0].Revision())
}

func TestConflictingWritesHaveOneWinner(t *testing.T) {
	srv := etcdtest.Start(t)
	rs := openRegistries(t, srv, 3)
	seed(t, rs[0])
	waitConverged(t, rs, rs[0].Revision())
	const ids = 40
	var created, conflicts atomic.Int64
	var wg sync.WaitGroup
	for i, r := range rs {
		wg.Go(func() {
			for j := range ids {
				_, err := r.Do(context.Background(), create(t, registry.KindRole, fmt.Sprintf(`{"role_id":"race-%d","name":"from %d"}`, j, i)))
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
	_, st := openRegistry(t, srv.Endpoint())
	waitConverged(t, rs, head(t, st))
	for j := range ids {
		if _, err := rs[2].View().Get(registry.KindRole, fmt.Sprintf("race-%d", j)); err != nil {
			t.Fatalf("role race-%d: %v", j, err)
		}
	}
}

// A function created on one replica while its microservice is deleted on
// another: whichever commits second is resolved again on top of the
// first, so the registry never holds a dangling reference.
func TestReferentialIntegrityAcrossReplicas(t *testing.T) {
	srv := etcdtest.Start(t)
	rs := openRegistries(t, srv, 2)
	_, st := openRegistry(t, srv.Endpoint())
	seed(t, rs[0])
	wins := map[string]int{}
	for round := range 30 {
		ms := fmt.Sprintf("ms-%d", round)
		mustDo(t, rs[0], create(t, registry.KindMicroservice, fmt.Sprintf(`{"microservice_id":%q,"service_id":"s1"}`, ms)))
		waitConverged(t, rs, rs[0].Revision())
		var wg sync.WaitGroup
		var createErr, deleteErr error
		start := make(chan struct{})
		wg.Go(func() {
			<-start
			_, createErr = rs[0].Do(context.Background(), create(t, registry.KindFunction, fmt.Sprintf(`{"function_id":"fn-%d","microservice_id":%q}`, round, ms)))
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
		waitConverged(t, rs, head(t, st))
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
