package gateway_test

import (
	"bufio"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcp-warden/mcp-warden/gateway"
	"github.com/mcp-warden/mcp-warden/internal/syncbuf"
)

// replica is one gateway replica with its own MCP server, as in one pod: its MCP endpoint and its peer
// port on an address of its own (127.0.0.N, the peer port the same for all, as pods share it).
type replica struct {
	up    *upstreamServer
	gw    *gateway.Gateway
	srv   *httptest.Server
	peer  *http.Server
	addr  string // peer address
	alive atomic.Bool
	hits  atomic.Int32
	audit *syncbuf.Buffer
}

// replicaSet is n replicas behind a round-robin front, as a Service without affinity spreads requests.
type replicaSet struct {
	is       *testIssuer
	key      []byte
	port     int
	replicas []*replica
	front    *httptest.Server
	next     atomic.Uint32
}

// peerPort finds a port free on 127.0.0.1 to 127.0.0.n and on 127.0.0.9 (the attacker's listener).
func peerPort(t testing.TB, n int) (int, []net.Listener) {
	t.Helper()
	for range 50 {
		first, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := first.Addr().(*net.TCPAddr).Port
		lns := []net.Listener{first}
		for i := 2; i <= n+1; i++ {
			host := fmt.Sprintf("127.0.0.%d", i)
			if i == n+1 {
				host = "127.0.0.9"
			}
			ln, err := net.Listen("tcp", fmt.Sprintf("%s:%d", host, port))
			if err != nil {
				break
			}
			lns = append(lns, ln)
		}
		if len(lns) == n+1 {
			return port, lns
		}
		for _, ln := range lns {
			ln.Close()
		}
	}
	t.Fatal("no port free on every loopback address")
	return 0, nil
}

func newReplicaSet(t testing.TB, n int, mutate func(*gateway.Config)) (*replicaSet, net.Listener) {
	t.Helper()
	rs := &replicaSet{is: newIssuer(t), key: make([]byte, 32)}
	_, _ = rand.Read(rs.key)
	keyPath := filepath.Join(t.TempDir(), "session.key")
	if err := os.WriteFile(keyPath, []byte(hex.EncodeToString(rs.key)), 0o600); err != nil {
		t.Fatal(err)
	}
	rs.key = []byte(hex.EncodeToString(rs.key))
	port, lns := peerPort(t, n)
	rs.port = port
	var cidrs []string
	for i := 1; i <= n; i++ {
		cidrs = append(cidrs, fmt.Sprintf("127.0.0.%d/32", i))
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(&testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	for i := 1; i <= n; i++ {
		rp := &replica{up: newUpstream(t, nil, 0), addr: fmt.Sprintf("127.0.0.%d:%d", i, port), audit: &syncbuf.Buffer{}}
		cfg := baseConfig(rs.is, rp.up, t.TempDir())
		cfg.Sessions = gateway.SessionsConfig{KeyPath: keyPath, PeerListen: rp.addr, Advertise: rp.addr, PeerCIDRs: cidrs}
		if mutate != nil {
			mutate(cfg)
		}
		gw, err := gateway.New(cfg, gateway.Options{AuditWriter: rp.audit, Logger: log})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		gw.Start(ctx)
		rp.gw, rp.srv = gw, httptest.NewServer(gw)
		rp.peer = &http.Server{Handler: gw.PeerHandler(), ReadHeaderTimeout: 5 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
		if cfg.TLS.Enabled() { // as cmd/gateway serves it: the gateway's own certificate
			certs, err := gateway.NewCertReloader(cfg.TLS.CertFile, cfg.TLS.KeyFile, log)
			if err != nil {
				t.Fatal(err)
			}
			rp.peer.TLSConfig = certs.ServerTLSConfig()
			go func(ln net.Listener) { _ = rp.peer.ServeTLS(ln, "", "") }(lns[i-1])
		} else {
			go func(ln net.Listener) { _ = rp.peer.Serve(ln) }(lns[i-1])
		}
		rp.alive.Store(true)
		t.Cleanup(func() { rs.kill(rp); cancel() })
		rs.replicas = append(rs.replicas, rp)
	}
	front := &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) {
		for {
			rp := rs.replicas[int(rs.next.Add(1))%len(rs.replicas)]
			if rp.alive.Load() {
				rp.hits.Add(1)
				u, _ := url.Parse(rp.srv.URL)
				pr.SetURL(u)
				return
			}
		}
	}, Transport: &http.Transport{MaxIdleConnsPerHost: 64}, FlushInterval: -1, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	rs.front = httptest.NewServer(front)
	t.Cleanup(rs.front.Close)
	return rs, lns[n]
}

// kill takes a replica away as a deleted pod goes: its connections cut, its ports closed.
func (rs *replicaSet) kill(rp *replica) {
	if !rp.alive.Swap(false) {
		return
	}
	rp.srv.CloseClientConnections()
	rp.srv.Close()
	_ = rp.peer.Close()
	_ = rp.gw.Close()
	rp.up.srv.CloseClientConnections()
}

func (rs *replicaSet) connect(t testing.TB, token string) *mcp.ClientSession {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := mcp.NewClient(&mcp.Implementation{Name: "test-client", Version: "1"}, nil)
	// the SDK's default retries: a broken event stream is resumed, as real clients do
	cs, err := c.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: rs.front.URL + "/mcp", HTTPClient: httpClient(token)}, nil)
	if err != nil {
		t.Fatalf("connect through the front: %v", err)
	}
	t.Cleanup(func() { _ = cs.Close() })
	return cs
}

// owner is the replica whose server ran the tool calls.
func (rs *replicaSet) owner(t testing.TB) *replica {
	t.Helper()
	var owner *replica
	for _, rp := range rs.replicas {
		if rp.up.calls.Load() > 0 {
			if owner != nil {
				t.Fatalf("tool calls of one session ran on two replicas' servers")
			}
			owner = rp
		}
	}
	if owner == nil {
		t.Fatal("no replica's server ran a tool call")
	}
	return owner
}

// TestSessionsAcrossReplicas: three replicas behind a front without affinity, and a go-sdk client whose
// requests alternate between them. Before sealed, routed session ids, the second request reached a
// replica whose server had never seen the session and got "session not found". Now every request of
// the session reaches the server that holds it, and the tool-chain rule holds across replicas: after a
// reads-private tool ran, a writes-external call arriving at any replica still needs a person's
// approval.
func TestSessionsAcrossReplicas(t *testing.T) {
	rs, _ := newReplicaSet(t, 3, nil)
	// the client cannot ask a person, so a call that needs approval is refused outright
	cs := rs.connect(t, rs.is.token(t, "files:read mail:send"))
	if !strings.HasPrefix(cs.ID(), "mw1.") {
		t.Fatalf("the client got session id %q, not a sealed one", cs.ID())
	}
	for i := range 6 {
		if names := toolNames(t, cs); !slices.Contains(names, "read_file") {
			t.Fatalf("round %d: tools/list %v lacks read_file", i, names)
		}
		res, err := call(t, cs, "read_file", map[string]any{"path": fmt.Sprintf("f%d", i)})
		if err != nil || res.IsError || resultText(res) != fmt.Sprintf("contents of f%d", i) {
			t.Fatalf("round %d: read_file through the front: %v %+v", i, err, res)
		}
	}
	for i, rp := range rs.replicas {
		if rp.hits.Load() < 4 {
			t.Fatalf("replica %d got %d requests: the front did not spread them", i, rp.hits.Load())
		}
		for _, sid := range rp.up.sessionIDs.List() {
			if strings.HasPrefix(sid, "mw1.") {
				t.Fatalf("replica %d's server saw the sealed id; it must get its own", i)
			}
		}
	}
	owner := rs.owner(t)
	if owner.up.calls.Load() != 6 {
		t.Fatalf("the owner's server ran %d of 6 calls", owner.up.calls.Load())
	}
	// the send_email calls reach every replica in turn; each is relayed to the owner, whose session ran
	// read_file
	for i := range 3 {
		_, err := call(t, cs, "send_email", map[string]any{"to": "a@example.com", "body": "x"})
		if err == nil || !strings.Contains(err.Error(), "needs a person's approval") {
			t.Fatalf("send_email %d after read_file, through another replica: %v, want a refusal naming the approval", i, err)
		}
	}
	if owner.up.calls.Load() != 6 {
		t.Fatalf("send_email ran on the owner's server without approval")
	}
}

// TestReplicaLossCostsOneReinitialize: the replica holding a session goes away; the client's next
// request, relayed by a live replica, gets 404 (session not found), the go-sdk client reports
// ErrSessionMissing, and one new initialize gives a session that works across the live replicas.
func TestReplicaLossCostsOneReinitialize(t *testing.T) {
	rs, _ := newReplicaSet(t, 3, nil)
	token := rs.is.token(t, "files:read")
	cs := rs.connect(t, token)
	if _, err := call(t, cs, "read_file", map[string]any{"path": "a"}); err != nil {
		t.Fatal(err)
	}
	owner := rs.owner(t)
	rs.kill(owner)
	t0 := time.Now()
	_, err := call(t, cs, "read_file", map[string]any{"path": "b"})
	if !errors.Is(err, mcp.ErrSessionMissing) {
		t.Fatalf("after the owner's loss: %v, want ErrSessionMissing (HTTP 404)", err)
	}
	if d := time.Since(t0); d > 5*time.Second {
		t.Fatalf("the 404 took %s", d)
	}
	cs2 := rs.connect(t, token)
	for i := range 4 {
		res, err := call(t, cs2, "read_file", map[string]any{"path": fmt.Sprint(i)})
		if err != nil || res.IsError {
			t.Fatalf("re-initialized session, call %d: %v %+v", i, err, res)
		}
	}
}

// sealAs seals a session id in the gateway's format under key: what someone holding a key can make.
func sealAs(t testing.TB, key []byte, info string, v any) string {
	t.Helper()
	sub, err := hkdf.Key(sha256.New, key, nil, info, 32)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := aes.NewCipher(sub)
	aead, _ := cipher.NewGCM(block)
	payload, _ := json.Marshal(v)
	nonce := make([]byte, aead.NonceSize())
	_, _ = rand.Read(nonce)
	return "mw1." + base64.RawURLEncoding.EncodeToString(aead.Seal(nonce, nonce, payload, []byte("mcp-warden session\x00"+resource)))
}

// TestForgedSessionIDRefusedNeverDialled is the attacker's test. A session id names the replica to
// relay to, so a forged one must never make a gateway dial: ids that do not open under the replicas'
// key, and ids sealed with the key (leaked) that name an address outside the peers or another port, are
// answered 404 and neither reach a server nor open a connection to the attacker's listener on the peer
// port. Before, any id the client sent went to the server behind the gateway. Another principal cannot
// use a genuine id, and the peer port, reachable from the server container in the same pod, refuses a
// request without a relay token only the gateways can make.
func TestForgedSessionIDRefusedNeverDialled(t *testing.T) {
	rs, attacker := newReplicaSet(t, 3, nil)
	var dialled atomic.Int32
	go func() {
		for {
			c, err := attacker.Accept()
			if err != nil {
				return
			}
			dialled.Add(1)
			c.Close()
		}
	}()
	t.Cleanup(func() { attacker.Close() })
	token := rs.is.token(t, "files:read")
	evil := fmt.Sprintf("127.0.0.9:%d", rs.port)
	otherKey := []byte(strings.Repeat("k", 64))
	forged := map[string]string{
		"opaque":                       "attacker-session-1",
		"garbage after the prefix":     "mw1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
		"too long":                     "mw1." + strings.Repeat("A", 2000),
		"another key, evil owner":      sealAs(t, otherKey, "mcp-warden session id v1", map[string]string{"u": "x", "p": "user-8842", "o": evil}),
		"leaked key, evil owner":       sealAs(t, rs.key, "mcp-warden session id v1", map[string]string{"u": "x", "p": "user-8842", "o": evil}),
		"leaked key, metadata owner":   sealAs(t, rs.key, "mcp-warden session id v1", map[string]string{"u": "x", "p": "user-8842", "o": fmt.Sprintf("169.254.169.254:%d", rs.port)}),
		"leaked key, peer, other port": sealAs(t, rs.key, "mcp-warden session id v1", map[string]string{"u": "x", "p": "user-8842", "o": fmt.Sprintf("127.0.0.2:%d", rs.port+1)}),
		"relay token as a session id":  sealAs(t, rs.key, "mcp-warden peer relay v1", map[string]any{"c": "1.2.3.4", "e": time.Now().Add(time.Minute).Unix()}),
	}
	post := func(target, sid, tok string, extra map[string]string) *http.Response {
		req, _ := http.NewRequest(http.MethodPost, target, strings.NewReader(listBody))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Mcp-Session-Id", sid)
		req.Header.Set("Mcp-Protocol-Version", "2025-06-18")
		for k, v := range extra {
			req.Header.Set(k, v)
		}
		resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	for name, sid := range forged {
		for i := range 3 { // reaches every replica
			if resp := post(rs.front.URL+"/mcp", sid, token, nil); resp.StatusCode != http.StatusNotFound {
				t.Fatalf("%s (try %d): status %d, want 404", name, i, resp.StatusCode)
			}
		}
	}
	for i, rp := range rs.replicas {
		for _, seen := range rp.up.sessionIDs.List() {
			for name, sid := range forged {
				if seen == sid || seen == "x" {
					t.Fatalf("replica %d's server got the %s id", i, name)
				}
			}
		}
	}
	if n := dialled.Load(); n != 0 {
		t.Fatalf("a forged id made a gateway dial the attacker's listener %d times", n)
	}

	// a genuine id, stolen by another principal
	cs := rs.connect(t, token)
	other := rs.is.claims("files:read")
	other.Subject = "mallory"
	if resp := post(rs.front.URL+"/mcp", cs.ID(), rs.is.mint(t, other), nil); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("another principal's use of a session id: %d, want 404", resp.StatusCode)
	}
	// the peer port: the server container beside a gateway can reach it, but has no relay token
	peerURL := "http://" + rs.replicas[0].addr + "/mcp"
	callsBefore := rs.replicas[0].up.sessionIDs.List()
	for name, relay := range map[string]string{
		"none":        "",
		"another key": sealAs(t, otherKey, "mcp-warden peer relay v1", map[string]any{"c": "1.2.3.4", "e": time.Now().Add(time.Minute).Unix()}),
		"session id":  cs.ID(),
	} {
		if resp := post(peerURL, cs.ID(), token, map[string]string{"Mcp-Warden-Relay": relay}); resp.StatusCode != http.StatusForbidden {
			t.Fatalf("peer port, relay token %s: status %d, want 403", name, resp.StatusCode)
		}
	}
	if got := rs.replicas[0].up.sessionIDs.List(); len(got) != len(callsBefore) {
		t.Fatalf("a request refused at the peer port reached the server")
	}
}

// peerCA is a CA for the peer hop's certificates.
type peerCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newPeerCA(t testing.TB) *peerCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "peer test CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &peerCA{cert: cert, key: key}
}

// issue writes dir/{tls.crt,tls.key,ca.crt}: a serving certificate for dns, as the TLS Secret holds it.
func (ca *peerCA) issue(t testing.TB, dir, dns string) (certFile, keyFile, caFile string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), DNSNames: []string{dns}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage: x509.KeyUsageDigitalSignature, NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for f, b := range map[string]*pem.Block{"tls.crt": {Type: "CERTIFICATE", Bytes: der}, "tls.key": {Type: "PRIVATE KEY", Bytes: kder}, "ca.crt": {Type: "CERTIFICATE", Bytes: ca.cert.Raw}} {
		if err := os.WriteFile(filepath.Join(dir, f), pem.EncodeToMemory(b), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"), filepath.Join(dir, "ca.crt")
}

// impostor listens on addr as a replica's peer port would and records whatever HTTP request bytes reach
// it, over TLS (with its own certificate) or in plaintext.
type impostor struct {
	ln         net.Listener
	handshakes atomic.Int32
	got        atomic.Value // string: the first request line and headers received
}

func newImpostor(t testing.TB, addr string, cert tls.Certificate) *impostor {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	im := &impostor{ln: ln}
	im.got.Store("")
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func(c net.Conn) {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				br := bufio.NewReader(c)
				first, err := br.Peek(1)
				if err != nil {
					return
				}
				var r io.Reader = br
				if first[0] == 0x16 { // a TLS handshake
					im.handshakes.Add(1)
					tc := tls.Server(&peekedConn{Conn: c, r: br}, &tls.Config{Certificates: []tls.Certificate{cert}})
					if tc.Handshake() != nil {
						return
					}
					r = tc
				}
				req, err := http.ReadRequest(bufio.NewReader(r))
				if err != nil {
					return
				}
				im.got.Store(req.Method + " " + req.URL.String() + " Authorization=" + req.Header.Get("Authorization"))
			}(c)
		}
	}()
	return im
}

type peekedConn struct {
	net.Conn
	r io.Reader
}

func (c *peekedConn) Read(b []byte) (int, error) { return c.r.Read(b) }

const peerServerName = "github.tools.svc.cluster.local"

// tlsPeers gives every replica the TLS Secret's files: one serving certificate for the Service's names.
func tlsPeers(t testing.TB, ca *peerCA) func(*gateway.Config) {
	certFile, keyFile, caFile := ca.issue(t, filepath.Join(t.TempDir(), "tls"), peerServerName)
	return func(cfg *gateway.Config) {
		cfg.TLS = gateway.TLSConfig{CertFile: certFile, KeyFile: keyFile}
		cfg.Sessions.PeerCAFile, cfg.Sessions.PeerServerName = caFile, peerServerName
	}
}

// TestPeerHopOverTLS: with TLS on, the relay to the replica that holds a session runs over TLS with the
// gateways' certificate, so it works across three replicas; the peer port refuses plaintext. The
// attacker's test: the owner is gone and something else listens on its peer address (a pod that got its
// IP) with a certificate not from the CA, or from the CA for another name. Before, the relaying replica
// sent it the client's request, bearer token included, in plaintext; now the handshake fails, the
// impostor gets no request, and the client gets 404.
func TestPeerHopOverTLS(t *testing.T) {
	ca := newPeerCA(t)
	rs, _ := newReplicaSet(t, 3, tlsPeers(t, ca))
	token := rs.is.token(t, "files:read")
	cs := rs.connect(t, token)
	for i := range 6 {
		res, err := call(t, cs, "read_file", map[string]any{"path": fmt.Sprint(i)})
		if err != nil || res.IsError || resultText(res) != fmt.Sprintf("contents of %d", i) {
			t.Fatalf("call %d across replicas over the TLS peer hop: %v %+v", i, err, res)
		}
	}
	owner := rs.owner(t)
	if owner.up.calls.Load() != 6 {
		t.Fatalf("the owner's server ran %d of 6 calls: requests were not relayed", owner.up.calls.Load())
	}
	for i, rp := range rs.replicas {
		if rp.hits.Load() < 2 {
			t.Fatalf("replica %d got %d requests: the front did not spread them", i, rp.hits.Load())
		}
	}

	// plaintext to the TLS peer port
	req, _ := http.NewRequest(http.MethodPost, "http://"+owner.addr+"/mcp", strings.NewReader(listBody))
	req.Header.Set("Mcp-Session-Id", cs.ID())
	req.Header.Set("Authorization", "Bearer "+token)
	if resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req); err == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("plaintext to the TLS peer port: status %d, want the TLS server's 400", resp.StatusCode)
		}
	}
	if owner.up.calls.Load() != 6 {
		t.Fatal("a plaintext request to the TLS peer port reached the server")
	}

	rs.kill(owner)
	other := newPeerCA(t)
	for name, issue := range map[string]func() (string, string, string){
		"another CA":                  func() (string, string, string) { return other.issue(t, t.TempDir(), peerServerName) },
		"the CA, another server name": func() (string, string, string) { return ca.issue(t, t.TempDir(), "evil.tools.svc.cluster.local") },
	} {
		certFile, keyFile, _ := issue()
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		im := newImpostor(t, owner.addr, cert)
		for i := range 2 { // reaches both live replicas, each relays to the owner's address
			req, _ := http.NewRequest(http.MethodPost, rs.front.URL+"/mcp", strings.NewReader(listBody))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Accept", "application/json, text/event-stream")
			req.Header.Set("Authorization", "Bearer "+token)
			req.Header.Set("Mcp-Session-Id", cs.ID())
			req.Header.Set("Mcp-Protocol-Version", "2025-06-18")
			resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusNotFound {
				t.Fatalf("%s on the owner's peer address (try %d): status %d, want 404", name, i, resp.StatusCode)
			}
		}
		if got := im.got.Load().(string); got != "" {
			t.Fatalf("%s on the owner's peer address got the relayed request: %s", name, got)
		}
		if im.handshakes.Load() == 0 {
			t.Fatalf("%s: the relay never dialled the owner's address; the test proves nothing", name)
		}
		im.ln.Close()
	}
}

// TestPeerTLSConfigRequired: a gateway with TLS and a peer port must be told how to check its peers.
func TestPeerTLSConfigRequired(t *testing.T) {
	is := newIssuer(t)
	cfg := baseConfig(is, newUpstream(t, nil, 0), t.TempDir())
	cfg.TLS = gateway.TLSConfig{CertFile: "/etc/mcp-warden-tls/tls.crt", KeyFile: "/etc/mcp-warden-tls/tls.key"}
	cfg.Sessions = gateway.SessionsConfig{PeerListen: ":8445", Advertise: "10.0.0.1:8445"}
	cfg.WithDefaults()
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "sessions.peerCAFile") {
		t.Fatalf("tls with a peer port and no peerCAFile: %v, want an error naming sessions.peerCAFile", err)
	}
	cfg.Sessions.PeerCAFile, cfg.Sessions.PeerServerName = "/etc/mcp-warden-tls/ca.crt", peerServerName
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
}
