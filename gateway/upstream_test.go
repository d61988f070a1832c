package gateway_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/mcp-warden/mcp-warden/gateway"
)

// startStatus runs a gateway (auth off) in front of upstream and returns its status server.
func startStatus(t *testing.T, upstream string) *httptest.Server {
	t.Helper()
	g, err := gateway.New(&gateway.Config{Upstream: upstream, Resource: "http://files.test/mcp", Auth: gateway.AuthConfig{Disabled: true}},
		gateway.Options{AuditWriter: io.Discard, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	g.Start(ctx)
	st := httptest.NewServer(g.StatusHandler())
	t.Cleanup(func() { cancel(); _ = g.Close(); st.Close() })
	return st
}

func readStatus(t *testing.T, st *httptest.Server) (gateway.Status, int, string) {
	t.Helper()
	var s gateway.Status
	resp, err := http.Get(st.URL + "/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		t.Fatal(err)
	}
	ready, err := http.Get(st.URL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer ready.Body.Close()
	body, _ := io.ReadAll(ready.Body)
	return s, ready.StatusCode, string(body)
}

// TestUpstreamStatusReportsServerInfo: behind a real MCP server, the status port reports the server's
// initialize result and tool count, and /readyz passes.
func TestUpstreamStatusReportsServerInfo(t *testing.T) {
	up := newUpstream(t, nil, 0)
	st := startStatus(t, up.srv.URL+"/mcp")
	var s gateway.Status
	var code int
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if s, code, _ = readStatus(t, st); s.Upstream.Initialized && code == http.StatusOK {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	u := s.Upstream
	if !u.Initialized || code != http.StatusOK || u.ServerName != "files" || u.ServerVersion != "1.0.0" || u.ProtocolVersion == "" || u.ToolCount < 2 || u.Error != "" {
		t.Fatalf("status %+v, readyz %d", u, code)
	}
	if len(s.Pins.Tools) != u.ToolCount {
		t.Fatalf("%d pins for %d tools", len(s.Pins.Tools), u.ToolCount)
	}
}

// TestNonMCPUpstreamIsNotReady: an upstream that answers HTTP but not MCP (a plain web page) never makes
// the gateway ready; the status quotes what the gateway saw, bounded, and keeps counting how long it
// has failed.
func TestNonMCPUpstreamIsNotReady(t *testing.T) {
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		_, _ = io.WriteString(w, "<html>hello from a web server\x1b[31m"+strings.Repeat("x", 4096)+"</html>")
	}))
	t.Cleanup(web.Close)
	st := startStatus(t, web.URL+"/mcp")
	var s gateway.Status
	var code int
	var body string
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if s, code, body = readStatus(t, st); s.Upstream.Error != "the gateway has not reached the server yet" && s.Upstream.FailingSeconds >= 1 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	u := s.Upstream
	t.Logf("gateway status for a non-MCP upstream: %+v; readyz %d %q", u, code, body)
	if u.Initialized || code != http.StatusServiceUnavailable || u.ServerName != "" || u.ToolCount != 0 {
		t.Fatalf("a non-MCP upstream is reported ready: %+v, readyz %d", u, code)
	}
	if !strings.Contains(u.Error, "initialize") || len(u.Error) > 512 || strings.ContainsAny(u.Error, "\x1b\n") {
		t.Fatalf("the error must name the failed initialize, bounded and without control characters: %q", u.Error)
	}
	if u.FailingSeconds < 1 || !strings.Contains(body, u.Error[:20]) {
		t.Fatalf("failing for %ds; readyz body %q", u.FailingSeconds, body)
	}
}
