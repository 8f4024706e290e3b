package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
)

// Mutation is one resolved change to one entity. Mutations are the
// outcome of a write, never its intent: generated ids, server timestamps,
// implied entities, cascaded deletes and history-retention deletes are all
// logged as the puts and deletes they turned into, so replaying a log never
// recomputes anything.
type Mutation struct {
	Kind Kind   `json:"k"`
	ID   string `json:"i"`
	// Seq orders history entities (states and results) in commit order; it
	// is zero for other kinds.
	Seq uint64 `json:"s,omitempty"`
	// Value is the entity as stored (without derived fields); nil means
	// delete.
	Value json.RawMessage `json:"v,omitempty"`
}

// Delete reports whether m removes its entity.
func (m Mutation) Delete() bool { return len(m.Value) == 0 }

// Record is one atomic, durable unit: every mutation of one write request,
// applied all together or not at all.
type Record struct {
	// Rev is the registry revision this record creates. Revisions are
	// dense and strictly increasing from 1.
	Rev       uint64     `json:"r"`
	Mutations []Mutation `json:"m"`
	// ID and Parent are set only for replicated stores (see Follower):
	// ID names the record, Parent is the ID of the record it was resolved
	// on top of (revision Rev-1). A replicated store commits a record only
	// if its Parent is still the newest committed record.
	ID     string `json:"id,omitempty"`
	Parent string `json:"p,omitempty"`
	// Reset marks a record that holds the whole registry (a re-listing
	// after the replicated log was compacted past a follower): it replaces
	// everything instead of being applied on top.
	Reset bool `json:"reset,omitempty"`
}

// Store makes records durable and gives them back at startup. The registry
// calls Append under its writer lock, in commit order, and waits on the
// returned Pending outside it, so a store may share one fsync (or one
// consensus round) between many concurrent writers.
type Store interface {
	// Load replays every durable record in revision order. It is called
	// once, before the first Append.
	Load(ctx context.Context, apply func(Record) error) error
	// Append queues rec after every record appended before it. It must not
	// block on I/O for long: durability is awaited with Pending.Wait.
	Append(rec Record) (Pending, error)
	// Close flushes and releases the store.
	Close() error
}

// Pending is a record on its way to durable storage.
type Pending interface {
	// Wait returns nil once the record, and every record appended before
	// it, is durable. A non-nil error means the record's durability is
	// unknown; the registry then stops accepting writes.
	Wait(ctx context.Context) error
}

// ErrStoreClosed is returned by stores used after Close.
var ErrStoreClosed = errors.New("store closed")

// Follower is implemented by stores shared by several registries (etcd).
// Writes race: Pending.Wait returns a *ConflictError when another replica
// committed first, and the registry then resolves the write again on top
// of the newer state. Follow delivers every committed record (this
// replica's and the others') in revision order.
type Follower interface {
	Store
	// Follow calls apply for every record committed after the last one
	// Load or Follow delivered, in order, until ctx ends or apply fails.
	// After a compaction it delivers one Reset record holding everything.
	Follow(ctx context.Context, apply func(Record) error) error
	// Head returns the revision of the newest committed record. The
	// registry uses it to re-check a refused write against the latest
	// state before refusing it, so a lagging replica never rejects a
	// write because of what it has not seen yet.
	Head(ctx context.Context) (uint64, error)
}

// ConflictError is the Pending.Wait error of a replicated store when the
// record's Parent was no longer the newest record: another replica won.
type ConflictError struct {
	// Head is the revision of the newest committed record, which the
	// registry waits to have applied before resolving the write again.
	Head uint64
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("another replica committed first (the store is at revision %d)", e.Head)
}
