package filestore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/cryptomesh/cryptomesh/registry"
)

// DefaultSegmentSize is the size past which the log moves to a new segment
// unless WithSegmentSize says otherwise.
const DefaultSegmentSize = 64 << 20

// maxSpareBuffer bounds the write buffer the flusher keeps for reuse, so
// that one burst of large records does not pin its memory forever.
const maxSpareBuffer = 4 << 20

// File names in the data directory.
const (
	segmentPrefix  = "log-"
	snapshotPrefix = "snapshot-"
	tmpSuffix      = ".tmp"
	lockName       = "LOCK"
)

func segmentName(index uint64) string { return fmt.Sprintf("%s%020d", segmentPrefix, index) }

func snapshotName(rev uint64) string { return fmt.Sprintf("%s%020d", snapshotPrefix, rev) }

// parseNumbered returns the number in a name like log-00000000000000000007.
func parseNumbered(name, prefix string) (uint64, bool) {
	digits, ok := strings.CutPrefix(name, prefix)
	if !ok || digits == "" || strings.TrimLeft(digits, "0123456789") != "" {
		return 0, false
	}
	n, err := strconv.ParseUint(digits, 10, 64)
	return n, err == nil
}

// Option configures a Store.
type Option func(*Store)

// WithFS replaces the operating system's file system, for fault injection.
func WithFS(fsys FS) Option { return func(s *Store) { s.fs = fsys } }

// WithLogger sets the logger for recovery warnings and failures.
func WithLogger(l *slog.Logger) Option { return func(s *Store) { s.log = l } }

// WithSegmentSize sets the size in bytes past which the log moves on to a
// new segment file. Smaller segments let snapshots reclaim space sooner.
func WithSegmentSize(bytes int64) Option { return func(s *Store) { s.segmentSize = bytes } }

// Stats counts the work of a store since Open.
type Stats struct {
	Records   uint64 // records written to the log and fsynced
	Syncs     uint64 // log fsyncs; each one commits a whole group of records
	Bytes     uint64 // log bytes written, framing included
	Snapshots uint64 // snapshots completed
}

// Store is the append-only, file-backed registry.Store. See the package
// comment for the format and the crash-safety argument.
type Store struct {
	dir         string
	fs          FS
	log         *slog.Logger
	segmentSize int64
	lock        io.Closer

	// snapMu serialises Load, Snapshot and Close, so that Close never
	// releases the directory while a snapshot is still changing it.
	snapMu sync.Mutex

	// mu guards the queue between Append and the flusher.
	mu       sync.Mutex
	loaded   bool
	loading  bool
	closed   bool
	buf      []byte        // frames waiting for the flusher
	queued   int           // records in buf
	cur      *batch        // completion shared by the records in buf
	appended uint64        // revision of the last record appended
	rotate   []chan error  // snapshot requests to start a new segment
	broken   error         // first write or sync failure: nothing more is written
	wake     chan struct{} // tells the flusher there is work
	done     chan struct{} // closed when the flusher has exited

	// Owned by the flusher once Load has returned.
	active     File
	activeSize int64
	spare      []byte

	// segMu guards the segment list, which the flusher extends and updates
	// and Snapshot trims from the front.
	segMu    sync.Mutex
	segments []segment // oldest first; the last one is active
	snapRev  uint64    // revision of the newest snapshot

	records, syncs, bytes, snapshots atomic.Uint64
}

type segment struct {
	index   uint64
	path    string
	lastRev uint64 // newest revision in the segment; 0 while it is empty
}

// batch is the Pending of every record flushed by one write and one fsync.
type batch struct {
	done chan struct{}
	err  error
}

// Wait returns once the batch has been fsynced (nil) or has failed.
func (b *batch) Wait(ctx context.Context) error {
	select {
	case <-b.done:
		return b.err
	default:
	}
	select {
	case <-b.done:
		return b.err
	case <-ctx.Done():
		return fmt.Errorf("filestore: waiting for durability: %w", ctx.Err())
	}
}

var (
	_ registry.Store       = (*Store)(nil)
	_ registry.Snapshotter = (*Store)(nil)
)

// Open prepares the store in dir, creating it (mode 0700) if needed, and
// locks it against other processes. Nothing is read until Load.
func Open(dir string, opts ...Option) (*Store, error) {
	s := &Store{
		dir:         dir,
		fs:          osFS{},
		log:         slog.Default(),
		segmentSize: DefaultSegmentSize,
		wake:        make(chan struct{}, 1),
		done:        make(chan struct{}),
	}
	for _, o := range opts {
		o(s)
	}
	if s.segmentSize <= 0 {
		return nil, fmt.Errorf("filestore: segment size must be positive, not %d", s.segmentSize)
	}
	if s.fs == nil || s.log == nil {
		return nil, errors.New("filestore: WithFS and WithLogger need a non-nil argument")
	}
	if err := s.fs.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("filestore: create data directory: %w", err)
	}
	lock, err := s.fs.Lock(filepath.Join(dir, lockName))
	if err != nil {
		return nil, fmt.Errorf("filestore: open %s: %w", dir, err)
	}
	s.lock = lock
	return s, nil
}

// Stats returns the store's counters.
func (s *Store) Stats() Stats {
	return Stats{
		Records:   s.records.Load(),
		Syncs:     s.syncs.Load(),
		Bytes:     s.bytes.Load(),
		Snapshots: s.snapshots.Load(),
	}
}

// Append queues rec for the flusher and returns at once; the caller's
// lock orders appends, and Wait on the result blocks until the group
// commit that includes rec has been fsynced.
func (s *Store) Append(rec registry.Record) (registry.Pending, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return nil, fmt.Errorf("filestore: append revision %d: %w", rec.Rev, registry.ErrStoreClosed)
	case !s.loaded:
		return nil, fmt.Errorf("filestore: append revision %d before Load", rec.Rev)
	case s.broken != nil:
		return nil, fmt.Errorf("filestore: append revision %d to a failed store: %w", rec.Rev, s.broken)
	case rec.Rev != s.appended+1:
		return nil, fmt.Errorf("filestore: append revision %d after %d: revisions must be dense", rec.Rev, s.appended)
	}
	buf, err := appendRecordFrame(s.buf, rec)
	s.buf = buf
	if err != nil {
		return nil, fmt.Errorf("filestore: append revision %d: %w", rec.Rev, err)
	}
	s.appended = rec.Rev
	s.queued++
	if s.cur == nil {
		s.cur = &batch{done: make(chan struct{})}
	}
	s.signal()
	return s.cur, nil
}

func (s *Store) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// fail marks the store broken with err, the first failure winning: after
// a failed write or fsync the durable state of the file is unknown (the
// kernel may have dropped the dirty pages), so nothing more is written.
func (s *Store) fail(err error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.broken == nil {
		s.broken = err
		s.log.Error("filestore: the store has failed and accepts no more writes", "dir", s.dir, "error", err)
	}
	return s.broken
}

// flusher is the one goroutine that writes the log. Each round takes
// everything queued since the last, writes it with one write and one
// fsync, and completes every Pending of it at once: this is the group
// commit. Segment rotation happens here too, between rounds, so it needs
// no lock against writes.
func (s *Store) flusher() {
	defer close(s.done)
	for {
		s.mu.Lock()
		if len(s.buf) == 0 && len(s.rotate) == 0 {
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return
			}
			<-s.wake
			continue
		}
		// Swap in the spare buffer: Append fills one while the flusher
		// writes the other.
		buf, n, b, last, rot, broken := s.buf, s.queued, s.cur, s.appended, s.rotate, s.broken
		s.buf, s.queued, s.cur, s.rotate = s.spare[:0], 0, nil, nil
		s.spare = nil
		s.mu.Unlock()
		err := broken
		if err == nil && len(buf) > 0 {
			err = s.write(buf, n, last)
		}
		if b != nil {
			b.err = err
			close(b.done)
		}
		if cap(buf) <= maxSpareBuffer {
			s.spare = buf[:0]
		} else {
			s.spare = nil
		}
		if err == nil && s.activeSize > 0 && (s.activeSize >= s.segmentSize || len(rot) > 0) {
			err = s.rotateSegment()
		}
		for _, c := range rot {
			c <- err
		}
	}
}

// write appends one group of frames to the active segment and fsyncs it.
func (s *Store) write(buf []byte, n int, last uint64) error {
	path := s.activePath()
	if _, err := s.active.Write(buf); err != nil {
		return s.fail(fmt.Errorf("filestore: write %d records to %s: %w", n, path, err))
	}
	if err := s.active.Sync(); err != nil {
		return s.fail(fmt.Errorf("filestore: fdatasync %s: %w", path, err))
	}
	s.activeSize += int64(len(buf))
	s.records.Add(uint64(n))
	s.syncs.Add(1)
	s.bytes.Add(uint64(len(buf)))
	s.segMu.Lock()
	s.segments[len(s.segments)-1].lastRev = last
	s.segMu.Unlock()
	return nil
}

func (s *Store) activePath() string {
	s.segMu.Lock()
	defer s.segMu.Unlock()
	return s.segments[len(s.segments)-1].path
}

// rotateSegment seals the active segment, whose records are all fsynced,
// and moves appends to a new one. The new file's directory entry is made
// durable before any record is acknowledged from it.
func (s *Store) rotateSegment() error {
	s.segMu.Lock()
	index := s.segments[len(s.segments)-1].index + 1
	s.segMu.Unlock()
	path := filepath.Join(s.dir, segmentName(index))
	f, err := s.createSegment(path)
	if err != nil {
		return s.fail(err)
	}
	if err := s.active.Close(); err != nil {
		// Its data is already fsynced; a failed close loses nothing.
		s.log.Warn("filestore: closing a sealed segment failed", "error", err)
	}
	s.active, s.activeSize = f, 0
	s.segMu.Lock()
	s.segments = append(s.segments, segment{index: index, path: path})
	s.segMu.Unlock()
	return nil
}

// createSegment creates an empty segment file and syncs the directory.
func (s *Store) createSegment(path string) (File, error) {
	f, err := s.fs.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("filestore: create segment: %w", err)
	}
	if err := s.fs.SyncDir(s.dir); err != nil {
		f.Close()
		return nil, fmt.Errorf("filestore: sync directory after creating %s: %w", path, err)
	}
	return f, nil
}

// Close waits for a running Snapshot, flushes every queued record, stops
// the flusher and releases the directory. It returns the failure that
// broke the store, if any. Closing twice is harmless.
func (s *Store) Close() error {
	s.snapMu.Lock()
	defer s.snapMu.Unlock()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	loaded := s.loaded
	s.mu.Unlock()

	var errs []error
	if loaded {
		s.signal()
		<-s.done
		if err := s.active.Close(); err != nil {
			errs = append(errs, fmt.Errorf("filestore: close active segment: %w", err))
		}
		s.mu.Lock()
		if s.broken != nil {
			errs = append(errs, s.broken)
		}
		s.mu.Unlock()
	}
	if err := s.lock.Close(); err != nil {
		errs = append(errs, fmt.Errorf("filestore: release lock: %w", err))
	}
	return errors.Join(errs...)
}
