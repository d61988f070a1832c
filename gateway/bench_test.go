package gateway_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
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
