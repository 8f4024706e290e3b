// Package registry owns the model of the ML system: the ten entity kinds
// of SPEC §1, their validation, the go-memdb tables that hold them, and the
// write path that keeps them consistent and durable.
//
// A write runs under one writer lock: it is resolved against a go-memdb
// write transaction (ids generated, timestamps set, embedded entities
// split off, references and containment checked, cascades and history
// retention expanded) into a Record of plain puts and deletes. The record
// is appended to the Store in commit order, the transaction commits, and
// the writer waits for durability outside the lock so that concurrent
// writers share one fsync. Readers never see the live database: they read
// the newest snapshot whose record is durable, so nothing is ever served
// that a restart would not show. Replay applies the same records through
// the same function, applyMutation, and so rebuilds the same state.
package registry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	memdb "github.com/hashicorp/go-memdb"
	"github.com/prometheus/client_golang/prometheus"
)

// DefaultHistoryLimit is how many states and results are kept per owner.
const DefaultHistoryLimit = 1000

// Registry is the in-memory, durable registry.
type Registry struct {
	store        Store
	log          *slog.Logger
	now          func() time.Time
	newID        func() string
	historyLimit int
	snapEvery    uint64

	db *memdb.MemDB

	mu     sync.Mutex // the writer lock
	rev    uint64     // last revision appended
	seq    uint64     // last history sequence number used
	broken error      // set when the store failed: no more writes

	pubMu     sync.Mutex
	published atomic.Pointer[published]
	queue     []queued // appended, not yet durable, in revision order
	subs      map[*Subscription]struct{}
	snapRev   uint64 // revision of the last snapshot taken or started
	snapping  bool
	failed    chan struct{}
	closeOnce sync.Once // closes failed
	closing   sync.Once
	closeErr  error
	bg        sync.WaitGroup
}

type published struct {
	db  *memdb.MemDB
	rev uint64
}

type queued struct {
	rev     uint64
	db      *memdb.MemDB
	changes []Change
}

// Option configures a Registry.
type Option func(*Registry)

// WithLogger sets the structured logger.
func WithLogger(l *slog.Logger) Option { return func(r *Registry) { r.log = l } }

// WithClock replaces time.Now, for tests.
func WithClock(now func() time.Time) Option { return func(r *Registry) { r.now = now } }

// WithIDGenerator replaces the UUIDv4 generator, for tests.
func WithIDGenerator(f func() string) Option { return func(r *Registry) { r.newID = f } }

// WithHistoryLimit sets how many states and results are kept per owner.
func WithHistoryLimit(n int) Option { return func(r *Registry) { r.historyLimit = n } }

// WithSnapshotEvery sets after how many revisions a store that supports
// snapshots is asked for one (0 disables snapshots).
func WithSnapshotEvery(n uint64) Option { return func(r *Registry) { r.snapEvery = n } }

// WithRegisterer registers the registry's metrics.
func WithRegisterer(reg prometheus.Registerer) Option {
	return func(r *Registry) {
		if reg != nil {
			reg.MustRegister(&objectsCollector{r: r, desc: objectsDesc()})
		}
	}
}

// Open loads every durable record from store and returns a registry ready
// for reads and writes.
func Open(ctx context.Context, store Store, opts ...Option) (*Registry, error) {
	db, err := memdb.NewMemDB(dbSchema())
	if err != nil {
		return nil, fmt.Errorf("create registry tables: %w", err)
	}
	r := &Registry{
		store:        store,
		log:          slog.Default(),
		now:          time.Now,
		newID:        func() string { return uuid.NewString() },
		historyLimit: DefaultHistoryLimit,
		snapEvery:    10000,
		db:           db,
		subs:         map[*Subscription]struct{}{},
		failed:       make(chan struct{}),
	}
	for _, o := range opts {
		o(r)
	}
	if r.historyLimit < 1 {
		return nil, fmt.Errorf("history limit must be at least 1, not %d", r.historyLimit)
	}
	start := time.Now()
	records := 0
	err = store.Load(ctx, func(rec Record) error {
		// Nobody reads before Open returns, so a large record (a
		// snapshot) is applied in chunks: each chunk's entities are
		// decoded in parallel, then inserted by one transaction.
		const chunk = 2048
		for start := 0; start < len(rec.Mutations); start += chunk {
			muts := rec.Mutations[start:min(start+chunk, len(rec.Mutations))]
			objs, err := decodeAll(muts, rec.Rev)
			if err != nil {
				return fmt.Errorf("replay revision %d: %w", rec.Rev, err)
			}
			txn := newTx(db)
			for i, m := range muts {
				if _, err := applyObject(txn, m, objs[i]); err != nil {
					txn.Abort()
					return fmt.Errorf("replay revision %d: %w", rec.Rev, err)
				}
				if m.Seq > r.seq {
					r.seq = m.Seq
				}
			}
			if err := txn.flush(); err != nil {
				txn.Abort()
				return fmt.Errorf("replay revision %d: %w", rec.Rev, err)
			}
			txn.Commit()
		}
		r.rev = rec.Rev
		records++
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("load registry: %w", err)
	}
	r.snapRev = r.rev
	r.published.Store(&published{db: db.Snapshot(), rev: r.rev})
	r.log.Info("registry loaded", "revision", r.rev, "records", records, "duration", time.Since(start))
	return r, nil
}

// Revision is the newest durable revision readers see.
func (r *Registry) Revision() uint64 { return r.published.Load().rev }

// Failed is closed when the store has failed; the registry then refuses
// writes and the process should stop.
func (r *Registry) Failed() <-chan struct{} { return r.failed }

// Err returns the store failure that stopped writes, if any.
func (r *Registry) Err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.broken
}

// Close waits for background work and closes the store. Later calls
// return the first call's result.
func (r *Registry) Close() error {
	r.closing.Do(func() { r.closeErr = r.close() })
	return r.closeErr
}

func (r *Registry) close() error {
	r.mu.Lock()
	if r.broken == nil {
		r.broken = errors.New("registry closed")
	}
	r.mu.Unlock()
	r.bg.Wait()
	r.pubMu.Lock()
	for s := range r.subs {
		s.close()
	}
	r.subs = map[*Subscription]struct{}{}
	r.pubMu.Unlock()
	if err := r.store.Close(); err != nil {
		return fmt.Errorf("close store: %w", err)
	}
	return nil
}

func (r *Registry) fail(err error) {
	r.mu.Lock()
	if r.broken == nil {
		r.broken = err
	}
	r.mu.Unlock()
	r.closeOnce.Do(func() {
		r.log.Error("store failed; the registry accepts no more writes", "error", err)
		close(r.failed)
	})
}

// publish makes revision rev (and everything before it) visible to
// readers and subscribers, once its record is durable.
func (r *Registry) publish(rev uint64) {
	r.pubMu.Lock()
	defer r.pubMu.Unlock()
	if rev <= r.published.Load().rev {
		return
	}
	n := 0
	var last *queued
	for n < len(r.queue) && r.queue[n].rev <= rev {
		last = &r.queue[n]
		n++
	}
	if last == nil {
		return
	}
	r.published.Store(&published{db: last.db, rev: last.rev})
	for _, q := range r.queue[:n] {
		r.notify(Event{Rev: q.rev, Changes: q.changes})
	}
	r.queue = append(r.queue[:0:0], r.queue[n:]...)
	r.maybeSnapshot(last.db, last.rev)
}

// maybeSnapshot asks a Snapshotter store to compact once enough
// revisions have accumulated. Called with pubMu held.
func (r *Registry) maybeSnapshot(db *memdb.MemDB, rev uint64) {
	snap, ok := r.store.(Snapshotter)
	if !ok || r.snapEvery == 0 || r.snapping || rev-r.snapRev < r.snapEvery {
		return
	}
	r.snapping = true
	r.bg.Add(1)
	go func() {
		defer r.bg.Done()
		start := time.Now()
		err := snap.Snapshot(context.Background(), rev, entities(db))
		r.pubMu.Lock()
		r.snapping = false
		if err == nil {
			r.snapRev = rev
		}
		r.pubMu.Unlock()
		if err != nil {
			r.log.Error("snapshot failed; the log keeps growing until the next one", "revision", rev, "error", err)
			return
		}
		r.log.Info("snapshot written", "revision", rev, "duration", time.Since(start))
	}()
}

// decodeAll decodes the put mutations of muts (nil for deletes), spread
// over the available cores when there are many.
func decodeAll(muts []Mutation, rev uint64) ([]*Object, error) {
	objs := make([]*Object, len(muts))
	workers := runtime.GOMAXPROCS(0)
	if len(muts) < 256 {
		workers = 1
	}
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(muts); i += workers {
				if muts[i].Delete() {
					continue
				}
				o, err := decodeObject(muts[i], rev)
				if err != nil {
					errs[w] = err
					return
				}
				objs[i] = o
			}
		}()
	}
	wg.Wait()
	return objs, errors.Join(errs...)
}
