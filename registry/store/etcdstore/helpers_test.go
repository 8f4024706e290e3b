package etcdstore_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
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

func body(t testing.TB, s string) map[string]any {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("bad test body %s: %v", s, err)
	}
	return m
}

func create(t testing.TB, kind registry.Kind, js string) registry.Op {
	return registry.Op{Type: registry.OpCreate, Kind: kind, Body: body(t, js)}
}

func mustDo(t testing.TB, r *registry.Registry, ops ...registry.Op) []registry.Result {
	t.Helper()
	res, err := r.Do(context.Background(), ops...)
	if err != nil {
		t.Fatalf("do: %v", err)
	}
	return res
}

// seed creates a small registry: roles, a policy, an endpoint, a
// service, a microservice and a function.
func seed(t testing.TB, r *registry.Registry) {
	t.Helper()
	mustDo(t, r,
		create(t, registry.KindRole, `{"role_id":"ml-engineer","name":"ML engineer","permissions":["execute"]}`),
		create(t, registry.KindSecurityPolicy, `{"sp_id":"sp1","roles":["ml-engineer"],"requires_authentication":true}`),
		create(t, registry.KindEndpoint, `{"endpoint_id":"e1","security_policy":"sp1","address":"127.0.0.1:9001","resources":{"cpu":2,"ram":"1GB"}}`),
		create(t, registry.KindService, `{"service_id":"s1","security_policy":"sp1"}`),
		create(t, registry.KindMicroservice, `{"microservice_id":"m1","service_id":"s1"}`),
		create(t, registry.KindFunction, `{"function_id":"f1","microservice_id":"m1","endpoint_id":"e1","resources":{"cpu":1,"ram":"512MB"}}`),
	)
}

// dump renders every entity of r, for comparing replicas.
func dump(t testing.TB, r *registry.Registry) string {
	t.Helper()
	v := r.View()
	var b bytes.Buffer
	for _, k := range registry.Kinds() {
		items, total, err := v.List(k, registry.ListOptions{Limit: registry.MaxListLimit})
		if err != nil {
			t.Fatalf("list %s: %v", k, err)
		}
		raw, _ := json.Marshal(items)
		fmt.Fprintf(&b, "%s %d %s\n", k, total, raw)
	}
	return b.String()
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

// waitConverged waits until every registry is at rev and then checks
// that they hold the same entities.
func waitConverged(t testing.TB, rs []*registry.Registry, rev uint64) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for i, r := range rs {
		for r.Revision() < rev {
			if time.Now().After(deadline) {
				t.Fatalf("replica %d stuck at revision %d, want %d", i, r.Revision(), rev)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	want := dump(t, rs[0])
	for i, r := range rs[1:] {
		if r.Revision() != rs[0].Revision() {
			t.Fatalf("replica %d at revision %d, replica 0 at %d", i+1, r.Revision(), rs[0].Revision())
		}
		if got := dump(t, r); got != want {
			t.Fatalf("replica %d differs:\n%s\nvs\n%s", i+1, got, want)
		}
	}
}
