package gateway

import (
	"encoding/json"
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
