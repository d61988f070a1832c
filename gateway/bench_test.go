package gateway_test

import (
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
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcp-warden/mcp-warden/gateway"
)

// BenchmarkProxyOverhead calls a tool directly on the server, through the gateway (token verified,
// scope, pin and schema checked, result sanitized, call audited) and through a bare reverse proxy (the
// cost of the extra hop alone), alternating in the same run, and reports
// p50/p99 latency of each, the p99 the gateway adds, and calls per second of each, sequentially and with
// eight sessions calling at once. Client, gateway and server share the machine's cores.
func BenchmarkProxyOverhead(b *testing.B) {
	f := newFixture(b, fixtureOpts{mutate: func(c *gateway.Config) { c.Limits.RequestsPerSecond, c.Limits.Burst = 1e9, 1<<30 }})
	token := f.is.token(b, "files:read")
	connect := func(endpoint string) *mcp.ClientSession {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c := mcp.NewClient(&mcp.Implementation{Name: "bench", Version: "1"}, nil)
		cs, err := c.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: endpoint, HTTPClient: &http.Client{Transport: bearer{token: token, next: &http.Transport{MaxIdleConnsPerHost: 16}}}}, nil)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = cs.Close() })
		return cs
	}
	// A bare reverse proxy (no checks at all) in front of the same server is the floor any proxy pays
	// for the extra hop; the gateway is compared with it too.
	upURL, _ := url.Parse(f.up.srv.URL)
	rp := httputil.NewSingleHostReverseProxy(upURL)
	rp.FlushInterval = -1
	bare := httptest.NewServer(rp)
	b.Cleanup(bare.Close)
	direct, viaGateway, viaProxy := connect(f.up.srv.URL+"/mcp"), connect(f.srv.URL+"/mcp"), connect(bare.URL+"/mcp")
	params := &mcp.CallToolParams{Name: "read_file", Arguments: map[string]any{"path": "docs/readme.md"}}
	once := func(cs *mcp.ClientSession) time.Duration {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		t0 := time.Now()
		if _, err := cs.CallTool(ctx, params); err != nil {
			b.Fatal(err)
		}
		return time.Since(t0)
	}
	for range 50 { // warm connections, caches and pins
		once(direct)
		once(viaGateway)
		once(viaProxy)
	}
	var d, g, p []time.Duration
	b.ResetTimer()
	for b.Loop() {
		d = append(d, once(direct))
		g = append(g, once(viaGateway))
		p = append(p, once(viaProxy))
	}
	b.StopTimer()
	pct := func(s []time.Duration, p float64) float64 {
		s = slices.Clone(s)
		slices.Sort(s)
		return float64(s[int(p*float64(len(s)-1))].Microseconds())
	}
	rate := func(s []time.Duration) float64 {
		var sum time.Duration
		for _, x := range s {
			sum += x
		}
		return float64(len(s)) / sum.Seconds()
	}
	b.ReportMetric(pct(d, 0.50), "direct-p50-µs")
	b.ReportMetric(pct(d, 0.99), "direct-p99-µs")
	b.ReportMetric(pct(g, 0.50), "gateway-p50-µs")
	b.ReportMetric(pct(g, 0.99), "gateway-p99-µs")
	b.ReportMetric(pct(g, 0.99)-pct(d, 0.99), "added-p99-µs")
	b.ReportMetric(rate(d), "direct-calls/s")
	b.ReportMetric(rate(g), "gateway-calls/s")
	b.ReportMetric(100*rate(g)/rate(d), "gateway/direct-%")
	b.ReportMetric(pct(p, 0.50), "bareproxy-p50-µs")
	b.ReportMetric(100*rate(p)/rate(d), "bareproxy/direct-%")
	b.ReportMetric(100*rate(g)/rate(p), "gateway/bareproxy-%")
	// throughput under load: 8 sessions calling at once, a bounded number of calls each
	parallel := func(endpoint string) float64 {
		const workers, perWorker = 8, 150
		sessions := make([]*mcp.ClientSession, workers)
		for i := range sessions {
			sessions[i] = connect(endpoint)
		}
		var wg sync.WaitGroup
		start := time.Now()
		for _, cs := range sessions {
			wg.Go(func() {
				for range perWorker {
					once(cs)
				}
			})
		}
		wg.Wait()
		return workers * perWorker / time.Since(start).Seconds()
	}
	pd, pg, pp := parallel(f.up.srv.URL+"/mcp"), parallel(f.srv.URL+"/mcp"), parallel(bare.URL+"/mcp")
	b.ReportMetric(pd, "direct-parallel-calls/s")
	b.ReportMetric(pg, "gateway-parallel-calls/s")
	b.ReportMetric(100*pg/pd, "gateway/direct-parallel-%")
	b.ReportMetric(100*pp/pd, "bareproxy/direct-parallel-%")
	b.ReportMetric(0, "ns/op") // per-op time mixes both paths; the metrics above are the result
}

// BenchmarkProxyOverheadTLS is BenchmarkProxyOverhead with the gateway serving HTTPS as in a cluster
// (the operator's certificate, read through gateway.CertReloader, TLS 1.3 negotiated): a tool call
// straight to the server (plaintext, as the gateway reaches it on loopback), through the gateway over
// TLS, and through a bare TLS reverse proxy (httputil.ReverseProxy with the same certificate: the cost
// of the hop and TLS alone), alternating in one run; p50/p99 of each and calls per second, sequential
// and with eight sessions. Connections are reused, as MCP clients do; handshakes are not measured per
// call.
func BenchmarkProxyOverheadTLS(b *testing.B) {
	f := newFixture(b, fixtureOpts{mutate: func(c *gateway.Config) { c.Limits.RequestsPerSecond, c.Limits.Burst = 1e9, 1<<30 }})
	token := f.is.token(b, "files:read")
	roots, certFile, keyFile := benchCert(b)
	certs, err := gateway.NewCertReloader(certFile, keyFile, nil)
	if err != nil {
		b.Fatal(err)
	}
	serveTLS := func(h http.Handler) *httptest.Server {
		s := httptest.NewUnstartedServer(h)
		s.TLS = certs.ServerTLSConfig()
		s.StartTLS()
		b.Cleanup(s.Close)
		return s
	}
	gw := serveTLS(f.srv.Config.Handler)
	upURL, _ := url.Parse(f.up.srv.URL)
	rp := httputil.NewSingleHostReverseProxy(upURL)
	rp.FlushInterval = -1
	bare := serveTLS(rp)
	connect := func(endpoint string) *mcp.ClientSession {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		tr := &http.Transport{MaxIdleConnsPerHost: 16, ForceAttemptHTTP2: true, TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "localhost"}}
		cs, err := mcp.NewClient(&mcp.Implementation{Name: "bench", Version: "1"}, nil).Connect(ctx,
			&mcp.StreamableClientTransport{Endpoint: endpoint, HTTPClient: &http.Client{Transport: bearer{token: token, next: tr}}}, nil)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = cs.Close() })
		return cs
	}
	params := &mcp.CallToolParams{Name: "read_file", Arguments: map[string]any{"path": "docs/readme.md"}}
	once := func(cs *mcp.ClientSession) time.Duration {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		t0 := time.Now()
		if _, err := cs.CallTool(ctx, params); err != nil {
			b.Fatal(err)
		}
		return time.Since(t0)
	}
	direct, viaGateway, viaProxy := connect(f.up.srv.URL+"/mcp"), connect(gw.URL+"/mcp"), connect(bare.URL+"/mcp")
	for range 50 {
		once(direct)
		once(viaGateway)
		once(viaProxy)
	}
	var d, g, p []time.Duration
	b.ResetTimer()
	for b.Loop() {
		d = append(d, once(direct))
		g = append(g, once(viaGateway))
		p = append(p, once(viaProxy))
	}
	b.StopTimer()
	pct := func(s []time.Duration, p float64) float64 {
		s = slices.Clone(s)
		slices.Sort(s)
		return float64(s[int(p*float64(len(s)-1))].Microseconds())
	}
	rate := func(s []time.Duration) float64 {
		var sum time.Duration
		for _, x := range s {
			sum += x
		}
		return float64(len(s)) / sum.Seconds()
	}
	parallel := func(endpoint string) float64 {
		const workers, perWorker = 8, 150
		sessions := make([]*mcp.ClientSession, workers)
		for i := range sessions {
			sessions[i] = connect(endpoint)
		}
		var wg sync.WaitGroup
		start := time.Now()
		for _, cs := range sessions {
			wg.Go(func() {
				for range perWorker {
					once(cs)
				}
			})
		}
		wg.Wait()
		return workers * perWorker / time.Since(start).Seconds()
	}
	for _, m := range []struct {
		name string
		s    []time.Duration
		url  string
	}{{"direct", d, f.up.srv.URL + "/mcp"}, {"tlsgateway", g, gw.URL + "/mcp"}, {"tlsbareproxy", p, bare.URL + "/mcp"}} {
		b.ReportMetric(pct(m.s, 0.50), m.name+"-p50-µs")
		b.ReportMetric(pct(m.s, 0.99), m.name+"-p99-µs")
		b.ReportMetric(rate(m.s), m.name+"-calls/s")
		b.ReportMetric(parallel(m.url), m.name+"-parallel-calls/s")
	}
	b.ReportMetric(0, "ns/op")
}

// benchCert writes a CA-signed certificate for localhost and returns the CA pool and the files.
func benchCert(b *testing.B) (*x509.CertPool, string, string) {
	b.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bench CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		b.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), DNSNames: []string{"localhost"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage: x509.KeyUsageDigitalSignature, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		b.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	dir := b.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		b.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return pool, certFile, keyFile
}

// BenchmarkSessionsAcrossReplicas calls a tool in one session through a round-robin front over three
// replicas (two of every three requests relayed to the replica that holds the session) and over one
// replica, alternating in the same run, and reports calls per second and p50 of each. Then it opens
// sessions spread over three replicas, takes one replica away and counts the re-initializes: one per
// session that replica held, none for the others.
func BenchmarkSessionsAcrossReplicas(b *testing.B) {
	unlimited := func(c *gateway.Config) { c.Limits.RequestsPerSecond, c.Limits.Burst = 1e9, 1<<30 }
	rs3, _ := newReplicaSet(b, 3, unlimited)
	rs1, _ := newReplicaSet(b, 1, unlimited)
	cs3 := rs3.connect(b, rs3.is.token(b, "files:read"))
	cs1 := rs1.connect(b, rs1.is.token(b, "files:read"))
	params := &mcp.CallToolParams{Name: "read_file", Arguments: map[string]any{"path": "docs/readme.md"}}
	once := func(cs *mcp.ClientSession) (time.Duration, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		t0 := time.Now()
		_, err := cs.CallTool(ctx, params)
		return time.Since(t0), err
	}
	must := func(d time.Duration, err error) time.Duration {
		if err != nil {
			b.Fatal(err)
		}
		return d
	}
	for range 30 {
		must(once(cs3))
		must(once(cs1))
	}
	var three, one []time.Duration
	b.ResetTimer()
	for b.Loop() {
		three = append(three, must(once(cs3)))
		one = append(one, must(once(cs1)))
	}
	b.StopTimer()
	p50 := func(s []time.Duration) float64 {
		s = slices.Clone(s)
		slices.Sort(s)
		return float64(s[len(s)/2].Microseconds())
	}
	rate := func(s []time.Duration) float64 {
		var sum time.Duration
		for _, x := range s {
			sum += x
		}
		return float64(len(s)) / sum.Seconds()
	}
	b.ReportMetric(p50(three), "3replicas-p50-µs")
	b.ReportMetric(p50(one), "1replica-p50-µs")
	b.ReportMetric(rate(three), "3replicas-calls/s")
	b.ReportMetric(rate(one), "1replica-calls/s")
	b.ReportMetric(100*rate(three)/rate(one), "3replicas/1replica-%")

	// a replica's loss
	rs, _ := newReplicaSet(b, 3, unlimited)
	token := rs.is.token(b, "files:read")
	const sessions = 12
	css := make([]*mcp.ClientSession, sessions)
	held := 0
	lost := rs.replicas[0]
	for i := range css {
		css[i] = rs.connect(b, token)
		must(once(css[i]))
		if ownerOf(b, rs, css[i].ID()) == lost.addr {
			held++
		}
	}
	rs.kill(lost)
	reinits, wrong := 0, 0
	var gone []time.Duration
	for i, cs := range css {
		d, err := once(cs)
		switch {
		case errors.Is(err, mcp.ErrSessionMissing):
			reinits++
			gone = append(gone, d)
			css[i] = rs.connect(b, token)
			must(once(css[i]))
		case err != nil:
			b.Fatalf("session %d after the loss: %v", i, err)
		}
		if (err != nil) != (ownerOf(b, rs, cs.ID()) == lost.addr) {
			wrong++
		}
	}
	if wrong > 0 || reinits != held {
		b.Fatalf("after a replica's loss: %d re-initializes for %d sessions it held (%d sessions re-initialized that it did not hold, or kept that it did)", reinits, held, wrong)
	}
	b.ReportMetric(float64(reinits)/float64(sessions), "reinits/session/replica-loss")
	b.ReportMetric(float64(reinits)/float64(max(held, 1)), "reinits/lost-session")
	if len(gone) > 0 {
		b.ReportMetric(p50(gone), "404-after-loss-p50-µs")
	}
	b.ReportMetric(0, "ns/op")
}

// ownerOf returns the replica a session id names.
func ownerOf(t testing.TB, _ *replicaSet, id string) string {
	t.Helper()
	parts := strings.Split(id, ".")
	if len(parts) != 3 || parts[0] != "mw2" {
		t.Fatalf("session id %q is not in the gateway's format", id)
	}
	owner, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatalf("session id %q: owner: %v", id, err)
	}
	return string(owner)
}
