package filestore_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"iter"
	"math/rand/v2"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cryptomesh/cryptomesh/registry"
	"github.com/cryptomesh/cryptomesh/registry/store/filestore"
	"github.com/cryptomesh/cryptomesh/registry/store/filestore/faultfs"
)

// segmentRevs returns the revisions of the records in a log segment.
func segmentRevs(t testing.TB, data []byte) []uint64 {
	t.Helper()
	var revs []uint64
	for _, off := range frameOffsets(t, data) {
		rev, n := binary.Uvarint(data[off+9:])
		if data[off+8] != 'R' || n <= 0 {
			t.Fatalf("frame at %d is not a record", off)
		}
		revs = append(revs, rev)
	}
	return revs
}

// assertCompacted checks what a snapshot at rev must leave behind: that
// snapshot alone, no temp file, and no sealed segment whose records are
// all covered by it.
func assertCompacted(t testing.TB, fsys filestore.FS, rev uint64) {
	t.Helper()
	if snaps := files(t, fsys, testDir, "snapshot-"); !slices.Equal(snaps, []string{fmt.Sprintf("snapshot-%020d", rev)}) {
		t.Fatalf("snapshot files %v, want only the one at revision %d", snaps, rev)
	}
	segs := files(t, fsys, testDir, "log-")
	for _, name := range segs[:len(segs)-1] {
		revs := segmentRevs(t, readFile(t, fsys, filepath.Join(testDir, name)))
		if len(revs) == 0 || revs[len(revs)-1] <= rev {
			t.Fatalf("sealed segment %s with revisions %v survived a snapshot at %d", name, revs, rev)
		}
	}
}

func TestSnapshotReopen(t *testing.T) {
	type step struct {
		appends  int
		snapshot uint64 // 0: none
	}
	tests := []struct {
		name        string
		segmentSize int64
		steps       []step
	}{
		{"compacts the whole log", 500, []step{{40, 40}}},
		{"keeps a segment with later records", 1 << 20, []step{{40, 20}}},
		{"several snapshots", 500, []step{{10, 10}, {10, 20}, {15, 35}, {5, 0}}},
		{"snapshot then appends", 700, []step{{30, 25}, {30, 0}}},
		{"repeated revision", 500, []step{{10, 10}, {0, 10}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ffs := faultfs.New()
			rng := rand.New(rand.NewPCG(21, 22))
			var md model
			st := open(t, testDir, filestore.WithFS(ffs), filestore.WithSegmentSize(tt.segmentSize))
			mustLoad(t, st)
			var snap uint64
			for _, s := range tt.steps {
				for range s.appends {
					appendWait(t, st, md.next(rng, 50))
				}
				if s.snapshot > 0 {
					if err := st.Snapshot(context.Background(), s.snapshot, md.entities(s.snapshot)); err != nil {
						t.Fatalf("Snapshot(%d): %v", s.snapshot, err)
					}
					snap = s.snapshot
					assertCompacted(t, ffs, snap)
				}
			}
			total := uint64(len(md.recs))
			if err := st.Close(); err != nil {
				t.Fatal(err)
			}

			st = open(t, testDir, filestore.WithFS(ffs), filestore.WithSegmentSize(tt.segmentSize))
			got := mustLoad(t, st)
			md.check(t, got, total)
			if got[0].Rev != snap {
				t.Fatalf("Load started at revision %d, want the snapshot at %d", got[0].Rev, snap)
			}
			if want := int(total-snap) + 1; len(got) != want {
				t.Fatalf("Load gave %d records, want the snapshot and %d after it", len(got), want-1)
			}
			appendWait(t, st, md.next(rng, 50))
			st.Close()
			st = open(t, testDir, filestore.WithFS(ffs))
			md.check(t, mustLoad(t, st), total+1)
			st.Close()
		})
	}
}

// TestSnapshotEmptyState: a snapshot of a registry whose entities were all
// deleted still carries its revision.
func TestSnapshotEmptyState(t *testing.T) {
	ffs := faultfs.New()
	st := open(t, testDir, filestore.WithFS(ffs))
	mustLoad(t, st)
	appendWait(t, st, registry.Record{Rev: 1, Mutations: []registry.Mutation{{Kind: registry.KindRole, ID: "a", Value: []byte("{}")}}})
	appendWait(t, st, registry.Record{Rev: 2, Mutations: []registry.Mutation{{Kind: registry.KindRole, ID: "a"}}})
	if err := st.Snapshot(context.Background(), 2, func(func(registry.Mutation, error) bool) {}); err != nil {
		t.Fatal(err)
	}
	st.Close()
	st = open(t, testDir, filestore.WithFS(ffs))
	defer st.Close()
	got := mustLoad(t, st)
	if len(got) != 1 || got[0].Rev != 2 || len(got[0].Mutations) != 0 {
		t.Fatalf("Load = %+v, want one empty record at revision 2", got)
	}
	appendWait(t, st, registry.Record{Rev: 3})
}

// snapshotFixture builds the same store every time: 30 records over
// several segments, an older snapshot at 10, and the segment holding
// revision 25 also holding later ones.
func snapshotFixture(t *testing.T) (*faultfs.FS, *filestore.Store, *model) {
	t.Helper()
	ffs := faultfs.New()
	rng := rand.New(rand.NewPCG(31, 32))
	md := &model{}
	st := open(t, testDir, filestore.WithFS(ffs), filestore.WithSegmentSize(600), filestore.WithLogger(discard))
	mustLoad(t, st)
	for range 10 {
		appendWait(t, st, md.next(rng, 50))
	}
	if err := st.Snapshot(context.Background(), 10, md.entities(10)); err != nil {
		t.Fatal(err)
	}
	for range 20 {
		appendWait(t, st, md.next(rng, 50))
	}
	return ffs, st, md
}

// TestSnapshotCrashAtEveryStep stops the process after each file system
// change of a snapshot, crashes, and reopens: every acknowledged record
// must be there, and the store must carry on.
func TestSnapshotCrashAtEveryStep(t *testing.T) {
	const rev = 25
	ffs, st, md := snapshotFixture(t)
	before := ffs.Ops(faultfs.OpAny)
	if err := st.Snapshot(context.Background(), rev, md.entities(rev)); err != nil {
		t.Fatal(err)
	}
	steps := ffs.Ops(faultfs.OpAny) - before
	st.Close()
	if steps < 8 {
		t.Fatalf("a snapshot took only %d file system changes", steps)
	}
	for k := range steps + 1 {
		for seed := range uint64(3) {
			ffs, st, md := snapshotFixture(t)
			ffs.HaltAfter(k)
			err := st.Snapshot(context.Background(), rev, md.entities(rev))
			if k == steps && err != nil {
				t.Fatalf("step %d: Snapshot: %v", k, err)
			}
			st.Close()
			ffs.Crash(rand.New(rand.NewPCG(uint64(k), seed)))
			// Snapshot may succeed with only the cleanup cut short, but
			// never before the snapshot is durable.
			if err == nil && !slices.Contains(files(t, ffs, testDir, "snapshot-"), fmt.Sprintf("snapshot-%020d", rev)) {
				t.Fatalf("step %d: Snapshot succeeded, but its file did not survive the crash", k)
			}

			st = open(t, testDir, filestore.WithFS(ffs), filestore.WithSegmentSize(600), filestore.WithLogger(discard))
			got, err := loadAll(st)
			if err != nil {
				t.Fatalf("step %d: Load after the crash: %v", k, err)
			}
			md.check(t, got, 30)
			// The recovered store takes appends and snapshots again.
			appendWait(t, st, md.next(rand.New(rand.NewPCG(1, 1)), 50))
			if err := st.Snapshot(context.Background(), 31, md.entities(31)); err != nil {
				t.Fatalf("step %d: Snapshot after recovery: %v", k, err)
			}
			assertCompacted(t, ffs, 31)
			st.Close()
			st = open(t, testDir, filestore.WithFS(ffs))
			md.check(t, mustLoad(t, st), 31)
			st.Close()
		}
	}
}

// TestSnapshotConcurrentAppends takes snapshots while writers append:
// nothing appended may be lost, whichever segment it landed in.
func TestSnapshotConcurrentAppends(t *testing.T) {
	const writers, perWriter = 8, 60
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(41, 42))
	var md model
	st := open(t, dir, filestore.WithSegmentSize(4096))
	mustLoad(t, st)

	var mu sync.Mutex // the registry's writer lock; it also guards md
	var acked atomic.Uint64
	var wg sync.WaitGroup
	stop := make(chan struct{})
	errs := make(chan error, writers+1)
	for range writers {
		wg.Go(func() {
			for range perWriter {
				mu.Lock()
				rec := md.next(rng, 300)
				p, err := st.Append(rec)
				mu.Unlock()
				if err == nil {
					err = p.Wait(context.Background())
				}
				if err != nil {
					errs <- err
					return
				}
				for {
					a := acked.Load()
					if rec.Rev <= a || acked.CompareAndSwap(a, rec.Rev) {
						break
					}
				}
			}
		})
	}
	var snapshots atomic.Int64
	snapDone := make(chan struct{})
	go func() {
		defer close(snapDone)
		for {
			select {
			case <-stop:
				return
			default:
			}
			rev := acked.Load()
			if rev == 0 {
				runtime.Gosched()
				continue
			}
			mu.Lock()
			state := md.state(rev)
			mu.Unlock()
			if err := st.Snapshot(context.Background(), rev, seqOf(state)); err != nil {
				errs <- err
				return
			}
			snapshots.Add(1)
		}
	}()
	wg.Wait()
	close(stop)
	<-snapDone
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if snapshots.Load() == 0 {
		t.Fatal("no snapshot ran during the appends")
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	st = open(t, dir)
	md.check(t, mustLoad(t, st), writers*perWriter)
	st.Close()
}

// TestSnapshotFailures: a snapshot that fails before its rename leaves the
// log untouched and the store working, and leaves no temp file.
func TestSnapshotFailures(t *testing.T) {
	boom := errors.New("boom")
	tests := []struct {
		name     string
		inject   func(*faultfs.FS)
		entities func(*model) iter.Seq2[registry.Mutation, error]
		want     string
		is       error
	}{
		{"entity iterator fails", nil, func(md *model) iter.Seq2[registry.Mutation, error] {
			return func(yield func(registry.Mutation, error) bool) {
				for m := range md.entities(20) {
					if !yield(m, nil) {
						return
					}
				}
				yield(registry.Mutation{}, boom)
			}
		}, "read entities", boom},
		{"delete among the entities", nil, func(md *model) iter.Seq2[registry.Mutation, error] {
			return seqOf(append(md.state(20), registry.Mutation{Kind: registry.KindRole, ID: "gone"}))
		}, "has no value", nil},
		{"temp file write fails", func(f *faultfs.FS) { f.Inject(faultfs.OpWrite, 1) }, nil, ".tmp", faultfs.ErrInjected},
		// The first sync is the directory sync of the rotation, the
		// second the temp file's.
		{"temp file fsync fails", func(f *faultfs.FS) { f.Inject(faultfs.OpSync, 2) }, nil, "fsync", faultfs.ErrInjected},
		{"rename fails", func(f *faultfs.FS) { f.Inject(faultfs.OpRename, 1) }, nil, "rename", faultfs.ErrInjected},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ffs := faultfs.New()
			rng := rand.New(rand.NewPCG(51, 52))
			var md model
			st := open(t, testDir, filestore.WithFS(ffs), filestore.WithSegmentSize(600), filestore.WithLogger(discard))
			mustLoad(t, st)
			for range 20 {
				appendWait(t, st, md.next(rng, 50))
			}
			if tt.inject != nil {
				tt.inject(ffs)
			}
			entities := md.entities(20)
			if tt.entities != nil {
				entities = tt.entities(&md)
			}
			err := st.Snapshot(context.Background(), 20, entities)
			if err == nil || !strings.Contains(err.Error(), tt.want) || tt.is != nil && !errors.Is(err, tt.is) {
				t.Fatalf("Snapshot = %v, want an error saying %q", err, tt.want)
			}
			if got := files(t, ffs, testDir, "snapshot-"); len(got) > 0 && tt.name != "rename fails" {
				t.Fatalf("a failed snapshot left %v", got)
			}
			// The store goes on, and a later snapshot succeeds.
			appendWait(t, st, md.next(rng, 50))
			if err := st.Snapshot(context.Background(), 21, md.entities(21)); err != nil {
				t.Fatalf("Snapshot after a failed one: %v", err)
			}
			assertCompacted(t, ffs, 21)
			st.Close()
			ffs.Crash(rng)
			st = open(t, testDir, filestore.WithFS(ffs))
			md.check(t, mustLoad(t, st), 21)
			st.Close()
		})
	}
}

// TestCorruptSnapshot: a damaged newest snapshot stops Load, unless the
// log still holds every revision it covered.
func TestCorruptSnapshot(t *testing.T) {
	tests := []struct {
		name        string
		segmentSize int64
		snapshot    uint64
		damage      func([]byte) []byte
		want        string // "" when the log can stand in for the snapshot
	}{
		{"flipped byte, log compacted", 500, 30, flipAt(30), "log only reaches revision 0 of its 30"},
		{"truncated, log compacted", 500, 30, func(b []byte) []byte { return b[:len(b)-3] }, "log only reaches"},
		{"missing end frame, log compacted", 500, 30, func(b []byte) []byte {
			offs := frameOffsets(t, b)
			return b[:offs[len(offs)-1]]
		}, "without its end frame"},
		{"stray bytes, log compacted", 500, 30, func(b []byte) []byte { return append(b, 0) }, "stray bytes"},
		{"flipped byte, log still complete", 1 << 20, 20, flipAt(30), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ffs := faultfs.New()
			rng := rand.New(rand.NewPCG(61, 62))
			var md model
			st := open(t, testDir, filestore.WithFS(ffs), filestore.WithSegmentSize(tt.segmentSize))
			mustLoad(t, st)
			for range 30 {
				appendWait(t, st, md.next(rng, 50))
			}
			if err := st.Snapshot(context.Background(), tt.snapshot, md.entities(tt.snapshot)); err != nil {
				t.Fatal(err)
			}
			st.Close()
			name := filepath.Join(testDir, fmt.Sprintf("snapshot-%020d", tt.snapshot))
			writeFile(t, ffs, name, tt.damage(readFile(t, ffs, name)))

			var logs logBuffer
			st = open(t, testDir, filestore.WithFS(ffs), filestore.WithLogger(logs.logger()))
			defer st.Close()
			got, err := loadAll(st)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Load: %v", err)
				}
				md.check(t, got, 30)
				if got[0].Rev != 1 {
					t.Fatalf("Load started at revision %d, want the log from 1", got[0].Rev)
				}
				if !strings.Contains(logs.String(), "snapshot is corrupt") {
					t.Fatalf("no warning about the corrupt snapshot in %q", logs.String())
				}
				return
			}
			var ce *filestore.CorruptError
			if !errors.As(err, &ce) || ce.Path != name || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Load = %v, want a *CorruptError about %s saying %q", err, name, tt.want)
			}
		})
	}
}

func flipAt(i int) func([]byte) []byte {
	return func(b []byte) []byte {
		b = slices.Clone(b)
		b[i] ^= 0x20
		return b
	}
}
