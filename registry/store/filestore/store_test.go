package filestore_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cryptomesh/cryptomesh/registry"
	"github.com/cryptomesh/cryptomesh/registry/store/filestore"
	"github.com/cryptomesh/cryptomesh/registry/store/filestore/faultfs"
)

func TestRoundTrip(t *testing.T) {
	tests := []struct {
		name        string
		segmentSize int64
		records     int
		size        int // value padding per record
	}{
		{"empty", filestore.DefaultSegmentSize, 0, 0},
		{"one", filestore.DefaultSegmentSize, 1, 10},
		{"many small", filestore.DefaultSegmentSize, 300, 20},
		{"rotating segments", 2048, 200, 100},
		{"records larger than a segment", 256, 20, 1000},
		{"large record", filestore.DefaultSegmentSize, 3, 1 << 20},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			rng := rand.New(rand.NewPCG(1, 2))
			var md model
			st := open(t, dir, filestore.WithSegmentSize(tt.segmentSize))
			if got := mustLoad(t, st); len(got) != 0 {
				t.Fatalf("a new store loaded %d records", len(got))
			}
			for range tt.records {
				appendWait(t, st, md.next(rng, tt.size))
			}
			if err := st.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}

			st = open(t, dir, filestore.WithSegmentSize(tt.segmentSize))
			got := mustLoad(t, st)
			if len(got) != tt.records {
				t.Fatalf("reloaded %d records, want %d", len(got), tt.records)
			}
			md.check(t, got, uint64(tt.records))
			// The reopened store continues the revisions.
			appendWait(t, st, md.next(rng, tt.size))
			if err := st.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			st = open(t, dir)
			md.check(t, mustLoad(t, st), uint64(tt.records+1))
			st.Close()

			assertPerms(t, dir)
		})
	}
}

// assertPerms checks that the directory is 0700 and every file 0600.
func assertPerms(t *testing.T, dir string) {
	t.Helper()
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("directory mode %v, want 0700", fi.Mode().Perm())
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		info, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		if info.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", e.Name(), info.Mode().Perm())
		}
	}
}

func TestSegmentRotation(t *testing.T) {
	ffs := faultfs.New()
	rng := rand.New(rand.NewPCG(3, 4))
	var md model
	st := open(t, testDir, filestore.WithFS(ffs), filestore.WithSegmentSize(1000))
	mustLoad(t, st)
	for range 50 {
		appendWait(t, st, md.next(rng, 200))
	}
	st.Close()
	// Every record is over 200 bytes, so a 1000 byte segment takes at most
	// five before it rotates.
	if n := len(files(t, ffs, testDir, "log-")); n < 10 {
		t.Fatalf("%d segments for 50 records of 200+ bytes with 1000 byte segments", n)
	}
	st = open(t, testDir, filestore.WithFS(ffs))
	md.check(t, mustLoad(t, st), 50)
	st.Close()
}

// TestConcurrentAppenders runs many writers the way the registry does:
// Append under a lock, Wait outside it. Order must be kept and every
// acknowledged record must be there after reopening.
func TestConcurrentAppenders(t *testing.T) {
	const writers, perWriter = 64, 25
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(5, 6))
	var md model
	st := open(t, dir, filestore.WithSegmentSize(64<<10))
	mustLoad(t, st)

	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for range writers {
		wg.Go(func() {
			for range perWriter {
				mu.Lock()
				rec := md.next(rng, 500)
				p, err := st.Append(rec)
				mu.Unlock()
				if err == nil {
					err = p.Wait(context.Background())
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	stats := st.Stats()
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("stats: %+v (%.1f records per fsync)", stats, float64(stats.Records)/float64(stats.Syncs))
	if stats.Records != writers*perWriter {
		t.Errorf("Stats.Records = %d, want %d", stats.Records, writers*perWriter)
	}
	if stats.Syncs >= stats.Records {
		t.Errorf("%d fsyncs for %d records from %d concurrent writers: group commit did not batch", stats.Syncs, stats.Records, writers)
	}
	st = open(t, dir)
	md.check(t, mustLoad(t, st), writers*perWriter)
	st.Close()
}

// gateFS holds every fsync of a log segment until the test lets it pass,
// once armed.
type gateFS struct {
	filestore.FS
	armed   atomic.Bool
	entered chan struct{}
	gate    chan struct{}
}

type gateFile struct {
	filestore.File
	g *gateFS
}

func (g *gateFS) OpenFile(name string, flag int, perm fs.FileMode) (filestore.File, error) {
	f, err := g.FS.OpenFile(name, flag, perm)
	if err != nil || !strings.HasPrefix(filepath.Base(name), "log-") {
		return f, err
	}
	return &gateFile{File: f, g: g}, nil
}

func (f *gateFile) Sync() error {
	if f.g.armed.Load() {
		f.g.entered <- struct{}{}
		<-f.g.gate
	}
	return f.File.Sync()
}

// TestGroupCommitSharesFsync holds the first fsync while more records are
// appended: they must all go out with the one next fsync.
func TestGroupCommitSharesFsync(t *testing.T) {
	g := &gateFS{FS: faultfs.New(), entered: make(chan struct{}), gate: make(chan struct{})}
	rng := rand.New(rand.NewPCG(7, 8))
	var md model
	st := open(t, testDir, filestore.WithFS(g))
	mustLoad(t, st)
	g.armed.Store(true)

	first, err := st.Append(md.next(rng, 100))
	if err != nil {
		t.Fatal(err)
	}
	<-g.entered // the flusher is inside the first fsync
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := first.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait during a held fsync = %v, want the context's deadline", err)
	}
	var pendings []registry.Pending
	for range 63 {
		p, err := st.Append(md.next(rng, 100))
		if err != nil {
			t.Fatal(err)
		}
		pendings = append(pendings, p)
	}
	g.gate <- struct{}{} // release the first fsync
	<-g.entered          // the second one, holding the other 63
	g.armed.Store(false)
	g.gate <- struct{}{}
	for _, p := range append(pendings, first) {
		if err := p.Wait(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if s := st.Stats(); s.Records != 64 || s.Syncs != 2 {
		t.Fatalf("Stats = %+v, want 64 records in 2 fsyncs", s)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestCloseFlushes appends without waiting and closes: Close must write
// everything queued and complete the Pendings.
func TestCloseFlushes(t *testing.T) {
	ffs := faultfs.New()
	rng := rand.New(rand.NewPCG(9, 10))
	var md model
	st := open(t, testDir, filestore.WithFS(ffs))
	mustLoad(t, st)
	var pendings []registry.Pending
	for range 20 {
		p, err := st.Append(md.next(rng, 50))
		if err != nil {
			t.Fatal(err)
		}
		pendings = append(pendings, p)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	for _, p := range pendings {
		if err := p.Wait(context.Background()); err != nil {
			t.Fatalf("Wait after Close: %v", err)
		}
	}
	// Only synced data survives a crash: so it was all fsynced.
	ffs.Crash(rand.New(rand.NewPCG(1, 1)))
	st = open(t, testDir, filestore.WithFS(ffs))
	md.check(t, mustLoad(t, st), 20)
	st.Close()
}

func TestMisuse(t *testing.T) {
	ctx := context.Background()
	rec := func(rev uint64) registry.Record {
		return registry.Record{Rev: rev, Mutations: []registry.Mutation{{Kind: registry.KindRole, ID: "a", Value: []byte("{}")}}}
	}
	tests := []struct {
		name string
		run  func(st *filestore.Store) error
		want string
		is   error
		// fresh starts from an empty directory rather than a log with
		// one record.
		fresh bool
	}{
		{"append before load", func(st *filestore.Store) error {
			_, err := st.Append(rec(1))
			return err
		}, "before Load", nil, false},
		{"load twice", func(st *filestore.Store) error {
			if _, err := loadAll(st); err != nil {
				return err
			}
			_, err := loadAll(st)
			return err
		}, "Load called twice", nil, false},
		{"revision gap", func(st *filestore.Store) error {
			mustLoad(t, st)
			_, err := st.Append(rec(2))
			return err
		}, "must be dense", nil, true},
		{"revision zero", func(st *filestore.Store) error {
			mustLoad(t, st)
			_, err := st.Append(rec(0))
			return err
		}, "must be dense", nil, true},
		{"append after close", func(st *filestore.Store) error {
			mustLoad(t, st)
			st.Close()
			_, err := st.Append(rec(1))
			return err
		}, "", registry.ErrStoreClosed, true},
		{"snapshot after close", func(st *filestore.Store) error {
			mustLoad(t, st)
			st.Close()
			return st.Snapshot(ctx, 1, func(func(registry.Mutation, error) bool) {})
		}, "", registry.ErrStoreClosed, true},
		{"load after close", func(st *filestore.Store) error {
			st.Close()
			_, err := loadAll(st)
			return err
		}, "", registry.ErrStoreClosed, false},
		{"load cancelled", func(st *filestore.Store) error {
			cctx, cancel := context.WithCancel(ctx)
			cancel()
			return st.Load(cctx, func(registry.Record) error { return nil })
		}, "", context.Canceled, false},
		{"snapshot past the log", func(st *filestore.Store) error {
			mustLoad(t, st)
			appendWait(t, st, rec(1))
			return st.Snapshot(ctx, 2, func(func(registry.Mutation, error) bool) {})
		}, "only revisions up to 1", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ffs := faultfs.New()
			// A log with one record, so that Load has something to read.
			st := open(t, testDir, filestore.WithFS(ffs))
			mustLoad(t, st)
			appendWait(t, st, rec(1))
			if err := st.Close(); err != nil {
				t.Fatal(err)
			}
			if tt.fresh {
				ffs = faultfs.New()
			}
			st = open(t, testDir, filestore.WithFS(ffs))
			defer st.Close()
			err := tt.run(st)
			if err == nil {
				t.Fatal("no error")
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Fatalf("error %q is not %v", err, tt.is)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not say %q", err, tt.want)
			}
		})
	}
}

func TestLoadApplyError(t *testing.T) {
	ffs := faultfs.New()
	st := open(t, testDir, filestore.WithFS(ffs))
	mustLoad(t, st)
	appendWait(t, st, registry.Record{Rev: 1})
	st.Close()
	st = open(t, testDir, filestore.WithFS(ffs))
	defer st.Close()
	boom := errors.New("boom")
	if err := st.Load(context.Background(), func(registry.Record) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("Load = %v, want the apply error", err)
	}
}

// TestExclusive checks that a second store cannot open a directory in use,
// both on the OS (flock) and on faultfs.
func TestExclusive(t *testing.T) {
	for _, tt := range []struct {
		name string
		dir  string
		opts []filestore.Option
	}{
		{"os", t.TempDir(), nil},
		{"faultfs", testDir, []filestore.Option{filestore.WithFS(faultfs.New())}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			st := open(t, tt.dir, tt.opts...)
			if _, err := filestore.Open(tt.dir, tt.opts...); err == nil {
				t.Fatal("a second Open of a directory in use succeeded")
			}
			st.Close()
			st = open(t, tt.dir, tt.opts...)
			st.Close()
		})
	}
}

// TestWriteFailureBreaksStore injects a failed write or fsync: that group
// and every later append must fail, with the cause wrapped, and nothing
// is retried.
func TestWriteFailureBreaksStore(t *testing.T) {
	for _, op := range []faultfs.Op{faultfs.OpWrite, faultfs.OpSync} {
		t.Run(op.String(), func(t *testing.T) {
			ffs := faultfs.New()
			rng := rand.New(rand.NewPCG(11, 12))
			var md model
			var logs logBuffer
			st := open(t, testDir, filestore.WithFS(ffs), filestore.WithLogger(logs.logger()))
			mustLoad(t, st)
			appendWait(t, st, md.next(rng, 10))
			ffs.Inject(op, 1)
			p, err := st.Append(md.next(rng, 10))
			if err != nil {
				t.Fatal(err)
			}
			if err := p.Wait(context.Background()); !errors.Is(err, faultfs.ErrInjected) {
				t.Fatalf("Wait = %v, want the injected fault", err)
			}
			writes, syncs := ffs.Ops(faultfs.OpWrite), ffs.Ops(faultfs.OpSync)
			if _, err := st.Append(md.next(rng, 10)); !errors.Is(err, faultfs.ErrInjected) {
				t.Fatalf("Append after a failure = %v, want the injected fault", err)
			}
			if err := st.Snapshot(context.Background(), 1, md.entities(1)); err == nil {
				t.Fatal("Snapshot of a failed store succeeded")
			}
			if err := st.Close(); !errors.Is(err, faultfs.ErrInjected) {
				t.Fatalf("Close = %v, want the injected fault", err)
			}
			if w, s := ffs.Ops(faultfs.OpWrite), ffs.Ops(faultfs.OpSync); w != writes || s != syncs {
				t.Fatalf("the failed store went on writing (%d writes, %d syncs after the failure)", w-writes, s-syncs)
			}
			if !strings.Contains(logs.String(), "accepts no more writes") {
				t.Fatalf("the failure was not logged: %q", logs.String())
			}
			ffs.Crash(rng)
			st = open(t, testDir, filestore.WithFS(ffs), filestore.WithLogger(logs.logger()))
			md.check(t, mustLoad(t, st), 1)
			st.Close()
		})
	}
}

// lastSegment returns the name of the newest log segment.
func lastSegment(t testing.TB, fsys filestore.FS) string {
	t.Helper()
	segs := files(t, fsys, testDir, "log-")
	if len(segs) == 0 {
		t.Fatal("no segment")
	}
	return filepath.Join(testDir, segs[len(segs)-1])
}

// TestTornTail cuts the last frame at every byte offset, and also damages
// it in place: the frame is dropped with a warning, the file truncated to
// the good prefix, and the store goes on from there.
func TestTornTail(t *testing.T) {
	const records = 5
	rng := rand.New(rand.NewPCG(13, 14))
	var md model
	orig := faultfs.New()
	st := open(t, testDir, filestore.WithFS(orig))
	mustLoad(t, st)
	for range records {
		appendWait(t, st, md.next(rng, 60))
	}
	st.Close()
	seg := lastSegment(t, orig)
	data := readFile(t, orig, seg)
	offs := frameOffsets(t, data)
	lastOff := offs[len(offs)-1]

	type variant struct {
		name string
		data []byte
	}
	var variants []variant
	for cut := lastOff + 1; cut < len(data); cut++ {
		variants = append(variants, variant{fmt.Sprintf("cut at %d", cut), data[:cut]})
	}
	for _, at := range []int{lastOff + 4, lastOff + 8, len(data) - 1} {
		flipped := append([]byte(nil), data...)
		flipped[at] ^= 0x40
		variants = append(variants, variant{fmt.Sprintf("flipped byte %d", at), flipped})
	}
	for _, v := range variants {
		ffs := faultfs.New()
		if err := ffs.MkdirAll(testDir, 0o700); err != nil {
			t.Fatal(err)
		}
		writeFile(t, ffs, seg, v.data)
		var logs logBuffer
		st := open(t, testDir, filestore.WithFS(ffs), filestore.WithLogger(logs.logger()))
		got, err := loadAll(st)
		if err != nil {
			t.Fatalf("%s: Load: %v", v.name, err)
		}
		md.check(t, got, records-1)
		if len(got) != records-1 {
			t.Fatalf("%s: loaded %d records, want %d", v.name, len(got), records-1)
		}
		if !strings.Contains(logs.String(), "torn") {
			t.Fatalf("%s: no warning about the torn record in %q", v.name, logs.String())
		}
		// The torn bytes are gone for good, even across a crash, and new
		// appends follow the good prefix.
		ffs.Crash(rng)
		if n := len(readFile(t, ffs, seg)); n != lastOff {
			t.Fatalf("%s: segment is %d bytes after recovery, want %d", v.name, n, lastOff)
		}
		st.Close()
		st = open(t, testDir, filestore.WithFS(ffs))
		mustLoad(t, st)
		appendWait(t, st, md.recs[records-1])
		st.Close()
		st = open(t, testDir, filestore.WithFS(ffs))
		md.check(t, mustLoad(t, st), records)
		st.Close()
	}
}

// TestCorruptMiddle damages a record that has valid records after it:
// that is not a torn write but lost data, and Load must refuse to start,
// naming the file and the frame's offset.
func TestCorruptMiddle(t *testing.T) {
	rng := rand.New(rand.NewPCG(15, 16))
	var md model
	orig := faultfs.New()
	st := open(t, testDir, filestore.WithFS(orig))
	mustLoad(t, st)
	for range 5 {
		appendWait(t, st, md.next(rng, 60))
	}
	st.Close()
	seg := lastSegment(t, orig)
	data := readFile(t, orig, seg)
	offs := frameOffsets(t, data)
	victim := offs[1]

	tests := []struct {
		name   string
		at     int
		xor    byte
		reason string
	}{
		{"payload byte", victim + 20, 0x01, "checksum mismatch"},
		{"checksum byte", victim + 5, 0x80, "checksum mismatch"},
		{"length shortened", victim, 0x04, "checksum mismatch"},
		{"length past the end of the file", victim + 2, 0x10, "valid frame follows"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ffs := faultfs.New()
			if err := ffs.MkdirAll(testDir, 0o700); err != nil {
				t.Fatal(err)
			}
			bad := append([]byte(nil), data...)
			bad[tt.at] ^= tt.xor
			writeFile(t, ffs, seg, bad)
			st := open(t, testDir, filestore.WithFS(ffs))
			defer st.Close()
			_, err := loadAll(st)
			var ce *filestore.CorruptError
			if !errors.As(err, &ce) {
				t.Fatalf("Load = %v, want a *CorruptError", err)
			}
			if ce.Path != seg || ce.Offset != int64(victim) {
				t.Fatalf("error names %s at %d, want %s at %d", ce.Path, ce.Offset, seg, victim)
			}
			msg := err.Error()
			if !strings.Contains(msg, seg) || !strings.Contains(msg, fmt.Sprintf("offset %d", victim)) || !strings.Contains(msg, tt.reason) {
				t.Fatalf("error %q should name %s, offset %d and %q", msg, seg, victim, tt.reason)
			}
		})
	}
}

// TestLogShape builds logs by hand: revisions must be dense, and only the
// newest segment may end in a torn frame.
func TestLogShape(t *testing.T) {
	rec := func(rev uint64) registry.Record {
		return registry.Record{Rev: rev, Mutations: []registry.Mutation{{Kind: registry.KindRole, ID: fmt.Sprint(rev), Value: []byte("{}")}}}
	}
	frames := func(revs ...uint64) []byte {
		var b []byte
		for _, rev := range revs {
			var err error
			if b, err = filestore.AppendRecordFrame(b, rec(rev)); err != nil {
				t.Fatal(err)
			}
		}
		return b
	}
	tests := []struct {
		name     string
		segments [][]byte
		want     string // error text, or "" for success
		records  int
	}{
		{"dense", [][]byte{frames(1, 2, 3)}, "", 3},
		{"dense across segments", [][]byte{frames(1, 2), frames(3, 4), {}}, "", 4},
		{"gap", [][]byte{frames(1, 2, 4)}, "revision 4 follows revision 2", 0},
		{"repeat", [][]byte{frames(1, 2, 2)}, "revision 2 follows revision 2", 0},
		{"backwards", [][]byte{frames(1, 2, 3, 1)}, "revision 1 follows revision 3", 0},
		{"gap across segments", [][]byte{frames(1, 2), frames(4)}, "revision 4 follows revision 2", 0},
		{"no start", [][]byte{frames(2, 3)}, "starts at revision 2 with no snapshot", 0},
		{"torn sealed segment", [][]byte{frames(1, 2)[:30], frames(3)}, "in a sealed segment", 0},
		{"torn newest segment", [][]byte{frames(1, 2), frames(3, 4)[:40]}, "", 3},
		{"zeros after the newest segment", [][]byte{frames(1, 2), append(frames(3, 4), make([]byte, 100)...)}, "", 4},
		{"zeros between records", [][]byte{append(append(frames(1, 2), make([]byte, 100)...), frames(3)...)}, "a valid frame follows", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ffs := faultfs.New()
			if err := ffs.MkdirAll(testDir, 0o700); err != nil {
				t.Fatal(err)
			}
			for i, data := range tt.segments {
				writeFile(t, ffs, filepath.Join(testDir, fmt.Sprintf("log-%020d", i+1)), data)
			}
			st := open(t, testDir, filestore.WithFS(ffs))
			defer st.Close()
			got, err := loadAll(st)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Load: %v", err)
				}
				if len(got) != tt.records {
					t.Fatalf("loaded %d records, want %d", len(got), tt.records)
				}
				appendWait(t, st, rec(uint64(tt.records+1)))
				return
			}
			var ce *filestore.CorruptError
			if !errors.As(err, &ce) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Load = %v, want a *CorruptError saying %q", err, tt.want)
			}
		})
	}
}
