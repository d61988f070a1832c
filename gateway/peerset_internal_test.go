package gateway

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func testPeerSet(t *testing.T, lookup func(context.Context, string) ([]netip.Addr, error)) *peerSet {
	t.Helper()
	ids, err := newSessionIDs(SessionsConfig{PeerListen: ":8445", Advertise: "10.0.0.7:8445"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	return newPeerSet(SessionsConfig{PeersDNS: "files-peers.tools.svc.cluster.local."}, ids, lookup, slog.New(slog.NewTextHandler(io.Discard, nil)))
}

// TestSlowResolverStallsNoOneElse is the attacker's test (any client, no token needed: a session id is
// looked at before authentication): forged ids naming addresses the replica set lacks each force a
// lookup; with a resolver that hangs to its deadline, those lookups ran one after the other under the
// set's lock, and every initialize (which needs the set) waited behind all of them. Now one lookup runs
// at a time, outside the lock, and a request waits for at most one.
func TestSlowResolverStallsNoOneElse(t *testing.T) {
	var lookups atomic.Int32
	p := testPeerSet(t, func(ctx context.Context, _ string) ([]netip.Addr, error) {
		lookups.Add(1)
		<-ctx.Done()
		return nil, ctx.Err()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for i := range byte(8) {
		wg.Go(func() {
			for ctx.Err() == nil {
				p.isMember(ctx, netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 1, 0, i}), 8445))
			}
		})
	}
	time.Sleep(300 * time.Millisecond) // the forged ids are queued
	start := time.Now()
	p.members(context.Background())
	waited := time.Since(start)
	cancel()
	wg.Wait()
	if waited > peersLookupTimeout+500*time.Millisecond {
		t.Fatalf("an initialize waited %s for the replica set behind forged ids' lookups (one lookup is at most %s)", waited, peersLookupTimeout)
	}
	if n := lookups.Load(); n > 5 {
		t.Fatalf("%d lookups in 3 s with a resolver that hangs %s each: not one at a time", n, peersLookupTimeout)
	}
}

// TestAnswerWithoutThisReplicaIsNotUsed is the attacker's test (a namespace user who creates the
// Service <name>-peers before the operator does, an ExternalName or one selecting pods of theirs): an
// answer that does not list this replica is not its server's replica set, so no request is sent to a
// home picked from it and no session id naming one of its addresses is dialled.
func TestAnswerWithoutThisReplicaIsNotUsed(t *testing.T) {
	foreign := []netip.Addr{netip.MustParseAddr("10.0.0.5"), netip.MustParseAddr("10.0.0.6")}
	p := testPeerSet(t, func(context.Context, string) ([]netip.Addr, error) { return foreign, nil })
	if m := p.members(context.Background()); len(m) != 0 {
		t.Fatalf("an answer without this replica (10.0.0.7) was taken as the replica set: %v", m)
	}
	if p.isMember(context.Background(), netip.MustParseAddrPort("10.0.0.5:8445")) {
		t.Fatal("a session id naming an address of a foreign answer would be dialled")
	}
	own := testPeerSet(t, func(context.Context, string) ([]netip.Addr, error) {
		return append(foreign, netip.MustParseAddr("10.0.0.7")), nil
	})
	if m := own.members(context.Background()); len(m) != 3 || !own.isMember(context.Background(), netip.MustParseAddrPort("10.0.0.5:8445")) {
		t.Fatalf("the server's own replica set (this replica listed) is not used: %v", m)
	}
}
