//go:build unix

package filestore

import (
	"os"
	"syscall"
)

// lockFile takes a non-blocking exclusive flock, which the kernel releases
// when the process dies, so a crash never leaves a stale lock.
func lockFile(f *os.File) error {
	return syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
}

func syncDir(d *os.File) error { return d.Sync() }
