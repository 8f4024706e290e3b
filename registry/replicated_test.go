package registry_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cryptomesh/cryptomesh/registry"
)

// sharedLog is a replicated log in memory with the commit rule of a
// replicated store: a record commits only if its Parent is the newest
// committed record. It exercises the registry's replicated mode (races,
// rollback, remote records) without a network; the etcd store runs the
// same scenarios against a real etcd.
type sharedLog struct {
	mu      sync.Mutex
	recs    []registry.Record
	changed chan struct{}
	// delay makes some commits slow, so that races really happen.
	delay func() time.Duration
}

func newSharedLog() *sharedLog { return &sharedLog{changed: make(chan struct{})} }

type replica struct {
	log       *sharedLog
	delivered int
}

type pendingResult struct{ err error }

func (p pendingResult) Wait(context.Context) error { return p.err }

func (l *sharedLog) replica() *replica { return &replica{log: l} }

func (r *replica) Load(_ context.Context, apply func(registry.Record) error) error {
	r.log.mu.Lock()
	recs := append([]registry.Record(nil), r.log.recs...)
	r.log.mu.Unlock()
	for _, rec := range recs {
		if err := apply(rec); err != nil {
			return err
		}
	}
	r.delivered = len(recs)
	return nil
}

func (r *replica) Append(rec registry.Record) (registry.Pending, error) {
	if r.log.delay != nil {
		time.Sleep(r.log.delay())
	}
	raw, _ := json.Marshal(rec)
	var cp registry.Record
	json.Unmarshal(raw, &cp)
	l := r.log
	l.mu.Lock()
	defer l.mu.Unlock()
	head := ""
	if n := len(l.recs); n > 0 {
		head = l.recs[n-1].ID
	}
	if cp.Parent != head || cp.Rev != uint64(len(l.recs))+1 {
		return pendingResult{&registry.ConflictError{Head: uint64(len(l.recs))}}, nil
	}
	l.recs = append(l.recs, cp)
	close(l.changed)
	l.changed = make(chan struct{})
	return pendingResult{}, nil
}

func (r *replica) Follow(ctx context.Context, apply func(registry.Record) error) error {
	for {
		r.log.mu.Lock()
		recs := append([]registry.Record(nil), r.log.recs[r.delivered:]...)
		changed := r.log.changed
		r.log.mu.Unlock()
		for _, rec := range recs {
			if err := apply(rec); err != nil {
				return err
			}
			r.delivered++
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil
		}
	}
}

func (r *replica) Close() error { return nil }

func openReplicas(t *testing.T, l *sharedLog, n int) []*registry.Registry {
	t.Helper()
	var rs []*registry.Registry
	for range n {
		r, err := registry.Open(context.Background(), l.replica(), registry.WithLogger(quiet))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		rs = append(rs, r)
	}
	return rs
}

func waitConverged(t *testing.T, rs []*registry.Registry, rev uint64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for _, r := range rs {
		for r.Revision() < rev {
			if time.Now().After(deadline) {
				t.Fatalf("replica stuck at revision %d, want %d", r.Revision(), rev)
			}
			time.Sleep(time.Millisecond)
		}
	}
	want := dump(t, rs[0])
	for i, r := range rs[1:] {
		if got := dump(t, r); got != want {
			t.Fatalf("replica %d differs:\n%s\nvs\n%s", i+1, got, want)
		}
	}
}

func TestReplicasSeeEachOthersWrites(t *testing.T) {
	l := newSharedLog()
	rs := openReplicas(t, l, 3)
	seed(t, rs[0])
	mustDo(t, rs[1], create(registry.KindFunction, `{"function_id":"f2","microservice_id":"m1"}`)(t))
	// Read-your-writes on the writing replica, and the others follow.
	if _, err := rs[1].View().Get(registry.KindFunction, "f2"); err != nil {
		t.Fatalf("own write not visible: %v", err)
	}
	waitConverged(t, rs, rs[1].Revision())
	if _, err := rs[2].View().Get(registry.KindFunction, "f2"); err != nil {
		t.Fatalf("other replica's write not visible: %v", err)
	}
	// A replica opened later loads everything.
	late := openReplicas(t, l, 1)
	waitConverged(t, append(rs, late...), rs[1].Revision())
}

func TestConflictingWritesHaveOneWinner(t *testing.T) {
	l := newSharedLog()
	l.delay = func() time.Duration { return time.Duration(rand.IntN(200)) * time.Microsecond }
	rs := openReplicas(t, l, 3)
	seed(t, rs[0])
	waitConverged(t, rs, rs[0].Revision())
	const ids = 40
	var created, conflicts atomic.Int64
	var wg sync.WaitGroup
	for i, r := range rs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range ids {
				_, err := r.Do(context.Background(), create(registry.KindRole, fmt.Sprintf(`{"role_id":"race-%d","name":"from %d"}`, j, i))(t))
				switch registry.CodeOf(err) {
				case 0:
					created.Add(1)
				case registry.CodeConflict:
					conflicts.Add(1)
				default:
					t.Errorf("replica %d, role %d: %v", i, j, err)
				}
			}
		}()
	}
	wg.Wait()
	if created.Load() != ids || conflicts.Load() != 2*ids {
		t.Fatalf("created %d (want %d), conflicts %d (want %d)", created.Load(), ids, conflicts.Load(), 2*ids)
	}
	l.mu.Lock()
	head := uint64(len(l.recs))
	l.mu.Unlock()
	waitConverged(t, rs, head)
}

// A function created on one replica while its microservice is deleted on
// another: whichever commits second is resolved again on top of the
// first, so the registry never holds a dangling reference.
func TestReferentialIntegrityAcrossReplicas(t *testing.T) {
	l := newSharedLog()
	l.delay = func() time.Duration { return time.Duration(rand.IntN(300)) * time.Microsecond }
	rs := openReplicas(t, l, 2)
	seed(t, rs[0])
	for round := range 30 {
		ms := fmt.Sprintf("ms-%d", round)
		mustDo(t, rs[0], create(registry.KindMicroservice, fmt.Sprintf(`{"microservice_id":%q,"service_id":"s1"}`, ms))(t))
		waitConverged(t, rs, rs[0].Revision())
		var wg sync.WaitGroup
		var createErr, deleteErr error
		wg.Add(2)
		go func() {
			defer wg.Done()
			_, createErr = rs[0].Do(context.Background(), create(registry.KindFunction, fmt.Sprintf(`{"function_id":"fn-%d","microservice_id":%q}`, round, ms))(t))
		}()
		go func() {
			defer wg.Done()
			_, deleteErr = rs[1].Do(context.Background(), registry.Op{Type: registry.OpDelete, Kind: registry.KindMicroservice, ID: ms})
		}()
		wg.Wait()
		// Exactly one of the two wins: the function exists (and the
		// delete was refused) or the microservice is gone (and the
		// create found no parent).
		switch {
		case createErr == nil && registry.CodeOf(deleteErr) == registry.CodeConflict:
		case deleteErr == nil && registry.CodeOf(createErr) == registry.CodeInvalid:
		default:
			t.Fatalf("round %d: create: %v, delete: %v", round, createErr, deleteErr)
		}
		l.mu.Lock()
		head := uint64(len(l.recs))
		l.mu.Unlock()
		waitConverged(t, rs, head)
		v := rs[1].View()
		for o := range v.All(registry.KindFunction) {
			if ms := o.Value.(*registry.Function).MicroserviceID; ms != "" && v.Object(registry.KindMicroservice, ms) == nil {
				t.Fatalf("round %d: function %s references deleted microservice %s", round, o.ID, ms)
			}
		}
	}
}

func (r *replica) Head(context.Context) (uint64, error) {
	r.log.mu.Lock()
	defer r.log.mu.Unlock()
	return uint64(len(r.log.recs)), nil
}
