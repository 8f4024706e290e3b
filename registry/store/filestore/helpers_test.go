package filestore_test

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"iter"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/cryptomesh/cryptomesh/registry"
	"github.com/cryptomesh/cryptomesh/registry/store/filestore"
)

const testDir = "/data"

// discard is for tests that provoke warnings on purpose.
var discard = slog.New(slog.DiscardHandler)

// logBuffer collects log output, safe for concurrent use.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// open opens a store in dir, failing the test on error.
func open(t testing.TB, dir string, opts ...filestore.Option) *filestore.Store {
	t.Helper()
	st, err := filestore.Open(dir, opts...)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return st
}

// loadAll runs Load and returns what it applied.
func loadAll(st *filestore.Store) ([]registry.Record, error) {
	var recs []registry.Record
	err := st.Load(context.Background(), func(rec registry.Record) error {
		recs = append(recs, rec)
		return nil
	})
	return recs, err
}

func mustLoad(t testing.TB, st *filestore.Store) []registry.Record {
	t.Helper()
	recs, err := loadAll(st)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return recs
}

// model generates records and knows the state they build. Each record puts
// a new entity and, now and then, deletes an older one, so that snapshots
// differ from the log they replace.
type model struct {
	recs []registry.Record
}

func key(m registry.Mutation) string { return string(m.Kind) + "/" + m.ID }

// next builds the record after the last one, with a value of about size
// bytes.
func (md *model) next(rng *rand.Rand, size int) registry.Record {
	rev := uint64(len(md.recs)) + 1
	value := fmt.Appendf(nil, `{"rev":%d,"pad":"%s"}`, rev, strings.Repeat("x", size))
	muts := []registry.Mutation{{Kind: registry.KindRole, ID: fmt.Sprintf("r%d", rev), Seq: rev, Value: value}}
	if rev > 3 && rng.IntN(3) == 0 {
		muts = append(muts, registry.Mutation{Kind: registry.KindRole, ID: fmt.Sprintf("r%d", rng.Uint64N(rev-1)+1)})
	}
	rec := registry.Record{Rev: rev, Mutations: muts}
	md.recs = append(md.recs, rec)
	return rec
}

// state is the set of live entities after revision rev, sorted.
func (md *model) state(rev uint64) []registry.Mutation {
	live := map[string]registry.Mutation{}
	for _, rec := range md.recs[:rev] {
		for _, m := range rec.Mutations {
			if m.Delete() {
				delete(live, key(m))
			} else {
				live[key(m)] = m
			}
		}
	}
	return sortMutations(slices.Collect(maps.Values(live)))
}

func sortMutations(ms []registry.Mutation) []registry.Mutation {
	slices.SortFunc(ms, func(a, b registry.Mutation) int { return cmp.Compare(key(a), key(b)) })
	return ms
}

// entities yields the state after rev, as Snapshot takes it.
func (md *model) entities(rev uint64) iter.Seq2[registry.Mutation, error] {
	return seqOf(md.state(rev))
}

func seqOf(ms []registry.Mutation) iter.Seq2[registry.Mutation, error] {
	return func(yield func(registry.Mutation, error) bool) {
		for _, m := range ms {
			if !yield(m, nil) {
				return
			}
		}
	}
}

// check verifies that recovered is the model's history up to some revision
// of at least minRev, in the shape Load gives it: an optional snapshot
// record first, then every later record. It returns the last revision.
func (md *model) check(t testing.TB, recovered []registry.Record, minRev uint64) uint64 {
	t.Helper()
	var last uint64
	for i, rec := range recovered {
		switch {
		case rec.Rev == 0 || rec.Rev > uint64(len(md.recs)):
			t.Fatalf("recovered revision %d, but only %d were appended", rec.Rev, len(md.recs))
		case i > 0 && rec.Rev != last+1:
			t.Fatalf("recovered revision %d after %d", rec.Rev, last)
		case i == 0 && rec.Rev > 1 || i == 0 && !equalRecord(rec, md.recs[0]):
			// The first record may be a snapshot: the whole state at its
			// revision, in any order.
			got := sortMutations(slices.Clone(rec.Mutations))
			if want := md.state(rec.Rev); !equalMutations(got, want) {
				t.Fatalf("snapshot record at revision %d holds %d entities, want %d:\n got %v\nwant %v",
					rec.Rev, len(got), len(want), got, want)
			}
		case !equalRecord(rec, md.recs[rec.Rev-1]):
			t.Fatalf("recovered revision %d differs:\n got %+v\nwant %+v", rec.Rev, rec, md.recs[rec.Rev-1])
		}
		last = rec.Rev
	}
	if last < minRev {
		t.Fatalf("recovered up to revision %d, but revision %d was acknowledged", last, minRev)
	}
	return last
}

func equalRecord(a, b registry.Record) bool {
	return a.Rev == b.Rev && equalMutations(a.Mutations, b.Mutations)
}

func equalMutations(a, b []registry.Mutation) bool {
	return slices.EqualFunc(a, b, func(x, y registry.Mutation) bool {
		return x.Kind == y.Kind && x.ID == y.ID && x.Seq == y.Seq && bytes.Equal(x.Value, y.Value)
	})
}

// appendWait appends rec and waits for it.
func appendWait(t testing.TB, st *filestore.Store, rec registry.Record) {
	t.Helper()
	p, err := st.Append(rec)
	if err != nil {
		t.Fatalf("Append %d: %v", rec.Rev, err)
	}
	if err := p.Wait(context.Background()); err != nil {
		t.Fatalf("Wait %d: %v", rec.Rev, err)
	}
}

// readFile and writeFile reach files through a filestore.FS.
func readFile(t testing.TB, fsys filestore.FS, name string) []byte {
	t.Helper()
	f, err := fsys.OpenFile(name, os.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeFile(t testing.TB, fsys filestore.FS, name string, data []byte) {
	t.Helper()
	f, err := fsys.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := fsys.SyncDir(filepath.Dir(name)); err != nil {
		t.Fatal(err)
	}
}

// files lists the names in dir with the given prefix.
func files(t testing.TB, fsys filestore.FS, dir, prefix string) []string {
	t.Helper()
	names, err := fsys.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	return slices.DeleteFunc(names, func(n string) bool { return !strings.HasPrefix(n, prefix) })
}

// frameOffsets splits a log file into the offsets of its frames, by their
// length fields.
func frameOffsets(t testing.TB, data []byte) []int {
	t.Helper()
	var offs []int
	for off := 0; off < len(data); {
		offs = append(offs, off)
		if off+8 > len(data) {
			t.Fatalf("frame at %d has no complete header", off)
		}
		off += 8 + int(binary.LittleEndian.Uint32(data[off:]))
	}
	return offs
}
