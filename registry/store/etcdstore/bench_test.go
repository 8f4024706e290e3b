package etcdstore_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cryptomesh/cryptomesh/registry"
	"github.com/cryptomesh/cryptomesh/registry/registrytest"
	"github.com/cryptomesh/cryptomesh/registry/store/etcdstore"
	"github.com/cryptomesh/cryptomesh/registry/store/etcdstore/etcdtest"
	"github.com/cryptomesh/cryptomesh/registry/store/filestore"
	"github.com/cryptomesh/cryptomesh/registry/store/memstore"
)

// The function every benchmark create writes, as the API's durability
// benchmark does.
const benchFunction = `{"function_id":"fn-%d-%d","image":"registry.example/ml/train:1","resources":{"cpu":2,"ram":"4GB"},"timeout":"30s"}`

// parallel runs n calls of do from `clients` goroutines and returns the
// rate achieved; every call must succeed.
func parallel(b *testing.B, clients, n int, do func(i int) error) float64 {
	b.Helper()
	var next atomic.Int64
	var failed atomic.Value
	var wg sync.WaitGroup
	start := time.Now()
	for range clients {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n || failed.Load() != nil {
					return
				}
				if err := do(i); err != nil {
					failed.Store(fmt.Errorf("call %d: %w", i, err))
					return
				}
			}
		})
	}
	wg.Wait()
	if err := failed.Load(); err != nil {
		b.Fatal(err)
	}
	return float64(n) / time.Since(start).Seconds()
}

// storedValue is the entity a create of benchFunction stores: what the
// raw baseline puts.
func storedValue(b *testing.B) []byte {
	b.Helper()
	st := memstore.New()
	r, err := registry.Open(context.Background(), st, registry.WithLogger(quiet))
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	registrytest.MustDo(b, r, registrytest.Create(b, registry.KindFunction, fmt.Sprintf(benchFunction, 0, 0)))
	return st.Records()[0].Mutations[0].Value
}

func creates(b *testing.B, r *registry.Registry, clients, n, round int) float64 {
	b.Helper()
	return parallel(b, clients, n, func(i int) error {
		_, err := r.Do(context.Background(), registrytest.Create(b, registry.KindFunction, fmt.Sprintf(benchFunction, round, i)))
		return err
	})
}

// BenchmarkDurableCreates: durable creates per second through
// registry.Do on the etcd store with 64 concurrent writers, ÷ raw
// clientv3 Puts per second of the same stored entity from 64 goroutines
// on the same etcd (target ≥ 0.5); and the same creates through the
// embedded file store, on the same disk, beside them. Each etcd round
// uses a fresh prefix, so no round builds on another's state.
func BenchmarkDurableCreates(b *testing.B) {
	const clients, n = 64, 10000
	srv := etcdtest.Start(b)
	c := srv.Client(b)
	value := string(storedValue(b))
	var rawRate, etcdRate, fileRate, perTxn float64
	for round := range b.N {
		rawRate += parallel(b, clients, n, func(i int) error {
			_, err := c.Put(context.Background(), fmt.Sprintf("/raw-%d/log/%020d", round, i), value)
			return err
		})

		st, err := etcdstore.Open(context.Background(), []string{srv.Endpoint()},
			etcdstore.WithLogger(quiet), etcdstore.WithPrefix(fmt.Sprintf("/bench-%d/", round)))
		if err != nil {
			b.Fatal(err)
		}
		r, err := registry.Open(context.Background(), st, registry.WithLogger(quiet))
		if err != nil {
			b.Fatal(err)
		}
		etcdRate += creates(b, r, clients, n, round)
		stats := st.Stats()
		perTxn += float64(stats.Records) / float64(max(1, stats.Txns))
		r.Close()

		fst, err := filestore.Open(filepath.Join(b.TempDir(), "registry"), filestore.WithLogger(quiet))
		if err != nil {
			b.Fatal(err)
		}
		fr, err := registry.Open(context.Background(), fst, registry.WithLogger(quiet))
		if err != nil {
			b.Fatal(err)
		}
		fileRate += creates(b, fr, clients, n, round)
		fr.Close()
	}
	rounds := float64(b.N)
	b.ReportMetric(etcdRate/rounds, "etcd-creates/s")
	b.ReportMetric(rawRate/rounds, "raw-puts/s")
	b.ReportMetric(etcdRate/rawRate, "ratio")
	b.ReportMetric(fileRate/rounds, "embedded-creates/s")
	b.ReportMetric(perTxn/rounds, "records/txn")
	b.ReportMetric(0, "ns/op")
}
