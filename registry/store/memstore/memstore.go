// Package memstore is an in-memory registry.Store for tests.
//
// It is NOT durable: everything is lost with the process. It exists so
// that tests of packages above the registry (the API, xDS) can open a real
// registry without a disk, and so that they can look at exactly which
// records the registry wrote. It is not a product option; the server's
// stores are the file store and etcd.
package memstore

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/cryptomesh/cryptomesh/registry"
)

// Store keeps appended records in memory. It is safe for concurrent use.
// A new registry opened on the same Store replays everything appended so
// far (call Reopen first if the old registry closed it): that is how tests
// simulate a restart.
type Store struct {
	mu        sync.Mutex
	records   []registry.Record
	appendErr error
	closed    bool
}

// New returns an empty store.
func New() *Store { return &Store{} }

// Load replays every record appended so far, in order.
func (s *Store) Load(ctx context.Context, apply func(registry.Record) error) error {
	for _, rec := range s.Records() {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("memstore load: %w", err)
		}
		if err := apply(rec); err != nil {
			return fmt.Errorf("memstore load revision %d: %w", rec.Rev, err)
		}
	}
	return nil
}

// Append stores a copy of rec. The returned Pending is already complete:
// memory is as durable as this store gets.
func (s *Store) Append(rec registry.Record) (registry.Pending, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, registry.ErrStoreClosed
	}
	if s.appendErr != nil {
		return nil, fmt.Errorf("memstore append revision %d: %w", rec.Rev, s.appendErr)
	}
	if n := len(s.records); n > 0 && rec.Rev != s.records[n-1].Rev+1 {
		return nil, fmt.Errorf("memstore append: revision %d after %d", rec.Rev, s.records[n-1].Rev)
	}
	s.records = append(s.records, cloneRecord(rec))
	return done{}, nil
}

// Close marks the store closed; later Appends fail. Records stay readable
// so that a test can reopen a registry on them.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}

// Reopen makes a closed store accept Appends again, for a restarted
// registry.
func (s *Store) Reopen() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = false
}

// Records returns a copy of every record appended so far.
func (s *Store) Records() []registry.Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]registry.Record, len(s.records))
	for i, rec := range s.records {
		out[i] = cloneRecord(rec)
	}
	return out
}

// FailAppends makes every later Append fail with err (nil restores normal
// operation), to test how callers handle a broken store.
func (s *Store) FailAppends(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.appendErr = err
}

func cloneRecord(rec registry.Record) registry.Record {
	muts := make([]registry.Mutation, len(rec.Mutations))
	for i, m := range rec.Mutations {
		m.Value = slices.Clone(m.Value)
		muts[i] = m
	}
	return registry.Record{Rev: rec.Rev, Mutations: muts}
}

// done is a Pending that is already durable.
type done struct{}

func (done) Wait(context.Context) error { return nil }
