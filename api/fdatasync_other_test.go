//go:build !linux

package api_test

import "os"

func fdatasync(f *os.File) error { return f.Sync() }
