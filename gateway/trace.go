package gateway

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"strings"
)

// W3C Trace Context (https://www.w3.org/TR/trace-context/): the gateway continues the client's trace,
// or starts one, passes it to the MCP server in traceparent (with the gateway's own span id as parent),
// and writes the trace id in every audit record of the request, so one id joins the client's trace, the
// gateway's audit and the server's logs.

// traceContext is one request's trace.
type traceContext struct {
	traceID, spanID, flags string
	state                  string
}

type traceKey struct{}

// requestTrace continues a valid incoming traceparent (version 00) or starts a new trace; either way
// the gateway's span gets a fresh span id. An invalid traceparent is ignored, as the specification says,
// and a tracestate is kept only with a valid traceparent and at most 512 bytes.
func requestTrace(h http.Header) traceContext {
	tc := traceContext{spanID: randomHex(8), flags: "00"}
	if id, flags, ok := parseTraceparent(h.Get("traceparent")); ok {
		tc.traceID, tc.flags = id, flags
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

func parseTraceparent(v string) (traceID, flags string, ok bool) {
	parts := strings.Split(v, "-")
	if len(parts) != 4 || parts[0] != "00" || !lowerHex(parts[1], 32) || !lowerHex(parts[2], 16) || !lowerHex(parts[3], 2) {
		return "", "", false
	}
	if parts[1] == strings.Repeat("0", 32) || parts[2] == strings.Repeat("0", 16) {
		return "", "", false
	}
	return parts[1], parts[3], true
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
