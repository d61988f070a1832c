package gateway_test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
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
	"net/netip"
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
// Every replica has a certificate of its own from one CA for the Service's names, as pod certificates
// are, and relays to the others over mutual TLS.
type replicaSet struct {
	is       *testIssuer
	ca       *peerCA
	caFile   string
	port     int
	cidrs    []string
	mutate   func(*gateway.Config)
	lookup   func(ctx context.Context, host string) ([]netip.Addr, error)
	log      *slog.Logger
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
	return newReplicaSetResolving(t, n, mutate, nil)
}

// newReplicaSetResolving is newReplicaSet whose replicas resolve sessions.peersDNS with lookup.
func newReplicaSetResolving(t testing.TB, n int, mutate func(*gateway.Config), lookup func(context.Context, string) ([]netip.Addr, error)) (*replicaSet, net.Listener) {
	t.Helper()
	rs := &replicaSet{is: newIssuer(t), ca: newPeerCA(t), mutate: mutate, lookup: lookup}
	_, _, rs.caFile = rs.ca.issue(t, filepath.Join(t.TempDir(), "ca"), peerServerName)
	port, lns := peerPort(t, n)
	rs.port = port
	for i := 1; i <= n; i++ {
		rs.cidrs = append(rs.cidrs, fmt.Sprintf("127.0.0.%d/32", i))
	}
	rs.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		rs.log = slog.New(slog.NewTextHandler(&testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	for i := 1; i <= n; i++ {
		rs.replicas = append(rs.replicas, rs.start(t, fmt.Sprintf("127.0.0.%d:%d", i, port), lns[i-1]))
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
	}, Transport: &http.Transport{MaxIdleConnsPerHost: 64}, FlushInterval: -1, ErrorLog: slog.NewLogLogger(rs.log.Handler(), slog.LevelWarn)}
	// A streaming proxy must read the request body while it writes the response: by default net/http
	// consumes and closes the request body when the handler writes its headers, and the Transport still
	// reading that body to confirm its end then fails the request write and closes the connection the
	// response streams on (an approval's event stream ended without its result, 1 run in 40).
	rs.front = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := http.NewResponseController(w).EnableFullDuplex(); err != nil {
			panic(err)
		}
		front.ServeHTTP(w, r)
	}))
	t.Cleanup(rs.front.Close)
	return rs, lns[n]
}

// start runs a replica with its own server and certificate, its peer port on ln (addr), served as
// cmd/gateway serves it.
func (rs *replicaSet) start(t testing.TB, addr string, ln net.Listener) *replica {
	t.Helper()
	rp := &replica{up: newUpstream(t, nil, 0), addr: addr, audit: &syncbuf.Buffer{}}
	cfg := baseConfig(rs.is, rp.up, t.TempDir())
	certFile, keyFile, _ := rs.ca.issue(t, filepath.Join(t.TempDir(), "tls"), peerServerName)
	cfg.TLS = gateway.TLSConfig{CertFile: certFile, KeyFile: keyFile}
	cfg.Sessions = gateway.SessionsConfig{PeerListen: addr, Advertise: addr, PeerCIDRs: rs.cidrs, PeerCAFile: rs.caFile, PeerServerName: peerServerName}
	if rs.mutate != nil {
		rs.mutate(cfg)
	}
	gw, err := gateway.New(cfg, gateway.Options{AuditWriter: rp.audit, Logger: rs.log, LookupPeers: rs.lookup})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	gw.Start(ctx)
	rp.gw, rp.srv = gw, httptest.NewServer(gw)
	rp.peer = &http.Server{Handler: gw.PeerHandler(), TLSConfig: gw.PeerTLSConfig(), ReadHeaderTimeout: 5 * time.Second,
		ErrorLog: slog.NewLogLogger(rs.log.Handler(), slog.LevelWarn)}
	go func() { _ = rp.peer.ServeTLS(ln, "", "") }()
	rp.alive.Store(true)
	t.Cleanup(func() { rs.kill(rp); cancel() })
	return rp
}

// restart replaces a replica by a new process at the same address, as a restarted gateway container.
func (rs *replicaSet) restart(t testing.TB, rp *replica) *replica {
	t.Helper()
	rs.kill(rp)
	var ln net.Listener
	var err error
	for range 50 {
		if ln, err = net.Listen("tcp", rp.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	nr := rs.start(t, rp.addr, ln)
	for i := range rs.replicas {
		if rs.replicas[i] == rp {
			rs.replicas[i] = nr
		}
	}
	return nr
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
// requests alternate between them, relayed over mutual TLS. Before routed session ids, the second request reached a
// replica whose server had never seen the session and got "session not found". Now every request of
// the session reaches the server that holds it, and the tool-chain rule holds across replicas: after a
// reads-private tool ran, a writes-external call arriving at any replica still needs a person's
// approval.
func TestSessionsAcrossReplicas(t *testing.T) {
	rs, _ := newReplicaSet(t, 3, nil)
	// the client cannot ask a person, so a call that needs approval is refused outright
	cs := rs.connect(t, rs.is.token(t, "files:read mail:send"))
	if !strings.HasPrefix(cs.ID(), "mw2.") {
		t.Fatalf("the client got session id %q, not one naming its owner", cs.ID())
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
			if strings.HasPrefix(sid, "mw2.") {
				t.Fatalf("replica %d's server saw the gateway's id; it must get its own", i)
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

// TestOwnerRestartCostsOneReinitialize: the replica holding a session restarts at the same address.
// Its handles are gone with the process, so the client's next request, wherever it arrives, gets 404
// (the MCP transport's "initialize a new session"), never another session; one new initialize works
// across the replicas. Before, a sealed id carried the server's id and opened on the new process.
func TestOwnerRestartCostsOneReinitialize(t *testing.T) {
	rs, _ := newReplicaSet(t, 3, nil)
	token := rs.is.token(t, "files:read")
	cs := rs.connect(t, token)
	if _, err := call(t, cs, "read_file", map[string]any{"path": "a"}); err != nil {
		t.Fatal(err)
	}
	owner := rs.owner(t)
	restarted := rs.restart(t, owner)
	for i := range 3 { // the owner itself, and both others relaying to it
		resp := postMCP(t, rs.front.URL+"/mcp", cs.ID(), token, nil)
		if resp.StatusCode != http.StatusNotFound {
			t.Fatalf("request %d after the owner's restart: status %d, want 404", i, resp.StatusCode)
		}
	}
	if slices.Contains(restarted.up.sessionIDs.List(), cs.ID()) {
		t.Fatal("the restarted owner's server got the client's session id")
	}
	cs2 := rs.connect(t, token)
	for i := range 4 {
		res, err := call(t, cs2, "read_file", map[string]any{"path": fmt.Sprint(i)})
		if err != nil || res.IsError {
			t.Fatalf("re-initialized session, call %d: %v %+v", i, err, res)
		}
	}
}

// postMCP posts a tools/list for a session with a bearer token and returns the (drained) response.
func postMCP(t testing.TB, target, sid, tok string, client *http.Client) *http.Response {
	t.Helper()
	resp, err := tryPostMCP(target, sid, tok, client)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func tryPostMCP(target, sid, tok string, client *http.Client) (*http.Response, error) {
	req, _ := http.NewRequest(http.MethodPost, target, strings.NewReader(listBody))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Mcp-Session-Id", sid)
	req.Header.Set("Mcp-Protocol-Version", "2025-06-18")
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp, nil
}

// idFor is a session id in the gateway's format naming owner, with a random handle: what anyone can
// make, without a key.
func idFor(owner string) string {
	h := make([]byte, 32)
	_, _ = rand.Read(h)
	return "mw2." + base64.RawURLEncoding.EncodeToString([]byte(owner)) + "." + base64.RawURLEncoding.EncodeToString(h)
}

// TestForgedSessionIDRefusedNeverDialled is the attacker's test. A session id names the replica to
// relay to, and anyone can write one, so a forged id must never make a gateway dial anything but a
// peer, and must never reach a server: ids naming an address outside the peers, the metadata address or
// another port are answered 404 without a dial to the attacker's listener on the peer port; ids naming
// a real replica with a guessed handle are relayed to it and answered 404 there. Another principal
// cannot use a genuine id.
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
	cs := rs.connect(t, token) // a genuine session beside the forged ones
	forged := map[string]string{
		"opaque":                    "attacker-session-1",
		"version 1 format":          "mw1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
		"too long":                  "mw2." + strings.Repeat("A", 2000) + ".x",
		"short handle":              "mw2." + base64.RawURLEncoding.EncodeToString([]byte(rs.replicas[0].addr)) + ".AAAA",
		"evil owner":                idFor(fmt.Sprintf("127.0.0.9:%d", rs.port)),
		"metadata owner":            idFor(fmt.Sprintf("169.254.169.254:%d", rs.port)),
		"peer, other port":          idFor(fmt.Sprintf("127.0.0.2:%d", rs.port+1)),
		"not an address":            idFor("files.example:443"),
		"the genuine id's owner":    "mw2." + strings.Split(cs.ID(), ".")[1] + "." + strings.Split(idFor(""), ".")[2],
		"guessed handle, replica 1": idFor(rs.replicas[0].addr),
		"guessed handle, replica 2": idFor(rs.replicas[1].addr),
		"guessed handle, replica 3": idFor(rs.replicas[2].addr),
		"guessed handle, no owner":  idFor(""),
		"the genuine id, truncated": cs.ID()[:len(cs.ID())-1],
		"the genuine handle, evil":  "mw2." + base64.RawURLEncoding.EncodeToString(fmt.Appendf(nil, "127.0.0.9:%d", rs.port)) + "." + strings.Split(cs.ID(), ".")[2],
	}
	for name, sid := range forged {
		for i := range 3 { // reaches every replica
			if resp := postMCP(t, rs.front.URL+"/mcp", sid, token, nil); resp.StatusCode != http.StatusNotFound {
				t.Fatalf("%s (try %d): status %d, want 404", name, i, resp.StatusCode)
			}
		}
	}
	for i, rp := range rs.replicas {
		if n := rp.up.calls.Load(); n != 0 {
			t.Fatalf("replica %d's server ran %d calls", i, n)
		}
		for _, seen := range rp.up.sessionIDs.List() {
			for name, sid := range forged {
				if seen == sid {
					t.Fatalf("replica %d's server got the %s id", i, name)
				}
			}
		}
	}
	if n := dialled.Load(); n != 0 {
		t.Fatalf("a forged id made a gateway dial the attacker's listener %d times", n)
	}
	if resp := postMCP(t, rs.front.URL+"/mcp", cs.ID(), token, nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("the genuine id beside the forged ones: %d, want 200", resp.StatusCode)
	}

	// a genuine id, stolen by another principal, at every replica
	other := rs.is.claims("files:read")
	other.Subject = "mallory"
	for i := range 3 {
		if resp := postMCP(t, rs.front.URL+"/mcp", cs.ID(), rs.is.mint(t, other), nil); resp.StatusCode != http.StatusNotFound {
			t.Fatalf("another principal's use of a session id (try %d): %d, want 404", i, resp.StatusCode)
		}
	}
}

// TestPeerPortRequiresReplicaCertificate is the attacker's test of the server container: it shares the
// pod's network, so it reaches the gateway's peer port, and it may hold a genuine session id and token
// (a client's request passes through it). The peer port serves only a client certificate from the
// gateways' CA, for client authentication, naming this server: without one, with one from another CA,
// with one from the CA for another server's names, or one for serving only, the handshake fails and the
// server behind the gateway gets nothing. A replica's own certificate is served (the control).
func TestPeerPortRequiresReplicaCertificate(t *testing.T) {
	rs, _ := newReplicaSet(t, 2, nil)
	token := rs.is.token(t, "files:read")
	cs := rs.connect(t, token)
	if _, err := call(t, cs, "read_file", map[string]any{"path": "a"}); err != nil {
		t.Fatal(err)
	}
	owner := rs.owner(t)
	roots := x509.NewCertPool()
	roots.AddCert(rs.ca.cert)
	clientWith := func(certs ...tls.Certificate) *http.Client {
		return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
			RootCAs: roots, ServerName: peerServerName, Certificates: certs}}}
	}
	load := func(certFile, keyFile, _ string) tls.Certificate {
		c, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	other := newPeerCA(t)
	before := len(owner.up.sessionIDs.List())
	for name, client := range map[string]*http.Client{
		"no client certificate":       clientWith(),
		"another CA":                  clientWith(load(other.issue(t, t.TempDir(), peerServerName))),
		"the CA, another server name": clientWith(load(rs.ca.issue(t, t.TempDir(), "evil.tools.svc.cluster.local"))),
		"the CA, serving only":        clientWith(load(rs.ca.issueFor(t, t.TempDir(), peerServerName, x509.ExtKeyUsageServerAuth))),
	} {
		resp, err := tryPostMCP("https://"+owner.addr+"/mcp", cs.ID(), token, client)
		if err == nil {
			t.Fatalf("peer port, %s: status %d, want the handshake refused", name, resp.StatusCode)
		}
		if !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("peer port, %s: %v, want a refusal of the certificate", name, err)
		}
	}
	if got := len(owner.up.sessionIDs.List()); got != before {
		t.Fatalf("a request refused at the peer port reached the server (%d requests, %d before)", got, before)
	}
	// the control: a replica's certificate is served
	certFile, keyFile, _ := rs.ca.issue(t, t.TempDir(), peerServerName)
	cert, _ := tls.LoadX509KeyPair(certFile, keyFile)
	if resp := postMCP(t, "https://"+owner.addr+"/mcp", cs.ID(), token, clientWith(cert)); resp.StatusCode != http.StatusOK {
		t.Fatalf("peer port with a replica's certificate: status %d, want 200", resp.StatusCode)
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

// issue writes dir/{tls.crt,tls.key,ca.crt}: a certificate for dns, good for serving and for client
// authentication, as the operator's signer and cert-manager issue a gateway's.
func (ca *peerCA) issue(t testing.TB, dir, dns string) (certFile, keyFile, caFile string) {
	t.Helper()
	return ca.issueFor(t, dir, dns, x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth)
}

// issueFor is issue with the given extended key usages.
func (ca *peerCA) issueFor(t testing.TB, dir, dns string, use ...x509.ExtKeyUsage) (certFile, keyFile, caFile string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: serial, DNSNames: []string{dns}, ExtKeyUsage: use,
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

// TestPeerHopOverTLS: the relay to the replica that holds a session runs over mutual TLS with the
// replicas' own certificates, so it works across three replicas; the peer port refuses plaintext. The
// attacker's test: the owner is gone and something else listens on its peer address (a pod that got its
// IP) with a certificate not from the CA, or from the CA for another name. Before, the relaying replica
// sent it the client's request, bearer token included, in plaintext; now the handshake fails, the
// impostor gets no request, and the client gets 404.
func TestPeerHopOverTLS(t *testing.T) {
	rs, _ := newReplicaSet(t, 3, nil)
	ca := rs.ca
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

// TestPeerTLSConfigRequired: a peer port needs TLS (the relay is authenticated by mutual TLS; a
// plaintext gateway does not relay), and the gateway must be told how to check its peers.
func TestPeerTLSConfigRequired(t *testing.T) {
	is := newIssuer(t)
	cfg := baseConfig(is, newUpstream(t, nil, 0), t.TempDir())
	cfg.Sessions = gateway.SessionsConfig{PeerListen: ":8445", Advertise: "10.0.0.1:8445", PeerCAFile: "/etc/mcp-warden-tls/ca.crt", PeerServerName: peerServerName}
	cfg.WithDefaults()
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "sessions.peerListen") || !strings.Contains(err.Error(), "needs tls") {
		t.Fatalf("a peer port without tls: %v, want an error naming sessions.peerListen and tls", err)
	}
	cfg.TLS = gateway.TLSConfig{CertFile: "/etc/mcp-warden-tls/tls.crt", KeyFile: "/etc/mcp-warden-tls/tls.key"}
	cfg.Sessions.PeerCAFile, cfg.Sessions.PeerServerName = "", ""
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "sessions.peerCAFile") {
		t.Fatalf("tls with a peer port and no peerCAFile: %v, want an error naming sessions.peerCAFile", err)
	}
	cfg.Sessions.PeerCAFile, cfg.Sessions.PeerServerName = "/etc/mcp-warden-tls/ca.crt", peerServerName
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
}
