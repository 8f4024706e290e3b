package registry

import (
	"context"
	"encoding/json"
	"errors"
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
