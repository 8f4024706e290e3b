package filestore

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"iter"
	"os"
	"path/filepath"

	"github.com/cryptomesh/cryptomesh/registry"
)

// Snapshot writes the state as of revision rev to snapshot-<rev> and then
// removes the log segments and snapshots it makes redundant. The steps are
// ordered so that a crash between any two leaves a directory that Load
// recovers to the same state:
//
//  1. the flusher fsyncs every record appended so far and moves later
//     appends to a new segment, so that the old segments stop changing;
//  2. the entities go to snapshot-<rev>.tmp, which is fsynced (a leftover
//     temp file is ignored and removed by Load);
//  3. the temp file is renamed into place and the directory fsynced: from
//     here on Load starts from this snapshot;
//  4. sealed segments that hold no revision above rev, and older
//     snapshots, are removed (Load tolerates any subset of them gone).
//
// A file that cannot be removed in step 4 is logged and left for Load or
// the next snapshot: the snapshot itself is durable by then, so Snapshot
// still succeeds.
//
// Snapshot at revision 0 has nothing to record and does nothing.
func (s *Store) Snapshot(ctx context.Context, rev uint64, entities iter.Seq2[registry.Mutation, error]) error {
	if rev == 0 {
		return nil
	}
	s.snapMu.Lock()
	defer s.snapMu.Unlock()

	// Step 1.
	s.mu.Lock()
	switch {
	case s.closed:
		s.mu.Unlock()
		return fmt.Errorf("filestore: snapshot at revision %d: %w", rev, registry.ErrStoreClosed)
	case !s.loaded:
		s.mu.Unlock()
		return fmt.Errorf("filestore: snapshot at revision %d before Load", rev)
	case s.broken != nil:
		s.mu.Unlock()
		return fmt.Errorf("filestore: snapshot at revision %d of a failed store: %w", rev, s.broken)
	case rev > s.appended:
		last := s.appended
		s.mu.Unlock()
		return fmt.Errorf("filestore: snapshot at revision %d, but only revisions up to %d were appended", rev, last)
	}
	reply := make(chan error, 1)
	s.rotate = append(s.rotate, reply)
	s.signal()
	s.mu.Unlock()
	select {
	case err := <-reply:
		if err != nil {
			return fmt.Errorf("filestore: snapshot at revision %d: flush the log: %w", rev, err)
		}
	case <-ctx.Done():
		return fmt.Errorf("filestore: snapshot at revision %d: %w", rev, ctx.Err())
	}
	s.segMu.Lock()
	newest := s.snapRev
	s.segMu.Unlock()
	if rev < newest {
		return fmt.Errorf("filestore: snapshot at revision %d is older than the existing one at %d", rev, newest)
	}

	// Step 2.
	final := filepath.Join(s.dir, snapshotName(rev))
	tmp := final + tmpSuffix
	if err := s.writeSnapshot(ctx, tmp, rev, entities); err != nil {
		// The temp file was never renamed, so nothing depends on it, and
		// a failed fsync of it does not touch the log: the store goes on.
		s.removeTemp(tmp)
		return err
	}

	// Step 3.
	if err := s.fs.Rename(tmp, final); err != nil {
		s.removeTemp(tmp)
		return fmt.Errorf("filestore: snapshot at revision %d: rename into place: %w", rev, err)
	}
	if err := s.fs.SyncDir(s.dir); err != nil {
		return s.fail(fmt.Errorf("filestore: snapshot at revision %d: sync %s: %w", rev, s.dir, err))
	}

	// Step 4. Sealed segments are a prefix of the list and the flusher only
	// ever touches the last one, so they can be removed outside segMu.
	s.segMu.Lock()
	s.snapRev = rev
	n := 0
	for n < len(s.segments)-1 && s.segments[n].lastRev <= rev {
		n++
	}
	var obsolete []string
	for _, seg := range s.segments[:n] {
		obsolete = append(obsolete, seg.path)
	}
	s.segments = s.segments[n:]
	s.segMu.Unlock()
	l, err := s.list()
	if err != nil {
		s.log.Warn("filestore: cannot list old snapshots to remove them", "error", err)
	}
	for _, r := range l.snapshots {
		if r < rev {
			obsolete = append(obsolete, filepath.Join(s.dir, snapshotName(r)))
		}
	}
	for _, name := range l.temps {
		// Left by an earlier snapshot whose cleanup failed.
		obsolete = append(obsolete, filepath.Join(s.dir, name))
	}
	if err := s.removeAll(obsolete); err != nil {
		return s.fail(err)
	}
	s.snapshots.Add(1)
	return nil
}

// removeTemp removes the temp file of a failed snapshot. Failing that, it
// stays until Load or the next snapshot removes it.
func (s *Store) removeTemp(tmp string) {
	if err := s.fs.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.log.Warn("filestore: removing a failed snapshot's temp file failed", "file", tmp, "error", err)
	}
}

// writeSnapshot writes and fsyncs the snapshot file: a head frame with the
// revision, one frame per entity, and an end frame with the count, so that
// a truncated snapshot can never pass for a complete one.
func (s *Store) writeSnapshot(ctx context.Context, path string, rev uint64, entities iter.Seq2[registry.Mutation, error]) (err error) {
	wrap := func(err error) error { return fmt.Errorf("filestore: snapshot at revision %d: %w", rev, err) }
	f, err := s.fs.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return wrap(err)
	}
	defer func() {
		if f != nil {
			f.Close()
		}
	}()
	w := bufio.NewWriterSize(f, 256<<10)
	var frame []byte
	put := func(payload func([]byte) []byte) error {
		frame = payload(beginFrame(frame[:0]))
		if err := sealFrame(frame); err != nil {
			return err
		}
		_, err := w.Write(frame)
		return err
	}
	err = put(func(b []byte) []byte {
		return binary.AppendUvarint(append(b, tagSnapshotHead), rev)
	})
	if err != nil {
		return wrap(fmt.Errorf("write %s: %w", path, err))
	}
	var count uint64
	for m, err := range entities {
		if err != nil {
			return wrap(fmt.Errorf("read entities: %w", err))
		}
		if err := ctx.Err(); err != nil {
			return wrap(err)
		}
		if m.Delete() {
			return wrap(fmt.Errorf("entity %s %q has no value: a snapshot holds live entities only", m.Kind, m.ID))
		}
		if err := put(func(b []byte) []byte { return appendMutation(append(b, tagSnapshotItem), m) }); err != nil {
			return wrap(fmt.Errorf("write %s: entity %s %q: %w", path, m.Kind, m.ID, err))
		}
		count++
	}
	err = put(func(b []byte) []byte {
		return binary.AppendUvarint(append(b, tagSnapshotEnd), count)
	})
	if err == nil {
		err = w.Flush()
	}
	if err != nil {
		return wrap(fmt.Errorf("write %s: %w", path, err))
	}
	if err := f.Sync(); err != nil {
		return wrap(fmt.Errorf("fsync %s: %w", path, err))
	}
	cerr := f.Close()
	f = nil
	if cerr != nil {
		return wrap(fmt.Errorf("close %s: %w", path, cerr))
	}
	return nil
}

// readSnapshot reads and verifies snapshot-<rev>. Any damage is a
// *CorruptError: a snapshot is fsynced before it gets its name, so unlike
// the log's tail it can never be legitimately torn.
func (s *Store) readSnapshot(ctx context.Context, rev uint64) ([]registry.Mutation, error) {
	path := filepath.Join(s.dir, snapshotName(rev))
	f, err := s.fs.OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("filestore: open snapshot: %w", err)
	}
	defer f.Close()
	size, err := f.Size()
	if err != nil {
		return nil, fmt.Errorf("filestore: size of %s: %w", path, err)
	}
	fr := newFrameReader(path, f, size)
	var entities []registry.Mutation
	for i := 0; ; i++ {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("filestore: load snapshot %s: %w", path, err)
		}
		payload, off, err := fr.next()
		var torn *tornError
		switch {
		case err == io.EOF:
			return nil, &CorruptError{Path: path, Offset: off, Reason: "snapshot ends without its end frame"}
		case errors.As(err, &torn):
			return nil, &CorruptError{Path: path, Offset: torn.Offset, Reason: torn.Reason + " in a snapshot"}
		case err != nil:
			return nil, err
		}
		corrupt := func(format string, args ...any) error {
			return &CorruptError{Path: path, Offset: off, Reason: fmt.Sprintf(format, args...)}
		}
		if len(payload) == 0 {
			return nil, corrupt("empty frame in a snapshot")
		}
		tag, d := payload[0], decoder{b: payload[1:]}
		switch {
		case i == 0:
			if tag != tagSnapshotHead {
				return nil, corrupt("snapshot does not start with a head frame (tag %q)", tag)
			}
			got := d.uvarint()
			if err := d.finish("snapshot head"); err != nil {
				return nil, corrupt("%v", err)
			}
			if got != rev {
				return nil, corrupt("snapshot holds revision %d, not the %d its name says", got, rev)
			}
		case tag == tagSnapshotItem:
			m := d.mutation()
			if err := d.finish("snapshot entity"); err != nil {
				return nil, corrupt("%v", err)
			}
			if m.Delete() {
				return nil, corrupt("snapshot entity %s %q has no value", m.Kind, m.ID)
			}
			entities = append(entities, m)
		case tag == tagSnapshotEnd:
			count := d.uvarint()
			if err := d.finish("snapshot end"); err != nil {
				return nil, corrupt("%v", err)
			}
			if count != uint64(len(entities)) {
				return nil, corrupt("snapshot end frame counts %d entities, but %d precede it", count, len(entities))
			}
			if fr.off != size {
				return nil, &CorruptError{Path: path, Offset: fr.off, Reason: fmt.Sprintf("%d stray bytes after the snapshot's end frame", size-fr.off)}
			}
			return entities, nil
		default:
			return nil, corrupt("unexpected frame tag %q in a snapshot", tag)
		}
	}
}
