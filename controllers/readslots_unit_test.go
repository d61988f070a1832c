package controllers

import (
	"context"
	"testing"
	"time"
)

// TestReadSlotsShareByNamespace: a namespace takes at most its share of the reads; another namespace
// then finds a slot at once; once every slot is held, a freed one goes to the waiting namespace
// holding the fewest, and a waiter whose context ended is not in the queue.
func TestReadSlotsShareByNamespace(t *testing.T) {
	s := newReadSlots(4, 2)
	bg := context.Background()
	short := func() context.Context {
		ctx, cancel := context.WithTimeout(bg, 50*time.Millisecond)
		t.Cleanup(cancel)
		return ctx
	}
	for range 2 {
		if !s.acquire(short(), "a") {
			t.Fatal("namespace a did not get its share")
		}
	}
	if s.acquire(short(), "a") {
		t.Fatal("namespace a got more than its share")
	}
	if !s.acquire(short(), "b") || !s.acquire(short(), "c") {
		t.Fatal("namespaces b and c waited while a held its share")
	}
	// All four held: b, then d wait; a slot a frees goes to d (holds none), not to b (holds one).
	got := make(chan string, 2)
	for _, ns := range []string{"b", "d"} {
		go func() {
			ctx, cancel := context.WithTimeout(bg, 5*time.Second)
			defer cancel()
			if s.acquire(ctx, ns) {
				got <- ns
			}
		}()
	}
	time.Sleep(50 * time.Millisecond)
	s.release("a")
	select {
	case ns := <-got:
		if ns != "d" {
			t.Fatalf("the freed slot went to %s, holding more than d", ns)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("nobody got the freed slot")
	}
	s.release("a")
	select {
	case ns := <-got:
		if ns != "b" {
			t.Fatalf("the second freed slot went to %s", ns)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("b did not get the second freed slot")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.inUse != 4 || len(s.waiters) != 0 || s.held["a"] != 0 || s.held["b"] != 2 || s.held["d"] != 1 {
		t.Fatalf("inUse %d, waiters %d, held %v", s.inUse, len(s.waiters), s.held)
	}
}
