package registry_test

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/cryptomesh/cryptomesh/registry"
	"github.com/cryptomesh/cryptomesh/registry/registrytest"
	"github.com/cryptomesh/cryptomesh/registry/store/filestore"
)

// buildStore writes a registry of n entities (a realistic mix: functions
// with references, their parents, states) to a file store in dir and
// leaves a snapshot of it.
func buildStore(b *testing.B, dir string, n int) {
	b.Helper()
	st, err := filestore.Open(dir, filestore.WithLogger(quiet))
	if err != nil {
		b.Fatal(err)
	}
	const batch = 1000
	revs := uint64(0)
	r, err := registry.Open(context.Background(), st, registry.WithLogger(quiet), registry.WithSnapshotEvery(uint64(n/batch)+3))
	if err != nil {
		b.Fatal(err)
	}
	doOps := func(ops []registry.Op) {
		if _, err := r.Do(context.Background(), ops...); err != nil {
			b.Fatal(err)
		}
		revs++
	}
	js := func(s string) map[string]any { return registrytest.Body(&testing.T{}, s) }
	doOps([]registry.Op{
		{Type: registry.OpCreate, Kind: registry.KindRole, Body: js(`{"role_id":"r","name":"r","permissions":["execute"]}`)},
		{Type: registry.OpCreate, Kind: registry.KindSecurityPolicy, Body: js(`{"sp_id":"p","roles":["r"],"requires_authentication":true}`)},
		{Type: registry.OpCreate, Kind: registry.KindEndpoint, Body: js(`{"endpoint_id":"e","security_policy":"p","address":"127.0.0.1:7000","resources":{"cpu":4,"ram":"8GB"}}`)},
		{Type: registry.OpCreate, Kind: registry.KindService, Body: js(`{"service_id":"s","security_policy":"p"}`)},
		{Type: registry.OpCreate, Kind: registry.KindMicroservice, Body: js(`{"microservice_id":"m","service_id":"s"}`)},
	})
	made := 5
	for made < n {
		var ops []registry.Op
		for j := 0; j < batch && made < n; j++ {
			id := fmt.Sprintf("fn-%07d", made)
			if made%10 == 9 {
				ops = append(ops, registry.Op{Type: registry.OpCreate, Kind: registry.KindFunctionState,
					Body: js(fmt.Sprintf(`{"function_id":"fn-%07d","state":"completed","metadata":{"duration_ms":"12"}}`, made-1))})
			} else {
				ops = append(ops, registry.Op{Type: registry.OpCreate, Kind: registry.KindFunction,
					Body: js(fmt.Sprintf(`{"function_id":%q,"microservice_id":"m","endpoint_id":"e","image":"registry.example/ml/fn:1","resources":{"cpu":1,"ram":"512MB"},"timeout":"30s"}`, id))})
			}
			made++
		}
		doOps(ops)
	}
	// One more batch past the snapshot interval makes the snapshot cover
	// everything but the tail, as after a long run.
	if err := r.Close(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkRestart: restarting the registry with 100,000 entities (open
// the store, read the snapshot and log, rebuild go-memdb) ÷ only reading
// and decoding the same files (target ≤ 2; goal < 2 s and < 200 MiB).
func BenchmarkRestart(b *testing.B) {
	const n = 100000
	dir := filepath.Join(b.TempDir(), "registry")
	buildStore(b, dir, n)
	var restart, decode time.Duration
	var heap uint64
	for range b.N {
		// Baseline: read the files and decode every entity into its Go
		// type, building nothing.
		start := time.Now()
		st, err := filestore.Open(dir, filestore.WithLogger(quiet))
		if err != nil {
			b.Fatal(err)
		}
		count := 0
		err = st.Load(context.Background(), func(rec registry.Record) error {
			for _, m := range rec.Mutations {
				if m.Delete() {
					continue
				}
				if err := json.Unmarshal(m.Value, registry.NewEntity(m.Kind)); err != nil {
					return err
				}
				count++
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
		decode += time.Since(start)
		st.Close()
		if count < n {
			b.Fatalf("decoded %d mutations, want at least %d", count, n)
		}

		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		start = time.Now()
		st, err = filestore.Open(dir, filestore.WithLogger(quiet))
		if err != nil {
			b.Fatal(err)
		}
		r, err := registry.Open(context.Background(), st, registry.WithLogger(quiet))
		if err != nil {
			b.Fatal(err)
		}
		restart += time.Since(start)
		runtime.GC()
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		heap += after.HeapAlloc - min(after.HeapAlloc, before.HeapAlloc)
		v := r.View()
		if got := v.Count(registry.KindFunction) + v.Count(registry.KindFunctionState) + 5; got != n {
			b.Fatalf("restored %d entities, want %d", got, n)
		}
		r.Close()
	}
	nf := float64(b.N)
	b.ReportMetric(restart.Seconds()*1000/nf, "restart-ms")
	b.ReportMetric(decode.Seconds()*1000/nf, "decode-ms")
	b.ReportMetric(restart.Seconds()/decode.Seconds(), "ratio")
	b.ReportMetric(float64(heap)/nf/(1<<20), "heap-MiB")
	b.ReportMetric(0, "ns/op")
}
