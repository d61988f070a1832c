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

	mu       sync.Mutex
	until    time.Time
	resolved time.Time
	live     []netip.AddrPort
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
// (logged): the caller serves the request itself. The answer is kept for peersCacheTTL, an error too,
// so a failing resolver costs one lookup per period, never one per request. The lookup outlives the
// request's cancellation (a client that goes away does not leave an error cached for the others).
func (p *peerSet) members(ctx context.Context) []netip.AddrPort {
	p.mu.Lock()
	defer p.mu.Unlock()
	if time.Now().Before(p.until) {
		return p.live
	}
	return p.resolveLocked(ctx)
}

// isMember reports whether addr is a live replica. An address the cached answer lacks is looked up
// again once the answer is peersRecheckAfter old (a replica just scaled up and not yet in the cache
// is not refused for the cache's life; forged ids cost at most one lookup per peersRecheckAfter).
func (p *peerSet) isMember(ctx context.Context, addr netip.AddrPort) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	if now.After(p.until) || (!slices.Contains(p.live, addr) && now.After(p.resolved.Add(peersRecheckAfter))) {
		p.resolveLocked(ctx)
	}
	return slices.Contains(p.live, addr)
}

// resolveLocked resolves the name and caches the answer (see members).
func (p *peerSet) resolveLocked(ctx context.Context) []netip.AddrPort {
	now := time.Now()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), peersLookupTimeout)
	defer cancel()
	ips, err := p.lookup(ctx, p.name)
	var live []netip.AddrPort
	var dnsErr *net.DNSError
	switch {
	case errors.As(err, &dnsErr) && dnsErr.IsNotFound:
		// the operator keeps the headless Service only at more than one replica
		p.log.Debug("sessions.peersDNS does not exist; requests without a session are served by the replica they reach", "name", p.name)
	case err != nil:
		p.log.Warn("sessions.peersDNS does not resolve; requests without a session are served by the replica they reach until it does", "name", p.name, "err", err)
	}
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
	if err == nil && len(live) == 0 {
		p.log.Warn("sessions.peersDNS names no peer; requests without a session are served by the replica they reach", "name", p.name)
	}
	p.live, p.until, p.resolved = live, now.Add(peersCacheTTL), now
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
