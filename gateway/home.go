package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// A principal's home replica. A session is exact on the replica that holds it, but the tool-chain rule
// and the rate limit are per principal, across its sessions: were a principal's sessions on several
// replicas, each would count its own. So every request without a session id (an initialize, which
// makes a session, and every request to a server that issues none) is served by the principal's home:
// the replica that rendezvous hashing of (principal, replica peer address) picks among the live
// replicas. A replica that gets such a request for a principal homed elsewhere relays it, untouched, to
// the home's peer port (the session relay, mutual TLS), which checks the token again, takes the
// request from the principal's rate bucket and issues the session id naming itself; every later request
// of that session is relayed to it as any session's. The live replicas are the addresses of
// sessions.peersDNS (a headless Service of the server's ready pods), filtered as session ids are. When
// they change, some principals' homes move: their existing sessions stay with the replicas that hold
// them (the ids name them), their new sessions go to the new home; a lost replica's chain state is lost
// with it, as on a restart.

const (
	// peersCacheTTL is how long a resolved set of live replicas is used before it is resolved again.
	peersCacheTTL = 2 * time.Second
	// peersLookupTimeout bounds the resolution of sessions.peersDNS.
	peersLookupTimeout = time.Second
	// peersRecheckAfter is how old a cached answer may be before an address it lacks is looked up again.
	peersRecheckAfter = 250 * time.Millisecond
	// maxPeers bounds the live replicas taken from one answer.
	maxPeers = 256
)

// peerSet is the live replicas, from sessions.peersDNS.
type peerSet struct {
	name   string
	lookup func(ctx context.Context, host string) ([]netip.Addr, error)
	ids    *sessionIDs
	log    *slog.Logger

	mu sync.Mutex
	// live is the last answer, fresh until until; checked is when its lookup ended.
	live           []netip.AddrPort
	until, checked time.Time
	// inflight is closed when the lookup in flight ends; nil when none is. One lookup at a time, and
	// no lock held while it runs: a slow resolver delays the requests that need its answer by at most
	// peersLookupTimeout, and holds up no others.
	inflight chan struct{}
}

// newPeerSet is the live replica set of sessions.peersDNS, or nil without it.
func newPeerSet(c SessionsConfig, ids *sessionIDs, lookup func(context.Context, string) ([]netip.Addr, error), log *slog.Logger) *peerSet {
	if c.PeersDNS == "" || !ids.self.IsValid() {
		return nil
	}
	if lookup == nil {
		r := &net.Resolver{}
		lookup = func(ctx context.Context, host string) ([]netip.Addr, error) { return r.LookupNetIP(ctx, "ip", host) }
	}
	return &peerSet{name: c.PeersDNS, lookup: lookup, ids: ids, log: log}
}

// members returns the live replicas' peer addresses, sorted: those of the name's addresses that are
// peers (as a session id's owner must be), at the peer port. Empty when the name does not resolve
// (logged), or its answer does not list this replica: the caller serves the request itself. The
// answer is kept for peersCacheTTL, an error too, so a failing resolver costs one lookup per period,
// never one per request.
func (p *peerSet) members(ctx context.Context) []netip.AddrPort {
	p.mu.Lock()
	if time.Now().Before(p.until) {
		defer p.mu.Unlock()
		return p.live
	}
	done := p.refreshLocked(ctx)
	p.mu.Unlock()
	return p.await(ctx, done)
}

// isMember reports whether addr is a live replica. An address the fresh answer lacks is looked up
// again once the last lookup ended peersRecheckAfter ago (a replica just scaled up and not yet in the
// cache is not refused for the cache's life; forged ids cost at most one lookup per
// peersRecheckAfter, one at a time).
func (p *peerSet) isMember(ctx context.Context, addr netip.AddrPort) bool {
	p.mu.Lock()
	now := time.Now()
	fresh := now.Before(p.until)
	if fresh && slices.Contains(p.live, addr) {
		p.mu.Unlock()
		return true
	}
	if fresh && p.inflight == nil && now.Before(p.checked.Add(peersRecheckAfter)) {
		p.mu.Unlock()
		return false
	}
	done := p.refreshLocked(ctx)
	p.mu.Unlock()
	return slices.Contains(p.await(ctx, done), addr)
}

// await waits for the lookup done signals (or the caller's end) and returns the answer.
func (p *peerSet) await(ctx context.Context, done <-chan struct{}) []netip.AddrPort {
	select {
	case <-done:
	case <-ctx.Done():
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if time.Now().After(p.until) {
		return nil // no answer yet: serve here, dial nothing
	}
	return p.live
}

// refreshLocked starts a lookup unless one is in flight and returns the channel closed when it ends.
// The lookup outlives the request's cancellation (a client that goes away does not leave an error
// cached for the others), under peersLookupTimeout. Called with p.mu held.
func (p *peerSet) refreshLocked(ctx context.Context) <-chan struct{} {
	if p.inflight != nil {
		return p.inflight
	}
	done := make(chan struct{})
	p.inflight = done
	ctx = context.WithoutCancel(ctx)
	go func() {
		defer close(done)
		live := p.resolve(ctx)
		p.mu.Lock()
		now := time.Now()
		p.live, p.until, p.checked, p.inflight = live, now.Add(peersCacheTTL), now, nil
		p.mu.Unlock()
	}()
	return done
}

// resolve looks the name up (see members).
func (p *peerSet) resolve(ctx context.Context) []netip.AddrPort {
	ctx, cancel := context.WithTimeout(ctx, peersLookupTimeout)
	defer cancel()
	ips, err := p.lookup(ctx, p.name)
	var dnsErr *net.DNSError
	switch {
	case errors.As(err, &dnsErr) && dnsErr.IsNotFound:
		// the operator keeps the headless Service only at more than one replica
		p.log.Debug("sessions.peersDNS does not exist; requests without a session are served by the replica they reach", "name", p.name)
		return nil
	case err != nil:
		p.log.Warn("sessions.peersDNS does not resolve; requests without a session are served by the replica they reach until it does", "name", p.name, "err", err)
		return nil
	}
	var live []netip.AddrPort
	for _, ip := range ips {
		ap, err := p.ids.peer(netip.AddrPortFrom(ip.Unmap(), p.ids.self.Port()).String())
		if err != nil {
			p.log.Warn("sessions.peersDNS: an address that is not a peer is left out", "name", p.name, "err", err)
			continue
		}
		if len(live) < maxPeers {
			live = append(live, ap)
		}
	}
	slices.SortFunc(live, func(a, b netip.AddrPort) int { return a.Compare(b) })
	live = slices.Compact(live)
	// The replicas' headless Service lists this replica too (once it is ready): an answer without it is
	// not this server's replica set (another Service of that name, an ExternalName's alias), and
	// nothing is relayed on it.
	if !slices.Contains(live, p.ids.self) {
		if len(ips) > 0 {
			p.log.Warn("sessions.peersDNS does not list this replica; requests without a session are served here and no session is relayed", "name", p.name, "self", p.ids.self, "answer", ips)
		}
		return nil
	}
	return live
}

// homeOf is the replica of members that rendezvous hashing picks for key: the highest hash of (key,
// address). Every replica with the same members picks the same; a member's loss moves only the keys it
// was home to. Invalid when members is empty.
func homeOf(key string, members []netip.AddrPort) netip.AddrPort {
	var best netip.AddrPort
	var bestScore uint64
	for _, m := range members {
		h := sha256.New()
		h.Write([]byte(key))
		h.Write([]byte{0})
		h.Write([]byte(m.String()))
		if s := binary.BigEndian.Uint64(h.Sum(nil)); !best.IsValid() || s > bestScore {
			best, bestScore = m, s
		}
	}
	return best
}

// relayHome relays a request without a session id to its principal's home when that is another
// replica, and reports whether it did. A request a replica relayed is served where it arrived, never
// relayed again (replicas whose sets differ for a moment do not bounce it).
func (g *Gateway) relayHome(w http.ResponseWriter, r *http.Request, c *caller) bool {
	if g.peers == nil || r.Header.Get("Mcp-Session-Id") != "" {
		return false
	}
	if _, fromPeer := peerClient(r.Context()); fromPeer {
		return false
	}
	home := homeOf(c.rateKey, g.peers.members(r.Context()))
	if !home.IsValid() || home == g.ids.self {
		return false
	}
	g.metrics.sessions.WithLabelValues("homed").Inc()
	g.relayTo(w, r, relayDest{addr: home, local: func() { g.serveCaller(w, r, c) }})
	return true
}
