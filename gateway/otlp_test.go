package gateway_test

import (
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/mcp-warden/mcp-warden/gateway"
)

// otlpReceiver is an OTLP/HTTP traces endpoint in process: it decodes each protobuf export request and
// keeps the spans. With block set, it holds every request until the test ends (a stuck collector).
type otlpReceiver struct {
	srv   *httptest.Server
	mu    sync.Mutex
	spans []*tracepb.Span
	res   []string
	block chan struct{}
}

func newOTLPReceiver(t *testing.T, blocking bool) *otlpReceiver {
	o := &otlpReceiver{}
	if blocking {
		o.block = make(chan struct{})
	}
	o.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/x-protobuf" {
			http.Error(w, "want POST /v1/traces, application/x-protobuf", http.StatusBadRequest)
			return
		}
		if o.block != nil {
			select {
			case <-o.block:
			case <-r.Context().Done():
			}
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, 8<<20))
		req := &collectortrace.ExportTraceServiceRequest{}
		if err == nil {
			err = proto.Unmarshal(body, req)
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		o.mu.Lock()
		for _, rs := range req.ResourceSpans {
			for _, a := range rs.GetResource().GetAttributes() {
				o.res = append(o.res, a.Key+"="+a.GetValue().GetStringValue())
			}
			for _, ss := range rs.ScopeSpans {
				o.spans = append(o.spans, ss.Spans...)
			}
		}
		o.mu.Unlock()
		out, _ := proto.Marshal(&collectortrace.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(out)
	}))
	t.Cleanup(func() {
		if o.block != nil {
			close(o.block)
		}
		o.srv.Close()
	})
	return o
}

func (o *otlpReceiver) received() ([]*tracepb.Span, []string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]*tracepb.Span(nil), o.spans...), append([]string(nil), o.res...)
}

func spanAttrs(s *tracepb.Span) map[string]string {
	m := map[string]string{}
	for _, a := range s.Attributes {
		v := a.GetValue().GetStringValue()
		if v == "" {
			v = strings.Trim(a.GetValue().String(), " ")
		}
		m[a.Key] = v
	}
	return m
}

// TestOTLPSpanPerRequest: with an OTLP endpoint, every request is one span exported over OTLP/HTTP,
// with the trace id the audit record carries and the span id the MCP server got as its parent in
// traceparent, child of the client's span; the tools/call span names the tool and the decision and
// carries neither the arguments nor the token.
func TestOTLPSpanPerRequest(t *testing.T) {
	recv := newOTLPReceiver(t, false)
	f := newFixture(t, fixtureOpts{mutate: func(c *gateway.Config) {
		c.Telemetry.OTLPEndpoint = recv.srv.URL // no path: /v1/traces
	}})
	const traceID, clientSpan = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	const secretArg = "quarterly-secret-plan.txt"
	tok := f.is.token(t, "files:read")
	init := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`
	tp := "00-" + traceID + "-" + clientSpan + "-01"
	resp, _ := f.post(t, tok, init, map[string]string{"traceparent": tp})
	hdr := map[string]string{"Mcp-Session-Id": resp.Header.Get("Mcp-Session-Id"), "Mcp-Protocol-Version": "2025-06-18", "traceparent": tp}
	f.post(t, tok, `{"jsonrpc":"2.0","method":"notifications/initialized"}`, hdr)
	before := len(f.up.traceparents.List())
	f.post(t, tok, `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"`+secretArg+`"}}}`, hdr)
	f.post(t, tok, `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"write_file","arguments":{"path":"a.txt","content":"x"}}}`, hdr)
	upstream := f.up.traceparents.List()[before:]
	// A request without a traceparent starts a trace of its own, sampled.
	f.post(t, tok, init, nil)
	_ = f.gw.Close() // flushes the queue

	spans, res := recv.received()
	if len(spans) != 5 {
		t.Fatalf("want 5 spans (one per request), got %d: %v", len(spans), spans)
	}
	if !strings.Contains(strings.Join(res, ","), "service.name=mcp-warden-gateway") {
		t.Errorf("resource attributes %v, want service.name=mcp-warden-gateway", res)
	}
	var audit struct{ Tool, Decision, TraceID string }
	for _, line := range strings.Split(strings.TrimSpace(f.audit.String()), "\n") {
		if json.Unmarshal([]byte(line), &audit) == nil && audit.Tool == "read_file" {
			break
		}
	}
	if audit.TraceID != traceID {
		t.Fatalf("audit record of read_file: trace id %q, want %s", audit.TraceID, traceID)
	}
	calls, fresh := checkSpans(t, spans, audit.TraceID, clientSpan, []string{secretArg, tok, "alice"})
	if fresh != 1 {
		t.Errorf("want exactly one span outside the client's trace (the request without traceparent), got %d", fresh)
	}
	for tool, want := range map[string]string{"read_file": "allow", "write_file": "deny"} {
		s := calls[tool]
		if s == nil {
			t.Errorf("no span names tool %s: %v", tool, calls)
			continue
		}
		a := spanAttrs(s)
		if a["mcp.decision"] != want || a["mcp.method.name"] != "tools/call" || a["http.response.status_code"] == "" {
			t.Errorf("span of %s: attributes %v, want mcp.decision=%s, mcp.method.name=tools/call and the HTTP status", tool, a, want)
		}
	}
	// The span the MCP server was told about is the exported one.
	if s := calls["read_file"]; s != nil {
		want := "00-" + traceID + "-" + hex.EncodeToString(s.SpanId) + "-01"
		if !strings.Contains(strings.Join(upstream, ","), want) {
			t.Errorf("the server got traceparents %v, want %s (the exported span as its parent)", upstream, want)
		}
	}
}

// checkSpans asserts that no span carries any of the secrets, that the spans outside trace traceID
// are roots and those inside are server spans under the client's span clientSpan. It returns the spans
// of trace traceID by the tool they name and the number of spans outside it.
func checkSpans(t *testing.T, spans []*tracepb.Span, traceID, clientSpan string, secrets []string) (map[string]*tracepb.Span, int) {
	t.Helper()
	calls := map[string]*tracepb.Span{}
	fresh := 0
	for _, s := range spans {
		raw, _ := proto.Marshal(s)
		for _, secret := range secrets {
			if strings.Contains(string(raw), secret) {
				t.Errorf("span %s carries a tool argument, the token or the principal: %v", s.Name, s)
				break
			}
		}
		if hex.EncodeToString(s.TraceId) != traceID {
			fresh++
			if len(s.ParentSpanId) != 0 {
				t.Errorf("a trace the gateway started must be a root span, got parent %x", s.ParentSpanId)
			}
			continue
		}
		if got := hex.EncodeToString(s.ParentSpanId); got != clientSpan {
			t.Errorf("span %s: parent %s, want the client's span %s", s.Name, got, clientSpan)
		}
		if s.Kind != tracepb.Span_SPAN_KIND_SERVER || s.EndTimeUnixNano < s.StartTimeUnixNano {
			t.Errorf("span %s: kind %v, start %d end %d", s.Name, s.Kind, s.StartTimeUnixNano, s.EndTimeUnixNano)
		}
		if a := spanAttrs(s); a["mcp.tool.name"] != "" {
			calls[a["mcp.tool.name"]] = s
		}
	}
	return calls, fresh
}

// TestOTLPExportNeverBlocksRequests: a collector that accepts connections and never answers holds no
// request: requests are served at the usual speed while spans wait in the bounded queue, and Close
// returns within the export deadline.
func TestOTLPExportNeverBlocksRequests(t *testing.T) {
	recv := newOTLPReceiver(t, true)
	f := newFixture(t, fixtureOpts{mutate: func(c *gateway.Config) {
		c.Telemetry.OTLPEndpoint = recv.srv.URL + "/v1/traces"
		// the requests come as fast as the machine serves them: the rate limit is not under test
		c.Limits.RequestsPerSecond, c.Limits.Burst = 1e9, 1<<30
	}})
	tok := f.is.token(t, "files:read")
	init := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`
	start := time.Now()
	for i := 0; i < 3000; i++ { // more than the queue holds
		if resp, _ := f.post(t, tok, init, nil); resp.StatusCode != http.StatusOK {
			t.Fatalf("request %d: %s", i, resp.Status)
		}
	}
	if d := time.Since(start); d > 60*time.Second {
		t.Errorf("3000 requests took %s with a stuck collector", d)
	}
	closed := time.Now()
	_ = f.gw.Close()
	if d := time.Since(closed); d > 8*time.Second {
		t.Errorf("Close took %s with a stuck collector, want at most the export deadline", d)
	}
}

// TestOTLPEndpointValidated: an endpoint that is not an http(s) URL, or carries credentials, is refused
// with the field's name.
func TestOTLPEndpointValidated(t *testing.T) {
	for _, bad := range []string{"otel-collector:4318", "ftp://collector/v1/traces", "http://user:pass@collector:4318/v1/traces", "http://collector:4318/v1/traces?x=1"} {
		cfg := &gateway.Config{Listen: ":8443", Upstream: "http://127.0.0.1:8080/mcp", Resource: "https://files.example.com/mcp",
			Auth: gateway.AuthConfig{Disabled: true}, Telemetry: gateway.TelemetryConfig{OTLPEndpoint: bad}}
		cfg.WithDefaults()
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "telemetry.otlpEndpoint") {
			t.Errorf("endpoint %q: %v, want an error naming telemetry.otlpEndpoint", bad, err)
		}
	}
}
