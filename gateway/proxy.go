package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"time"

	"github.com/mcp-warden/mcp-warden/gateway/audit"
	"github.com/mcp-warden/mcp-warden/gateway/sanitize"
	"github.com/mcp-warden/mcp-warden/gateway/strictjson"
)

// returnedHeaders are the only response headers passed back to the client.
var returnedHeaders = []string{"Content-Type", "Mcp-Session-Id", "Mcp-Protocol-Version", "Cache-Control"}

// forward is the one path of a client's request to the server and back, for POST, GET and DELETE: the
// upstream stage sends it under timeout, the relay stage passes the response on through the filter.
// body is nil for GET and DELETE; sw is set when the response to the client is already an event
// stream (an approval was asked on it).
func (g *Gateway) forward(w http.ResponseWriter, r *http.Request, ex *exchange, body []byte, sw *sseWriter, timeout time.Duration) {
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	if body != nil {
		ex.forwarding()
	}
	resp, err := g.upstream.send(ctx, r.Method, r, body)
	if err != nil {
		if body == nil { // a GET or DELETE carries no request to answer
			writeHTTPError(w, http.StatusBadGateway, codeUpstream, "the MCP server is unavailable")
			return
		}
		result, status, msg := audit.ResultUpstreamError, http.StatusBadGateway, "the MCP server is unavailable"
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			result, status, msg = audit.ResultTimeout, http.StatusGatewayTimeout, "the MCP server did not answer within "+g.cfg.Limits.CallTimeout.String()
		}
		g.log.Warn("upstream request failed", "err", err)
		g.relay.fail(w, ex, sw, status, msg, result)
		return
	}
	defer resp.Body.Close()
	g.relay.response(ctx, w, resp, ex, sw)
}

// relay is the relay and framing stage: it passes the server's response on (JSON, or an event stream
// event by event), every message through the filter, the server's session id sealed; and it answers
// every request the server left unanswered with an error.
type relay struct {
	log      *slog.Logger
	metrics  *metrics
	filter   *filter
	sessions *sessionTable
	// maxResponse bounds a JSON response and an event; callTimeout is named in timeout errors.
	maxResponse int64
	callTimeout time.Duration
	// sessionID is the client's session id for the server's session id; forgetSessionID drops the
	// request's once the server deleted its session.
	sessionID       func(ctx context.Context, upstream, principal string) (string, error)
	forgetSessionID func(ctx context.Context)
}

// fail answers every unanswered request of an exchange with an error and audits its calls.
func (rl *relay) fail(w http.ResponseWriter, ex *exchange, sw *sseWriter, status int, msg, result string) {
	const code = codeUpstream
	rl.metrics.upstream.WithLabelValues(upstreamKind(result)).Inc()
	ids := ex.unanswered()
	ex.settleAll(audit.Allow, msg, result)
	ex.commit()
	if sw != nil {
		for _, id := range ids {
			_ = sw.writeFlush(sseEvent{data: errorResponse(id, code, msg)})
		}
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	switch len(ids) {
	case 0:
		_, _ = w.Write(errorResponse(nil, code, msg))
	case 1:
		_, _ = w.Write(errorResponse(ids[0], code, msg))
	default:
		parts := make([][]byte, len(ids))
		for i, id := range ids {
			parts[i] = errorResponse(id, code, msg)
		}
		_, _ = w.Write(joinBatch(parts))
	}
}

func mediaType(v string) string {
	mt, _, err := mime.ParseMediaType(v)
	if err != nil {
		return ""
	}
	return mt
}

// response filters the server's response (JSON or event stream) to the client.
func (rl *relay) response(ctx context.Context, w http.ResponseWriter, resp *http.Response, ex *exchange, sw *sseWriter) {
	if ex.deletes && resp.StatusCode < 300 {
		rl.sessions.remove(ex.sess.id)
		rl.forgetSessionID(ctx)
	}
	if !rl.sessionHeader(ctx, w, resp, ex, sw) {
		return
	}
	if sw == nil {
		for _, h := range returnedHeaders {
			if v := resp.Header.Values(h); len(v) > 0 {
				w.Header()[h] = v
			}
		}
	}
	ct := mediaType(resp.Header.Get("Content-Type"))
	switch {
	case resp.StatusCode >= 400:
		rl.error(w, resp, ex, sw)
	case resp.StatusCode >= 300:
		w.Header().Del("Content-Type")
		rl.fail(w, ex, sw, http.StatusBadGateway, "the MCP server answered with a redirect, which the gateway does not follow", audit.ResultUpstreamError)
	case ct == "text/event-stream":
		if sw == nil {
			sw = rl.startStream(w, resp, ex)
		}
		rl.stream(ctx, resp.Body, ex, sw)
	case ct == "application/json":
		rl.passJSON(w, resp, ex, sw)
	default:
		rl.passEmpty(w, resp, ex, sw, ct)
	}
}

// sessionHeader replaces the server's session id in the response with the gateway's (the client
// never sees the server's) and records the session an initialize opened. It reports false when it
// already answered the client: the server's session id was refused and no event stream is open.
func (rl *relay) sessionHeader(ctx context.Context, w http.ResponseWriter, resp *http.Response, ex *exchange, sw *sseWriter) bool {
	sid := resp.Header.Get("Mcp-Session-Id")
	if sid == "" {
		return true
	}
	if ex.initElicit != nil && resp.StatusCode < 300 {
		rl.sessions.put(&session{id: sid, owner: ex.caller.name, elicit: *ex.initElicit})
	}
	out, err := rl.sessionID(ctx, sid, ex.caller.name)
	if err == nil {
		resp.Header.Set("Mcp-Session-Id", out)
		return true
	}
	rl.log.Warn("refused the MCP server's session id", "err", err)
	resp.Header.Del("Mcp-Session-Id")
	if sw != nil {
		return true
	}
	rl.fail(w, ex, sw, http.StatusBadGateway, "the MCP server's session id is longer than the gateway accepts", audit.ResultUpstreamError)
	return false
}

// startStream answers the client with an event stream of the server's status.
func (rl *relay) startStream(w http.ResponseWriter, resp *http.Response, ex *exchange) *sseWriter {
	w.Header().Del("Content-Length")
	w.WriteHeader(resp.StatusCode)
	sw := newSSEWriter(w)
	if ex.stream {
		sw.flush() // a GET stream may stay quiet for long; the client waits for its headers
	}
	return sw
}

// passJSON passes a JSON response on through the filter, within the response size limit.
func (rl *relay) passJSON(w http.ResponseWriter, resp *http.Response, ex *exchange, sw *sseWriter) {
	data, err := io.ReadAll(io.LimitReader(resp.Body, rl.maxResponse+1))
	if err != nil || int64(len(data)) > rl.maxResponse {
		msg := "the MCP server's response could not be read"
		if err == nil {
			msg = fmt.Sprintf("the MCP server's response exceeds %d bytes", rl.maxResponse)
		}
		w.Header().Del("Content-Type")
		rl.fail(w, ex, sw, http.StatusBadGateway, msg, audit.ResultUpstreamError)
		return
	}
	out := rl.filter.payload(data, ex)
	if out == nil {
		w.Header().Del("Content-Type")
		rl.fail(w, ex, sw, http.StatusBadGateway, "the gateway refused the MCP server's response: it is not strict JSON-RPC or answers no request of this exchange", audit.ResultUpstreamError)
		return
	}
	ex.commit()
	if sw != nil {
		_ = sw.writeFlush(sseEvent{data: out})
		return
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(out)
}

// passEmpty passes on a response with neither JSON-RPC content type. Only an empty body (202 Accepted
// for notifications and responses) passes; anything else is not passed on.
func (rl *relay) passEmpty(w http.ResponseWriter, resp *http.Response, ex *exchange, sw *sseWriter, ct string) {
	if n, _ := io.Copy(io.Discard, io.LimitReader(resp.Body, 1)); n > 0 {
		ex.drop("the MCP server answered with content type " + strictjson.Quote(ct) + ", which is neither application/json nor text/event-stream")
		w.Header().Del("Content-Type")
		rl.fail(w, ex, sw, http.StatusBadGateway, "the MCP server answered with a content type that is not JSON-RPC", audit.ResultUpstreamError)
		return
	}
	if sw == nil {
		w.Header().Del("Content-Type")
		w.WriteHeader(resp.StatusCode)
	}
}

// error passes an error status on with a sanitized body.
func (rl *relay) error(w http.ResponseWriter, resp *http.Response, ex *exchange, sw *sseWriter) {
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	msg := ""
	if m, err := parseMessage(bytes.TrimSpace(data)); err == nil && m.Error != nil {
		msg = m.Error.Message
	} else {
		msg = string(data)
	}
	msg = sanitize.Error(msg)
	w.Header().Del("Content-Length")
	rl.fail(w, ex, sw, resp.StatusCode, msg, audit.ResultUpstreamError)
}

// stream filters an event stream event by event.
func (rl *relay) stream(ctx context.Context, body io.Reader, ex *exchange, sw *sseWriter) {
	rd := newSSEReader(body, rl.maxResponse)
	defer rd.release()
	for {
		ev, err := rd.next()
		if err != nil {
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				rl.fail(nil, ex, sw, 0, "the MCP server did not answer within "+rl.callTimeout.String(), audit.ResultTimeout)
			} else if !errors.Is(err, io.EOF) && ctx.Err() == nil {
				rl.log.Warn("event stream from the MCP server ended with an error", "err", err)
				rl.fail(nil, ex, sw, 0, "the MCP server's event stream failed", audit.ResultUpstreamError)
			} else if !ex.stream && len(ex.unanswered()) > 0 {
				// a response the gateway refused, or one the server never sent: the client is not left waiting
				rl.fail(nil, ex, sw, 0, "the MCP server ended its event stream without an answer the gateway could pass on", audit.ResultNoResponse)
			}
			return
		}
		// every event with data is filtered whatever its name: clients differ in how they read a name
		// ("message " is a message to the MCP Go SDK, which trims it)
		if len(ev.data) > 0 {
			ev.data = rl.filter.payload(ev.data, ex)
			if ev.data == nil {
				continue
			}
		}
		// events without data (ids that prime resumption) go out with the next event that has data,
		// except on long-lived streams
		ex.commit()
		if err := sw.write(ev, len(ev.data) > 0 || ex.stream || ex.listen); err != nil {
			return
		}
	}
}
