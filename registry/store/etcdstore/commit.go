package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cryptomesh/cryptomesh/registry"
)

// maxDoomed bounds the memory of refused record IDs. Forgetting one only
// costs a round trip: a record built on it is then refused by etcd's
// compare instead of by the committer.
const maxDoomed = 4096

// commitLoop is the committer: it takes what Append queued, groups
// records that chain (each one's Parent is its predecessor's ID) into
// transactions, and commits one transaction at a time, so that commits
// reach etcd in the order the registry appended them.
func (s *Store) commitLoop() {
	defer close(s.done)
	// doomed maps the ID of a record that will never commit to the error
	// its descendants get: a record resolved on top of a refused one is
	// refused too, without asking etcd.
	doomed := map[string]error{}
	for {
		s.mu.Lock()
		for len(s.queue) == 0 {
			if s.closing {
				s.mu.Unlock()
				return
			}
			s.mu.Unlock()
			select {
			case <-s.wake:
			case <-s.ctx.Done():
			}
			s.mu.Lock()
		}
		todo := s.queue
		s.queue = nil
		s.mu.Unlock()
		if len(doomed) > maxDoomed {
			clear(doomed)
		}
		s.commitAll(todo, doomed)
	}
}

// errSmaller asks the committer to rebuild a batch under lowered limits.
var errSmaller = errors.New("etcdstore: batch too large for etcd")

func (s *Store) commitAll(todo []*pending, doomed map[string]error) {
	for len(todo) > 0 {
		if err, ok := doomed[todo[0].rec.Parent]; ok {
			p := todo[0]
			doomed[p.rec.ID] = err
			if errors.As(err, new(*registry.ConflictError)) {
				s.conflicts.Add(1)
			}
			p.finish(err)
			todo = todo[1:]
			continue
		}
		batch := todo[:s.batchLen(todo)]
		err := s.commit(batch)
		if errors.Is(err, errSmaller) {
			continue
		}
		todo = todo[len(batch):]
		for _, p := range batch {
			if err != nil {
				doomed[p.rec.ID] = err
			}
			p.finish(err)
		}
	}
}

// large reports whether p's record cannot travel inline in a
// transaction and goes to blob chunks first.
func (s *Store) large(p *pending) bool { return len(p.enc)+256 > s.maxTxnBytes }

// batchLen returns how many records from the front of todo go into one
// transaction: records that chain, within etcd's limits on operations
// (one put per record, plus the head) and request bytes.
func (s *Store) batchLen(todo []*pending) int {
	ops, bytes := 1, 64
	n := 0
	for i, p := range todo {
		if i > 0 && (p.rec.Parent != todo[i-1].rec.ID || p.rec.Rev != todo[i-1].rec.Rev+1) {
			break
		}
		size := len(s.keys.log(p.rec.Rev)) + 32
		if s.large(p) {
			size += 128 // the blob reference
		} else {
			size += len(p.enc)
		}
		if n > 0 && (ops+1 > s.maxTxnOps || bytes+size > s.maxTxnBytes) {
			break
		}
		ops, bytes, n = ops+1, bytes+size, n+1
	}
	return n
}

// commit commits batch in one transaction:
//
//	If(head == "<first.Rev-1>/<first.Parent>")
//	Then(Put log/<rev> for each record, Put head = "<last.Rev>/<last.ID>")
//	Else(Get head, Get log/<last.Rev>)
//
// An error of unknown outcome (a timeout, a lost connection) is retried
// with the very same transaction. That is safe because head values never
// repeat: if an earlier attempt did commit, head has moved on and the
// retry takes the Else branch, where log/<last.Rev> holding last.ID shows
// that the batch is in. If it did not commit, the retry is the commit.
func (s *Store) commit(batch []*pending) error {
	first, last := batch[0].rec, batch[len(batch)-1].rec
	deadline := time.Now().Add(s.commitTimeout)
	head := s.keys.head()
	cmp := clientv3.Compare(clientv3.Value(head), "=", headValue(first.Rev-1, first.Parent))
	if first.Rev == 1 && first.Parent == "" {
		cmp = clientv3.Compare(clientv3.CreateRevision(head), "=", 0)
	}
	ops := make([]clientv3.Op, 0, len(batch)+1)
	var blobs []blobRef
	for _, p := range batch {
		val := p.enc
		if s.large(p) {
			ref, err := s.writeBlobs(p, deadline)
			if err != nil {
				return err
			}
			blobs = append(blobs, ref)
			val = appendBlobRef(nil, ref)
		}
		ops = append(ops, clientv3.OpPut(s.keys.log(p.rec.Rev), string(val)))
	}
	ops = append(ops, clientv3.OpPut(head, headValue(last.Rev, last.ID)))
	var resp *clientv3.TxnResponse
	uncertain := false
	err := s.retry(deadline, fmt.Sprintf("commit revisions %d-%d", first.Rev, last.Rev), func(ctx context.Context) error {
		var err error
		resp, err = s.client.Txn(ctx).If(cmp).Then(ops...).
			Else(clientv3.OpGet(head), clientv3.OpGet(s.keys.log(last.Rev))).Commit()
		if err != nil && !permanent(err) {
			uncertain = true
		}
		return err
	})
	if err != nil {
		if tooLarge(err) && s.shrink(batch, err) {
			return errSmaller
		}
		return err
	}
	if resp.Succeeded {
		s.txns.Add(1)
		s.records.Add(uint64(len(batch)))
		return nil
	}
	headRev := uint64(0)
	if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
		if headRev, _, err = parseHead(kvs[0].Value); err != nil {
			return err
		}
	}
	if kvs := resp.Responses[1].GetResponseRange().Kvs; len(kvs) > 0 {
		if _, id, err := logIdentity(kvs[0].Value); err == nil && id == last.ID {
			// An attempt whose answer was lost had committed.
			s.txns.Add(1)
			s.records.Add(uint64(len(batch)))
			return nil
		}
	} else if uncertain && headRev >= last.Rev {
		// A snapshot has already dropped the entry that would tell.
		return fmt.Errorf("etcdstore: commit revisions %d-%d: outcome unknown: the log moved past them while etcd was unreachable", first.Rev, last.Rev)
	}
	s.conflicts.Add(uint64(len(batch)))
	s.log.Debug("etcdstore: another replica committed first", "revision", first.Rev, "records", len(batch), "head", headRev)
	if len(blobs) > 0 {
		s.dropBlobs(blobs)
	}
	return &registry.ConflictError{Head: headRev}
}

// writeBlobs writes p's inline encoding as chunks under
// blob/<rev>/<id>/. The chunks are invisible until a committed log entry
// references them, so a crash or a refused commit leaves only garbage,
// which snapshots collect.
func (s *Store) writeBlobs(p *pending, deadline time.Time) (blobRef, error) {
	ref := blobRef{rev: p.rec.Rev, id: p.rec.ID, parent: p.rec.Parent, size: uint64(len(p.enc)),
		crc: crc32.Checksum(p.enc, castagnoli)}
	for off := 0; off < len(p.enc); off += s.chunkSize {
		chunk := p.enc[off:min(off+s.chunkSize, len(p.enc))]
		key := s.keys.blobChunk(p.rec.Rev, p.rec.ID, ref.chunks)
		err := s.retry(deadline, "write blob "+key, func(ctx context.Context) error {
			_, err := s.client.Put(ctx, key, string(chunk))
			return err
		})
		if err != nil {
			return blobRef{}, err
		}
		ref.chunks++
	}
	s.blobs.Add(1)
	return ref, nil
}

// dropBlobs deletes the chunks of refused records. It is only tidiness:
// the snapshot that passes their revision deletes them anyway.
func (s *Store) dropBlobs(refs []blobRef) {
	for _, r := range refs {
		ctx, cancel := context.WithTimeout(s.ctx, attemptTimeout)
		_, err := s.client.Delete(ctx, s.keys.blobRecord(r.rev, r.id), clientv3.WithPrefix())
		cancel()
		if err != nil {
			s.log.Debug("etcdstore: leaving blobs of a refused record to the next snapshot", "revision", r.rev, "error", err)
		}
	}
}

// shrink lowers the store's limits after etcd refused a transaction as
// too large (its --max-txn-ops or --max-request-bytes is below what the
// store was told), so that the batch can be split. It reports false when
// there is nothing left to split.
func (s *Store) shrink(batch []*pending, err error) bool {
	switch {
	case errors.Is(err, rpctypes.ErrTooManyOps) && len(batch) > 1:
		s.maxTxnOps = max(2, len(batch)/2+1)
	case s.maxTxnBytes > 32<<10:
		s.maxTxnBytes /= 2
		s.chunkSize = s.maxTxnBytes * 2 / 3
	default:
		return false
	}
	s.log.Warn("etcdstore: etcd refused a transaction as too large; lowering the limits (configure them to match etcd's --max-txn-ops and --max-request-bytes)",
		"records", len(batch), "max_txn_ops", s.maxTxnOps, "max_txn_bytes", s.maxTxnBytes, "error", err)
	return true
}

// retry calls fn until it succeeds, fails permanently, the store closes
// or deadline passes. Each call gets attemptTimeout, so that a connection
// that hangs is retried rather than waited on.
func (s *Store) retry(deadline time.Time, what string, fn func(ctx context.Context) error) error {
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(s.ctx, min(attemptTimeout, max(time.Until(deadline), time.Millisecond)))
		err := fn(ctx)
		cancel()
		switch {
		case err == nil:
			return nil
		case s.ctx.Err() != nil:
			return fmt.Errorf("etcdstore: %s: %w (outcome unknown)", what, registry.ErrStoreClosed)
		case permanent(err):
			return fmt.Errorf("etcdstore: %s: %w", what, err)
		case time.Now().After(deadline):
			return fmt.Errorf("etcdstore: %s: etcd unreachable for %s, outcome unknown: %w", what, s.commitTimeout, err)
		}
		s.retries.Add(1)
		if attempt == 1 || attempt%10 == 0 {
			s.log.Warn("etcdstore: etcd call failed; retrying", "op", what, "attempt", attempt, "error", err)
		}
		if !backoff(s.ctx, attempt) {
			return fmt.Errorf("etcdstore: %s: %w (outcome unknown)", what, registry.ErrStoreClosed)
		}
	}
}

// code returns the gRPC code of an etcd client error.
func code(err error) codes.Code {
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		return ee.Code()
	}
	if st, ok := status.FromError(err); ok {
		return st.Code()
	}
	return codes.Unknown
}

// permanent reports errors that retrying cannot fix, and that etcd
// returns before applying anything.
func permanent(err error) bool {
	switch code(err) {
	case codes.InvalidArgument, codes.ResourceExhausted, codes.PermissionDenied, codes.Unauthenticated, codes.FailedPrecondition:
		return true
	}
	return false
}

// tooLarge reports a transaction refused for its size: etcd's limits, or
// gRPC's message size limit (but not etcd's full database, which is
// also ResourceExhausted).
func tooLarge(err error) bool {
	return errors.Is(err, rpctypes.ErrTooManyOps) || errors.Is(err, rpctypes.ErrRequestTooLarge) ||
		(code(err) == codes.ResourceExhausted && !errors.Is(err, rpctypes.ErrNoSpace))
}
