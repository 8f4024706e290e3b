package filestore_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cryptomesh/cryptomesh/registry/store/filestore"
	"github.com/cryptomesh/cryptomesh/registry/store/filestore/faultfs"
)

// TestCrashProperty runs random workloads on faultfs (concurrent appends
// of random sizes, snapshots, injected write and fsync failures, process
// deaths at random points) and crashes and reopens the store between
// them. Every time, the recovered records must be exactly a prefix of
// what was appended, with every record whose Wait returned nil.
//
// Each seed is a subtest: rerun one with -run 'TestCrashProperty/seed=N'.
// The seed fixes the faults and sizes; goroutine interleaving still
// varies from run to run, which is part of what is being tested.
func TestCrashProperty(t *testing.T) {
	iterations := 200
	if testing.Short() {
		iterations = 40
	}
	for seed := range uint64(iterations) {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			crashProperty(t, seed)
		})
	}
}

// The faults one epoch of crashProperty can run with.
const (
	faultNone = iota
	faultHalt
	faultSync
	faultWrite
	faultRename
	numFaults
)

func crashProperty(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	ffs := faultfs.New()
	segmentSize := int64(200 + rng.IntN(3000))
	var md model
	var acked uint64 // every revision up to here must survive
	for epoch := range 1 + rng.IntN(4) {
		st := open(t, testDir, filestore.WithFS(ffs), filestore.WithSegmentSize(segmentSize), filestore.WithLogger(discard))
		got, err := loadAll(st)
		if err != nil {
			t.Fatalf("epoch %d: Load: %v", epoch, err)
		}
		last := md.check(t, got, acked)
		md.recs, acked = md.recs[:last], last

		fault := rng.IntN(numFaults)
		switch fault {
		case faultHalt:
			ffs.HaltAfter(rng.IntN(80))
		case faultSync:
			ffs.Inject(faultfs.OpSync, 1+rng.IntN(12))
		case faultWrite:
			ffs.Inject(faultfs.OpWrite, 1+rng.IntN(12))
		case faultRename:
			ffs.Inject(faultfs.OpRename, 1)
		}
		ackedNow := runWorkload(t, st, &md, rng, fault != faultNone)
		acked = max(acked, ackedNow)

		if rng.IntN(3) == 0 {
			// A clean shutdown: everything appended is durable.
			if err := st.Close(); err == nil {
				acked = uint64(len(md.recs))
			} else if fault == faultNone {
				t.Fatalf("epoch %d: Close: %v", epoch, err)
			}
			// A crash now loses nothing; it also disarms a fault that
			// never fired, which the next epoch must not inherit.
			if fault != faultNone || rng.IntN(2) == 0 {
				ffs.Crash(rng)
			}
			continue
		}
		// The process dies (whatever it was doing stops), then the power
		// goes.
		ffs.HaltAfter(0)
		st.Close()
		ffs.Crash(rng)
	}
	st := open(t, testDir, filestore.WithFS(ffs), filestore.WithLogger(discard))
	defer st.Close()
	got, err := loadAll(st)
	if err != nil {
		t.Fatalf("final Load: %v", err)
	}
	md.check(t, got, acked)
}

// runWorkload appends from several writers at once, the registry's way,
// while another goroutine takes snapshots, and returns the highest
// revision acknowledged. Without faults every call must succeed.
func runWorkload(t *testing.T, st *filestore.Store, md *model, rng *rand.Rand, faulty bool) uint64 {
	var mu sync.Mutex // the writer lock; it guards md and rng too
	var acked atomic.Uint64
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	report := func(err error) {
		if !faulty {
			select {
			case errs <- err:
			default:
			}
		}
	}
	mu.Lock()
	writers, perWriter, snapshots := 1+rng.IntN(8), 1+rng.IntN(15), rng.IntN(4)
	mu.Unlock()
	for range writers {
		wg.Go(func() {
			for range perWriter {
				mu.Lock()
				rec := md.next(rng, rng.IntN(2000))
				p, err := st.Append(rec)
				if err != nil {
					md.recs = md.recs[:len(md.recs)-1] // never appended
				}
				mu.Unlock()
				if err == nil {
					err = p.Wait(context.Background())
				}
				if err != nil {
					report(fmt.Errorf("revision %d: %w", rec.Rev, err))
					return
				}
				for a := acked.Load(); a < rec.Rev && !acked.CompareAndSwap(a, rec.Rev); a = acked.Load() {
				}
			}
		})
	}
	wg.Go(func() {
		for range snapshots {
			rev := acked.Load()
			if rev == 0 {
				continue
			}
			mu.Lock()
			state := md.state(rev)
			mu.Unlock()
			if err := st.Snapshot(context.Background(), rev, seqOf(state)); err != nil {
				report(fmt.Errorf("snapshot at %d: %w", rev, err))
				return
			}
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("no fault was injected, yet: %v", err)
	}
	return acked.Load()
}
