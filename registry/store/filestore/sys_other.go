//go:build !unix

package filestore

import "os"

// lockFile is a no-op where flock is not available: there the caller must
// make sure that one process at a time uses a directory.
func lockFile(*os.File) error { return nil }

// syncDir is a no-op where directories cannot be opened for syncing
// (Windows); there renames are made durable by the file system itself.
func syncDir(*os.File) error { return nil }
