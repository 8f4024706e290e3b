package ads

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cryptomesh/cryptomesh/registry"
	"github.com/cryptomesh/cryptomesh/xds"
)

// generation is one registry revision translated. It is immutable once
// published; the snapshots of nodes without secrets of their own are
// built once per generation and shared by every stream with the same kind,
// binding and outbound address, whose resources are in turn the
// translator's shared, marshalled-once values.
type generation struct {
	rev  uint64
	view *registry.View
	tr   *xds.Translator
	// changedAt is when the first registry change folded into this
	// generation was committed (zero for the first generation): the start
	// of the convergence a node's ACK ends.
	changedAt time.Time
	// states are the endpoints' latest states, to tell an EndpointState
	// write that changes health from one that does not.
	states map[string]string
	// next is closed when a newer generation replaces this one.
	next chan struct{}

	mu    sync.Mutex
	snaps map[snapKey]*snapEntry
}

// snapKey identifies nodes that get the same snapshot.
type snapKey struct {
	kind     xds.ClientKind
	binding  xds.Binding
	outbound string
}

type snapEntry struct {
	once sync.Once
	snap *xds.Snapshot
	err  error
}

// snapshot translates for n, once per distinct key unless n has
// credentials of its own (a node's key is never shared).
func (g *generation) snapshot(n xds.Node) (*xds.Snapshot, error) {
	if n.Credentials != nil {
		return g.tr.Translate(n)
	}
	key := snapKey{kind: n.Kind, binding: n.Binding, outbound: n.OutboundAddress}
	g.mu.Lock()
	e := g.snaps[key]
	if e == nil {
		e = &snapEntry{}
		g.snaps[key] = e
	}
	g.mu.Unlock()
	e.once.Do(func() { e.snap, e.err = g.tr.Translate(n) })
	return e.snap, e.err
}

// endpointRole is the role endpoint e acts in at this revision.
func (g *generation) endpointRole(e string) (string, bool) {
	o := g.view.Object(registry.KindEndpoint, e)
	if o == nil {
		return "", false
	}
	ep, ok := o.Value.(*registry.Endpoint)
	if !ok {
		return "", false
	}
	return ep.Role, true
}

// watchedKinds are the kinds whose changes can change a configuration or a
// stream's right to exist. Function states and results are history that
// nothing in xDS reads.
func watchedKinds() []registry.Kind {
	return []registry.Kind{
		registry.KindRole, registry.KindSecurityPolicy, registry.KindEndpoint, registry.KindEndpointState,
		registry.KindService, registry.KindMicroservice, registry.KindFunction, registry.KindJoinToken,
	}
}

// debouncer decides when a burst of changes is translated: once the
// registry has been quiet for quiet, or maxWait after the burst's first
// change however busy the registry stays. It holds no timer, so it is
// tested by feeding it times.
type debouncer struct {
	quiet, maxWait time.Duration
	pending        bool
	first, last    time.Time
	commit         time.Time // earliest registry commit of the burst
}

func (d *debouncer) add(now time.Time) {
	if !d.pending {
		d.pending, d.first = true, now
	}
	d.last = now
}

// committed records the commit time of a change folded into the burst;
// the earliest one starts the burst's convergence.
func (d *debouncer) committed(at time.Time) {
	if !at.IsZero() && (d.commit.IsZero() || at.Before(d.commit)) {
		d.commit = at
	}
}

// due is when the pending burst is to be translated.
func (d *debouncer) due() time.Time {
	return minTime(d.last.Add(d.quiet), d.first.Add(d.maxWait))
}

// take ends the pending burst and returns when it began: the commit of
// its first change in the registry, or its arrival here if unknown.
func (d *debouncer) take() time.Time {
	first := d.first
	if !d.commit.IsZero() {
		first = d.commit
	}
	*d = debouncer{quiet: d.quiet, maxWait: d.maxWait}
	return first
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// Run follows the registry until ctx ends: it translates the current
// revision, then every burst of relevant changes, and publishes each
// generation to the streams. A revision that cannot be translated is
// logged and skipped: nodes keep the last good configuration.
func (s *Server) Run(ctx context.Context) error {
	sub := s.reg.Subscribe(watchedKinds()...)
	defer sub.Close()
	if err := s.rebuild(time.Time{}); err != nil {
		return fmt.Errorf("ads: first translation: %w", err)
	}
	close(s.started)

	d := debouncer{quiet: s.quiet, maxWait: s.maxWait}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-sub.C():
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return errors.New("ads: the registry closed its change feed")
			}
			config, tokens := s.classify(ev)
			if tokens {
				s.recheckTokens(ctx)
			}
			if config {
				d.add(time.Now())
				d.committed(ev.Committed)
				timer.Reset(time.Until(d.due()))
			}
		case <-timer.C:
			if !d.pending {
				continue
			}
			if wait := time.Until(d.due()); wait > 0 {
				timer.Reset(wait)
				continue
			}
			if err := s.rebuild(d.take()); err != nil {
				s.log.Error("xDS: registry revision not translated; nodes keep their configuration", "error", err)
			}
		}
	}
}

// classify tells whether an event can change configuration, and whether
// it touched join-token records.
func (s *Server) classify(ev registry.Event) (config, tokens bool) {
	if ev.Resync {
		return true, true
	}
	states := false
	for _, c := range ev.Changes {
		switch c.Kind {
		case registry.KindJoinToken:
			tokens = true
		case registry.KindEndpointState:
			states = true
		default:
			config = true
		}
	}
	if !config && states {
		// Only states: a new translation only if some endpoint's latest
		// state is not the one translated (most reports repeat it).
		config = s.statesChanged(s.reg.View())
	}
	return config, tokens
}

// statesChanged compares the endpoints' latest states in v with those of
// the current generation.
func (s *Server) statesChanged(v *registry.View) bool {
	g := s.gen.Load()
	if g == nil {
		return true
	}
	now := latestStates(v)
	if len(now) != len(g.states) {
		return true
	}
	for e, st := range now {
		if prev, ok := g.states[e]; !ok || prev != st {
			return true
		}
	}
	return false
}

// latestStates maps every endpoint to its latest state ("" when none).
func latestStates(v *registry.View) map[string]string {
	out := map[string]string{}
	for o := range v.All(registry.KindEndpoint) {
		st := ""
		if val, err := v.Latest(registry.KindEndpointState, o.ID); err == nil {
			if es, ok := val.(*registry.EndpointState); ok {
				st = es.State
			}
		}
		out[o.ID] = st
	}
	return out
}

// rebuild translates the registry's current revision, builds the snapshots
// of the connected nodes that share them, and publishes the generation.
func (s *Server) rebuild(changedAt time.Time) error {
	start := time.Now()
	v := s.reg.View()
	model, err := xds.NewModel(v)
	if err != nil {
		return fmt.Errorf("model of revision %d: %w", v.Revision(), err)
	}
	tr, err := xds.NewTranslator(model, s.xopts)
	if err != nil {
		return fmt.Errorf("translator of revision %d: %w", v.Revision(), err)
	}
	g := &generation{
		rev: v.Revision(), view: v, tr: tr, changedAt: changedAt,
		states: latestStates(v), next: make(chan struct{}), snaps: map[snapKey]*snapEntry{},
	}
	// Warm the shared snapshots, so that build time is measured here and
	// streams find them ready.
	for _, n := range s.sharedNodes() {
		if _, err := g.snapshot(n); err != nil {
			s.log.Warn("xDS: node not translated", "node", n.ID, "error", err)
		}
	}
	for _, w := range model.Warnings() {
		s.log.Debug("xDS translation", "revision", g.rev, "warning", w)
	}
	s.metrics.build.Observe(time.Since(start).Seconds())
	old := s.gen.Swap(g)
	if old != nil {
		close(old.next)
	}
	s.log.Debug("xDS: revision translated", "revision", g.rev, "took", time.Since(start))
	return nil
}

// sharedNodes are the distinct translation keys of connected streams.
func (s *Server) sharedNodes() []xds.Node {
	s.mu.Lock()
	defer s.mu.Unlock()
	seen := map[snapKey]bool{}
	var out []xds.Node
	for st := range s.streams {
		n, ok := st.sharedNode()
		if !ok {
			continue
		}
		k := snapKey{kind: n.Kind, binding: n.Binding, outbound: n.OutboundAddress}
		if !seen[k] {
			seen[k] = true
			out = append(out, n)
		}
	}
	return out
}

// recheckTokens authenticates again every stream that came in on a join
// token, after token records changed: a revoked token's streams end.
func (s *Server) recheckTokens(ctx context.Context) {
	s.mu.Lock()
	var check []*stream
	for st := range s.streams {
		if st.cred.token != "" {
			check = append(check, st)
		}
	}
	s.mu.Unlock()
	for _, st := range check {
		if _, err := s.auth.FromToken(ctx, st.cred.token); err != nil {
			st.log.Info("xDS: stream ended: its join token is no longer valid", "error", err)
			st.cancel(errTokenInvalid(err))
		}
	}
}
