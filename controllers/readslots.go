package controllers

import (
	"context"
	"sync"
)

// maxPinReads bounds the gateway status reads in flight across all servers.
const maxPinReads = 16

// maxPinReadsPerNamespace bounds the reads in flight for the servers of one namespace: a namespace
// whose gateways accept and never answer holds at most this many of the maxPinReads, so the others'
// reads find a free one at once while fewer than maxPinReads/maxPinReadsPerNamespace namespaces hang.
const maxPinReadsPerNamespace = 4

// readSlots is the budget of concurrent status reads, shared fairly by namespace: a namespace takes at
// most perNamespace of total, and a freed slot goes to the waiting namespace that holds the fewest
// (the longest waiting first among equals). A read waiting for a slot gives up when its context ends.
type readSlots struct {
	mu           sync.Mutex
	total        int
	perNamespace int
	inUse        int
	held         map[string]int
	waiters      []*slotWaiter // in arrival order
}

type slotWaiter struct {
	namespace string
	granted   chan struct{} // closed when the slot is the waiter's
}

func newReadSlots(total, perNamespace int) *readSlots {
	return &readSlots{total: total, perNamespace: min(perNamespace, total), held: map[string]int{}}
}

// acquire takes a slot for a read of a server in the namespace; false if ctx ended first.
func (s *readSlots) acquire(ctx context.Context, namespace string) bool {
	s.mu.Lock()
	w := &slotWaiter{namespace: namespace, granted: make(chan struct{})}
	s.waiters = append(s.waiters, w)
	s.dispatch()
	s.mu.Unlock()
	select {
	case <-w.granted:
		return true
	case <-ctx.Done():
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-w.granted: // granted as the context ended: hand it on
		s.releaseLocked(namespace)
	default:
		for i, o := range s.waiters {
			if o == w {
				s.waiters = append(s.waiters[:i], s.waiters[i+1:]...)
				break
			}
		}
	}
	return false
}

// release returns a slot the namespace's read held.
func (s *readSlots) release(namespace string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.releaseLocked(namespace)
}

func (s *readSlots) releaseLocked(namespace string) {
	s.inUse--
	if s.held[namespace]--; s.held[namespace] <= 0 {
		delete(s.held, namespace)
	}
	s.dispatch()
}

// dispatch grants free slots to waiters: each to the waiter of the namespace holding the fewest,
// below its share.
func (s *readSlots) dispatch() {
	for s.inUse < s.total {
		best := -1
		for i, w := range s.waiters {
			if n := s.held[w.namespace]; n < s.perNamespace && (best < 0 || n < s.held[s.waiters[best].namespace]) {
				best = i
			}
		}
		if best < 0 {
			return
		}
		w := s.waiters[best]
		s.waiters = append(s.waiters[:best], s.waiters[best+1:]...)
		s.inUse++
		s.held[w.namespace]++
		close(w.granted)
	}
}
