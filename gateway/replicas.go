package gateway

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Sessions across replicas, without a key the replicas share. The gateway never hands the server's own
// session id to a client: the replica that initializes a session issues an id naming its own peer
// address and a random handle (256 bits), and keeps what the handle stands for (the server's id and the
// principal it was issued to) itself. A request for a session another replica holds is relayed,
// untouched, to that replica's peer port, which does every check as for its own clients (an unknown
// handle, or another principal, is 404); so the chain rule and rate limits of a session are counted in
// one place. An id is dialled only at the peer port, and only at an address of the configured peer
// ranges (never a loopback or link-local one). The relay is authenticated by mutual TLS: the peer port
// serves only a client certificate from the gateways' CA for this server's names, which the server
// container beside a gateway cannot present (it cannot read the gateway's key). A replica that is gone,
// or restarted, makes the relay end in 404, which the MCP transport defines as "initialize a new
// session".

const (
	// sessionIDPrefix starts every session id the gateway issues (version 2: owner and handle).
	sessionIDPrefix = "mw2."
	// maxSessionIDBytes bounds a session id a client sends; longer ones are refused before decoding.
	maxSessionIDBytes = 256
	// maxUpstreamSessionIDBytes bounds the server's session id the gateway keeps.
	maxUpstreamSessionIDBytes = 512
	// handleBytes is the size of a session handle: unguessable, so an id cannot be made up.
	handleBytes = 32
	// maxSessionIDs bounds the handles a replica keeps (as the session table: the least recently used
	// goes first; its client gets 404 and initializes again).
	maxSessionIDs = 10000
	// relayClientHeader carries the client's address from the relaying replica to the owner (its rate
	// key without auth). It is read only on the peer port, from a replica that proved who it is.
	relayClientHeader = "Mcp-Warden-Relay-Client"
	// peerDialTimeout bounds the dial of the replica that holds a session: a replica that is gone costs
	// the client at most this before its 404.
	peerDialTimeout = 2 * time.Second
)

// sessionRef is what a handle stands for, on the replica that issued it.
type sessionRef struct {
	// Upstream is the server's session id.
	Upstream string
	// Principal is the caller the session was issued to; anyone else gets 404.
	Principal string
	// raw is the id the client holds; handle its last part.
	raw, handle string
	lastUsed    time.Time
}

// sessionIDs issues session ids, keeps what their handles stand for, and decides which addresses are
// peers.
type sessionIDs struct {
	self  netip.AddrPort
	peers []netip.Prefix

	mu       sync.Mutex
	m        map[string]*sessionRef
	max      int
	perOwner int
	owned    map[string]int
}

// newSessionIDs keeps at most maxSessionIDs handles, and at most perPrincipal of one principal (0: no cap
// but the table's, as where every caller is the one anonymous principal): a principal at its cap
// displaces its own least recently used handle, never another principal's.
func newSessionIDs(c SessionsConfig, perPrincipal int) (*sessionIDs, error) {
	if c.PeerListen != "" && c.Advertise == "" {
		return nil, errors.New("sessions.advertise: empty with sessions.peerListen set; set it to this replica's IP and peer port (the gateway binary sets it from $MCP_WARDEN_POD_IP)")
	}
	if perPrincipal <= 0 || perPrincipal > maxSessionIDs {
		perPrincipal = maxSessionIDs
	}
	s := &sessionIDs{m: map[string]*sessionRef{}, max: maxSessionIDs, perOwner: perPrincipal, owned: map[string]int{}}
	if c.Advertise != "" {
		s.self = netip.MustParseAddrPort(c.Advertise) // validated
	}
	for _, p := range c.PeerCIDRs {
		s.peers = append(s.peers, netip.MustParsePrefix(p).Masked())
	}
	return s, nil
}

// issue makes a new session id for the server's session id and the principal, and keeps it.
func (s *sessionIDs) issue(upstream, principal string) (string, error) {
	if len(upstream) > maxUpstreamSessionIDBytes {
		return "", fmt.Errorf("the MCP server's session id is %d bytes, more than %d", len(upstream), maxUpstreamSessionIDBytes)
	}
	b := make([]byte, handleBytes)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("session handle: %w", err)
	}
	owner := ""
	if s.self.IsValid() {
		owner = s.self.String()
	}
	ref := &sessionRef{Upstream: upstream, Principal: principal, handle: base64.RawURLEncoding.EncodeToString(b), lastUsed: time.Now()}
	ref.raw = sessionIDPrefix + base64.RawURLEncoding.EncodeToString([]byte(owner)) + "." + ref.handle
	s.mu.Lock()
	defer s.mu.Unlock()
	// a principal at its cap displaces its own least recently used handle; a full table its least
	// recently used one
	if s.owned[principal] >= s.perOwner || len(s.m) >= s.max {
		from := evictFrom(s.owned, principal, s.perOwner)
		var oldest *sessionRef
		for _, o := range s.m {
			if o.Principal == from && (oldest == nil || o.lastUsed.Before(oldest.lastUsed)) {
				oldest = o
			}
		}
		s.forgetLocked(oldest.handle)
	}
	s.m[ref.handle] = ref
	s.owned[principal]++
	return ref.raw, nil
}

// parse splits a session id into the owner it names ("" when issued without peers) and its handle;
// false if it is not an id in the gateway's format.
func parseSessionID(id string) (owner, handle string, ok bool) {
	rest, found := strings.CutPrefix(id, sessionIDPrefix)
	if !found || len(id) > maxSessionIDBytes {
		return "", "", false
	}
	enc, handle, found := strings.Cut(rest, ".")
	if !found {
		return "", "", false
	}
	o, err := base64.RawURLEncoding.DecodeString(enc)
	if err != nil {
		return "", "", false
	}
	if h, err := base64.RawURLEncoding.DecodeString(handle); err != nil || len(h) != handleBytes {
		return "", "", false
	}
	return string(o), handle, true
}

// lookup returns what a handle this replica issued stands for, or nil.
func (s *sessionIDs) lookup(handle string) *sessionRef {
	s.mu.Lock()
	defer s.mu.Unlock()
	ref := s.m[handle]
	if ref != nil {
		ref.lastUsed = time.Now()
	}
	return ref
}

// forget drops a handle (its session was deleted).
func (s *sessionIDs) forget(handle string) {
	s.mu.Lock()
	s.forgetLocked(handle)
	s.mu.Unlock()
}

func (s *sessionIDs) forgetLocked(handle string) {
	ref := s.m[handle]
	if ref == nil {
		return
	}
	delete(s.m, handle)
	if s.owned[ref.Principal]--; s.owned[ref.Principal] <= 0 {
		delete(s.owned, ref.Principal)
	}
}

// mine reports whether this replica issued ids naming owner.
func (s *sessionIDs) mine(owner string) bool {
	return owner == "" || (s.self.IsValid() && owner == s.self.String())
}

// peer returns the address to relay a session to, or why it is not a peer (then it is never dialled).
func (s *sessionIDs) peer(owner string) (netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(owner)
	switch {
	case !s.self.IsValid():
		return ap, errors.New("this gateway has no peers (sessions.peerListen is not set)")
	case err != nil:
		return ap, fmt.Errorf("owner %q is not ip:port", owner)
	case ap.Port() != s.self.Port():
		return ap, fmt.Errorf("owner %s is not on the peer port %d", ap, s.self.Port())
	}
	ip := ap.Addr().Unmap()
	if len(s.peers) > 0 {
		for _, p := range s.peers {
			if p.Contains(ip) {
				return netip.AddrPortFrom(ip, ap.Port()), nil
			}
		}
		return ap, fmt.Errorf("owner %s is outside sessions.peerCIDRs", ip)
	}
	if ip.IsLoopback() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() || ip.IsUnspecified() || ip.IsMulticast() || ip.Zone() != "" {
		return ap, fmt.Errorf("owner %s is a loopback, link-local, unspecified or multicast address", ip)
	}
	return netip.AddrPortFrom(ip, ap.Port()), nil
}

type (
	sessionRefKey struct{}
	peerKey       struct{}
	relayDestKey  struct{}
)

type relayDest struct {
	addr   netip.AddrPort
	client string
	// local serves the request on this replica instead, when the destination did not answer before the
	// request's body was read (a principal's home that is gone); nil for a session's owner.
	local func()
	body  *readTracker
}

// readTracker is a request body that records whether any of it was read.
type readTracker struct {
	io.ReadCloser
	read atomic.Bool
}

func (b *readTracker) Read(p []byte) (int, error) {
	b.read.Store(true)
	return b.ReadCloser.Read(p)
}

// sessionRefFrom returns what the request's session id stands for, if it named one.
func sessionRefFrom(ctx context.Context) *sessionRef {
	ref, _ := ctx.Value(sessionRefKey{}).(*sessionRef)
	return ref
}

// peerClient returns the client's address when the request came from a replica over the peer port.
func peerClient(ctx context.Context) (string, bool) {
	c, ok := ctx.Value(peerKey{}).(string)
	return c, ok
}

// clientSessionID is the session id the client gets for the server's session id.
func (g *Gateway) clientSessionID(ctx context.Context, upstream, principal string) (string, error) {
	if ref := sessionRefFrom(ctx); ref != nil && ref.Upstream == upstream && ref.Principal == principal {
		return ref.raw, nil
	}
	return g.ids.issue(upstream, principal)
}

// forgetSessionID drops the handle of the request's session (the server deleted the session).
func (g *Gateway) forgetSessionID(ctx context.Context) {
	if ref := sessionRefFrom(ctx); ref != nil {
		g.ids.forget(ref.handle)
	}
}

// notFound answers a session id that names no session this server's gateways hold.
func (g *Gateway) notFound(w http.ResponseWriter, r *http.Request, why string) {
	g.metrics.sessions.WithLabelValues("refused").Inc()
	g.log.Warn("request refused: "+why, "remote", r.RemoteAddr)
	writeHTTPError(w, http.StatusNotFound, codeInvalidRequest, "session not found: initialize a new session")
}

// openSession handles the session id of a request before anything else: it refuses an id that is not
// in the gateway's format or whose handle this replica does not hold, relays a session another replica
// holds, and otherwise returns the request with the server's session id in place of the client's. ok
// is false when it has answered.
func (g *Gateway) openSession(w http.ResponseWriter, r *http.Request) (*http.Request, bool) {
	id := r.Header.Get("Mcp-Session-Id")
	if id == "" {
		return r, true
	}
	owner, handle, ok := parseSessionID(id)
	if !ok {
		g.notFound(w, r, "the session id is not one this server's gateways issue")
		return nil, false
	}
	if !g.ids.mine(owner) {
		if _, fromPeer := peerClient(r.Context()); fromPeer {
			// a replica relays only to the owner, so this is a stale or crafted relay: never relayed again
			g.notFound(w, r, "a relayed session id names another replica")
			return nil, false
		}
		g.relayToOwner(w, r, owner)
		return nil, false
	}
	ref := g.ids.lookup(handle)
	if ref == nil {
		g.notFound(w, r, "no session of this replica has the id's handle (it was never issued here, ended, or this replica restarted)")
		return nil, false
	}
	r.Header.Set("Mcp-Session-Id", ref.Upstream)
	return r.WithContext(context.WithValue(r.Context(), sessionRefKey{}, ref)), true
}

// relayToOwner relays a request, and its response or event stream, to the replica that holds its
// session. That replica does every check; a replica that is gone is answered with 404.
func (g *Gateway) relayToOwner(w http.ResponseWriter, r *http.Request, owner string) {
	addr, err := g.ids.peer(owner)
	if err != nil {
		g.metrics.sessions.WithLabelValues("refused").Inc()
		g.log.Warn("request refused: the session id names a replica that is not a peer; not dialled", "err", err, "remote", r.RemoteAddr)
		writeHTTPError(w, http.StatusNotFound, codeInvalidRequest, "session not found: initialize a new session")
		return
	}
	// With the live replica set known (sessions.peersDNS, as the operator renders it), an owner must be
	// one of them: an id naming any other address, forged or of a replica gone, is never dialled. A set
	// that does not resolve relays nothing (fail closed: the client initializes again, served here).
	if g.peers != nil && !g.peers.isMember(r.Context(), addr) {
		g.metrics.sessions.WithLabelValues("refused").Inc()
		g.log.Warn("request refused: the session id names no live replica of this server (sessions.peersDNS); not dialled", "owner", addr, "remote", r.RemoteAddr)
		writeHTTPError(w, http.StatusNotFound, codeInvalidRequest, "session not found: initialize a new session")
		return
	}
	g.metrics.sessions.WithLabelValues("relayed").Inc()
	g.relayTo(w, r, relayDest{addr: addr})
}

// relayTo relays a request to a peer's port (d.addr), under the call timeout (the stream timeout for a
// GET) and the body limit.
func (g *Gateway) relayTo(w http.ResponseWriter, r *http.Request, d relayDest) {
	timeout := g.cfg.Limits.CallTimeout.Duration + g.cfg.Limits.ApprovalTimeout.Duration
	if r.Method == http.MethodGet {
		timeout = g.cfg.Limits.StreamTimeout.Duration
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout+5*time.Second)
	defer cancel()
	d.client, _, _ = net.SplitHostPort(r.RemoteAddr)
	d.body = &readTracker{ReadCloser: http.MaxBytesReader(w, r.Body, g.cfg.Limits.MaxBodyBytes+1)} // the peer refuses more
	if r.Body == nil || r.Body == http.NoBody {
		d.body = &readTracker{ReadCloser: http.NoBody}
	}
	r.Body = d.body
	ctx = context.WithValue(ctx, relayDestKey{}, d)
	g.peerProxy.ServeHTTP(w, r.WithContext(ctx))
}

// newPeerProxy is the relay to other replicas' peer ports: no proxy, short dials, mutual TLS, streaming.
func (g *Gateway) newPeerProxy() *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			d, _ := pr.In.Context().Value(relayDestKey{}).(relayDest)
			pr.Out.URL.Scheme, pr.Out.URL.Host = "https", d.addr.String()
			pr.Out.Host = pr.In.Host
			pr.Out.Header.Set(relayClientHeader, d.client)
		},
		Transport: &http.Transport{
			Proxy:               nil,
			DialTLSContext:      g.dialPeerTLS,
			MaxIdleConnsPerHost: 64,
			IdleConnTimeout:     90 * time.Second,
			DisableCompression:  true,
		},
		FlushInterval: -1,
		ErrorLog:      slog.NewLogLogger(g.log.Handler(), slog.LevelWarn),
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			d, _ := r.Context().Value(relayDestKey{}).(relayDest)
			switch cerr := r.Context().Err(); {
			case errors.Is(cerr, context.DeadlineExceeded):
				writeHTTPError(w, http.StatusGatewayTimeout, codeUpstream, "the gateway replica that holds the session did not answer in time")
				return
			case cerr != nil:
				return // the client went away
			case d.local != nil && !d.body.read.Load():
				g.metrics.sessions.WithLabelValues("home_gone").Inc()
				g.log.Warn("the principal's home replica did not answer; the request is served here", "home", d.addr.String(), "err", err)
				d.local()
				return
			}
			g.metrics.sessions.WithLabelValues("owner_gone").Inc()
			g.log.Warn("the replica that holds the session did not answer; the client must initialize a new session", "owner", d.addr.String(), "err", err)
			writeHTTPError(w, http.StatusNotFound, codeInvalidRequest, "session not found: the gateway replica that held it is gone; initialize a new session")
		},
	}
}

// peerRoots reads sessions.peerCAFile, again at each connection, so a rotated CA is picked up.
func (g *Gateway) peerRoots() (*x509.CertPool, error) {
	s := g.cfg.Sessions
	pemBytes, err := readBounded(s.PeerCAFile)
	if err != nil {
		return nil, fmt.Errorf("sessions.peerCAFile: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pemBytes) {
		return nil, fmt.Errorf("sessions.peerCAFile: %s holds no PEM certificate; the peer hop needs the CA of the gateways' certificates (the TLS volume's ca.crt)", s.PeerCAFile)
	}
	return roots, nil
}

// verifyPeer checks a replica's certificate chain: it chains to sessions.peerCAFile, is good for use
// (server or client authentication) and names sessions.peerServerName, the Service name every replica
// of this server has its certificate for. A gateway of another server, or anything without the
// gateways' key, fails.
func (g *Gateway) verifyPeer(chain []*x509.Certificate, use x509.ExtKeyUsage) error {
	if len(chain) == 0 {
		return errors.New("the peer presented no certificate")
	}
	roots, err := g.peerRoots()
	if err != nil {
		return err
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	_, err = chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{use}, DNSName: g.cfg.Sessions.PeerServerName})
	if err != nil {
		return fmt.Errorf("the peer's certificate is not a replica's of this server (the gateways' CA, %s): %w", g.cfg.Sessions.PeerServerName, err)
	}
	return nil
}

// dialPeerTLS dials a replica's peer port over TLS, presents this replica's own certificate and
// verifies the replica's (verifyPeer). A listener with any other certificate gets no request.
func (g *Gateway) dialPeerTLS(ctx context.Context, network, addr string) (net.Conn, error) {
	if g.certs == nil {
		return nil, errors.New("the peer hop needs tls: this gateway has no certificate to present")
	}
	if _, err := g.peerRoots(); err != nil {
		return nil, err
	}
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: peerDialTimeout, KeepAlive: 30 * time.Second},
		//nolint:gosec // G402: the chain, key usage and name are verified by VerifyConnection against the CA read at each dial
		Config: &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: true,
			VerifyConnection: func(cs tls.ConnectionState) error {
				return g.verifyPeer(cs.PeerCertificates, x509.ExtKeyUsageServerAuth)
			},
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return g.certs.GetCertificate(nil) },
		}}
	hctx, cancel := context.WithTimeout(ctx, 2*peerDialTimeout) // the dial and the handshake
	defer cancel()
	return d.DialContext(hctx, network, addr)
}

// PeerTLSConfig is the peer port's TLS configuration: the gateway's own certificate, and a client
// certificate required of every connection that verifyPeer accepts (from the gateways' CA, for client
// authentication, naming this server). The server container beside a gateway reaches the port, but
// cannot read the gateway's key, so it cannot complete the handshake. Nil without tls.
func (g *Gateway) PeerTLSConfig() *tls.Config {
	if g.certs == nil {
		return nil
	}
	c := g.certs.ServerTLSConfig()
	c.ClientAuth = tls.RequireAnyClientCert // the chain is verified below, with the CA read now
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		if err := g.verifyPeer(cs.PeerCertificates, x509.ExtKeyUsageClientAuth); err != nil {
			g.metrics.sessions.WithLabelValues("refused").Inc()
			g.log.Warn("peer port: connection refused: not a replica of this server", "err", err)
			return err
		}
		return nil
	}
	return c
}

// Certificates is the gateway's certificate (nil without tls): served on its ports, presented to its
// peers. The caller runs its reload loop.
func (g *Gateway) Certificates() *CertReloader { return g.certs }

// PeerHandler serves the peer port: requests other replicas relay for the sessions this replica holds,
// and for the principals it is home to (requests without a session id), over a connection
// PeerTLSConfig authenticated. Everything else is refused.
func (g *Gateway) PeerHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 || g.verifyPeer(r.TLS.PeerCertificates, x509.ExtKeyUsageClientAuth) != nil {
			g.metrics.sessions.WithLabelValues("refused").Inc()
			g.log.Warn("peer port: request refused: not over mutual TLS from a replica of this server", "remote", r.RemoteAddr)
			writeHTTPError(w, http.StatusForbidden, codePolicy, "the peer port serves only this server's gateway replicas, over mutual TLS")
			return
		}
		client := r.Header.Get(relayClientHeader)
		if _, err := netip.ParseAddr(client); err != nil {
			client, _, _ = net.SplitHostPort(r.RemoteAddr)
		}
		r.Header.Del(relayClientHeader)
		g.handler.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), peerKey{}, client)))
	})
}
