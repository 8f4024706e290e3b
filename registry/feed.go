package registry

import (
	"slices"
	"sync"
	"time"
)

// Event tells a subscriber that a durable revision changed entities of the
// kinds it watches.
type Event struct {
	Rev     uint64
	Changes []Change
	// Committed is when the revision was committed here: its record
	// appended under the writer lock, or a replicated record applied.
	// Consumers measure convergence from it (registry commit → ACK).
	Committed time.Time
	// Resync means events were dropped because the subscriber fell
	// behind: it must re-read the registry instead of relying on Changes.
	Resync bool
}

// Subscription receives the change feed, filtered by kind.
type Subscription struct {
	r      *Registry
	kinds  []Kind
	ch     chan Event
	mu     sync.Mutex
	behind bool
	closed bool
}

// subscriptionBuffer is how many events a subscriber may lag behind before
// it is told to resync.
const subscriptionBuffer = 256

// Subscribe returns a subscription to changes of the given kinds (all
// kinds when none is given). Events arrive in revision order, only for
// durable revisions; revisions that touch none of the kinds are skipped.
func (r *Registry) Subscribe(kinds ...Kind) *Subscription {
	s := &Subscription{r: r, kinds: kinds, ch: make(chan Event, subscriptionBuffer)}
	r.pubMu.Lock()
	r.subs[s] = struct{}{}
	r.pubMu.Unlock()
	return s
}

// C delivers the events; it is closed when the subscription or the
// registry is closed.
func (s *Subscription) C() <-chan Event { return s.ch }

// Close ends the subscription.
func (s *Subscription) Close() {
	s.r.pubMu.Lock()
	delete(s.r.subs, s)
	s.r.pubMu.Unlock()
	s.close()
}

func (s *Subscription) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.closed = true
		close(s.ch)
	}
}

// notify delivers ev to every interested subscriber without ever blocking
// the write path. Called with pubMu held, in revision order.
func (r *Registry) notify(ev Event) {
	for s := range r.subs {
		s.deliver(ev)
	}
}

func (s *Subscription) deliver(ev Event) {
	changes := ev.Changes
	if len(s.kinds) > 0 {
		changes = slices.DeleteFunc(slices.Clone(changes), func(c Change) bool { return !slices.Contains(s.kinds, c.Kind) })
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	if s.behind {
		select {
		case s.ch <- Event{Rev: ev.Rev, Resync: true, Committed: ev.Committed}:
			s.behind = false
		default:
		}
		return
	}
	if len(changes) == 0 {
		return
	}
	select {
	case s.ch <- Event{Rev: ev.Rev, Changes: changes, Committed: ev.Committed}:
	default:
		s.behind = true
	}
}
