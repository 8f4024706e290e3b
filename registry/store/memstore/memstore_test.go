package memstore_test

import (
	"context"
	"errors"
	"testing"

	"github.com/cryptomesh/cryptomesh/registry"
	"github.com/cryptomesh/cryptomesh/registry/store/memstore"
)

func TestRestartReplaysEveryRecord(t *testing.T) {
	ctx := context.Background()
	st := memstore.New()
	reg, err := registry.Open(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"r1", "r2"} {
		if _, err := reg.Do(ctx, registry.Op{Type: registry.OpCreate, Kind: registry.KindRole, Body: map[string]any{"role_id": id, "name": id}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := reg.Do(ctx, registry.Op{Type: registry.OpDelete, Kind: registry.KindRole, ID: "r1"}); err != nil {
		t.Fatal(err)
	}
	if err := reg.Close(); err != nil {
		t.Fatal(err)
	}
	if got := len(st.Records()); got != 3 {
		t.Fatalf("records = %d, want 3", got)
	}
	if _, err := st.Append(registry.Record{Rev: 4}); !errors.Is(err, registry.ErrStoreClosed) {
		t.Fatalf("append after close: %v, want ErrStoreClosed", err)
	}

	st.Reopen()
	again, err := registry.Open(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	if again.Revision() != 3 {
		t.Fatalf("revision after replay = %d, want 3", again.Revision())
	}
	v := again.View()
	if _, err := v.Get(registry.KindRole, "r2"); err != nil {
		t.Fatalf("r2 after replay: %v", err)
	}
	if _, err := v.Get(registry.KindRole, "r1"); registry.CodeOf(err) != registry.CodeNotFound {
		t.Fatalf("r1 after replay: %v, want not found", err)
	}
}

func TestRecordsAreCopies(t *testing.T) {
	st := memstore.New()
	val := []byte(`{"role_id":"r1"}`)
	if _, err := st.Append(registry.Record{Rev: 1, Mutations: []registry.Mutation{{Kind: registry.KindRole, ID: "r1", Value: val}}}); err != nil {
		t.Fatal(err)
	}
	val[2] = 'X'
	got := st.Records()
	got[0].Mutations[0].Value[3] = 'Y'
	if s := string(st.Records()[0].Mutations[0].Value); s != `{"role_id":"r1"}` {
		t.Fatalf("stored value changed through an alias: %s", s)
	}
}

func TestAppendChecksOrderAndInjectedFailure(t *testing.T) {
	st := memstore.New()
	if _, err := st.Append(registry.Record{Rev: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Append(registry.Record{Rev: 3}); err == nil {
		t.Fatal("append of revision 3 after 1 succeeded")
	}
	boom := errors.New("disk on fire")
	st.FailAppends(boom)
	if _, err := st.Append(registry.Record{Rev: 2}); !errors.Is(err, boom) {
		t.Fatalf("append with injected failure: %v", err)
	}
	st.FailAppends(nil)
	p, err := st.Append(registry.Record{Rev: 2})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestLoadStopsOnCancelledContext(t *testing.T) {
	st := memstore.New()
	if _, err := st.Append(registry.Record{Rev: 1}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := st.Load(ctx, func(registry.Record) error { return nil }); !errors.Is(err, context.Canceled) {
		t.Fatalf("load with cancelled context: %v", err)
	}
}
