package etcdstore

import (
	"context"
	"fmt"
	"hash/crc32"
	"iter"

	"github.com/google/uuid"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cryptomesh/cryptomesh/registry"
)

// Snapshot writes the registry as of revision rev to snap/<rev> and then
// deletes what it makes redundant: older snapshots and their chunks, and
// log entries and blobs more than the log retention below rev.
//
// The chunks go first, under a name of their own (snapchunk/<rev>/<snap
// ID>/), and are invisible until the header snap/<rev> names them; the
// header is created only if no replica created it first, so concurrent
// snapshots of the same revision leave one winner and the losers delete
// their chunks. Each replica snapshots on its own schedule; one that finds
// a snapshot at or past rev already has nothing to do.
//
// Readers are never torn by the deletions: Load and re-listing read the
// snapshot and the log at one etcd revision, and etcd keeps every
// revision until it is compacted.
func (s *Store) Snapshot(ctx context.Context, rev uint64, entities iter.Seq2[registry.Mutation, error]) error {
	if rev == 0 {
		return nil
	}
	s.mu.Lock()
	loaded, closing := s.loaded, s.closing
	s.mu.Unlock()
	switch {
	case closing:
		return fmt.Errorf("etcdstore: snapshot at revision %d: %w", rev, registry.ErrStoreClosed)
	case !loaded:
		return fmt.Errorf("etcdstore: snapshot at revision %d before Load", rev)
	}
	newest, err := s.client.Get(ctx, s.keys.snapDir(), clientv3.WithRange(s.keys.snapEnd()),
		clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend), clientv3.WithLimit(1), clientv3.WithKeysOnly())
	if err != nil {
		return fmt.Errorf("etcdstore: snapshot at revision %d: find the newest snapshot: %w", rev, err)
	}
	if len(newest.Kvs) > 0 {
		if r, ok := revOf(string(newest.Kvs[0].Key), s.keys.snapDir()); ok && r >= rev {
			return nil
		}
	}
	// The snapshot stands for the record at rev, whose ID the next record
	// names as its Parent.
	entry, err := s.client.Get(ctx, s.keys.log(rev))
	if err != nil {
		return fmt.Errorf("etcdstore: snapshot at revision %d: read its log entry: %w", rev, err)
	}
	if len(entry.Kvs) == 0 {
		return fmt.Errorf("etcdstore: snapshot at revision %d: no log entry at that revision", rev)
	}
	_, id, err := logIdentity(entry.Kvs[0].Value)
	if err != nil {
		return fmt.Errorf("etcdstore: snapshot at revision %d: %s: %w", rev, entry.Kvs[0].Key, err)
	}

	h := snapHeader{rev: rev, id: id, snapID: uuid.NewString()}
	dir := s.keys.snapChunks(rev, h.snapID)
	drop := func() {
		if _, err := s.client.Delete(context.WithoutCancel(ctx), dir, clientv3.WithPrefix()); err != nil {
			s.log.Warn("etcdstore: leaving the chunks of an abandoned snapshot to the next one", "revision", rev, "error", err)
		}
	}
	buf := make([]byte, 0, s.snapChunkSize+4096)
	put := func(chunk []byte) error {
		if _, err := s.client.Put(ctx, s.keys.snapChunk(rev, h.snapID, h.chunks), string(chunk)); err != nil {
			return fmt.Errorf("etcdstore: snapshot at revision %d: write chunk %d: %w", rev, h.chunks, err)
		}
		h.crc = crc32.Update(h.crc, castagnoli, chunk)
		h.size += uint64(len(chunk))
		h.chunks++
		return nil
	}
	for m, err := range entities {
		if err != nil {
			drop()
			return fmt.Errorf("etcdstore: snapshot at revision %d: %w", rev, err)
		}
		if m.Delete() {
			drop()
			return fmt.Errorf("etcdstore: snapshot at revision %d: entity %s %q without a value", rev, m.Kind, m.ID)
		}
		buf = appendMutation(buf, m)
		h.count++
		for len(buf) >= s.snapChunkSize {
			if err := put(buf[:s.snapChunkSize]); err != nil {
				drop()
				return err
			}
			buf = append(buf[:0], buf[s.snapChunkSize:]...)
		}
	}
	if len(buf) > 0 {
		if err := put(buf); err != nil {
			drop()
			return err
		}
	}
	resp, err := s.client.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(s.keys.snap(rev)), "=", 0)).
		Then(clientv3.OpPut(s.keys.snap(rev), string(appendSnapHeader(nil, h)))).
		Commit()
	if err != nil {
		// Unknown outcome: the chunks may be referenced now, so they stay;
		// if they are not, the next snapshot deletes them.
		return fmt.Errorf("etcdstore: snapshot at revision %d: write the header: %w", rev, err)
	}
	if !resp.Succeeded {
		drop() // another replica's snapshot of the same revision won
		return nil
	}
	s.snapshots.Add(1)
	if err := s.dropBefore(ctx, rev); err != nil {
		// The snapshot is in place; what it made redundant goes with the
		// next one.
		s.log.Warn("etcdstore: snapshot written, but older data not deleted", "revision", rev, "error", err)
	}
	return nil
}

// dropBefore deletes, in one transaction, the snapshots older than rev
// with their chunks (and chunks that no header names), and the log
// entries and blobs at or below rev minus the retention. Blobs are keyed
// by revision first, so this also collects the blobs of refused or
// abandoned commits: a record at such a revision can never commit, since
// the head is past it.
func (s *Store) dropBefore(ctx context.Context, rev uint64) error {
	ops := []clientv3.Op{
		clientv3.OpDelete(s.keys.snapDir(), clientv3.WithRange(s.keys.snap(rev))),
		clientv3.OpDelete(s.keys.chunkDir(), clientv3.WithRange(s.keys.chunkRev(rev))),
	}
	if rev > s.retention {
		keep := rev - s.retention + 1 // the oldest log entry kept
		ops = append(ops,
			clientv3.OpDelete(s.keys.logDir(), clientv3.WithRange(s.keys.log(keep))),
			clientv3.OpDelete(s.keys.blobDir(), clientv3.WithRange(s.keys.blobRev(keep))))
	}
	if _, err := s.client.Txn(ctx).Then(ops...).Commit(); err != nil {
		return fmt.Errorf("etcdstore: delete what the snapshot at revision %d covers: %w", rev, err)
	}
	return nil
}
