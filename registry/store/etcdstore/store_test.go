package etcdstore_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cryptomesh/cryptomesh/registry"
	"github.com/cryptomesh/cryptomesh/registry/store/etcdstore"
	"github.com/cryptomesh/cryptomesh/registry/store/etcdstore/etcdtest"
)

// role returns a record at rev that puts one role of about size bytes.
func role(rev uint64, id, parent string, size int) registry.Record {
	v := fmt.Sprintf(`{"role_id":"r%d","name":%q}`, rev, strings.Repeat("x", max(0, size-40)))
	return registry.Record{Rev: rev, ID: id, Parent: parent, Mutations: []registry.Mutation{
		{Kind: registry.KindRole, ID: fmt.Sprintf("r%d", rev), Value: []byte(v)},
	}}
}

// chain returns n records from rev from+1 on, each on top of the last,
// the first on top of parent.
func chain(prefix string, from uint64, parent string, n, size int) []registry.Record {
	var recs []registry.Record
	for i := range n {
		rev := from + uint64(i) + 1
		id := fmt.Sprintf("%s-%d", prefix, rev)
		recs = append(recs, role(rev, id, parent, size))
		parent = id
	}
	return recs
}

func load(t testing.TB, st *etcdstore.Store) []registry.Record {
	t.Helper()
	var recs []registry.Record
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := st.Load(ctx, func(r registry.Record) error { recs = append(recs, r); return nil }); err != nil {
		t.Fatalf("load: %v", err)
	}
	return recs
}

// appendAll appends recs and waits for each; it returns their errors.
func appendAll(t testing.TB, st *etcdstore.Store, recs []registry.Record) []error {
	t.Helper()
	var ps []registry.Pending
	for _, r := range recs {
		p, err := st.Append(r)
		if err != nil {
			t.Fatalf("append %d: %v", r.Rev, err)
		}
		ps = append(ps, p)
	}
	errs := make([]error, len(ps))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for i, p := range ps {
		errs[i] = p.Wait(ctx)
	}
	return errs
}

func mustAppend(t testing.TB, st *etcdstore.Store, recs []registry.Record) {
	t.Helper()
	for i, err := range appendAll(t, st, recs) {
		if err != nil {
			t.Fatalf("revision %d: %v", recs[i].Rev, err)
		}
	}
}

// follower collects what Follow delivers.
type follower struct {
	mu   sync.Mutex
	recs []registry.Record
	err  chan error
	stop context.CancelFunc
}

func follow(t testing.TB, st *etcdstore.Store) *follower {
	ctx, cancel := context.WithCancel(context.Background())
	f := &follower{err: make(chan error, 1), stop: cancel}
	go func() {
		f.err <- st.Follow(ctx, func(r registry.Record) error {
			f.mu.Lock()
			f.recs = append(f.recs, r)
			f.mu.Unlock()
			return nil
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-f.err; err != nil {
			t.Errorf("follow: %v", err)
		}
	})
	return f
}

// waitFor waits until the follower has delivered revision rev.
func (f *follower) waitFor(t testing.TB, rev uint64) []registry.Record {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		f.mu.Lock()
		recs := append([]registry.Record(nil), f.recs...)
		f.mu.Unlock()
		if n := len(recs); n > 0 && recs[n-1].Rev >= rev {
			return recs
		}
		if time.Now().After(deadline) {
			t.Fatalf("follower did not reach revision %d; has %d records", rev, len(recs))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func keys(t testing.TB, c *clientv3.Client, prefix string) []string {
	t.Helper()
	resp, err := c.Get(context.Background(), prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, kv := range resp.Kvs {
		out = append(out, string(kv.Key))
	}
	return out
}

func TestCommitOnlyOnTopOfTheHead(t *testing.T) {
	srv := etcdtest.Start(t)
	a := openStore(t, []string{srv.Endpoint()})
	b := openStore(t, []string{srv.Endpoint()})
	load(t, a)
	load(t, b)
	fa, fb := follow(t, a), follow(t, b)

	// Both resolve revision 1 on the empty store; one wins.
	var errA, errB []error
	var wg sync.WaitGroup
	wg.Go(func() { errA = appendAll(t, a, chain("a", 0, "", 3, 100)) })
	wg.Go(func() { errB = appendAll(t, b, chain("b", 0, "", 3, 100)) })
	wg.Wait()
	winner, loser := errA, errB
	prefix := "a"
	if errA[0] != nil {
		winner, loser, prefix = errB, errA, "b"
	}
	for i := range 3 {
		if winner[i] != nil {
			t.Fatalf("winner's revision %d: %v", i+1, winner[i])
		}
		// The loser's first record lost the race; the others were built
		// on it and are refused with it.
		var ce *registry.ConflictError
		if !errors.As(loser[i], &ce) || ce.Head < 1 {
			t.Fatalf("loser's revision %d: %v, want a conflict", i+1, loser[i])
		}
	}
	if h := head(t, a); h != 3 {
		t.Fatalf("head %d, want 3", h)
	}
	// A record whose Parent is stale is refused with the current head.
	errs := appendAll(t, a, []registry.Record{role(4, "stale", prefix+"-2", 10)})
	var ce *registry.ConflictError
	if !errors.As(errs[0], &ce) || ce.Head != 3 {
		t.Fatalf("stale parent: %v, want a conflict at head 3", errs[0])
	}
	// Both followers deliver the winner's records, and only those.
	for _, f := range []*follower{fa, fb} {
		recs := f.waitFor(t, 3)
		if len(recs) != 3 {
			t.Fatalf("follower delivered %d records, want 3", len(recs))
		}
		for i, r := range recs {
			if want := fmt.Sprintf("%s-%d", prefix, i+1); r.ID != want || r.Rev != uint64(i+1) {
				t.Fatalf("record %d is %d/%s, want %d/%s", i, r.Rev, r.ID, i+1, want)
			}
		}
	}
	st := openStore(t, []string{srv.Endpoint()})
	if got := load(t, st); !reflect.DeepEqual(got, fa.waitFor(t, 3)) {
		t.Fatalf("load differs from what was followed:\n%+v", got)
	}
}

func TestGroupCommitStaysWithinEtcdLimits(t *testing.T) {
	// Lower limits than etcd's defaults, to make batches split often.
	srv := etcdtest.Start(t, etcdtest.WithArgs("--max-txn-ops=16", "--max-request-bytes=262144"))
	st := openStore(t, []string{srv.Endpoint()}, etcdstore.WithTxnLimits(16, 256<<10))
	load(t, st)
	// 600 records of 2 KiB: more than one transaction can carry by either
	// limit.
	recs := chain("g", 0, "", 600, 2048)
	mustAppend(t, st, recs)
	stats := st.Stats()
	if stats.Records != 600 || stats.Txns >= 600 || stats.Txns < 600/15 {
		t.Fatalf("stats %+v: want 600 records in fewer transactions, at most 15 each", stats)
	}
	t.Logf("%d records in %d transactions", stats.Records, stats.Txns)
	if got := load(t, openStore(t, []string{srv.Endpoint()})); !reflect.DeepEqual(got, recs) {
		t.Fatalf("reloaded %d records, not the %d appended", len(got), len(recs))
	}
}

func TestStoreAdaptsToSmallerEtcdLimits(t *testing.T) {
	// etcd allows less than the store was told: the store must split
	// its batches instead of failing.
	srv := etcdtest.Start(t, etcdtest.WithArgs("--max-txn-ops=8", "--max-request-bytes=131072"))
	st := openStore(t, []string{srv.Endpoint()})
	load(t, st)
	recs := append(chain("s", 0, "", 200, 1024), role(201, "big", "s-200", 300<<10))
	mustAppend(t, st, recs)
	if got := load(t, openStore(t, []string{srv.Endpoint()})); !reflect.DeepEqual(got, recs) {
		t.Fatalf("reloaded %d records, not the %d appended", len(got), len(recs))
	}
}

func TestLargeRecordsGoThroughBlobs(t *testing.T) {
	srv := etcdtest.Start(t)
	c := srv.Client(t)
	a := openStore(t, []string{srv.Endpoint()})
	b := openStore(t, []string{srv.Endpoint()})
	load(t, a)
	load(t, b)
	fb := follow(t, b)
	// 3,000 mutations, 4 MiB: beyond etcd's request limit and op count.
	big := registry.Record{Rev: 1, ID: "big"}
	for i := range 3000 {
		big.Mutations = append(big.Mutations, registry.Mutation{Kind: registry.KindRole, ID: fmt.Sprintf("r%d", i),
			Value: fmt.Appendf(nil, `{"role_id":"r%d","name":%q}`, i, strings.Repeat("n", 1400))})
	}
	// A racing record of the same revision on the other store, so that
	// one large record may also lose.
	var errs []error
	var wg sync.WaitGroup
	wg.Go(func() { errs = appendAll(t, a, []registry.Record{big}) })
	wg.Go(func() {
		rival := big
		rival.ID = "rival"
		rival.Mutations = big.Mutations[:2000]
		appendAll(t, b, []registry.Record{rival})
	})
	wg.Wait()
	recs := fb.waitFor(t, 1)
	won := recs[0].ID
	if (errs[0] == nil) != (won == "big") {
		t.Fatalf("big: %v, but revision 1 is %q", errs[0], won)
	}
	want := big
	if won == "rival" {
		want.ID, want.Mutations = "rival", big.Mutations[:2000]
	}
	if !reflect.DeepEqual(recs[0], want) {
		t.Fatalf("followed record differs: %d mutations, id %q", len(recs[0].Mutations), recs[0].ID)
	}
	if got := load(t, openStore(t, []string{srv.Endpoint()})); len(got) != 1 || !reflect.DeepEqual(got[0], want) {
		t.Fatalf("loaded %d records, want the large one", len(got))
	}
	// Only the winner's chunks remain.
	for _, k := range keys(t, c, etcdstore.DefaultPrefix+"blob/") {
		if !strings.Contains(k, "/"+won+"/") {
			t.Errorf("leftover blob %s of the refused record", k)
		}
	}
	if a.Stats().Blobs+b.Stats().Blobs != 2 {
		t.Fatalf("stats %+v %+v: want one blob record each", a.Stats(), b.Stats())
	}
}

// entitiesOf folds records into the entities they leave, in the order
// of the registry's snapshots (any order the store must preserve).
func entitiesOf(recs []registry.Record) []registry.Mutation {
	var out []registry.Mutation
	at := map[string]int{}
	for _, r := range recs {
		for _, m := range r.Mutations {
			k := string(m.Kind) + "/" + m.ID
			if i, ok := at[k]; ok {
				out[i] = m
				continue
			}
			at[k] = len(out)
			out = append(out, m)
		}
	}
	return out
}

func seq(muts []registry.Mutation) func(func(registry.Mutation, error) bool) {
	return func(yield func(registry.Mutation, error) bool) {
		for _, m := range muts {
			if !yield(m, nil) {
				return
			}
		}
	}
}

func TestSnapshotBoundsTheLog(t *testing.T) {
	srv := etcdtest.Start(t)
	c := srv.Client(t)
	st := openStore(t, []string{srv.Endpoint()}, etcdstore.WithLogRetention(5))
	load(t, st)
	recs := chain("s", 0, "", 50, 200)
	// Revision 30 is large, to have blobs below the cut.
	recs[29] = role(30, "s-30", "s-29", 2<<20)
	mustAppend(t, st, recs)
	ctx := context.Background()
	if err := st.Snapshot(ctx, 40, seq(entitiesOf(recs[:40]))); err != nil {
		t.Fatal(err)
	}
	p := etcdstore.DefaultPrefix
	logKeys := keys(t, c, p+"log/")
	if len(logKeys) != 15 || !strings.HasSuffix(logKeys[0], fmt.Sprintf("%020d", 36)) {
		t.Fatalf("log after the snapshot: %d keys from %v, want 36..50", len(logKeys), logKeys[:1])
	}
	if k := keys(t, c, p+"blob/"); len(k) != 0 {
		t.Fatalf("blobs below the cut survived: %v", k)
	}
	if k := keys(t, c, p+"snap/"); len(k) != 1 {
		t.Fatalf("snapshot headers %v", k)
	}
	// A snapshot of an older or equal revision, from any replica, has
	// nothing to add.
	other := openStore(t, []string{srv.Endpoint()})
	load(t, other)
	for _, rev := range []uint64{40, 35} {
		if err := other.Snapshot(ctx, rev, seq(entitiesOf(recs[:rev]))); err != nil {
			t.Fatal(err)
		}
	}
	if other.Stats().Snapshots != 0 {
		t.Fatal("a redundant snapshot was written")
	}
	// Load starts from the snapshot, which stands for revision 40 and
	// its record's ID, and goes on with the log.
	got := load(t, openStore(t, []string{srv.Endpoint()}))
	if len(got) != 11 || got[0].Rev != 40 || got[0].ID != "s-40" || !reflect.DeepEqual(got[0].Mutations, entitiesOf(recs[:40])) {
		t.Fatalf("loaded %d records, first %d/%s with %d mutations", len(got), got[0].Rev, got[0].ID, len(got[0].Mutations))
	}
	if !reflect.DeepEqual(got[1:], recs[40:]) {
		t.Fatal("log after the snapshot differs")
	}
	// A newer snapshot replaces the old one and its chunks.
	more := chain("s", 50, "s-50", 10, 200)
	mustAppend(t, st, more)
	if err := other.Snapshot(ctx, 60, seq(entitiesOf(append(recs, more...)))); err != nil {
		t.Fatal(err)
	}
	if k := keys(t, c, p+"snap/"); len(k) != 1 || !strings.HasSuffix(k[0], fmt.Sprintf("%020d", 60)) {
		t.Fatalf("snapshot headers %v, want only 60", k)
	}
	for _, k := range keys(t, c, p+"snapchunk/") {
		if !strings.HasPrefix(k, fmt.Sprintf("%ssnapchunk/%020d/", p, 60)) {
			t.Fatalf("chunk %s of a replaced snapshot survived", k)
		}
	}
	// The store keeps committing on top of the snapshot.
	mustAppend(t, st, chain("s", 60, "s-60", 1, 10))
	if got := load(t, openStore(t, []string{srv.Endpoint()})); got[0].Rev != 60 || got[len(got)-1].Rev != 61 {
		t.Fatalf("loaded revisions %d..%d, want 60..61", got[0].Rev, got[len(got)-1].Rev)
	}
}

func TestFollowReListsAfterCompaction(t *testing.T) {
	srv := etcdtest.Start(t)
	proxy := etcdtest.NewProxy(t, srv.Endpoint())
	c := srv.Client(t)
	writer := openStore(t, []string{srv.Endpoint()})
	lagging := openStore(t, []string{proxy.Addr()})
	load(t, writer)
	load(t, lagging)
	f := follow(t, lagging)
	recs := chain("c", 0, "", 10, 100)
	mustAppend(t, writer, recs)
	f.waitFor(t, 10)

	// Cut the follower off; meanwhile the log moves on, including a
	// delete, a snapshot drops old entries and etcd compacts its history.
	proxy.Cut()
	more := chain("c", 10, "c-10", 10, 100)
	more[4].Mutations = []registry.Mutation{{Kind: registry.KindRole, ID: "r3"}} // delete
	mustAppend(t, writer, more)
	all := append(recs, more...)
	state := entitiesOf(all[:15])
	state = append(state[:2], state[3:]...) // r3 deleted at revision 15
	if err := writer.Snapshot(context.Background(), 15, seq(state)); err != nil {
		t.Fatal(err)
	}
	resp, err := c.Get(context.Background(), "x")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Compact(context.Background(), resp.Header.Revision); err != nil {
		t.Fatal(err)
	}
	proxy.Restore()

	got := f.waitFor(t, 20)
	last := got[len(got)-1]
	if !last.Reset || last.Rev != 20 || last.ID != "c-20" {
		t.Fatalf("after the compaction: record %d/%s reset=%v, want a reset at 20/c-20", last.Rev, last.ID, last.Reset)
	}
	want := append(state, entitiesOf(all[15:])...)
	if !reflect.DeepEqual(last.Mutations, want) {
		t.Fatalf("reset holds %d entities, want %d", len(last.Mutations), len(want))
	}
	if lagging.Stats().Resets != 1 {
		t.Fatalf("stats %+v", lagging.Stats())
	}
	// It follows on normally from there, and its own appends commit on
	// top of the head it re-listed.
	mustAppend(t, lagging, chain("c", 20, "c-20", 1, 10))
	if got := f.waitFor(t, 21); got[len(got)-1].ID != "c-21" || got[len(got)-1].Reset {
		t.Fatalf("after the reset: %+v", got[len(got)-1])
	}
}

func TestAppendNeedsLoadAndIDs(t *testing.T) {
	srv := etcdtest.Start(t)
	st := openStore(t, []string{srv.Endpoint()})
	if _, err := st.Append(role(1, "x", "", 10)); err == nil {
		t.Fatal("append before Load succeeded")
	}
	load(t, st)
	if _, err := st.Append(role(1, "", "", 10)); err == nil {
		t.Fatal("append without a record ID succeeded")
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Append(role(1, "x", "", 10)); !errors.Is(err, registry.ErrStoreClosed) {
		t.Fatalf("append after Close: %v", err)
	}
}

func TestPrefixesAreIndependent(t *testing.T) {
	srv := etcdtest.Start(t)
	c := srv.Client(t)
	// New shares a client the caller keeps.
	a, err := etcdstore.New(c, etcdstore.WithPrefix("/mesh-a/"), etcdstore.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	b, err := etcdstore.New(c, etcdstore.WithPrefix("/mesh-b/"), etcdstore.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	load(t, a)
	load(t, b)
	mustAppend(t, a, chain("a", 0, "", 3, 10))
	mustAppend(t, b, chain("b", 0, "", 1, 10))
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get(context.Background(), "x"); err != nil {
		t.Fatalf("Close closed a client the store does not own: %v", err)
	}
	for prefix, want := range map[string]int{"/mesh-a/": 3, "/mesh-b/": 1} {
		got := load(t, openStore(t, []string{srv.Endpoint()}, etcdstore.WithPrefix(prefix)))
		if len(got) != want || got[0].ID != prefix[6:7]+"-1" {
			t.Fatalf("%s holds %d records, want %d of its own", prefix, len(got), want)
		}
	}
}
