package etcdstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cryptomesh/cryptomesh/registry"
)

// state is the registry as etcd holds it at one etcd revision: the
// newest snapshot and the log after it.
type state struct {
	etcdRev int64
	headRev uint64
	headID  string
	snap    *registry.Record // nil without a snapshot
	log     []registry.Record
}

// readState reads the newest snapshot and the log after it, all at the
// etcd revision of its first read, so that a snapshot written (and old
// entries deleted) meanwhile by another replica cannot tear it. If etcd
// compacts that revision away mid-read, it starts again.
func (s *Store) readState(ctx context.Context) (*state, error) {
	for attempt := 1; ; attempt++ {
		st, err := s.readStateOnce(ctx)
		if err == nil || !errors.Is(err, rpctypes.ErrCompacted) || attempt == 5 {
			return st, err
		}
		s.log.Info("etcdstore: etcd compacted the revision being read; reading again", "attempt", attempt)
	}
}

func (s *Store) readStateOnce(ctx context.Context) (*state, error) {
	resp, err := s.client.Get(ctx, s.keys.head())
	if err != nil {
		return nil, fmt.Errorf("etcdstore: read head: %w", err)
	}
	st := &state{etcdRev: resp.Header.Revision}
	if len(resp.Kvs) > 0 {
		if st.headRev, st.headID, err = parseHead(resp.Kvs[0].Value); err != nil {
			return nil, err
		}
	}
	snaps, err := s.client.Get(ctx, s.keys.snapDir(), clientv3.WithRange(s.keys.snapEnd()),
		clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend), clientv3.WithLimit(1), clientv3.WithRev(st.etcdRev))
	if err != nil {
		return nil, fmt.Errorf("etcdstore: find the newest snapshot: %w", err)
	}
	rev, id := uint64(0), ""
	if len(snaps.Kvs) > 0 {
		h, err := decodeSnapHeader(snaps.Kvs[0].Value)
		if err != nil {
			return nil, fmt.Errorf("etcdstore: %s: %w", snaps.Kvs[0].Key, err)
		}
		body, err := s.readChunks(ctx, s.keys.snapChunks(h.rev, h.snapID), h.chunks, h.size, h.crc, st.etcdRev)
		if err != nil {
			return nil, fmt.Errorf("etcdstore: snapshot at revision %d: %w", h.rev, err)
		}
		muts, err := decodeMutations(body, h.count)
		if err != nil {
			return nil, fmt.Errorf("etcdstore: snapshot at revision %d: %w", h.rev, err)
		}
		st.snap = &registry.Record{Rev: h.rev, ID: h.id, Mutations: muts}
		rev, id = h.rev, h.id
	}
	err = s.scan(ctx, s.keys.log(rev+1), s.keys.logEnd(), st.etcdRev, 64, func(kv *mvccpb.KeyValue) error {
		rec, err := s.decodeLog(ctx, kv, st.etcdRev)
		if err != nil {
			return err
		}
		if rec.Rev != rev+1 || rec.Parent != id {
			return fmt.Errorf("etcdstore: %s: %w", kv.Key, corrupt("revision %d on top of %d/%s follows %d/%s", rec.Rev, rec.Rev-1, rec.Parent, rev, id))
		}
		rev, id = rec.Rev, rec.ID
		st.log = append(st.log, rec)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if rev != st.headRev || id != st.headID {
		return nil, corrupt("the log ends at %d/%s but head is %d/%s", rev, id, st.headRev, st.headID)
	}
	return st, nil
}

// scan calls fn for every key in [from, end) at etcd revision rev, page
// by page, so that a large log is never one response.
func (s *Store) scan(ctx context.Context, from, end string, rev, page int64, fn func(*mvccpb.KeyValue) error) error {
	for {
		resp, err := s.client.Get(ctx, from, clientv3.WithRange(end), clientv3.WithRev(rev), clientv3.WithLimit(page))
		if err != nil {
			return fmt.Errorf("etcdstore: read %s: %w", from, err)
		}
		for _, kv := range resp.Kvs {
			if err := fn(kv); err != nil {
				return err
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return nil
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// readChunks reads and checks the chunks under dir at etcd revision rev.
func (s *Store) readChunks(ctx context.Context, dir string, chunks, size uint64, crc uint32, rev int64) ([]byte, error) {
	if size > 1<<40 {
		return nil, corrupt("%d bytes of chunks", size)
	}
	buf := make([]byte, 0, size)
	n := uint64(0)
	err := s.scan(ctx, dir, clientv3.GetPrefixRangeEnd(dir), rev, 8, func(kv *mvccpb.KeyValue) error {
		if want := fmt.Sprintf("%s%06d", dir, n); !bytes.Equal(kv.Key, []byte(want)) {
			return corrupt("chunk %s, want %s", kv.Key, want)
		}
		buf = append(buf, kv.Value...)
		n++
		return nil
	})
	switch {
	case err != nil:
		return nil, err
	case n != chunks || uint64(len(buf)) != size:
		return nil, corrupt("%s holds %d chunks of %d bytes, want %d of %d", dir, n, len(buf), chunks, size)
	case crc32.Checksum(buf, castagnoli) != crc:
		return nil, corrupt("%s: checksum mismatch", dir)
	}
	return buf, nil
}

// decodeLog decodes a log entry; a blob reference is resolved by reading
// its chunks at etcd revision rev.
func (s *Store) decodeLog(ctx context.Context, kv *mvccpb.KeyValue, rev int64) (registry.Record, error) {
	keyRev, ok := revOf(string(kv.Key), s.keys.logDir())
	if !ok || len(kv.Value) == 0 {
		return registry.Record{}, fmt.Errorf("etcdstore: %w", corrupt("log key %q", kv.Key))
	}
	data := kv.Value
	if kv.Value[0] == tagBlobRef {
		ref, err := decodeBlobRef(kv.Value)
		if err != nil {
			return registry.Record{}, fmt.Errorf("etcdstore: %s: %w", kv.Key, err)
		}
		if data, err = s.readChunks(ctx, s.keys.blobRecord(ref.rev, ref.id), ref.chunks, ref.size, ref.crc, rev); err != nil {
			return registry.Record{}, fmt.Errorf("etcdstore: %s: %w", kv.Key, err)
		}
	}
	rec, err := decodeRecord(data)
	if err != nil {
		return registry.Record{}, fmt.Errorf("etcdstore: %s: %w", kv.Key, err)
	}
	if rec.Rev != keyRev {
		return registry.Record{}, fmt.Errorf("etcdstore: %s: %w", kv.Key, corrupt("holds revision %d", rec.Rev))
	}
	return rec, nil
}

// Load delivers the newest snapshot (as one record) and every log record
// after it, as etcd holds them at one revision, and prepares Follow to go
// on from there.
func (s *Store) Load(ctx context.Context, apply func(registry.Record) error) error {
	s.mu.Lock()
	loaded, closing := s.loaded, s.closing
	s.mu.Unlock()
	switch {
	case closing:
		return fmt.Errorf("etcdstore: load: %w", registry.ErrStoreClosed)
	case loaded:
		return errors.New("etcdstore: Load called twice")
	}
	st, err := s.readState(ctx)
	if err != nil {
		return err
	}
	if st.snap != nil {
		if err := apply(*st.snap); err != nil {
			return err
		}
	}
	for _, rec := range st.log {
		if err := apply(rec); err != nil {
			return err
		}
	}
	s.next, s.watchFrom = st.headRev+1, st.etcdRev+1
	s.mu.Lock()
	s.loaded = true
	s.mu.Unlock()
	s.log.Info("etcdstore: loaded", "revision", st.headRev, "records", len(st.log), "etcd_revision", st.etcdRev)
	return nil
}

// errApply wraps an error of the caller's apply function, which ends
// Follow, unlike etcd's errors, which are retried.
type errApply struct{ err error }

func (e errApply) Error() string { return e.err.Error() }
func (e errApply) Unwrap() error { return e.err }

// errRelist makes Follow re-read the state: etcd compacted the history
// the watch needed, or the watch skipped a revision.
var errRelist = errors.New("etcdstore: the watch cannot continue; re-listing")

// Follow delivers every record committed after the last one Load or
// Follow delivered, this replica's included, by watching log/ from the
// etcd revision it has reached. A broken watch resumes from the last
// delivered entry (etcd replays history, deleted entries included); if
// etcd compacted that history away, Follow re-reads the newest snapshot
// and the log and delivers it as one Reset record. It returns nil when
// ctx ends and apply's error if apply fails; etcd's errors are retried.
func (s *Store) Follow(ctx context.Context, apply func(registry.Record) error) error {
	for attempt := 1; ; attempt++ {
		err := s.watch(ctx, apply)
		if ctx.Err() != nil {
			return nil
		}
		var ae errApply
		if errors.As(err, &ae) {
			return ae.err
		}
		if errors.Is(err, errRelist) || errors.Is(err, rpctypes.ErrCompacted) {
			s.log.Warn("etcdstore: re-listing the registry", "reason", err, "from_revision", s.next)
			err = s.relist(ctx, apply)
			if errors.As(err, &ae) {
				return ae.err
			}
			if err == nil {
				attempt = 0
				continue
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, errCorrupt) {
			return err
		}
		s.retries.Add(1)
		if attempt == 1 || attempt%10 == 0 {
			s.log.Warn("etcdstore: following the log failed; retrying", "attempt", attempt, "error", err)
		}
		if !backoff(ctx, attempt) {
			return nil
		}
	}
}

// watch delivers log entries from s.watchFrom until the watch fails.
func (s *Store) watch(ctx context.Context, apply func(registry.Record) error) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	// Deletes are a snapshot dropping old entries: etcd need not send them.
	wch := s.client.Watch(wctx, s.keys.logDir(), clientv3.WithRange(s.keys.logEnd()), clientv3.WithRev(s.watchFrom),
		clientv3.WithFilterDelete())
	for resp := range wch {
		if resp.CompactRevision != 0 {
			return fmt.Errorf("%w: etcd compacted its history to revision %d, past %d", errRelist, resp.CompactRevision, s.watchFrom)
		}
		if err := resp.Err(); err != nil {
			return fmt.Errorf("etcdstore: watch the log: %w", err)
		}
		for _, ev := range resp.Events {
			if ev.Type != clientv3.EventTypePut {
				continue
			}
			rev, ok := revOf(string(ev.Kv.Key), s.keys.logDir())
			switch {
			case !ok:
				return fmt.Errorf("etcdstore: %w", corrupt("log key %q", ev.Kv.Key))
			case rev < s.next:
				// Already delivered: a resumed watch starts again at the
				// etcd revision of the last entry delivered, because one
				// transaction puts several entries at the same revision.
				continue
			case rev > s.next:
				return fmt.Errorf("%w: the log went from revision %d to %d", errRelist, s.next-1, rev)
			}
			rec, err := s.decodeLog(ctx, ev.Kv, ev.Kv.ModRevision)
			if err != nil {
				return err
			}
			if err := apply(rec); err != nil {
				return errApply{err}
			}
			s.next, s.watchFrom = rec.Rev+1, ev.Kv.ModRevision
		}
	}
	return errors.New("etcdstore: the watch closed")
}

// relist delivers the whole registry as one Reset record.
func (s *Store) relist(ctx context.Context, apply func(registry.Record) error) error {
	st, err := s.readState(ctx)
	if err != nil {
		return err
	}
	if err := apply(registry.Record{Rev: st.headRev, ID: st.headID, Reset: true, Mutations: merge(st)}); err != nil {
		return errApply{err}
	}
	s.next, s.watchFrom = st.headRev+1, st.etcdRev+1
	s.resets.Add(1)
	return nil
}

// merge folds the log into the snapshot: the live entities as puts, in
// snapshot order, then in the order the log created them (so an entity
// still comes after what it references).
func merge(st *state) []registry.Mutation {
	type entity struct {
		kind registry.Kind
		id   string
	}
	var out []registry.Mutation
	at := map[entity]int{}
	apply := func(m registry.Mutation) {
		k := entity{m.Kind, m.ID}
		i, ok := at[k]
		switch {
		case m.Delete() && ok:
			out[i] = registry.Mutation{}
			delete(at, k)
		case m.Delete():
		case ok:
			out[i] = m
		default:
			at[k] = len(out)
			out = append(out, m)
		}
	}
	if st.snap != nil {
		for _, m := range st.snap.Mutations {
			apply(m)
		}
	}
	for _, rec := range st.log {
		for _, m := range rec.Mutations {
			apply(m)
		}
	}
	live := out[:0]
	for _, m := range out {
		if m.Kind != "" {
			live = append(live, m)
		}
	}
	return live
}
