package faultfs_test

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"slices"
	"testing"

	"github.com/cryptomesh/cryptomesh/registry/store/filestore"
	"github.com/cryptomesh/cryptomesh/registry/store/filestore/faultfs"
)

func create(t *testing.T, f *faultfs.FS, name string, data []byte, sync bool) filestore.File {
	t.Helper()
	h, err := f.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Write(data); err != nil {
		t.Fatal(err)
	}
	if sync {
		if err := h.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	return h
}

func contents(t *testing.T, f *faultfs.FS, name string) ([]byte, bool) {
	t.Helper()
	h, err := f.OpenFile(name, os.O_RDONLY, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false
	}
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	b, err := io.ReadAll(h)
	if err != nil {
		t.Fatal(err)
	}
	return b, true
}

func newFS(t *testing.T) *faultfs.FS {
	t.Helper()
	f := faultfs.New()
	if err := f.MkdirAll("/d", 0o700); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestCrashKeepsOnlyWhatWasSynced(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	tests := []struct {
		name     string
		syncFile bool
		syncDir  bool
		exists   bool
		data     string
	}{
		{"nothing synced", false, false, false, ""},
		{"file synced, directory not", true, false, false, ""},
		{"directory synced, file not", false, true, true, ""},
		{"both synced", true, true, true, "hello"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFS(t)
			create(t, f, "/d/a", []byte("hello"), tt.syncFile)
			// A later, unrelated write is the one that gets torn.
			create(t, f, "/d/other", []byte("x"), false)
			if tt.syncDir {
				if err := f.SyncDir("/d"); err != nil {
					t.Fatal(err)
				}
			}
			f.Crash(rng)
			got, ok := contents(t, f, "/d/a")
			if ok != tt.exists || string(got) != tt.data {
				t.Fatalf("after the crash: exists %v, data %q; want %v, %q", ok, got, tt.exists, tt.data)
			}
		})
	}
}

func TestCrashTearsTheLastUnsyncedWrite(t *testing.T) {
	seen := map[int]bool{}
	for seed := range uint64(200) {
		f := newFS(t)
		h := create(t, f, "/d/log", []byte("durable-"), true)
		if err := f.SyncDir("/d"); err != nil {
			t.Fatal(err)
		}
		if _, err := h.Write([]byte("0123456789")); err != nil {
			t.Fatal(err)
		}
		f.Crash(rand.New(rand.NewPCG(seed, 0)))
		got, _ := contents(t, f, "/d/log")
		if !bytes.HasPrefix([]byte("durable-0123456789"), got) || len(got) < len("durable-") {
			t.Fatalf("after the crash the file holds %q", got)
		}
		seen[len(got)-len("durable-")] = true
	}
	// Every prefix length, none and all included, comes up.
	for n := 0; n <= 10; n++ {
		if !seen[n] {
			t.Fatalf("no crash kept %d bytes of the torn write; kept %v", n, seen)
		}
	}
}

func TestRenameAndRemoveNeedDirectorySync(t *testing.T) {
	f := newFS(t)
	create(t, f, "/d/old", []byte("a"), true)
	create(t, f, "/d/gone", []byte("b"), true)
	if err := f.SyncDir("/d"); err != nil {
		t.Fatal(err)
	}
	if err := f.Rename("/d/old", "/d/new"); err != nil {
		t.Fatal(err)
	}
	if err := f.Remove("/d/gone"); err != nil {
		t.Fatal(err)
	}
	if names, _ := f.ReadDir("/d"); !slices.Equal(names, []string{"new"}) {
		t.Fatalf("before the crash: %v", names)
	}
	f.Crash(rand.New(rand.NewPCG(1, 1)))
	if names, _ := f.ReadDir("/d"); !slices.Equal(names, []string{"gone", "old"}) {
		t.Fatalf("unsynced rename and remove survived the crash: %v", names)
	}
	if err := f.Rename("/d/old", "/d/new"); err != nil {
		t.Fatal(err)
	}
	if err := f.SyncDir("/d"); err != nil {
		t.Fatal(err)
	}
	f.Crash(rand.New(rand.NewPCG(1, 1)))
	if names, _ := f.ReadDir("/d"); !slices.Equal(names, []string{"gone", "new"}) {
		t.Fatalf("synced rename lost: %v", names)
	}
}

func TestInject(t *testing.T) {
	f := newFS(t)
	h := create(t, f, "/d/a", nil, false)
	f.Inject(faultfs.OpWrite, 2)
	f.Inject(faultfs.OpSync, 1)
	if _, err := h.Write([]byte("1")); err != nil {
		t.Fatalf("first write: %v", err)
	}
	if _, err := h.Write([]byte("2")); !errors.Is(err, faultfs.ErrInjected) {
		t.Fatalf("second write = %v, want the injected fault", err)
	}
	if _, err := h.Write([]byte("3")); err != nil {
		t.Fatalf("third write: %v", err)
	}
	if err := h.Sync(); !errors.Is(err, faultfs.ErrInjected) {
		t.Fatalf("sync = %v, want the injected fault", err)
	}
	if got, _ := contents(t, f, "/d/a"); string(got) != "13" {
		t.Fatalf("a failed write changed the file: %q", got)
	}
	// create's empty write, and the three above, failed or not.
	if n := f.Ops(faultfs.OpWrite); n != 4 {
		t.Fatalf("Ops(OpWrite) = %d, want 4", n)
	}
	// A failed sync makes nothing durable.
	if err := f.SyncDir("/d"); err != nil {
		t.Fatal(err)
	}
	f.Crash(rand.New(rand.NewPCG(5, 5)))
	if got, _ := contents(t, f, "/d/a"); len(got) > 2 {
		t.Fatalf("after a failed sync and a crash the file holds %q", got)
	}
}

func TestHaltAfterAndStaleHandles(t *testing.T) {
	f := newFS(t)
	h := create(t, f, "/d/a", []byte("x"), true)
	f.HaltAfter(1)
	if _, err := h.Write([]byte("y")); err != nil {
		t.Fatalf("the one change allowed: %v", err)
	}
	if err := h.Sync(); !errors.Is(err, faultfs.ErrHalted) {
		t.Fatalf("sync after the budget = %v, want ErrHalted", err)
	}
	if _, err := f.ReadDir("/d"); !errors.Is(err, faultfs.ErrHalted) {
		t.Fatalf("a read while halted = %v, want ErrHalted", err)
	}
	f.Crash(rand.New(rand.NewPCG(1, 1)))
	if _, err := h.Write([]byte("z")); !errors.Is(err, faultfs.ErrStale) {
		t.Fatalf("write through a handle from before the crash = %v, want ErrStale", err)
	}
	if _, err := f.ReadDir("/d"); err != nil {
		t.Fatalf("the crash did not end the halt: %v", err)
	}
}

func TestLock(t *testing.T) {
	f := newFS(t)
	l, err := f.Lock("/d/LOCK")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Lock("/d/LOCK"); err == nil {
		t.Fatal("a held lock was taken again")
	}
	l.Close()
	l2, err := f.Lock("/d/LOCK")
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	f.Crash(rand.New(rand.NewPCG(1, 1)))
	if _, err := f.Lock("/d/LOCK"); err != nil {
		t.Fatalf("a crash did not release the lock: %v", err)
	}
	// Closing the lock from before the crash must not release the new one.
	l2.Close()
	if _, err := f.Lock("/d/LOCK"); err == nil {
		t.Fatal("a stale lock's Close released the current holder's lock")
	}
}

func TestOpenFileFlags(t *testing.T) {
	f := newFS(t)
	create(t, f, "/d/a", []byte("abc"), true)
	if _, err := f.OpenFile("/d/a", os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("O_EXCL on an existing file = %v", err)
	}
	if _, err := f.OpenFile("/d/missing", os.O_RDONLY, 0); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("opening a missing file = %v", err)
	}
	if _, err := f.OpenFile("/nodir/a", os.O_WRONLY|os.O_CREATE, 0o600); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("creating in a missing directory = %v", err)
	}
	h, err := f.OpenFile("/d/a", os.O_RDWR|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := h.Size(); n != 0 {
		t.Fatalf("O_TRUNC left %d bytes", n)
	}
	if _, err := h.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if err := h.Truncate(2); err != nil {
		t.Fatal(err)
	}
	if got, _ := contents(t, f, "/d/a"); string(got) != "he" {
		t.Fatalf("after Truncate: %q", got)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	if err := h.Close(); !errors.Is(err, fs.ErrClosed) {
		t.Fatalf("second Close = %v", err)
	}
}
