package gateway

import (
	"time"

	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mcp-warden/mcp-warden/gateway/audit"
	"github.com/mcp-warden/mcp-warden/gateway/sanitize"
)

// metrics are the gateway's Prometheus metrics, served at GET /metrics on the status port. Every label
// has a bounded set of values: no tool names, principals or messages an attacker could multiply.
type metrics struct {
	reg          *prometheus.Registry
	requests     *prometheus.CounterVec
	duration     *prometheus.HistogramVec
	calls        *prometheus.CounterVec
	callDuration *prometheus.HistogramVec
	authFailures *prometheus.CounterVec
	upstream     *prometheus.CounterVec
	dropped      prometheus.Counter
	sanitized    *prometheus.CounterVec
	sessions     *prometheus.CounterVec
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcp_warden_gateway_http_requests_total", Help: "HTTP requests to the gateway's MCP endpoint, by method and status code.",
		}, []string{"method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "mcp_warden_gateway_http_request_duration_seconds", Help: "Time to answer an HTTP request (for event streams: until the stream ends).",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"method"}),
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcp_warden_gateway_tool_calls_total", Help: "tools/call decisions (allow, deny, ask) by result (ok, tool_error, denied, upstream_error, ...).",
		}, []string{"decision", "result"}),
		callDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "mcp_warden_gateway_tool_call_duration_seconds", Help: "Time from a tools/call reaching the gateway to its audit record, by decision.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"decision"}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcp_warden_gateway_auth_failures_total", Help: "Requests refused by authentication, by reason.",
		}, []string{"reason"}),
		upstream: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcp_warden_gateway_upstream_errors_total", Help: "Requests the MCP server did not answer properly, by kind.",
		}, []string{"kind"}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mcp_warden_gateway_dropped_messages_total", Help: "Messages from the MCP server dropped as not strict JSON-RPC, unanswerable or of the wrong content type.",
		}),
		sanitized: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcp_warden_gateway_sanitized_total", Help: "Content removed from what the MCP server sent: hidden characters, HTML comments, secrets (redacted).",
		}, []string{"kind"}),
		sessions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcp_warden_gateway_session_relays_total", Help: "Requests for sessions another replica holds: relayed, owner_gone (answered 404), refused (an id or relay token not issued by this server's gateways, or naming no peer); requests without a session relayed to their principal's home replica: homed, home_gone (the home did not answer; served by the replica reached).",
		}, []string{"result"}),
	}
	m.reg.MustRegister(m.requests, m.duration, m.calls, m.callDuration, m.authFailures, m.upstream, m.dropped, m.sanitized, m.sessions,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// instrument counts and times every request h serves.
func (m *metrics) instrument(h http.Handler) http.Handler {
	return promhttp.InstrumentHandlerCounter(m.requests, promhttp.InstrumentHandlerDuration(m.duration, h))
}

// handler serves the metrics.
func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Timeout: 5 * time.Second})
}

func (m *metrics) countSanitized(f sanitize.Findings) {
	m.sanitized.WithLabelValues("hidden_character").Add(float64(f.Hidden))
	m.sanitized.WithLabelValues("html_comment").Add(float64(f.Comments))
	m.sanitized.WithLabelValues("secret").Add(float64(f.Secrets))
}

// callResults are the tools/call result labels; anything else is "other".
var callResults = map[string]bool{
	audit.ResultOK: true, audit.ResultToolError: true, audit.ResultRPCError: true, audit.ResultUpstreamError: true,
	audit.ResultNoResponse: true, audit.ResultInputRequired: true, audit.ResultOutputInvalid: true, audit.ResultTimeout: true,
	audit.ResultNone: true,
}

// upstreamKind is the upstream error label of a failed exchange's result.
func upstreamKind(result string) string {
	switch result {
	case audit.ResultTimeout, audit.ResultNoResponse, audit.ResultUpstreamError:
		return result
	}
	return "other"
}

func (m *metrics) countCall(decision, result string, seconds float64) {
	if !callResults[result] {
		result = "other"
	}
	if result == audit.ResultNone {
		result = "none"
	}
	m.calls.WithLabelValues(decision, result).Inc()
	m.callDuration.WithLabelValues(decision).Observe(seconds)
}
