//go:build !linux

package filestore

import "os"

// datasync falls back to a full sync (F_FULLFSYNC on darwin) where
// fdatasync is not available.
func datasync(f *os.File) error { return f.Sync() }
