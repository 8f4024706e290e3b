package filestore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/cryptomesh/cryptomesh/registry"
)

// dirListing is what Load finds in the data directory.
type dirListing struct {
	segments  []uint64 // indexes, ascending
	snapshots []uint64 // revisions, descending
	temps     []string // leftovers of interrupted snapshots
}

func (s *Store) list() (dirListing, error) {
	names, err := s.fs.ReadDir(s.dir)
	if err != nil {
		return dirListing{}, fmt.Errorf("filestore: list %s: %w", s.dir, err)
	}
	var l dirListing
	for _, name := range names {
		if strings.HasSuffix(name, tmpSuffix) {
			l.temps = append(l.temps, name)
		} else if i, ok := parseNumbered(name, segmentPrefix); ok {
			l.segments = append(l.segments, i)
		} else if rev, ok := parseNumbered(name, snapshotPrefix); ok {
			l.snapshots = append(l.snapshots, rev)
		}
	}
	slices.Sort(l.segments)
	slices.Sort(l.snapshots)
	slices.Reverse(l.snapshots)
	return l, nil
}

// Load replays the newest valid snapshot, as one record, and then every
// logged record after it, in revision order. It drops a torn final frame
// (with a warning), refuses any other damage with a *CorruptError, and
// then finishes whatever compaction a crash interrupted.
func (s *Store) Load(ctx context.Context, apply func(registry.Record) error) error {
	s.snapMu.Lock()
	defer s.snapMu.Unlock()
	s.mu.Lock()
	switch {
	case s.closed:
		s.mu.Unlock()
		return fmt.Errorf("filestore: load: %w", registry.ErrStoreClosed)
	case s.loaded || s.loading:
		s.mu.Unlock()
		return errors.New("filestore: Load called twice")
	}
	s.loading = true
	s.mu.Unlock()

	last, err := s.load(ctx, apply)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.appended = last
	s.loaded = true
	s.mu.Unlock()
	go s.flusher()
	return nil
}

func (s *Store) load(ctx context.Context, apply func(registry.Record) error) (uint64, error) {
	// A previous process may have died before syncing the directory; sync
	// it now so that nothing Load trusts can still vanish in a power loss.
	if err := s.fs.SyncDir(s.dir); err != nil {
		return 0, fmt.Errorf("filestore: sync %s: %w", s.dir, err)
	}
	l, err := s.list()
	if err != nil {
		return 0, err
	}

	snap, err := s.loadSnapshot(ctx, l.snapshots)
	if err != nil {
		return 0, err
	}
	base := snap.rev
	if base > 0 {
		if err := apply(registry.Record{Rev: base, Mutations: snap.entities}); err != nil {
			return 0, fmt.Errorf("filestore: apply snapshot at revision %d: %w", base, err)
		}
	}
	snap.entities = nil

	r := replay{s: s, ctx: ctx, apply: apply, base: base}
	abort := func(err error) (uint64, error) {
		if r.active != nil {
			r.active.Close()
		}
		return 0, err
	}
	for i, index := range l.segments {
		if err := r.segment(index, i == len(l.segments)-1); err != nil {
			if snap.corrupt != nil {
				return abort(fmt.Errorf("%w; and the log cannot stand in for the newest snapshot, which is corrupt: %w", err, snap.corrupt))
			}
			return abort(err)
		}
	}
	last := max(base, r.prev)
	if snap.corrupt != nil {
		if last < snap.corruptRev {
			return abort(fmt.Errorf("filestore: the newest snapshot is corrupt and the log only reaches revision %d of its %d: %w",
				last, snap.corruptRev, snap.corrupt))
		}
		s.log.Warn("filestore: the newest snapshot is corrupt; recovered from the log, which still holds every revision since the previous one",
			"error", snap.corrupt, "base", base, "revision", last)
	}

	// Appends go to the newest segment unless it ends inside the snapshot:
	// a fresh one then keeps revisions dense within every segment.
	segs := r.segments
	if len(segs) == 0 || segs[len(segs)-1].lastRev != 0 && segs[len(segs)-1].lastRev < last {
		if r.active != nil {
			r.active.Close()
		}
		var index uint64 = 1
		if len(segs) > 0 {
			index = segs[len(segs)-1].index + 1
		}
		path := filepath.Join(s.dir, segmentName(index))
		f, err := s.createSegment(path)
		if err != nil {
			return 0, err
		}
		r.active, r.activeSize = f, 0
		segs = append(segs, segment{index: index, path: path})
	}
	s.active, s.activeSize = r.active, r.activeSize
	s.segments = segs
	s.snapRev = base
	if err := s.cleanup(l, base); err != nil {
		s.active.Close()
		return 0, err
	}
	return last, nil
}

// loadedSnapshot is the newest valid snapshot (rev 0 if there is none),
// and the newest corrupt one if that is newer still.
type loadedSnapshot struct {
	rev        uint64
	entities   []registry.Mutation
	corrupt    error
	corruptRev uint64
}

// loadSnapshot reads the newest valid snapshot. A corrupt newer one is
// reported back, for the caller to accept only if the log still covers it;
// any other failure (I/O, a cancelled context) stops Load.
func (s *Store) loadSnapshot(ctx context.Context, revs []uint64) (loadedSnapshot, error) {
	var snap loadedSnapshot
	for _, rev := range revs {
		ents, err := s.readSnapshot(ctx, rev)
		var ce *CorruptError
		switch {
		case err == nil:
			snap.rev, snap.entities = rev, ents
			return snap, nil
		case errors.As(err, &ce):
			s.log.Warn("filestore: snapshot is corrupt", "error", err)
			if snap.corrupt == nil {
				snap.corrupt, snap.corruptRev = err, rev
			}
		default:
			return loadedSnapshot{}, err
		}
	}
	return snap, nil
}

// replay reads log segments in order, applying records after the snapshot.
type replay struct {
	s     *Store
	ctx   context.Context
	apply func(registry.Record) error
	base  uint64 // snapshot revision

	prev       uint64 // last revision read from the log, 0 before the first
	segments   []segment
	active     File // the newest segment, opened for appending
	activeSize int64
}

// segment replays one segment file. Only the newest segment may end in a
// torn frame: every older one was fsynced in full before its successor was
// created.
func (r *replay) segment(index uint64, newest bool) error {
	s := r.s
	path := filepath.Join(s.dir, segmentName(index))
	f, err := s.fs.OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		return fmt.Errorf("filestore: open segment: %w", err)
	}
	defer f.Close()
	size, err := f.Size()
	if err != nil {
		return fmt.Errorf("filestore: size of %s: %w", path, err)
	}
	seg := segment{index: index, path: path}
	fr := newFrameReader(path, f, size)
	first := true
	good := size
	for {
		if err := r.ctx.Err(); err != nil {
			return fmt.Errorf("filestore: load: %w", err)
		}
		payload, off, err := fr.next()
		if err == io.EOF {
			break
		}
		var torn *tornError
		if errors.As(err, &torn) {
			if !newest {
				return &CorruptError{Path: path, Offset: torn.Offset, Reason: torn.Reason + " in a sealed segment"}
			}
			s.log.Warn("filestore: dropping a torn record at the end of the log", "file", path, "offset", torn.Offset, "reason", torn.Reason)
			good = torn.Offset
			break
		}
		if err != nil {
			return err
		}
		rec, err := decodeRecordPayload(payload)
		if err != nil {
			return &CorruptError{Path: path, Offset: off, Reason: err.Error()}
		}
		if err := r.check(rec.Rev, first); err != nil {
			return &CorruptError{Path: path, Offset: off, Reason: err.Error()}
		}
		first = false
		r.prev, seg.lastRev = rec.Rev, rec.Rev
		if rec.Rev > r.base {
			if err := r.apply(rec); err != nil {
				return fmt.Errorf("filestore: apply revision %d: %w", rec.Rev, err)
			}
		}
	}
	r.segments = append(r.segments, seg)
	if !newest {
		return nil
	}
	// Reopen the newest segment for appending, cut off a torn tail, and
	// sync it: a previous process may have died with its last write still
	// only in the page cache, and Load must not return records that a
	// power loss could yet take away.
	w, err := s.fs.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return fmt.Errorf("filestore: open segment for appending: %w", err)
	}
	if good < size {
		if err := w.Truncate(good); err != nil {
			w.Close()
			return fmt.Errorf("filestore: truncate torn tail of %s at offset %d: %w", path, good, err)
		}
	}
	if err := w.Sync(); err != nil {
		w.Close()
		return fmt.Errorf("filestore: sync %s: %w", path, err)
	}
	r.active, r.activeSize = w, good
	return nil
}

// check enforces dense revisions. The one gap allowed is where compaction
// removed whole segments below the snapshot: a segment may then start
// later than its predecessor ended, as long as it starts at or before the
// first revision after the snapshot.
func (r *replay) check(rev uint64, firstInSegment bool) error {
	switch {
	case r.prev == 0 && rev > r.base+1:
		if r.base == 0 {
			return fmt.Errorf("the log starts at revision %d with no snapshot before it", rev)
		}
		return fmt.Errorf("the log starts at revision %d but the snapshot ends at %d", rev, r.base)
	case r.prev == 0 || rev == r.prev+1:
		return nil
	case firstInSegment && rev > r.prev && rev <= r.base+1:
		return nil
	}
	return fmt.Errorf("revision %d follows revision %d: revisions must increase by 1", rev, r.prev)
}

// cleanup finishes an interrupted compaction: it removes snapshot temp
// files, segments wholly covered by the snapshot, and older snapshots. A
// file that cannot be removed is only garbage for the next snapshot to
// remove, so that is logged; a failed directory sync is returned, since
// the store never carries on past a failed fsync.
func (s *Store) cleanup(l dirListing, base uint64) error {
	var remove []string
	for _, name := range l.temps {
		remove = append(remove, filepath.Join(s.dir, name))
	}
	for len(s.segments) > 1 && s.segments[0].lastRev <= base {
		remove = append(remove, s.segments[0].path)
		s.segments = s.segments[1:]
	}
	for _, rev := range l.snapshots {
		if rev < base {
			remove = append(remove, filepath.Join(s.dir, snapshotName(rev)))
		}
	}
	return s.removeAll(remove)
}

// removeAll removes obsolete files and syncs the directory if any went.
func (s *Store) removeAll(paths []string) error {
	removed := 0
	for _, p := range paths {
		if err := s.fs.Remove(p); err != nil {
			s.log.Warn("filestore: removing an obsolete file failed", "file", p, "error", err)
			continue
		}
		removed++
	}
	if removed == 0 {
		return nil
	}
	if err := s.fs.SyncDir(s.dir); err != nil {
		return fmt.Errorf("filestore: sync %s after removing obsolete files: %w", s.dir, err)
	}
	return nil
}
