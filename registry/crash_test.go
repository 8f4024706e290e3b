package registry_test

import (
	"context"
	"encoding/json"
	"fmt"
	"iter"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cryptomesh/cryptomesh/registry"
	"github.com/cryptomesh/cryptomesh/registry/registrytest"
	"github.com/cryptomesh/cryptomesh/registry/store/filestore"
	"github.com/cryptomesh/cryptomesh/registry/store/filestore/faultfs"
)

// recorder remembers every record the registry appended, in order, so a
// test can compute the state any revision should recover to.
type recorder struct {
	*filestore.Store
	mu   sync.Mutex
	recs []registry.Record
}

func (r *recorder) Append(rec registry.Record) (registry.Pending, error) {
	p, err := r.Store.Append(rec)
	if err == nil {
		raw, _ := json.Marshal(rec)
		var cp registry.Record
		json.Unmarshal(raw, &cp)
		r.mu.Lock()
		r.recs = append(r.recs, cp)
		r.mu.Unlock()
	}
	return p, err
}

func (r *recorder) Snapshot(ctx context.Context, rev uint64, entities iter.Seq2[registry.Mutation, error]) error {
	return r.Store.Snapshot(ctx, rev, entities)
}

// randomOp draws an operation over small id pools, so that conflicts,
// dangling references, cascades and history trimming all happen.
func randomOp(rng *rand.Rand) registry.Op {
	id := func(prefix string) string { return fmt.Sprintf("%s%d", prefix, rng.IntN(6)) }
	mk := func(k registry.Kind, js string) registry.Op {
		var m map[string]any
		dec := json.NewDecoder(jsonReader(js))
		dec.UseNumber()
		dec.Decode(&m)
		return registry.Op{Type: registry.OpCreate, Kind: k, Body: m}
	}
	switch rng.IntN(10) {
	case 0:
		return mk(registry.KindRole, fmt.Sprintf(`{"role_id":%q,"name":"r","permissions":["execute:f%d"]}`, id("r"), rng.IntN(9)))
	case 1:
		return mk(registry.KindSecurityPolicy, fmt.Sprintf(`{"sp_id":%q,"roles":[%q],"requires_authentication":true}`, id("p"), id("r")))
	case 2:
		return mk(registry.KindService, fmt.Sprintf(`{"service_id":%q,"security_policy":{"roles":[],"requires_authentication":false}}`, id("s")))
	case 3:
		return mk(registry.KindMicroservice, fmt.Sprintf(`{"microservice_id":%q,"service_id":%q}`, id("m"), id("s")))
	case 4:
		return mk(registry.KindFunction, fmt.Sprintf(`{"function_id":%q,"microservice_id":%q,"resources":{"cpu":%d,"ram":"1GB"}}`, id("f"), id("m"), 1+rng.IntN(4)))
	case 5, 6:
		return mk(registry.KindFunctionState, fmt.Sprintf(`{"function_id":%q,"state":"running"}`, id("f")))
	case 7:
		op := mk(registry.KindRole, fmt.Sprintf(`{"description":"d%d"}`, rng.IntN(100)))
		op.Type, op.ID = registry.OpUpdate, id("r")
		return op
	case 8:
		return registry.Op{Type: registry.OpDelete, Kind: registry.KindService, ID: id("s"), Cascade: true}
	default:
		return registry.Op{Type: registry.OpDelete, Kind: registry.KindRole, ID: id("r")}
	}
}

// TestCrashRecoversAcknowledgedPrefix runs random operation sequences on
// the file store over a fault-injecting file system, crashes at random
// points (losing everything not fsynced, tearing the last write), and
// checks that the recovered registry is exactly the state after some
// prefix of the appended records that includes every acknowledged one.
func TestCrashRecoversAcknowledgedPrefix(t *testing.T) {
	iterations := 150
	if testing.Short() {
		iterations = 20
	}
	for it := range iterations {
		seed := uint64(it)*7919 + 1
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 42))
			fsys := faultfs.New()
			var recs []registry.Record
			var maxAcked uint64
			for round := range 3 {
				st, err := filestore.Open("/data", filestore.WithFS(fsys), filestore.WithLogger(quiet), filestore.WithSegmentSize(4096))
				if err != nil {
					t.Fatalf("round %d: open store: %v", round, err)
				}
				rec := &recorder{Store: st, recs: recs}
				r, err := registry.Open(context.Background(), rec, registry.WithLogger(quiet),
					registry.WithSnapshotEvery(uint64(5+rng.IntN(20))), registry.WithHistoryLimit(3))
				if err != nil {
					t.Fatalf("round %d: reopen: %v", round, err)
				}
				checkPrefix(t, r, rec.recs, maxAcked)
				// A crash drops what was never durable: forget records past
				// the recovered revision.
				rec.recs = rec.recs[:r.Revision()]

				if rng.IntN(2) == 0 {
					fsys.HaltAfter(rng.IntN(60))
				}
				var acked atomic.Uint64
				var wg sync.WaitGroup
				workers := 1 + rng.IntN(4)
				for w := range workers {
					wg.Add(1)
					wrng := rand.New(rand.NewPCG(seed, uint64(round*10+w)))
					go func() {
						defer wg.Done()
						for range 10 + wrng.IntN(30) {
							if _, err := r.Do(context.Background(), randomOp(wrng)); err != nil {
								if registry.CodeOf(err) == registry.CodeUnavailable {
									return
								}
								continue
							}
							// Published revisions are durable; this one
							// includes the op just acknowledged.
							for {
								cur, rev := acked.Load(), r.Revision()
								if rev <= cur || acked.CompareAndSwap(cur, rev) {
									break
								}
							}
						}
					}()
				}
				wg.Wait()
				maxAcked = max(maxAcked, acked.Load())
				// Power loss: freeze the disk where it is, let the process
				// wind down (a background snapshot may be running), then
				// lose everything not fsynced.
				fsys.HaltAfter(0)
				r.Close()
				fsys.Crash(rng)
				recs = rec.recs
			}
		})
	}
}

func checkPrefix(t *testing.T, r *registry.Registry, recs []registry.Record, acked uint64) {
	t.Helper()
	rev := r.Revision()
	if rev < acked {
		t.Fatalf("recovered revision %d, but revision %d was acknowledged", rev, acked)
	}
	if rev > uint64(len(recs)) {
		t.Fatalf("recovered revision %d, but only %d records were appended", rev, len(recs))
	}
	want, err := registry.Open(context.Background(), &logStore{records: recs[:rev]}, registry.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	if a, b := registrytest.Dump(t, r), registrytest.Dump(t, want); a != b {
		t.Fatalf("recovered state differs from the state at revision %d:\n%s\nwant\n%s", rev, a, b)
	}
}
