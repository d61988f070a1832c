package gateway

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"os"
	"time"
)

// Sessions across replicas. The gateway never hands the server's own session id to a client: it hands
// out a sealed id (AES-256-GCM under a key the replicas of one server share) that carries the server's
// id, the principal it was issued to and the peer address of the replica that holds it. A request for a
// session another replica holds is relayed, untouched, to that replica's peer port, which does every
// check as for its own clients; so the chain rule and rate limits of a session are counted in one place.
// An id that does not open under the key is refused and never dialled; an id that opens is dialled only
// at the peer port, and only at an address of the configured peer ranges. A replica that is gone makes
// the relay fail: the client gets 404, which the MCP transport defines as "initialize a new session".

const (
	// sessionIDPrefix starts every session id the gateway issues (version 1 of the sealed format).
	sessionIDPrefix = "mw1."
	// maxSessionIDBytes bounds a session id a client sends; longer ones are refused before decoding.
	maxSessionIDBytes = 1024
	// maxUpstreamSessionIDBytes bounds the server's session id the gateway seals.
	maxUpstreamSessionIDBytes = 512
	// relayHeader carries a replica's sealed relay token: only a gateway holding the key can make one,
	// so the peer port serves the server's own gateways, not the server container beside them.
	relayHeader = "Mcp-Warden-Relay"
	// relayTokenLifetime is how long a relay token is good for.
	relayTokenLifetime = 30 * time.Second
	// peerDialTimeout bounds the dial of the replica that holds a session: a replica that is gone costs
	// the client at most this before its 404.
	peerDialTimeout = 2 * time.Second
)

// sealedSession is what a session id the gateway issued carries.
type sealedSession struct {
	// Upstream is the server's session id.
	Upstream string `json:"u"`
	// Principal is the caller the session was issued to; anyone else gets 404.
	Principal string `json:"p"`
	// Owner is the peer address (ip:port) of the replica that holds the session; empty without peers.
	Owner string `json:"o,omitempty"`
	// raw is the id as the client sent it.
	raw string
}

// relayClaims is what a relay token carries.
type relayClaims struct {
	// Client is the client's address as the relaying replica saw it (the rate key without auth).
	Client  string `json:"c"`
	Expires int64  `json:"e"`
}

// sealer seals and opens session ids and relay tokens, and decides which addresses are peers.
type sealer struct {
	ids, relay cipher.AEAD
	ad         []byte
	self       netip.AddrPort
	peers      []netip.Prefix
}

// newSealer derives the id and relay keys from the configured key (or a random one).
func newSealer(c SessionsConfig, resource string) (*sealer, error) {
	if c.PeerListen != "" && c.Advertise == "" {
		return nil, errors.New("sessions.advertise: empty with sessions.peerListen set; set it to this replica's IP and peer port (the gateway binary sets it from $MCP_WARDEN_POD_IP)")
	}
	key := make([]byte, 32)
	if c.KeyPath != "" {
		b, err := os.ReadFile(c.KeyPath)
		if err != nil {
			return nil, fmt.Errorf("sessions.keyPath: %w", err)
		}
		if key = bytes.TrimSpace(b); len(key) < 32 || len(key) > 4096 {
			return nil, fmt.Errorf("sessions.keyPath: %s holds %d bytes; the key must be 32 to 4096 bytes, the same for every replica", c.KeyPath, len(key))
		}
	} else if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("sessions: random key: %w", err)
	}
	s := &sealer{ad: []byte("mcp-warden session\x00" + resource)}
	for _, k := range []struct {
		aead *cipher.AEAD
		info string
	}{{&s.ids, "mcp-warden session id v1"}, {&s.relay, "mcp-warden peer relay v1"}} {
		sub, err := hkdf.Key(sha256.New, key, nil, k.info, 32)
		if err != nil {
			return nil, err
		}
		block, err := aes.NewCipher(sub)
		if err != nil {
			return nil, err
		}
		if *k.aead, err = cipher.NewGCM(block); err != nil {
			return nil, err
		}
	}
	if c.Advertise != "" {
		s.self = netip.MustParseAddrPort(c.Advertise) // validated
	}
	for _, p := range c.PeerCIDRs {
		s.peers = append(s.peers, netip.MustParsePrefix(p).Masked())
	}
	return s, nil
}

func (s *sealer) sealWith(aead cipher.AEAD, ad []byte, v any) string {
	payload, _ := json.Marshal(v) // strings and numbers
	nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+len(payload)+aead.Overhead())
	_, _ = rand.Read(nonce)
	return sessionIDPrefix + base64.RawURLEncoding.EncodeToString(aead.Seal(nonce, nonce, payload, ad))
}

func (s *sealer) openWith(aead cipher.AEAD, ad []byte, tok string, v any) bool {
	if len(tok) > maxSessionIDBytes || len(tok) <= len(sessionIDPrefix) || tok[:len(sessionIDPrefix)] != sessionIDPrefix {
		return false
	}
	b, err := base64.RawURLEncoding.DecodeString(tok[len(sessionIDPrefix):])
	if err != nil || len(b) < aead.NonceSize()+aead.Overhead() {
		return false
	}
	payload, err := aead.Open(nil, b[:aead.NonceSize()], b[aead.NonceSize():], ad)
	return err == nil && decode(payload, v) == nil
}

// seal issues the client's session id for the server's session id.
func (s *sealer) seal(upstream, principal string) (string, error) {
	if len(upstream) > maxUpstreamSessionIDBytes {
		return "", fmt.Errorf("the MCP server's session id is %d bytes, more than %d", len(upstream), maxUpstreamSessionIDBytes)
	}
	owner := ""
	if s.self.IsValid() {
		owner = s.self.String()
	}
	return s.sealWith(s.ids, s.ad, sealedSession{Upstream: upstream, Principal: principal, Owner: owner}), nil
}

// open returns what a session id carries, or false if this server's gateways did not issue it.
func (s *sealer) open(id string) (*sealedSession, bool) {
	var ss sealedSession
	if !s.openWith(s.ids, s.ad, id, &ss) || ss.Upstream == "" {
		return nil, false
	}
	ss.raw = id
	return &ss, true
}

// mine reports whether this replica holds the session.
func (s *sealer) mine(ss *sealedSession) bool {
	return ss.Owner == "" || (s.self.IsValid() && ss.Owner == s.self.String())
}

// peer returns the address to relay a session to, or why it is not a peer (then it is never dialled).
func (s *sealer) peer(owner string) (netip.AddrPort, error) {
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

func (s *sealer) relayToken(client string) string {
	return s.sealWith(s.relay, s.ad, relayClaims{Client: client, Expires: time.Now().Add(relayTokenLifetime).Unix()})
}

func (s *sealer) openRelay(tok string) (string, bool) {
	var c relayClaims
	if !s.openWith(s.relay, s.ad, tok, &c) || time.Now().Unix() > c.Expires {
		return "", false
	}
	return c.Client, true
}

type (
	sealedKey    struct{}
	peerKey      struct{}
	relayDestKey struct{}
)

type relayDest struct {
	addr  netip.AddrPort
	token string
}

// sealedFrom returns the opened session id of the request, if it named one.
func sealedFrom(ctx context.Context) *sealedSession {
	ss, _ := ctx.Value(sealedKey{}).(*sealedSession)
	return ss
}

// peerClient returns the client's address when the request came from a replica over the peer port.
func peerClient(ctx context.Context) (string, bool) {
	c, ok := ctx.Value(peerKey{}).(string)
	return c, ok
}

// clientSessionID is the session id the client gets for the server's session id.
func (g *Gateway) clientSessionID(ctx context.Context, upstream, principal string) (string, error) {
	if ss := sealedFrom(ctx); ss != nil && ss.Upstream == upstream && ss.Principal == principal {
		return ss.raw, nil
	}
	return g.sealer.seal(upstream, principal)
}

// openSession handles the session id of a request before anything else: it refuses an id this
// server's gateways did not issue, relays a session another replica holds, and otherwise returns the
// request with the server's session id in place of the sealed one. ok is false when it has answered.
func (g *Gateway) openSession(w http.ResponseWriter, r *http.Request) (*http.Request, bool) {
	id := r.Header.Get("Mcp-Session-Id")
	if id == "" {
		return r, true
	}
	ss, ok := g.sealer.open(id)
	if !ok {
		g.metrics.sessions.WithLabelValues("refused").Inc()
		g.log.Warn("request refused: the session id was not issued by this server's gateways", "remote", r.RemoteAddr)
		writeHTTPError(w, http.StatusNotFound, codeInvalidRequest, "session not found: initialize a new session")
		return nil, false
	}
	if !g.sealer.mine(ss) {
		if _, fromPeer := peerClient(r.Context()); fromPeer {
			// a replica relays only to the owner, so this is a stale or crafted relay: never relayed again
			writeHTTPError(w, http.StatusNotFound, codeInvalidRequest, "session not found: initialize a new session")
			return nil, false
		}
		g.relayToOwner(w, r, ss)
		return nil, false
	}
	r.Header.Set("Mcp-Session-Id", ss.Upstream)
	return r.WithContext(context.WithValue(r.Context(), sealedKey{}, ss)), true
}

// relayToOwner relays a request, and its response or event stream, to the replica that holds its
// session. That replica does every check; a replica that is gone is answered with 404.
func (g *Gateway) relayToOwner(w http.ResponseWriter, r *http.Request, ss *sealedSession) {
	addr, err := g.sealer.peer(ss.Owner)
	if err != nil {
		g.metrics.sessions.WithLabelValues("refused").Inc()
		g.log.Warn("request refused: the session id names a replica that is not a peer; not dialled", "err", err, "remote", r.RemoteAddr)
		writeHTTPError(w, http.StatusNotFound, codeInvalidRequest, "session not found: initialize a new session")
		return
	}
	timeout := g.cfg.Limits.CallTimeout.Duration + g.cfg.Limits.ApprovalTimeout.Duration
	if r.Method == http.MethodGet {
		timeout = g.cfg.Limits.StreamTimeout.Duration
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout+5*time.Second)
	defer cancel()
	host, _, _ := net.SplitHostPort(r.RemoteAddr)
	ctx = context.WithValue(ctx, relayDestKey{}, relayDest{addr: addr, token: g.sealer.relayToken(host)})
	r.Body = http.MaxBytesReader(w, r.Body, g.cfg.Limits.MaxBodyBytes+1) // the owner refuses more
	g.metrics.sessions.WithLabelValues("relayed").Inc()
	g.peerProxy.ServeHTTP(w, r.WithContext(ctx))
}

// newPeerProxy is the relay to other replicas' peer ports: no proxy, short dials, streaming.
func (g *Gateway) newPeerProxy() *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			d, _ := pr.In.Context().Value(relayDestKey{}).(relayDest)
			pr.Out.URL.Scheme, pr.Out.URL.Host = g.peerScheme(), d.addr.String()
			pr.Out.Host = pr.In.Host
			pr.Out.Header.Set(relayHeader, d.token)
		},
		Transport: &http.Transport{
			Proxy:               nil,
			DialContext:         (&net.Dialer{Timeout: peerDialTimeout, KeepAlive: 30 * time.Second}).DialContext,
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
			}
			g.metrics.sessions.WithLabelValues("owner_gone").Inc()
			g.log.Warn("the replica that holds the session did not answer; the client must initialize a new session", "owner", d.addr.String(), "err", err)
			writeHTTPError(w, http.StatusNotFound, codeInvalidRequest, "session not found: the gateway replica that held it is gone; initialize a new session")
		},
	}
}

// peerScheme is how the peer port is dialled: TLS when the gateway serves TLS, so a relayed request
// (its bearer token too) never crosses the pod network in plaintext.
func (g *Gateway) peerScheme() string {
	if g.cfg.TLS.Enabled() {
		return "https"
	}
	return "http"
}

// dialPeerTLS dials a replica's peer port over TLS and verifies its certificate against
// sessions.peerCAFile, read again at each connection (a rotated CA is picked up), for
// sessions.peerServerName: all replicas serve the one certificate issued for the Service's names. A
// listener with any other certificate gets no request.
func (g *Gateway) dialPeerTLS(ctx context.Context, network, addr string) (net.Conn, error) {
	s := g.cfg.Sessions
	pemBytes, err := readBounded(s.PeerCAFile)
	if err != nil {
		return nil, fmt.Errorf("sessions.peerCAFile: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pemBytes) {
		return nil, fmt.Errorf("sessions.peerCAFile: %s holds no PEM certificate; the peer hop needs the CA of the serving certificate (the TLS Secret's ca.crt)", s.PeerCAFile)
	}
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: peerDialTimeout, KeepAlive: 30 * time.Second},
		Config: &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots, ServerName: s.PeerServerName}}
	hctx, cancel := context.WithTimeout(ctx, 2*peerDialTimeout) // the dial and the handshake
	defer cancel()
	return d.DialContext(hctx, network, addr)
}

// PeerHandler serves the peer port: requests other replicas relay for the sessions this replica holds,
// each with a relay token only the server's gateways can make. Everything else is refused.
func (g *Gateway) PeerHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		client, ok := g.sealer.openRelay(r.Header.Get(relayHeader))
		if !ok {
			g.metrics.sessions.WithLabelValues("refused").Inc()
			g.log.Warn("peer port: request refused: no valid relay token from a replica of this server", "remote", r.RemoteAddr)
			writeHTTPError(w, http.StatusForbidden, codePolicy, "the peer port serves only this server's gateway replicas")
			return
		}
		if r.Header.Get("Mcp-Session-Id") == "" {
			writeHTTPError(w, http.StatusBadRequest, codeInvalidRequest, "the peer port serves only requests of an existing session")
			return
		}
		r.Header.Del(relayHeader)
		g.handler.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), peerKey{}, client)))
	})
}
