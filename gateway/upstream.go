package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// maxUpstreamError bounds the error the gateway reports: its text can come from the server.
const maxUpstreamError = 512

// upstreamState records the handshakes' outcomes.
type upstreamState struct {
	mu      sync.Mutex
	st      UpstreamStatus
	failing time.Time // start of the current run of failures (zero while succeeding)
}

func newUpstreamState() *upstreamState {
	return &upstreamState{st: UpstreamStatus{Error: "the gateway has not reached the server yet"}, failing: time.Now()}
}

// succeeded records a completed initialize and listing.
func (u *upstreamState) succeeded(init *mcp.InitializeResult, tools int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.st = UpstreamStatus{Initialized: true, ToolCount: tools}
	if init != nil {
		u.st.ProtocolVersion = clean(init.ProtocolVersion, 128)
		if init.ServerInfo != nil {
			u.st.ServerName, u.st.ServerVersion = clean(init.ServerInfo.Name, 128), clean(init.ServerInfo.Version, 128)
		}
	}
	u.failing = time.Time{}
}

// failed records a failed attempt; what the last success learnt is kept but no longer counts.
func (u *upstreamState) failed(err error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.st.Initialized = false
	u.st.Error = clean(err.Error(), maxUpstreamError)
	if u.failing.IsZero() {
		u.failing = time.Now()
	}
}

func (u *upstreamState) snapshot() UpstreamStatus {
	u.mu.Lock()
	defer u.mu.Unlock()
	st := u.st
	if !st.Initialized {
		st.FailingSeconds = int64(time.Since(u.failing) / time.Second)
	}
	return st
}

// clean makes server-provided text safe to show: valid UTF-8, no control characters, at most n bytes.
func clean(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, strings.ToValidUTF8(s, "?"))
	if len(s) > n {
		s = strings.ToValidUTF8(s[:n], "")
	}
	return s
}

// Upstream returns the outcome of the gateway's last MCP handshake with its server.
func (g *Gateway) Upstream() UpstreamStatus { return g.tools.upstream.snapshot() }

// Recheck asks for a new handshake and listing soon (the server may have restarted), without blocking.
func (g *Gateway) Recheck() { g.tools.requestRefresh() }

// StatusHandler serves the gateway's status for the operator and the kubelet, on its own port
// (statusListen) so that network policy can open it to the operator alone:
//
//	GET /status   Status as JSON: the pin state and the MCP handshake with the server
//	GET /pins     the pin state as JSON
//	GET /readyz   200 once the server answered initialize and tools/list, else 503 with the reason
//	GET /metrics  Prometheus metrics of the gateway
func (g *Gateway) StatusHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", g.metrics.handler())
	mux.HandleFunc("GET /pins", func(w http.ResponseWriter, _ *http.Request) {
		writeStatusJSON(w, g.Pins())
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		writeStatusJSON(w, Status{Pins: g.Pins(), Upstream: g.Upstream()})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		up := g.Upstream()
		if up.Initialized {
			_, _ = w.Write([]byte("ok: the server answered initialize and tools/list\n"))
			return
		}
		g.Recheck() // a probe need not wait out the retry backoff
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte("the server has not answered the gateway's MCP initialize and tools/list: " + up.Error + "\n"))
	})
	return mux
}

func writeStatusJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(v)
}

// forwardedHeaders are the only request headers passed to the server (with Mcp-Param-* headers):
// never Authorization or cookies. Mcp-Method and Mcp-Name (protocol 2026-07-28) are checked against the
// body first.
var forwardedHeaders = []string{"Content-Type", "Accept", "Mcp-Session-Id", "Mcp-Protocol-Version", "Last-Event-Id", "Mcp-Method", "Mcp-Name"}

// paramHeaderPrefix starts the per-argument headers of protocol 2026-07-28; the server checks them
// against the body's arguments, which the gateway has validated.
const paramHeaderPrefix = "Mcp-Param-"

// forwarder is the upstream stage: it sends a client's request (POST, GET or DELETE; a stdio server
// is served on a loopback HTTP endpoint, so the same path) to the server, with only the headers the
// server needs and the request's trace context, never a redirect followed.
type forwarder struct {
	client   *http.Client
	endpoint string
}

// newForwarder is the upstream stage's HTTP client: no proxy, no compression, bounded dials.
func newForwarder(endpoint string) *forwarder {
	return &forwarder{endpoint: endpoint, client: &http.Client{Transport: &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	},
		// a redirect would send a checked call (307 and 308 keep the body) past the loopback upstream
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// send sends method with body (nil for GET and DELETE) under ctx, which carries the deadline; the
// caller closes the response body.
func (f *forwarder) send(ctx context.Context, method string, r *http.Request, body []byte) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, f.endpoint, rd)
	if err != nil {
		return nil, fmt.Errorf("build upstream request: %w", err)
	}
	if tc, ok := traceFrom(ctx); ok { // ctx is derived from r's (forward)
		req.Header.Set("traceparent", tc.traceparent())
		if tc.state != "" {
			req.Header.Set("tracestate", tc.state)
		}
	}
	for _, h := range forwardedHeaders {
		if v := r.Header.Values(h); len(v) > 0 {
			req.Header[h] = v
		}
	}
	for k, v := range r.Header {
		if strings.HasPrefix(k, paramHeaderPrefix) {
			req.Header[k] = v
		}
	}
	resp, err := f.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("upstream %s: %w", method, err)
	}
	return resp, nil
}
