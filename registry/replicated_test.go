package registry_test

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/cryptomesh/cryptomesh/registry"
	"github.com/cryptomesh/cryptomesh/registry/registrytest"
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

// logCluster runs the replicated-store contract on a shared log whose
// commits take a random few hundred microseconds, so races happen.
type logCluster struct{ log *sharedLog }

func (c logCluster) Open(t *testing.T) *registry.Registry {
	t.Helper()
	r, err := registry.Open(context.Background(), c.log.replica(), registry.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func (c logCluster) Head(*testing.T) uint64 {
	c.log.mu.Lock()
	defer c.log.mu.Unlock()
	return uint64(len(c.log.recs))
}

func TestReplicatedContract(t *testing.T) {
	registrytest.RunReplicated(t, func(*testing.T) registrytest.Cluster {
		l := newSharedLog()
		l.delay = func() time.Duration { return time.Duration(rand.IntN(300)) * time.Microsecond }
		return logCluster{log: l}
	})
}

func (r *replica) Head(context.Context) (uint64, error) {
	r.log.mu.Lock()
	defer r.log.mu.Unlock()
	return uint64(len(r.log.recs)), nil
}
