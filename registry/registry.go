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
	"slices"
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
	lastID string     // ID of the last record appended (replicated stores)
	broken error      // set when the store failed: no more writes

	metrics  *metrics // nil unless WithRegisterer
	follower Follower // the store, when it is shared by replicas
	// bgCtx bounds background work (following a replicated store,
	// awaiting writes whose callers gave up); Close cancels it.
	bgCtx    context.Context
	bgCancel context.CancelFunc

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

// published is a durable state readers may see. next is closed when a
// newer state replaces it, so waiters need no polling.
type published struct {
	db   *memdb.MemDB
	rev  uint64
	seq  uint64
	id   string
	next chan struct{}
}

// queued is a record appended and applied to the live database, waiting
// for durability, with the state it leads to.
type queued struct {
	at      time.Time // when the record was appended
	rev     uint64
	seq     uint64
	id      string
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
			r.metrics = newMetrics()
			reg.MustRegister(newCollector(r), r.metrics.functionStates)
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
	r.bgCtx, r.bgCancel = context.WithCancel(context.Background())
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
		r.rev, r.lastID = rec.Rev, rec.ID
		records++
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("load registry: %w", err)
	}
	r.snapRev = r.rev
	r.published.Store(&published{db: db.Snapshot(), rev: r.rev, seq: r.seq, id: r.lastID, next: make(chan struct{})})
	r.log.Info("registry loaded", "revision", r.rev, "records", records, "duration", time.Since(start))
	if f, ok := store.(Follower); ok {
		r.follower = f
		r.bg.Add(1)
		go func() {
			defer r.bg.Done()
			if err := f.Follow(r.bgCtx, r.applyRemote); err != nil && r.bgCtx.Err() == nil {
				r.fail(fmt.Errorf("follow the replicated store: %w", err))
			}
		}()
	}
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
	r.bgCancel()
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
	r.publishLocked(rev)
}

func (r *Registry) publishLocked(rev uint64) {
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
	// Publish before notifying: a subscriber that reads the registry
	// when its event arrives must see at least that revision.
	r.setPublished(&published{db: last.db, rev: last.rev, seq: last.seq, id: last.id})
	for _, q := range r.queue[:n] {
		r.notify(Event{Rev: q.rev, Changes: q.changes, Committed: q.at})
		if r.metrics != nil {
			r.metrics.count(&View{txn: q.db.Txn(false), rev: q.rev}, q.changes)
		}
	}
	r.queue = append(r.queue[:0:0], r.queue[n:]...)
	r.maybeSnapshot(last.db, last.rev)
}

// setPublished replaces the published state and wakes its waiters.
// Called with pubMu held.
func (r *Registry) setPublished(p *published) {
	p.next = make(chan struct{})
	old := r.published.Swap(p)
	close(old.next)
}

// awaitRevision waits until readers see revision rev.
func (r *Registry) awaitRevision(ctx context.Context, rev uint64) error {
	for {
		p := r.published.Load()
		if p.rev >= rev {
			return nil
		}
		select {
		case <-p.next:
		case <-r.failed:
			return r.Err()
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// rollback discards, after a lost race, the record (rev, id) and every
// local record resolved on top of it: the live database goes back to the
// state just before it. A record that is no longer queued was already
// rolled back or superseded by a remote record.
func (r *Registry) rollback(rev uint64, id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pubMu.Lock()
	defer r.pubMu.Unlock()
	i := slices.IndexFunc(r.queue, func(q queued) bool { return q.rev == rev && q.id == id })
	if i < 0 {
		return
	}
	p := r.published.Load()
	base := queued{rev: p.rev, seq: p.seq, id: p.id, db: p.db}
	if i > 0 {
		base = r.queue[i-1]
	}
	r.db = base.db.Snapshot()
	r.rev, r.seq, r.lastID = base.rev, base.seq, base.id
	r.queue = r.queue[:i]
}

// applyRemote applies a record delivered by a replicated store. Records
// this registry wrote are just published; another replica's record
// replaces the live state, dooming local records still in flight (their
// Parent is no longer the newest record, so the store refuses them).
func (r *Registry) applyRemote(rec Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pubMu.Lock()
	defer r.pubMu.Unlock()
	p := r.published.Load()
	var db *memdb.MemDB
	switch {
	case rec.Reset:
		fresh, err := memdb.NewMemDB(dbSchema())
		if err != nil {
			return fmt.Errorf("create registry tables: %w", err)
		}
		db = fresh
	case rec.Rev <= p.rev:
		return nil
	case rec.Rev != p.rev+1:
		return fmt.Errorf("replicated store skipped from revision %d to %d", p.rev, rec.Rev)
	default:
		if slices.ContainsFunc(r.queue, func(q queued) bool { return q.rev == rec.Rev && q.id == rec.ID }) {
			r.publishLocked(rec.Rev)
			return nil
		}
		db = p.db.Snapshot()
	}
	seq := p.seq
	if rec.Reset {
		seq = 0
	}
	objs, err := decodeAll(rec.Mutations, rec.Rev)
	if err != nil {
		return fmt.Errorf("apply revision %d: %w", rec.Rev, err)
	}
	txn := newTx(db)
	changes := make([]Change, 0, len(rec.Mutations))
	for i, m := range rec.Mutations {
		if _, err := applyObject(txn, m, objs[i]); err != nil {
			txn.Abort()
			return fmt.Errorf("apply revision %d: %w", rec.Rev, err)
		}
		seq = max(seq, m.Seq)
		changes = append(changes, Change{Kind: m.Kind, ID: m.ID, Deleted: m.Delete()})
	}
	if err := txn.flush(); err != nil {
		txn.Abort()
		return fmt.Errorf("apply revision %d: %w", rec.Rev, err)
	}
	txn.Commit()
	r.db = db
	r.rev, r.seq, r.lastID = rec.Rev, seq, rec.ID
	r.queue = nil
	ev := Event{Rev: rec.Rev, Changes: changes, Committed: time.Now()}
	if rec.Reset {
		ev = Event{Rev: rec.Rev, Resync: true, Committed: ev.Committed}
	}
	r.setPublished(&published{db: db.Snapshot(), rev: rec.Rev, seq: seq, id: rec.ID})
	r.notify(ev)
	if r.metrics != nil && !rec.Reset {
		r.metrics.count(r.View(), changes)
	}
	return nil
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
		err := snap.Snapshot(r.bgCtx, rev, entities(db))
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
