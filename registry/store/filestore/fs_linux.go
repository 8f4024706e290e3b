package filestore

import (
	"os"
	"syscall"
)

// datasync uses fdatasync: the log only appends, and fdatasync still
// flushes the size change an append makes, which is all a reader needs.
func datasync(f *os.File) error {
	for {
		err := syscall.Fdatasync(int(f.Fd()))
		if err != syscall.EINTR {
			if err != nil {
				return &os.PathError{Op: "fdatasync", Path: f.Name(), Err: err}
			}
			return nil
		}
	}
}
