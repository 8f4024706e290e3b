// Package faultfs is an in-memory filestore.FS for crash and fault tests.
//
// It keeps two states of everything: what a running process sees, and what
// is durable. File data becomes durable when the file is synced; a file's
// directory entry (its creation, a rename, a removal) becomes durable when
// its directory is synced, as on a POSIX file system. Directories made by
// MkdirAll are durable at once.
//
// Crash simulates a power loss: every handle from before it goes dead,
// everything not durable is thrown away, except that the most recent
// unsynced write keeps a random prefix of its bytes (a torn write). A new
// store can then be opened on the same FS, as after a reboot.
//
// Inject makes the n-th next operation of a kind fail, and HaltAfter
// freezes the file system after n more changes, as if the process had
// died at that point: together with Crash they let a test stop a store
// at every step of a sequence.
package faultfs

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/cryptomesh/cryptomesh/registry/store/filestore"
)

// Op is a kind of file system change, for Inject, HaltAfter and Ops.
type Op int

// The kinds of change. OpAny stands for all of them.
const (
	OpAny      Op = iota
	OpWrite       // File.Write
	OpSync        // File.Sync and FS.SyncDir
	OpRename      // FS.Rename
	OpRemove      // FS.Remove
	OpCreate      // FS.OpenFile creating a file
	OpTruncate    // File.Truncate, and FS.OpenFile with O_TRUNC
	numOps
)

var opNames = [numOps]string{"any", "write", "sync", "rename", "remove", "create", "truncate"}

func (o Op) String() string {
	if o < 0 || o >= numOps {
		return fmt.Sprintf("Op(%d)", int(o))
	}
	return opNames[o]
}

var (
	// ErrInjected is the error of an operation chosen by Inject.
	ErrInjected = errors.New("faultfs: injected fault")
	// ErrHalted is the error of every operation after HaltAfter's budget
	// ran out, until Crash.
	ErrHalted = errors.New("faultfs: halted (simulated process death)")
	// ErrStale is the error of a file handle opened before a Crash.
	ErrStale = errors.New("faultfs: file handle from before a crash")
)

// FS is an in-memory file system; its methods are safe for concurrent use.
type FS struct {
	mu      sync.Mutex
	gen     int // incremented by Crash, so that old handles go stale
	dirs    map[string]*dir
	pending []write // unsynced writes, oldest first
	counts  [numOps]int
	inject  [numOps][]int // operation counts at which to fail
	budget  int           // changes left before halting; -1 for no limit
	halted  bool
	locks   map[string]bool
}

type dir struct {
	live, durable map[string]*inode
}

type inode struct {
	data, synced []byte
}

type write struct {
	ino  *inode
	off  int
	data []byte
}

var _ filestore.FS = (*FS)(nil)

// New returns an empty file system holding only the root directory.
func New() *FS {
	f := &FS{dirs: map[string]*dir{}, budget: -1, locks: map[string]bool{}}
	f.dirs[string(filepath.Separator)] = newDir()
	f.dirs["."] = newDir()
	return f
}

func newDir() *dir { return &dir{live: map[string]*inode{}, durable: map[string]*inode{}} }

// Inject makes the n-th next operation of kind op (n = 1: the very next
// one) fail with ErrInjected, without any effect. Every Inject adds one
// failure; Crash clears them.
func (f *FS) Inject(op Op, n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.inject[op] = append(f.inject[op], f.counts[op]+n)
}

// HaltAfter lets n more changes (operations of any Op kind) succeed, then
// fails every operation, reads included, with ErrHalted until Crash.
func (f *FS) HaltAfter(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.budget = n
}

// Ops returns how many operations of kind op have been attempted.
func (f *FS) Ops(op Op) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.counts[op]
}

// Crash simulates a power loss and reboot: every handle goes stale and
// every lock is released; each file keeps only its synced data and each
// directory only its synced entries; and the most recent unsynced write,
// if any, survives as a random prefix of itself (none of it, all of it,
// or anything between), chosen by rng. Halting and pending injections end.
func (f *FS) Crash(rng *rand.Rand) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gen++
	f.locks = map[string]bool{}
	f.halted, f.budget = false, -1
	f.inject = [numOps][]int{}
	for _, d := range f.dirs {
		for _, ino := range d.live {
			ino.data = slices.Clone(ino.synced)
		}
		for _, ino := range d.durable {
			ino.data = slices.Clone(ino.synced)
		}
		d.live = maps.Clone(d.durable)
	}
	if n := len(f.pending); n > 0 {
		w := f.pending[n-1]
		keep := w.data[:rng.IntN(len(w.data)+1)]
		if end := w.off + len(keep); end > len(w.ino.data) {
			// Bytes between the durable end and the write stay zero, as
			// in a file whose size was extended but not yet filled.
			w.ino.data = append(w.ino.data, make([]byte, end-len(w.ino.data))...)
		}
		copy(w.ino.data[w.off:], keep)
		w.ino.synced = slices.Clone(w.ino.data)
	}
	f.pending = nil
}

// op accounts for one operation of kind op (0 for a read) and returns the
// error it must fail with, if any.
func (f *FS) op(op Op) error {
	if f.halted {
		return ErrHalted
	}
	if op == OpAny {
		return nil
	}
	if f.budget == 0 {
		f.halted = true
		return ErrHalted
	}
	if f.budget > 0 {
		f.budget--
	}
	f.counts[op]++
	f.counts[OpAny]++
	for _, k := range []Op{op, OpAny} {
		if i := slices.Index(f.inject[k], f.counts[k]); i >= 0 {
			f.inject[k] = slices.Delete(f.inject[k], i, i+1)
			return ErrInjected
		}
	}
	return nil
}

func (f *FS) lookupDir(name string) (*dir, string, error) {
	name = filepath.Clean(name)
	d, ok := f.dirs[filepath.Dir(name)]
	if !ok {
		return nil, "", fs.ErrNotExist
	}
	return d, filepath.Base(name), nil
}

func pathErr(op, name string, err error) error {
	return &fs.PathError{Op: op, Path: name, Err: err}
}

// MkdirAll creates dir and its parents; directories are durable at once.
// Permissions are not modelled.
func (f *FS) MkdirAll(name string, _ fs.FileMode) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.op(OpAny); err != nil {
		return pathErr("mkdir", name, err)
	}
	for p := filepath.Clean(name); ; p = filepath.Dir(p) {
		if _, ok := f.dirs[p]; !ok {
			f.dirs[p] = newDir()
		}
		if filepath.Dir(p) == p {
			return nil
		}
	}
}

// OpenFile opens name; flag means what it does for os.OpenFile (O_RDONLY,
// O_WRONLY, O_RDWR, O_APPEND, O_CREATE, O_EXCL, O_TRUNC). Permissions are
// not modelled, so perm is ignored.
func (f *FS) OpenFile(name string, flag int, _ fs.FileMode) (filestore.File, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.op(OpAny); err != nil {
		return nil, pathErr("open", name, err)
	}
	d, base, err := f.lookupDir(name)
	if err != nil {
		return nil, pathErr("open", name, err)
	}
	ino, exists := d.live[base]
	switch {
	case exists && flag&os.O_CREATE != 0 && flag&os.O_EXCL != 0:
		return nil, pathErr("open", name, fs.ErrExist)
	case !exists && flag&os.O_CREATE == 0:
		return nil, pathErr("open", name, fs.ErrNotExist)
	case !exists:
		if err := f.op(OpCreate); err != nil {
			return nil, pathErr("open", name, err)
		}
		ino = &inode{}
		d.live[base] = ino
	case flag&os.O_TRUNC != 0:
		if err := f.op(OpTruncate); err != nil {
			return nil, pathErr("open", name, err)
		}
		ino.data = ino.data[:0:0]
	}
	return &file{fs: f, ino: ino, gen: f.gen, name: name, flag: flag}, nil
}

// ReadDir returns the names of the entries of name, sorted.
func (f *FS) ReadDir(name string) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.op(OpAny); err != nil {
		return nil, pathErr("readdir", name, err)
	}
	d, ok := f.dirs[filepath.Clean(name)]
	if !ok {
		return nil, pathErr("readdir", name, fs.ErrNotExist)
	}
	return slices.Sorted(maps.Keys(d.live)), nil
}

// Rename moves oldname to newname, replacing newname. It is durable once
// both directories are synced.
func (f *FS) Rename(oldname, newname string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.op(OpAny); err != nil {
		return pathErr("rename", oldname, err)
	}
	od, ob, err := f.lookupDir(oldname)
	if err != nil {
		return pathErr("rename", oldname, err)
	}
	nd, nb, err := f.lookupDir(newname)
	if err != nil {
		return pathErr("rename", newname, err)
	}
	ino, ok := od.live[ob]
	if !ok {
		return pathErr("rename", oldname, fs.ErrNotExist)
	}
	if err := f.op(OpRename); err != nil {
		return pathErr("rename", oldname, err)
	}
	delete(od.live, ob)
	nd.live[nb] = ino
	return nil
}

// Remove removes the file name; that is durable once its directory is
// synced.
func (f *FS) Remove(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.op(OpAny); err != nil {
		return pathErr("remove", name, err)
	}
	d, base, err := f.lookupDir(name)
	if err != nil {
		return pathErr("remove", name, err)
	}
	if _, ok := d.live[base]; !ok {
		return pathErr("remove", name, fs.ErrNotExist)
	}
	if err := f.op(OpRemove); err != nil {
		return pathErr("remove", name, err)
	}
	delete(d.live, base)
	return nil
}

// SyncDir makes the current entries of name durable.
func (f *FS) SyncDir(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.op(OpAny); err != nil {
		return pathErr("syncdir", name, err)
	}
	d, ok := f.dirs[filepath.Clean(name)]
	if !ok {
		return pathErr("syncdir", name, fs.ErrNotExist)
	}
	if err := f.op(OpSync); err != nil {
		return pathErr("syncdir", name, err)
	}
	d.durable = maps.Clone(d.live)
	return nil
}

// Lock takes the named lock until the Closer is closed or the FS crashes.
func (f *FS) Lock(name string) (io.Closer, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.op(OpAny); err != nil {
		return nil, pathErr("lock", name, err)
	}
	name = filepath.Clean(name)
	if f.locks[name] {
		return nil, pathErr("lock", name, errors.New("already locked"))
	}
	f.locks[name] = true
	return &lock{fs: f, name: name, gen: f.gen}, nil
}

type lock struct {
	fs   *FS
	name string
	gen  int
	once sync.Once
}

func (l *lock) Close() error {
	l.once.Do(func() {
		l.fs.mu.Lock()
		defer l.fs.mu.Unlock()
		if l.gen == l.fs.gen {
			delete(l.fs.locks, l.name)
		}
	})
	return nil
}

// file is an open handle. Its offset starts at 0; writes with O_APPEND go
// to the end.
type file struct {
	fs     *FS
	ino    *inode
	gen    int
	name   string
	flag   int
	off    int
	closed bool
}

// check validates the handle and accounts for the operation.
func (h *file) check(what string, op Op) error {
	if h.closed {
		return pathErr(what, h.name, fs.ErrClosed)
	}
	if h.gen != h.fs.gen {
		return pathErr(what, h.name, ErrStale)
	}
	if err := h.fs.op(op); err != nil {
		return pathErr(what, h.name, err)
	}
	return nil
}

func (h *file) Read(p []byte) (int, error) {
	h.fs.mu.Lock()
	defer h.fs.mu.Unlock()
	if err := h.check("read", OpAny); err != nil {
		return 0, err
	}
	if h.flag&(os.O_WRONLY|os.O_RDWR) == os.O_WRONLY {
		return 0, pathErr("read", h.name, errors.New("file not open for reading"))
	}
	if h.off >= len(h.ino.data) {
		return 0, io.EOF
	}
	n := copy(p, h.ino.data[h.off:])
	h.off += n
	return n, nil
}

func (h *file) Write(p []byte) (int, error) {
	h.fs.mu.Lock()
	defer h.fs.mu.Unlock()
	if err := h.check("write", OpWrite); err != nil {
		return 0, err
	}
	if h.flag&(os.O_WRONLY|os.O_RDWR) == 0 {
		return 0, pathErr("write", h.name, errors.New("file not open for writing"))
	}
	if h.flag&os.O_APPEND != 0 {
		h.off = len(h.ino.data)
	}
	if end := h.off + len(p); end > len(h.ino.data) {
		h.ino.data = append(h.ino.data, make([]byte, end-len(h.ino.data))...)
	}
	copy(h.ino.data[h.off:], p)
	h.fs.pending = append(h.fs.pending, write{ino: h.ino, off: h.off, data: slices.Clone(p)})
	h.off += len(p)
	return len(p), nil
}

// Sync makes the file's data durable; a failed Sync makes nothing durable.
func (h *file) Sync() error {
	h.fs.mu.Lock()
	defer h.fs.mu.Unlock()
	if err := h.check("sync", OpSync); err != nil {
		return err
	}
	h.ino.synced = slices.Clone(h.ino.data)
	h.fs.pending = slices.DeleteFunc(h.fs.pending, func(w write) bool { return w.ino == h.ino })
	return nil
}

func (h *file) Truncate(size int64) error {
	h.fs.mu.Lock()
	defer h.fs.mu.Unlock()
	if err := h.check("truncate", OpTruncate); err != nil {
		return err
	}
	if size < 0 {
		return pathErr("truncate", h.name, errors.New("negative size"))
	}
	if n := int(size); n <= len(h.ino.data) {
		h.ino.data = h.ino.data[:n:n]
	} else {
		h.ino.data = append(h.ino.data, make([]byte, n-len(h.ino.data))...)
	}
	return nil
}

func (h *file) Size() (int64, error) {
	h.fs.mu.Lock()
	defer h.fs.mu.Unlock()
	if err := h.check("stat", OpAny); err != nil {
		return 0, err
	}
	return int64(len(h.ino.data)), nil
}

func (h *file) Close() error {
	h.fs.mu.Lock()
	defer h.fs.mu.Unlock()
	if h.closed {
		return pathErr("close", h.name, fs.ErrClosed)
	}
	h.closed = true
	if h.gen != h.fs.gen {
		return pathErr("close", h.name, ErrStale)
	}
	return nil
}
