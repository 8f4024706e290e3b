package registry

import (
	"context"
	"iter"
)

// Snapshotter is implemented by stores that compact their log with snapshots.
type Snapshotter interface {
	// Snapshot persists the registry state as of revision rev, given as every live entity
	// (as put Mutations, Seq preserved), and then drops log data that only holds revisions <= rev.
	// The registry calls it outside its writer lock; Appends of later revisions run concurrently.
	Snapshot(ctx context.Context, rev uint64, entities iter.Seq2[Mutation, error]) error
}
