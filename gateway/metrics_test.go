package gateway_test

import (
	"encoding/json"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestMetricsAndTraceContext: the gateway continues the client's W3C trace, hands the MCP server a
// traceparent with the same trace id and its own span id, writes the trace id in the audit record, and
// counts requests, decisions and refusals on the status port's /metrics, with bounded labels.
func TestMetricsAndTraceContext(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	tok := f.is.token(t, "files:read")
	init := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`
	resp, _ := f.post(t, tok, init, map[string]string{"traceparent": "00-" + traceID + "-00f067aa0ba902b7-01", "tracestate": "vendor=1"})
	sid := resp.Header.Get("Mcp-Session-Id")
	hdr := map[string]string{"Mcp-Session-Id": sid, "Mcp-Protocol-Version": "2025-06-18", "traceparent": "00-" + traceID + "-00f067aa0ba902b7-01"}
	f.post(t, tok, `{"jsonrpc":"2.0","method":"notifications/initialized"}`, hdr)
	f.post(t, tok, `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"a.txt"}}}`, hdr)
	f.post(t, tok, `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"write_file","arguments":{"path":"a.txt","content":"x"}}}`, hdr)
	f.post(t, "not-a-token", init, nil)
	// A forged traceparent (all-zero trace id, upper-case hex, extra fields) starts a new trace instead.
	f.post(t, tok, init, map[string]string{"traceparent": "00-00000000000000000000000000000000-00f067aa0ba902b7-01"})

	var continued, fresh int
	for _, tp := range f.up.traceparents.List() {
		if tp == "" {
			continue // the gateway's own requests (its tool catalog), which no client traced
		}
		parts := strings.Split(tp, "-")
		if len(parts) != 4 || len(parts[1]) != 32 || len(parts[2]) != 16 {
			t.Fatalf("the MCP server got traceparent %q, want a valid one on every request", tp)
		}
		if parts[2] == "00f067aa0ba902b7" {
			t.Errorf("the gateway must send its own span id, not the client's: %s", tp)
		}
		if parts[1] == traceID {
			continued++
		} else if parts[1] != strings.Repeat("0", 32) {
			fresh++
		}
	}
	if continued < 3 || fresh < 1 {
		t.Errorf("traceparents upstream: %d continued the client's trace, %d fresh; want >= 3 and >= 1: %v", continued, fresh, f.up.traceparents.List())
	}
	var rec struct {
		Tool, Decision, TraceID string
	}
	found := 0
	for _, line := range strings.Split(strings.TrimSpace(f.audit.String()), "\n") {
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Tool != "" {
			found++
			if rec.TraceID != traceID {
				t.Errorf("audit record of %s (%s) has trace id %q, want %s", rec.Tool, rec.Decision, rec.TraceID, traceID)
			}
		}
	}
	if found != 2 {
		t.Errorf("want 2 audit records, got %d: %s", found, f.audit.String())
	}

	srv := httptest.NewServer(f.gw.StatusHandler())
	defer srv.Close()
	mresp, err := srv.Client().Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(mresp.Body)
	mresp.Body.Close()
	for _, want := range []string{
		`mcp_warden_gateway_tool_calls_total{decision="allow",result="ok"} 1`,
		`mcp_warden_gateway_tool_calls_total{decision="deny",result="none"} 1`,
		`mcp_warden_gateway_auth_failures_total{reason="token is malformed or signed with an algorithm that is not allowed"} 1`,
		`mcp_warden_gateway_http_requests_total{code="401",method="post"} 1`,
		`mcp_warden_gateway_tool_call_duration_seconds_count{decision="allow"} 1`,
		`mcp_warden_gateway_http_request_duration_seconds_bucket{method="post",le="+Inf"}`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if strings.Contains(string(body), "read_file") || strings.Contains(string(body), "write_file") {
		t.Error("/metrics must not carry tool names (unbounded labels)")
	}
}
