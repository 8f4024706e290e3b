package filestore_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/cryptomesh/cryptomesh/registry"
	"github.com/cryptomesh/cryptomesh/registry/store/filestore"
)

// BenchmarkRawWriteFdatasync is the baseline: one 512 byte write and one
// fdatasync per record, in a file in a temp dir, through the same OS file
// layer the store uses.
func BenchmarkRawWriteFdatasync(b *testing.B) {
	f, err := filestore.OSFS().OpenFile(filepath.Join(b.TempDir(), "raw"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	rec := bytes.Repeat([]byte("x"), 512)
	b.SetBytes(int64(len(rec)))
	for b.Loop() {
		if _, err := f.Write(rec); err != nil {
			b.Fatal(err)
		}
		if err := f.Sync(); err != nil { // fdatasync on Linux
			b.Fatal(err)
		}
	}
	b.ReportMetric(1, "records/fsync")
}

// BenchmarkAppendParallel has 64 goroutines append about 512 byte records
// the registry's way (Append under a lock, Wait outside it) on the OS file
// system. ns/op is per record; records/fsync shows the group commit.
func BenchmarkAppendParallel(b *testing.B) {
	const goroutines = 64
	st, err := filestore.Open(filepath.Join(b.TempDir(), "data"))
	if err != nil {
		b.Fatal(err)
	}
	if err := st.Load(context.Background(), func(registry.Record) error { return nil }); err != nil {
		b.Fatal(err)
	}
	// 512 bytes of frame: header, tag, revision, count, kind, id, seq and
	// a value that pads it out.
	value := []byte(`{"role_id":"r","pad":"` + strings.Repeat("x", 464) + `"}`)
	var mu sync.Mutex
	var rev uint64
	b.SetBytes(512)
	b.ResetTimer()
	var wg sync.WaitGroup
	work := make(chan struct{}, b.N)
	for range b.N {
		work <- struct{}{}
	}
	close(work)
	for range goroutines {
		wg.Go(func() {
			for range work {
				mu.Lock()
				rev++
				p, err := st.Append(registry.Record{Rev: rev, Mutations: []registry.Mutation{
					{Kind: registry.KindRole, ID: "r", Value: value},
				}})
				mu.Unlock()
				if err == nil {
					err = p.Wait(context.Background())
				}
				if err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	stats := st.Stats()
	if err := st.Close(); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(stats.Records)/float64(stats.Syncs), "records/fsync")
	b.ReportMetric(float64(stats.Bytes)/float64(stats.Records), "bytes/record")
}
