package gateway

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/mcp-warden/mcp-warden/gateway/config"
)

// W3C Trace Context (https://www.w3.org/TR/trace-context/): the gateway continues the client's trace,
// or starts one, passes it to the MCP server in traceparent (with the gateway's own span id as parent),
// and writes the trace id in every audit record of the request, so one id joins the client's trace, the
// gateway's audit and the server's logs.

// traceContext is one request's trace.
type traceContext struct {
	traceID, spanID, flags string
	// parentID is the client's span id, from a valid incoming traceparent.
	parentID string
	state    string
}

type traceKey struct{}

// requestTrace continues a valid incoming traceparent (version 00) or starts a new trace; either way
// the gateway's span gets a fresh span id. An invalid traceparent is ignored, as the specification says,
// and a tracestate is kept only with a valid traceparent and at most 512 bytes.
func requestTrace(h http.Header) traceContext {
	tc := traceContext{spanID: randomHex(8), flags: "00"}
	if id, parent, flags, ok := parseTraceparent(h.Get("traceparent")); ok {
		tc.traceID, tc.parentID, tc.flags = id, parent, flags
		if st := h.Get("tracestate"); len(st) <= 512 && printableASCII(st) {
			tc.state = st
		}
	} else {
		tc.traceID = randomHex(16)
	}
	return tc
}

// traceparent is the header value the gateway sends upstream.
func (tc traceContext) traceparent() string {
	return "00-" + tc.traceID + "-" + tc.spanID + "-" + tc.flags
}

func parseTraceparent(v string) (traceID, parentID, flags string, ok bool) {
	parts := strings.Split(v, "-")
	if len(parts) != 4 || parts[0] != "00" || !lowerHex(parts[1], 32) || !lowerHex(parts[2], 16) || !lowerHex(parts[3], 2) {
		return "", "", "", false
	}
	if parts[1] == strings.Repeat("0", 32) || parts[2] == strings.Repeat("0", 16) {
		return "", "", "", false
	}
	return parts[1], parts[2], parts[3], true
}

func lowerHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func withTrace(ctx context.Context, tc traceContext) context.Context {
	return context.WithValue(ctx, traceKey{}, tc)
}

func traceFrom(ctx context.Context) (traceContext, bool) {
	tc, ok := ctx.Value(traceKey{}).(traceContext)
	return tc, ok
}

// Span export (OpenTelemetry, OTLP/HTTP): with Config.Telemetry.OTLPEndpoint, every authenticated
// request is one span whose trace id and span id are the request's traceContext (so the span, the
// traceparent the server gets and the audit record's traceId agree), child of the client's span when it
// sent a traceparent. Only the decision, the JSON-RPC method, the tool's name, the call's result class
// and the HTTP status are recorded: never arguments, results, tokens or the principal.

const (
	// spanQueueSize bounds the spans waiting for export; when it is full, new spans are dropped, so a
	// slow or absent collector never holds a request or grows memory.
	spanQueueSize = 2048
	// spanExportTimeout is the deadline of one export (one HTTP POST to the collector).
	spanExportTimeout = 5 * time.Second
	// spanBatchTimeout is how long a span waits for a batch to fill before it is sent.
	spanBatchTimeout = 2 * time.Second
)

// tracer starts the gateway's spans; the zero value (no endpoint) starts non-recording ones.
type tracer struct {
	provider *sdktrace.TracerProvider
	tracer   trace.Tracer
}

// newTracer builds the OTLP/HTTP exporter for cfg, or the zero tracer when no endpoint is set. The
// exporter's client has a deadline, no proxy from the environment and no retries beyond the export's
// deadline: a span that cannot be delivered in time is dropped.
// The exporter lives as long as the gateway, not as long as the call that builds it (the OTLP/HTTP
// client's start only checks its context), so it is started on a context of its own.
//
//nolint:contextcheck // the exporter outlives the caller's context (see above).
func newTracer(cfg TelemetryConfig, serverResource string) (*tracer, error) {
	if cfg.OTLPEndpoint == "" {
		return &tracer{tracer: noop.NewTracerProvider().Tracer("")}, nil
	}
	endpoint, err := config.OTLPTracesURL(cfg.OTLPEndpoint)
	if err != nil {
		return nil, err
	}
	hc := &http.Client{Timeout: spanExportTimeout, Transport: &http.Transport{
		Proxy:                 nil,
		DialContext:           (&net.Dialer{Timeout: spanExportTimeout}).DialContext,
		TLSHandshakeTimeout:   spanExportTimeout,
		ResponseHeaderTimeout: spanExportTimeout,
		MaxIdleConns:          2,
		IdleConnTimeout:       90 * time.Second,
	}}
	exp, err := otlptracehttp.New(context.Background(),
		otlptracehttp.WithEndpointURL(endpoint),
		otlptracehttp.WithHTTPClient(hc),
		otlptracehttp.WithRetry(otlptracehttp.RetryConfig{Enabled: false}),
		otlptracehttp.WithMaxResponseSize(64<<10),
	)
	if err != nil {
		return nil, fmt.Errorf("telemetry.otlpEndpoint: %w", err)
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp,
			sdktrace.WithMaxQueueSize(spanQueueSize), sdktrace.WithMaxExportBatchSize(512),
			sdktrace.WithBatchTimeout(spanBatchTimeout), sdktrace.WithExportTimeout(spanExportTimeout)),
		sdktrace.WithIDGenerator(requestIDs{}),
		// The client decides for its own trace (its sampled flag); a trace the gateway starts is sampled.
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.AlwaysSample())),
		sdktrace.WithResource(resource.NewSchemaless(
			attribute.String("service.name", "mcp-warden-gateway"),
			attribute.String("mcp.server.resource", serverResource),
		)),
	)
	return &tracer{provider: tp, tracer: tp.Tracer("github.com/mcp-warden/mcp-warden/gateway")}, nil
}

// start starts the request's span with tc's ids and returns tc with the span's sampled flag (what the
// server is told).
func (t *tracer) start(ctx context.Context, tc traceContext, r *http.Request) (context.Context, trace.Span, traceContext) {
	if t.provider == nil {
		return ctx, trace.SpanFromContext(ctx), tc
	}
	if tc.parentID != "" {
		tid, _ := trace.TraceIDFromHex(tc.traceID)
		sid, _ := trace.SpanIDFromHex(tc.parentID)
		var flags trace.TraceFlags
		if sampledFlag(tc.flags) {
			flags = trace.FlagsSampled
		}
		ctx = trace.ContextWithRemoteSpanContext(ctx, trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: flags, Remote: true}))
	}
	ctx, span := t.tracer.Start(withTrace(ctx, tc), "mcp "+r.Method, trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attribute.String("http.request.method", r.Method), attribute.String("url.path", r.URL.Path)))
	if span.SpanContext().IsSampled() {
		tc.flags = "01"
	} else {
		tc.flags = "00"
	}
	return ctx, span, tc
}

// sampledFlag says whether the sampled bit (0x01) of a two-digit hex flags value is set.
func sampledFlag(flags string) bool {
	if len(flags) != 2 {
		return false
	}
	b, err := hex.DecodeString(flags)
	return err == nil && b[0]&1 == 1
}

// shutdown flushes queued spans, within the deadline of ctx.
func (t *tracer) shutdown(ctx context.Context) error {
	if t.provider == nil {
		return nil
	}
	return t.provider.Shutdown(ctx)
}

// requestIDs makes the SDK use the ids the gateway already chose for the request (in the context by
// withTrace), so the exported span is the one named in traceparent and in the audit record.
type requestIDs struct{}

func (requestIDs) NewIDs(ctx context.Context) (trace.TraceID, trace.SpanID) {
	tc, _ := traceFrom(ctx)
	tid, err := trace.TraceIDFromHex(tc.traceID)
	if err != nil {
		tid, _ = trace.TraceIDFromHex(randomHex(16))
	}
	return tid, requestIDs{}.NewSpanID(ctx, tid)
}

func (requestIDs) NewSpanID(ctx context.Context, _ trace.TraceID) trace.SpanID {
	tc, _ := traceFrom(ctx)
	sid, err := trace.SpanIDFromHex(tc.spanID)
	if err != nil {
		sid, _ = trace.SpanIDFromHex(randomHex(8))
	}
	return sid
}

// statusRecorder keeps the response's status for the span; it keeps Flush for streamed responses.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

func (s *statusRecorder) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }
