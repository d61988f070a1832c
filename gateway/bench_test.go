package gateway

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// BenchmarkProxyOverhead calls a tool directly and through the gateway (token verified, scope and schema
// checked, result sanitized, audited) in the same run, reporting p50/p99 latency and calls per second.
func BenchmarkProxyOverhead(b *testing.B) {
	t := &testing.T{}
	f := newFixture(t, func(c *Config) { c.Limits.RatePerSecond, c.Limits.Burst = 1e6, 1e6 })
	defer f.gw.Close()
	defer f.up.srv.Close()
	defer f.is.srv.Close()
	token := f.is.mint(t, f.is.valid("files:read"))
	ctx := context.Background()
	run := func(b *testing.B, endpoint string) {
		client := mcp.NewClient(&mcp.Implementation{Name: "bench", Version: "1"}, nil)
		s, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: endpoint, HTTPClient: newHTTPClient(token)}, nil)
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		var d []time.Duration
		start := time.Now()
		for b.Loop() {
			t0 := time.Now()
			if _, err := s.CallTool(ctx, &mcp.CallToolParams{Name: "read_file", Arguments: map[string]any{"path": "a.txt"}}); err != nil {
				b.Fatal(err)
			}
			d = append(d, time.Since(t0))
		}
		elapsed := time.Since(start)
		slices.Sort(d)
		b.ReportMetric(float64(d[len(d)/2].Microseconds()), "p50-µs")
		b.ReportMetric(float64(d[int(0.99*float64(len(d)-1))].Microseconds()), "p99-µs")
		b.ReportMetric(float64(len(d))/elapsed.Seconds(), "calls/s")
	}
	b.Run("direct", func(b *testing.B) { run(b, f.up.srv.URL+"/mcp") })
	b.Run("gateway", func(b *testing.B) { run(b, f.gw.URL+"/mcp") })
}
