package etcdstore_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cryptomesh/cryptomesh/registry"
	"github.com/cryptomesh/cryptomesh/registry/registrytest"
	"github.com/cryptomesh/cryptomesh/registry/store/etcdstore"
	"github.com/cryptomesh/cryptomesh/registry/store/etcdstore/etcdtest"
)

// roles returns n role creates of about 2 KiB each, ids prefix-0...
func roles(t testing.TB, prefix string, n int) []registry.Op {
	var ops []registry.Op
	for i := range n {
		ops = append(ops, registrytest.Create(t, registry.KindRole, fmt.Sprintf(`{"role_id":"%s-%d","name":%q,"permissions":["execute:fn_%d"]}`, prefix, i, strings.Repeat("n", 2000), i)))
	}
	return ops
}

func TestLargeBatchIsAllOrNothing(t *testing.T) {
	srv := etcdtest.Start(t)
	rs := openRegistries(t, srv, 3)
	registrytest.Seed(t, rs[0])
	registrytest.WaitConverged(t, rs, rs[0].Revision())
	before := rs[0].Revision()

	// 1,000 creates (2 MiB, far beyond etcd's 128 operations and 1.5 MiB
	// per request) whose last one fails: nothing is committed.
	bad := append(roles(t, "bad", 1000), registrytest.Create(t, registry.KindRole, `{"role_id":"ml-engineer","name":"duplicate"}`))
	if _, err := rs[1].Do(context.Background(), bad...); registry.CodeOf(err) != registry.CodeConflict {
		t.Fatalf("batch with a duplicate: %v, want a conflict", err)
	}
	_, st := openRegistry(t, srv.Endpoint())
	if h := head(t, st); h != before {
		t.Fatalf("a refused batch moved the head from %d to %d", before, h)
	}

	// Two large batches race on two replicas and share one id: exactly
	// one commits, whole; the other is refused, whole.
	var errA, errB error
	var wg sync.WaitGroup
	wg.Go(func() {
		_, errA = rs[0].Do(context.Background(), append(roles(t, "a", 1000), registrytest.Create(t, registry.KindRole, `{"role_id":"shared","name":"a"}`))...)
	})
	wg.Go(func() {
		_, errB = rs[1].Do(context.Background(), append(roles(t, "b", 1000), registrytest.Create(t, registry.KindRole, `{"role_id":"shared","name":"b"}`))...)
	})
	wg.Wait()
	winner, loser := "a", "b"
	switch {
	case errA == nil && registry.CodeOf(errB) == registry.CodeConflict:
	case errB == nil && registry.CodeOf(errA) == registry.CodeConflict:
		winner, loser = "b", "a"
	default:
		t.Fatalf("racing batches: %v, %v; want one success and one conflict", errA, errB)
	}
	late, _ := openRegistry(t, srv.Endpoint())
	rs = append(rs, late)
	registrytest.WaitConverged(t, rs, head(t, st))
	for i, r := range rs {
		v := r.View()
		var have, stray int
		for o := range v.All(registry.KindRole) {
			switch {
			case strings.HasPrefix(o.ID, winner+"-"):
				have++
			case strings.HasPrefix(o.ID, loser+"-"), strings.HasPrefix(o.ID, "bad-"):
				stray++
			}
		}
		if have != 1000 || stray != 0 {
			t.Fatalf("replica %d holds %d roles of the winning batch and %d of refused ones", i, have, stray)
		}
	}
}

func TestReplicaConvergesAfterCompaction(t *testing.T) {
	srv := etcdtest.Start(t)
	c := srv.Client(t)
	proxy := etcdtest.NewProxy(t, srv.Endpoint())
	st0 := openStore(t, []string{srv.Endpoint()})
	r0, err := registry.Open(context.Background(), st0, registry.WithLogger(quiet), registry.WithSnapshotEvery(20))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r0.Close() })
	r1, st1 := openRegistry(t, proxy.Addr())
	registrytest.Seed(t, r0)
	registrytest.WaitConverged(t, []*registry.Registry{r0, r1}, r0.Revision())

	proxy.Cut()
	for i := range 60 {
		registrytest.MustDo(t, r0, registrytest.Create(t, registry.KindFunction, fmt.Sprintf(`{"function_id":"fn-%d","microservice_id":"m1"}`, i)))
		if i%3 == 0 {
			registrytest.MustDo(t, r0, registry.Op{Type: registry.OpDelete, Kind: registry.KindFunction, ID: fmt.Sprintf("fn-%d", i)})
		}
	}
	// Wait for a snapshot, so that the log r1 missed is partly gone,
	// then compact etcd's history past r1's watch.
	deadline := time.Now().Add(30 * time.Second)
	for len(keys(t, c, etcdstore.DefaultPrefix+"snap/")) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no snapshot written")
		}
		time.Sleep(10 * time.Millisecond)
	}
	resp, err := c.Get(context.Background(), "x")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Compact(context.Background(), resp.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	proxy.Restore()
	registrytest.WaitConverged(t, []*registry.Registry{r0, r1}, r0.Revision())
	if st1.Stats().Resets == 0 {
		t.Fatal("the lagging replica converged without re-listing")
	}
	// Both go on writing and following.
	registrytest.MustDo(t, r1, registrytest.Create(t, registry.KindRole, `{"role_id":"after","name":"after"}`))
	registrytest.WaitConverged(t, []*registry.Registry{r0, r1}, r1.Revision())
}

func TestEtcdRestartLosesNothingAcknowledged(t *testing.T) {
	srv := etcdtest.Start(t)
	rs := openRegistries(t, srv, 2)
	registrytest.Seed(t, rs[0])
	registrytest.WaitConverged(t, rs, rs[0].Revision())

	var acked sync.Map
	var n atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 8 {
		r := rs[w%2]
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("w%d-%d", w, i)
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				_, err := r.Do(ctx, registrytest.Create(t, registry.KindRole, fmt.Sprintf(`{"role_id":%q,"name":"x"}`, id)))
				cancel()
				switch {
				case err == nil:
					acked.Store(id, true)
					n.Add(1)
				case registry.CodeOf(err) != registry.CodeUnavailable:
					// A timed-out write may commit later and its retry
					// then finds its own role: nothing else is allowed.
					if registry.CodeOf(err) != registry.CodeConflict {
						t.Errorf("write %s: %v", id, err)
					}
				default:
					time.Sleep(50 * time.Millisecond)
				}
			}
		})
	}
	waitFor := func(k int64) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for n.Load() < k {
			if time.Now().After(deadline) {
				t.Fatalf("only %d writes acknowledged", n.Load())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitFor(100)
	srv.Kill(t)
	// While etcd is down, writes fail with 503-class errors within their
	// deadline, and the registries stay able to write.
	atKill := n.Load()
	for i, r := range rs {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		start := time.Now()
		_, err := r.Do(ctx, registrytest.Create(t, registry.KindRole, fmt.Sprintf(`{"role_id":"down-%d","name":"x"}`, i)))
		cancel()
		if registry.CodeOf(err) != registry.CodeUnavailable || time.Since(start) > 5*time.Second {
			t.Fatalf("write while etcd is down: %v after %s, want unavailable within the deadline", err, time.Since(start))
		}
		if err := r.Err(); err != nil {
			t.Fatalf("replica %d stopped writing: %v", i, err)
		}
	}
	if got := n.Load() - atKill; got > 8 {
		t.Fatalf("%d writes acknowledged while etcd was down", got)
	}
	time.Sleep(time.Second)
	srv.Restart(t)
	waitFor(n.Load() + 100)
	close(stop)
	wg.Wait()

	// Everything acknowledged is on both replicas, which agree with each
	// other and with a replica that loads from scratch.
	late, st := openRegistry(t, srv.Endpoint())
	all := append(rs, late)
	registrytest.WaitConverged(t, all, head(t, st))
	missing := 0
	acked.Range(func(k, _ any) bool {
		for i, r := range all {
			if _, err := r.View().Get(registry.KindRole, k.(string)); err != nil {
				missing++
				t.Errorf("replica %d lost acknowledged role %s", i, k)
			}
		}
		return missing < 5
	})
	for i, r := range rs {
		if err := r.Err(); err != nil {
			t.Fatalf("replica %d stopped writing: %v", i, err)
		}
	}
	t.Logf("%d writes acknowledged across the restart", n.Load())
}

func TestEtcdGoneForLongFailsTheRegistryCleanly(t *testing.T) {
	srv := etcdtest.Start(t)
	st := openStore(t, []string{srv.Endpoint()}, etcdstore.WithCommitTimeout(2*time.Second))
	r, err := registry.Open(context.Background(), st, registry.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	registrytest.Seed(t, r)
	srv.Kill(t)
	// Past the commit timeout the outcome is unknown: the write fails and
	// the registry stops taking writes, rather than guess.
	start := time.Now()
	_, err = r.Do(context.Background(), registrytest.Create(t, registry.KindRole, `{"role_id":"lost","name":"x"}`))
	if registry.CodeOf(err) != registry.CodeUnavailable {
		t.Fatalf("write: %v, want unavailable", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("the write took %s with a 2s commit timeout", d)
	}
	select {
	case <-r.Failed():
	case <-time.After(10 * time.Second):
		t.Fatal("the registry did not stop")
	}
	closed := make(chan error, 1)
	go func() { closed <- r.Close() }()
	select {
	case <-closed:
	case <-time.After(15 * time.Second):
		t.Fatal("Close hangs while etcd is down")
	}
	// A restarted control plane finds a consistent store, with or without
	// the unknown write, and writes again.
	srv.Restart(t)
	r2, _ := openRegistry(t, srv.Endpoint())
	if r2.Revision() != 1 && r2.Revision() != 2 {
		t.Fatalf("reopened at revision %d", r2.Revision())
	}
	registrytest.MustDo(t, r2, registrytest.Create(t, registry.KindRole, `{"role_id":"again","name":"x"}`))
	if _, err := r2.View().Get(registry.KindFunction, "f1"); err != nil {
		t.Fatal(err)
	}
}
