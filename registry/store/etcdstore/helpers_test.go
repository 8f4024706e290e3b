package etcdstore_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/cryptomesh/cryptomesh/registry"
	"github.com/cryptomesh/cryptomesh/registry/store/etcdstore"
	"github.com/cryptomesh/cryptomesh/registry/store/etcdstore/etcdtest"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// openStore opens a store on the endpoints, closed when the test ends.
func openStore(t testing.TB, endpoints []string, opts ...etcdstore.Option) *etcdstore.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := etcdstore.Open(ctx, endpoints, append([]etcdstore.Option{etcdstore.WithLogger(quiet)}, opts...)...)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// openRegistry opens a registry on a new store of srv.
func openRegistry(t testing.TB, endpoint string, opts ...etcdstore.Option) (*registry.Registry, *etcdstore.Store) {
	t.Helper()
	st := openStore(t, []string{endpoint}, opts...)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r, err := registry.Open(ctx, st, registry.WithLogger(quiet))
	if err != nil {
		t.Fatalf("open registry: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	return r, st
}

func openRegistries(t testing.TB, srv *etcdtest.Server, n int) []*registry.Registry {
	t.Helper()
	var rs []*registry.Registry
	for range n {
		r, _ := openRegistry(t, srv.Endpoint())
		rs = append(rs, r)
	}
	return rs
}

// head reads the store's head revision.
func head(t testing.TB, st *etcdstore.Store) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h, err := st.Head(ctx)
	if err != nil {
		t.Fatalf("head: %v", err)
	}
	return h
}
