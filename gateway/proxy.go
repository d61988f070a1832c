package gateway

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mcp-warden/mcp-warden/gateway/audit"
	"github.com/mcp-warden/mcp-warden/gateway/auth"
	"github.com/mcp-warden/mcp-warden/gateway/sanitize"
	"github.com/mcp-warden/mcp-warden/gateway/strictjson"
)

// forwardedHeaders are the only request headers passed to the server (with Mcp-Param-* headers):
// never Authorization or cookies. Mcp-Method and Mcp-Name (protocol 2026-07-28) are checked against the
// body first.
var forwardedHeaders = []string{"Content-Type", "Accept", "Mcp-Session-Id", "Mcp-Protocol-Version", "Last-Event-Id", "Mcp-Method", "Mcp-Name"}

// paramHeaderPrefix starts the per-argument headers of protocol 2026-07-28; the server checks them
// against the body's arguments, which the gateway has validated.
const paramHeaderPrefix = "Mcp-Param-"

// returnedHeaders are the only response headers passed back to the client.
var returnedHeaders = []string{"Content-Type", "Mcp-Session-Id", "Mcp-Protocol-Version", "Cache-Control"}

// pendingCall is a tools/list or tools/call request on its way to the server.
type pendingCall struct {
	key     string
	id      json.RawMessage
	method  string
	name    string
	tool    *toolDef
	args    any
	scope   string
	reason  string
	start   time.Time
	caller  *caller
	session *session
	// approval, if set, is why the call needs a person's approval.
	approval string
	// approved is set when a person approved the call under the multi round-trip protocol; a server's own
	// input_required result is then sealed with the approval so that the client's retry keeps it.
	approved *approvalState
	audited  atomic.Bool
}

// exchange is the state of one request relayed to the server.
type exchange struct {
	caller *caller
	sess   *session
	// initElicit is set when the request is an initialize: whether the client can elicit.
	initElicit *bool
	// listen is set for subscriptions/listen (protocol 2026-07-28), whose response is a long-lived stream.
	listen bool
	// stream is set for a GET: the server-to-client stream of a session.
	stream bool

	mu       sync.Mutex
	calls    map[string]*pendingCall
	requests []json.RawMessage
	answered map[string]bool
}

func (ex *exchange) add(p *pendingCall) {
	if ex.calls == nil {
		ex.calls = map[string]*pendingCall{}
	}
	ex.calls[p.key] = p
	ex.sess.track(p)
}

// take finds the call a response answers: in this exchange, or else one of the session's earlier ones
// (a response delivered on a resumed stream).
func (ex *exchange) take(key string) *pendingCall {
	ex.mu.Lock()
	if ex.answered == nil {
		ex.answered = map[string]bool{}
	}
	ex.answered[key] = true
	p := ex.calls[key]
	ex.mu.Unlock()
	if sp := ex.sess.take(key); p == nil {
		p = sp
	}
	return p
}

func (ex *exchange) unanswered() []json.RawMessage {
	ex.mu.Lock()
	defer ex.mu.Unlock()
	var out []json.RawMessage
	for _, id := range ex.requests {
		if !ex.answered[idKey(id)] {
			out = append(out, id)
		}
	}
	return out
}

// denial is a refused message: the response to send and, for a scope denial, the challenge.
type denial struct {
	status    int
	id        json.RawMessage
	code      int
	msg       string
	challenge string
}

// batchAllowed reports whether a protocol revision allows JSON-RPC batches: 2025-03-26 and earlier do
// (a request without the header is 2025-03-26 by the transport specification); 2025-06-18 removed them.
func batchAllowed(protocolVersion string) bool {
	return protocolVersion == "" || protocolVersion <= "2025-03-26"
}

func (g *Gateway) sessionFor(w http.ResponseWriter, r *http.Request, c *caller) (*session, bool) {
	id := r.Header.Get("Mcp-Session-Id")
	if id == "" {
		id = "principal:" + c.name
	}
	s, ok := g.sessions.get(id, c.name)
	if !ok {
		g.log.Warn("request refused: session belongs to another principal", "principal", c.name)
		writeHTTPError(w, http.StatusNotFound, codeInvalidRequest, "session not found")
	}
	return s, ok
}

func (g *Gateway) servePOST(w http.ResponseWriter, r *http.Request, c *caller) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, g.cfg.Limits.MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeHTTPError(w, http.StatusRequestEntityTooLarge, codeInvalidRequest, fmt.Sprintf("request body exceeds %d bytes", mbe.Limit))
			return
		}
		writeHTTPError(w, http.StatusBadRequest, codeInvalidRequest, "could not read the request body")
		return
	}
	msgs, batch, err := parseMessages(body)
	if err != nil {
		writeHTTPError(w, http.StatusBadRequest, codeParseError, "invalid JSON-RPC: "+err.Error())
		return
	}
	if proto := r.Header.Get("Mcp-Protocol-Version"); batch && !batchAllowed(proto) {
		writeHTTPError(w, http.StatusBadRequest, codeInvalidRequest, "JSON-RPC batches are not allowed in MCP protocol revision "+proto+"; send one message per request")
		return
	}
	if msg := headerMismatch(r, msgs, batch); msg != "" {
		writeHTTPError(w, http.StatusBadRequest, codeInvalidRequest, msg)
		return
	}
	sess, ok := g.sessionFor(w, r, c)
	if !ok {
		return
	}
	ex := &exchange{caller: c, sess: sess}
	var keep []*message
	var denials []*denial
	var needsApproval *pendingCall
	for _, m := range msgs {
		c.spanMethod(m.Method)
		switch {
		case m.isResponse():
			if g.approval.deliver(sess, m) {
				continue
			}
		case m.Method == "initialize" && m.isRequest():
			elicit := declaresElicitation(m.Params)
			ex.initElicit = &elicit
			ex.add(&pendingCall{key: idKey(m.ID), id: m.ID, method: m.Method, caller: c, session: sess, start: time.Now()})
		case m.Method == "subscriptions/listen" && m.isRequest():
			ex.listen = true
		case m.Method == "tools/call" && m.isRequest():
			pc, d := g.admit(r.Context(), c, sess, m)
			if d == nil && pc.approval != "" && batch {
				d = g.deny(pc, http.StatusOK, codePolicy, "tool "+pc.name+" needs a person's approval, which cannot be asked inside a batch; send the call on its own", "")
			}
			if d != nil {
				denials = append(denials, d)
				continue
			}
			if pc.approval != "" {
				needsApproval = pc
			}
			ex.add(pc)
		}
		if m.isRequest() {
			ex.requests = append(ex.requests, m.ID)
			if m.Method != "tools/call" && m.Method != "initialize" {
				ex.add(&pendingCall{key: idKey(m.ID), id: m.ID, method: m.Method, caller: c, session: sess, start: time.Now()})
			}
		}
		keep = append(keep, m)
	}
	if len(denials) > 0 {
		g.writeDenials(w, batch, msgs, denials, ex)
		return
	}
	if len(keep) == 0 {
		w.WriteHeader(http.StatusAccepted)
		return
	}
	// What the server gets is the encoding of the messages checked above, never the bytes received.
	out := encodeBatch(keep, batch)
	if needsApproval != nil {
		if newProto, canElicit := callMeta(r, keep[0].Params); newProto {
			g.serveRoundTripApproval(w, r, ex, keep[0], needsApproval, canElicit)
		} else {
			g.serveApproval(w, r, ex, out, needsApproval)
		}
		return
	}
	for _, pc := range ex.calls {
		if pc.method == "tools/call" {
			sess.chain.Ran(g.policy, pc.name)
		}
	}
	g.forwardPOST(w, r, ex, out, nil)
}

// headerMismatch refuses Mcp-Method and Mcp-Name headers that disagree with the body, so that nothing
// behind the gateway can act on a method or tool the gateway did not check.
func headerMismatch(r *http.Request, msgs []*message, batch bool) string {
	method, name := r.Header.Get("Mcp-Method"), r.Header.Get("Mcp-Name")
	if enc, ok := strings.CutPrefix(name, "=?base64?"); ok && strings.HasSuffix(enc, "?=") {
		if b, err := base64.StdEncoding.DecodeString(strings.TrimSuffix(enc, "?=")); err == nil {
			name = string(b)
		}
	}
	if method == "" && name == "" {
		return ""
	}
	if batch {
		return "Mcp-Method and Mcp-Name headers cannot accompany a batch"
	}
	m := msgs[0]
	if method != "" && method != m.Method {
		return "the Mcp-Method header does not match the request's method"
	}
	if name != "" && m.Method == "tools/call" {
		var p toolCallParams
		if decode(m.Params, &p) != nil || p.Name != name {
			return "the Mcp-Name header does not match the tool called"
		}
	}
	return ""
}

func encodeBatch(msgs []*message, batch bool) []byte {
	if !batch && len(msgs) == 1 {
		return encodeMessage(msgs[0])
	}
	parts := make([][]byte, len(msgs))
	for i, m := range msgs {
		parts[i] = encodeMessage(m)
	}
	return append(append([]byte{'['}, bytes.Join(parts, []byte{','})...), ']')
}

// writeDenials answers a request some of whose messages were refused. A single message gets its own
// status (403 with a challenge for a missing scope); a batch is refused whole (fail closed).
func (g *Gateway) writeDenials(w http.ResponseWriter, batch bool, msgs []*message, denials []*denial, ex *exchange) {
	if !batch {
		d := denials[0]
		if d.challenge != "" {
			w.Header().Set("WWW-Authenticate", d.challenge)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(d.status)
		_, _ = w.Write(errorResponse(d.id, d.code, d.msg))
		return
	}
	for _, pc := range ex.calls {
		if pc.method == "tools/call" {
			g.auditCall(pc, audit.Deny, "another message in the batch was refused", "-")
		}
	}
	byID := map[string]*denial{}
	for _, d := range denials {
		byID[idKey(d.id)] = d
	}
	var parts [][]byte
	for _, m := range msgs {
		if !m.isRequest() {
			continue
		}
		if d := byID[idKey(m.ID)]; d != nil {
			parts = append(parts, errorResponse(m.ID, d.code, d.msg))
			continue
		}
		parts = append(parts, errorResponse(m.ID, codePolicy, "refused because another message in this batch was refused"))
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(append(append([]byte{'['}, bytes.Join(parts, []byte{','})...), ']'))
}

// declaresElicitation reads capabilities.elicitation from initialize params.
func declaresElicitation(params json.RawMessage) bool {
	var p struct {
		Capabilities struct {
			Elicitation json.RawMessage `json:"elicitation"`
		} `json:"capabilities"`
	}
	if decode(params, &p) != nil {
		return false
	}
	e := p.Capabilities.Elicitation
	return len(e) > 0 && string(e) != "null"
}

// admit applies the tools/call controls: scope, pin, schema, and whether approval is needed.
func (g *Gateway) admit(ctx context.Context, c *caller, sess *session, m *message) (*pendingCall, *denial) {
	pc := &pendingCall{key: idKey(m.ID), id: m.ID, method: m.Method, caller: c, session: sess, start: time.Now()}
	var p toolCallParams
	if err := decode(m.Params, &p); err != nil || p.Name == "" {
		return pc, g.deny(pc, http.StatusOK, codeInvalidParams, "tools/call needs params with a tool name", "")
	}
	pc.name = p.Name
	var args any = map[string]any{}
	if len(p.Arguments) > 0 && string(p.Arguments) != "null" {
		var v any
		if err := decode(p.Arguments, &v); err != nil {
			return pc, g.deny(pc, http.StatusOK, codeInvalidParams, "arguments are not valid JSON", "")
		}
		args = v
		if inexactInteger(p.Arguments) {
			pc.args = args
			return pc, g.deny(pc, http.StatusOK, codeInvalidParams, "arguments carry an integer beyond 2^53-1 in magnitude, which the gateway cannot check, show for approval and audit exactly; send it as a string", "")
		}
	}
	pc.args = args
	if c.principal != nil {
		scope, ok := g.policy.Grant(p.Name, c.principal.Scopes)
		if !ok {
			need := g.policy.ScopesFor(p.Name)
			if need == "" {
				return pc, g.deny(pc, http.StatusOK, codeInvalidParams, "unknown tool "+quoteName(p.Name), "")
			}
			pc.scope = need
			msg := "insufficient scope: tool " + quoteName(p.Name) + " needs scope " + need
			return pc, g.deny(pc, http.StatusForbidden, codePolicy, msg,
				auth.Challenge(g.metadataURL, "insufficient_scope", "tool "+p.Name+" needs scope "+need, need))
		}
		pc.scope = scope
	}
	def := g.tools.lookup(ctx, p.Name)
	if def == nil {
		return pc, g.deny(pc, http.StatusOK, codeInvalidParams, "unknown tool "+quoteName(p.Name), "")
	}
	pc.tool = def
	if ok, _ := g.tools.allowed(def); !ok {
		return pc, g.deny(pc, http.StatusOK, codePolicy, "tool "+quoteName(p.Name)+" changed since it was pinned and is blocked until a person approves its new definition", "")
	}
	if def.schemas.err != nil {
		return pc, g.deny(pc, http.StatusOK, codePolicy, "tool "+quoteName(p.Name)+" cannot be called: its "+def.schemas.err.Error(), "")
	}
	if _, ok := args.(map[string]any); !ok {
		return pc, g.deny(pc, http.StatusOK, codeInvalidParams, "arguments must be a JSON object", "")
	}
	if g.cfg.BlockSecretsInArguments {
		if kind, found := sanitize.ContainsSecret(args); found {
			return pc, g.deny(pc, http.StatusOK, codePolicy, "the arguments of tool "+quoteName(p.Name)+" carry a secret ("+kind+"); the gateway does not let a call post a credential out (blockSecretsInArguments)", "")
		}
	}
	if err := def.schemas.input.Validate(args); err != nil {
		msg, _ := sanitize.Text(err.Error())
		if len(msg) > 300 {
			msg = msg[:300] + "..."
		}
		return pc, g.deny(pc, http.StatusOK, codeInvalidParams, "arguments do not match the input schema of tool "+quoteName(p.Name)+": "+msg, "")
	}
	if g.policy.Destructive(p.Name) {
		pc.approval = "tool " + p.Name + " is marked destructive"
	} else if why, need := sess.chain.NeedsApproval(g.policy, p.Name); need {
		pc.approval = why
	}
	return pc, nil
}

// quoteName quotes a name for a message in ASCII, so that a refusal never echoes hidden characters.
func quoteName(s string) string { return strictjson.Quote(s) }

// deny audits a refused call and returns its denial.
func (g *Gateway) deny(pc *pendingCall, status, code int, msg, challenge string) *denial {
	g.auditCall(pc, audit.Deny, msg, "-")
	return &denial{status: status, id: pc.id, code: code, msg: msg, challenge: challenge}
}

// auditCall writes the call's one audit record (later attempts are ignored).
func (g *Gateway) auditCall(pc *pendingCall, decision, reason, result string) {
	if pc.method != "tools/call" || !pc.audited.CompareAndSwap(false, true) {
		return
	}
	g.metrics.countCall(decision, result, time.Since(pc.start).Seconds())
	args := pc.args
	if args != nil {
		args, _ = sanitize.Value(args)
	}
	rec := audit.Record{
		Time: pc.start.UTC(), Principal: pc.caller.name, TokenID: pc.caller.tokenID, Tool: pc.name, Arguments: args,
		Decision: decision, Reason: reason, Scope: pc.scope, RequestID: string(pc.id), Result: result,
		LatencyMS: float64(time.Since(pc.start).Microseconds()) / 1000, TraceID: pc.caller.trace.traceID,
	}
	if pc.session != nil && !strings.HasPrefix(pc.session.id, "principal:") {
		rec.Session = pc.session.id
	}
	if err := g.audit.Write(rec); err != nil {
		g.log.Error("audit record lost", "err", err, "tool", pc.name, "principal", pc.caller.name)
	}
	// A name the server lists or the scopes grant; any other is the client's text.
	known := pc.tool != nil || g.tools.get(pc.name) != nil || g.policy.ScopesFor(pc.name) != ""
	pc.caller.spanCall(pc.name, known, decision, result)
}

func (g *Gateway) newUpstreamRequest(ctx context.Context, method string, r *http.Request, body []byte) (*http.Request, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, g.cfg.Upstream, rd)
	if err != nil {
		return nil, fmt.Errorf("build upstream request: %w", err)
	}
	if tc, ok := traceFrom(r.Context()); ok {
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
	return req, nil
}

// forwardPOST sends a request to the server and relays the filtered response; sw is set when the
// response to the client is already an event stream.
func (g *Gateway) forwardPOST(w http.ResponseWriter, r *http.Request, ex *exchange, body []byte, sw *sseWriter) {
	timeout := g.cfg.Limits.CallTimeout.Duration
	if ex.listen {
		timeout = g.cfg.Limits.StreamTimeout.Duration // a subscription stream lives long
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	req, err := g.newUpstreamRequest(ctx, http.MethodPost, r, body)
	if err == nil {
		var resp *http.Response
		resp, err = g.upstream.Do(req)
		if err == nil {
			defer resp.Body.Close()
			g.relay(ctx, w, resp, ex, sw)
			return
		}
	}
	result, status, msg := "upstream_error", http.StatusBadGateway, "the MCP server is unavailable"
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		result, status, msg = "timeout", http.StatusGatewayTimeout, "the MCP server did not answer within "+g.cfg.Limits.CallTimeout.String()
	}
	g.log.Warn("upstream request failed", "err", err)
	g.failPending(w, ex, sw, status, codeUpstream, msg, result)
}

// failPending answers every unanswered request of an exchange with an error and audits its calls.
func (g *Gateway) failPending(w http.ResponseWriter, ex *exchange, sw *sseWriter, status, code int, msg, result string) {
	g.metrics.upstream.WithLabelValues(upstreamKind(result)).Inc()
	ids := ex.unanswered()
	for _, pc := range ex.calls {
		g.auditCall(pc, audit.Allow, msg, result)
	}
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
		_, _ = w.Write(append(append([]byte{'['}, bytes.Join(parts, []byte{','})...), ']'))
	}
}

func mediaType(v string) string {
	mt, _, err := mime.ParseMediaType(v)
	if err != nil {
		return ""
	}
	return mt
}

// relay filters the server's response (JSON or event stream) to the client.
func (g *Gateway) relay(ctx context.Context, w http.ResponseWriter, resp *http.Response, ex *exchange, sw *sseWriter) {
	if sid := resp.Header.Get("Mcp-Session-Id"); sid != "" {
		if ex.initElicit != nil && resp.StatusCode < 300 {
			g.sessions.put(&session{id: sid, owner: ex.caller.name, elicit: *ex.initElicit})
		}
		// the client never sees the server's session id, only the sealed one
		out, err := g.clientSessionID(ctx, sid, ex.caller.name)
		if err != nil {
			g.log.Warn("refused the MCP server's session id", "err", err)
			resp.Header.Del("Mcp-Session-Id")
			if sw == nil {
				g.failPending(w, ex, sw, http.StatusBadGateway, codeUpstream, "the MCP server's session id is longer than the gateway accepts", "upstream_error")
				return
			}
		} else {
			resp.Header.Set("Mcp-Session-Id", out)
		}
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
		g.relayError(w, resp, ex, sw)
	case resp.StatusCode >= 300:
		w.Header().Del("Content-Type")
		g.failPending(w, ex, sw, http.StatusBadGateway, codeUpstream, "the MCP server answered with a redirect, which the gateway does not follow", "upstream_error")
	case ct == "text/event-stream":
		if sw == nil {
			w.Header().Del("Content-Length")
			w.WriteHeader(resp.StatusCode)
			sw = newSSEWriter(w)
			if ex.stream {
				sw.flush() // a GET stream may stay quiet for long; the client waits for its headers
			}
		}
		g.relaySSE(ctx, resp.Body, ex, sw)
	case ct == "application/json":
		data, err := io.ReadAll(io.LimitReader(resp.Body, g.cfg.Limits.MaxResponseBytes+1))
		if err != nil || int64(len(data)) > g.cfg.Limits.MaxResponseBytes {
			msg := "the MCP server's response could not be read"
			if err == nil {
				msg = fmt.Sprintf("the MCP server's response exceeds %d bytes", g.cfg.Limits.MaxResponseBytes)
			}
			w.Header().Del("Content-Type")
			g.failPending(w, ex, sw, http.StatusBadGateway, codeUpstream, msg, "upstream_error")
			return
		}
		out := g.filterPayload(data, ex)
		if out == nil {
			w.Header().Del("Content-Type")
			g.failPending(w, ex, sw, http.StatusBadGateway, codeUpstream, "the gateway refused the MCP server's response: it is not strict JSON-RPC or answers no request of this exchange", "upstream_error")
			return
		}
		if sw != nil {
			_ = sw.writeFlush(sseEvent{data: out})
		} else {
			w.WriteHeader(resp.StatusCode)
			_, _ = w.Write(out)
		}
	default:
		// Only an empty body (202 Accepted for notifications and responses) passes without a JSON-RPC
		// content type; anything else is not passed on.
		if n, _ := io.Copy(io.Discard, io.LimitReader(resp.Body, 1)); n > 0 {
			g.auditDropped(ex, "-", "the MCP server answered with content type "+strictjson.Quote(ct)+", which is neither application/json nor text/event-stream")
			w.Header().Del("Content-Type")
			g.failPending(w, ex, sw, http.StatusBadGateway, codeUpstream, "the MCP server answered with a content type that is not JSON-RPC", "upstream_error")
			return
		}
		if sw == nil {
			w.Header().Del("Content-Type")
			w.WriteHeader(resp.StatusCode)
		}
	}
	for _, pc := range ex.calls {
		g.auditCall(pc, audit.Allow, pc.reason, "no_response")
	}
}

// relayError passes an error status on with a sanitized body.
func (g *Gateway) relayError(w http.ResponseWriter, resp *http.Response, ex *exchange, sw *sseWriter) {
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	msg := ""
	if m, err := parseMessage(bytes.TrimSpace(data)); err == nil && m.Error != nil {
		msg = m.Error.Message
	} else {
		msg = string(data)
	}
	msg = sanitize.Error(msg)
	w.Header().Del("Content-Length")
	g.failPending(w, ex, sw, resp.StatusCode, codeUpstream, msg, "upstream_error")
}

// relaySSE filters an event stream event by event.
func (g *Gateway) relaySSE(ctx context.Context, body io.Reader, ex *exchange, sw *sseWriter) {
	rd := newSSEReader(body, g.cfg.Limits.MaxResponseBytes)
	defer rd.release()
	for {
		ev, err := rd.next()
		if err != nil {
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				g.failPending(nil, ex, sw, 0, codeUpstream, "the MCP server did not answer within "+g.cfg.Limits.CallTimeout.String(), "timeout")
			} else if !errors.Is(err, io.EOF) && ctx.Err() == nil {
				g.log.Warn("event stream from the MCP server ended with an error", "err", err)
				g.failPending(nil, ex, sw, 0, codeUpstream, "the MCP server's event stream failed", "upstream_error")
			} else if !ex.stream && len(ex.unanswered()) > 0 {
				// a response the gateway refused, or one the server never sent: the client is not left waiting
				g.failPending(nil, ex, sw, 0, codeUpstream, "the MCP server ended its event stream without an answer the gateway could pass on", "no_response")
			}
			return
		}
		// every event with data is filtered whatever its name: clients differ in how they read a name
		// ("message " is a message to the MCP Go SDK, which trims it)
		if len(ev.data) > 0 {
			ev.data = g.filterPayload(ev.data, ex)
			if ev.data == nil {
				continue
			}
		}
		// events without data (ids that prime resumption) go out with the next event that has data,
		// except on long-lived streams
		if err := sw.write(ev, len(ev.data) > 0 || ex.stream || ex.listen); err != nil {
			return
		}
	}
}

// filterPayload filters one message or a batch of messages from the server and returns the encoding
// of what passed (never the bytes received), or nil when nothing passed: a payload that is not strict
// JSON-RPC, and responses that answer no pending request, are dropped and audited.
func (g *Gateway) filterPayload(data []byte, ex *exchange) []byte {
	msgs, batch, err := parseMessages(data)
	if err != nil {
		g.auditDropped(ex, "-", "the MCP server sent a message that is not strict JSON-RPC: "+err.Error())
		return nil
	}
	keep := msgs[:0]
	for _, m := range msgs {
		if g.filterOut(m, ex) {
			keep = append(keep, m)
		}
	}
	if len(keep) == 0 {
		return nil
	}
	return encodeBatch(keep, batch && len(keep) > 1)
}

// filterOut applies the controls to one message from the server and reports whether it may pass.
// Requests the server sends (sampling, elicitation, roots) and notifications (logging, progress,
// resource updates) lose hidden content and secrets like tool results do.
func (g *Gateway) filterOut(m *message, ex *exchange) bool {
	if m.Method == "" && !m.isResponse() {
		// an error with id null answers no request: dropped like any reply without a pending request
		g.auditDropped(ex, "-", "the MCP server sent an error response with id null, which answers no pending request")
		return false
	}
	if !m.isResponse() {
		if m.Method == "notifications/tools/list_changed" {
			g.tools.requestRefresh()
		}
		g.filterParams(m)
		return true
	}
	pc := ex.take(idKey(m.ID))
	if pc == nil {
		g.auditDropped(ex, "-", "the MCP server sent a response with id "+strictjson.Quote(string(m.ID))+" that answers no pending request")
		return false
	}
	switch pc.method {
	case "tools/list":
		g.filterList(m, ex.caller)
	case "tools/call":
		g.filterCall(m, pc)
	default:
		g.filterContent(m, pc.method)
	}
	return true
}

// filterParams strips hidden content and secrets from the params of a message the server sends.
func (g *Gateway) filterParams(m *message) {
	if len(m.Params) == 0 {
		return
	}
	var v any
	if err := decode(m.Params, &v); err != nil {
		m.Params = json.RawMessage(`{}`)
		return
	}
	v, f := sanitize.Value(v)
	if !f.Any() {
		return
	}
	g.metrics.countSanitized(f)
	g.log.Warn("hidden content or secrets removed from a message the MCP server sent", "method", m.Method, "hidden", f.Hidden, "htmlComments", f.Comments, "secrets", f.Secrets)
	out, err := strictjson.Marshal(v)
	if err != nil {
		m.Params = json.RawMessage(`{}`)
		return
	}
	m.Params = out
}

// auditDropped records a message from the server that the gateway did not pass on.
func (g *Gateway) auditDropped(ex *exchange, method, reason string) {
	g.metrics.dropped.Inc()
	g.log.Warn("dropped a message from the MCP server", "reason", reason)
	rec := audit.Record{Time: time.Now().UTC(), Principal: ex.caller.name, TokenID: ex.caller.tokenID, Tool: method, Decision: audit.Drop, Reason: reason, Result: "-"}
	if ex.sess != nil && !strings.HasPrefix(ex.sess.id, "principal:") {
		rec.Session = ex.sess.id
	}
	if err := g.audit.Write(rec); err != nil {
		g.log.Error("audit record lost", "err", err)
	}
}

// filterContent strips hidden content and secrets from a result (base64 "blob" and "data" payloads
// excepted) and sanitizes errors.
func (g *Gateway) filterContent(m *message, method string) bool {
	if m.Error != nil {
		sanitizeRPCError(m)
		return true
	}
	var res any
	if err := decode(m.Result, &res); err != nil {
		m.Result, m.Error = nil, &rpcError{Code: codeUpstream, Message: "the MCP server sent a malformed " + method + " result"}
		return true
	}
	res, f := sanitize.Value(res)
	if !f.Any() {
		return false
	}
	g.metrics.countSanitized(f)
	g.log.Warn("hidden content or secrets removed from a result", "method", method, "hidden", f.Hidden, "htmlComments", f.Comments, "secrets", f.Secrets)
	out, err := json.Marshal(res)
	if err != nil {
		m.Result, m.Error = nil, &rpcError{Code: codeInternalError, Message: "gateway could not encode the " + method + " result"}
		return true
	}
	m.Result = out
	return true
}

func sanitizeRPCError(m *message) {
	m.Error.Message = sanitize.Error(m.Error.Message)
	m.Error.Data = nil
}

// filterList hides tools the caller may not use or whose pin changed, and strips hidden content and
// secrets from the rest.
func (g *Gateway) filterList(m *message, c *caller) bool {
	if m.Error != nil {
		sanitizeRPCError(m)
		return true
	}
	var res map[string]json.RawMessage
	var tools []json.RawMessage
	if err := decode(m.Result, &res); err != nil {
		m.Result, m.Error = nil, &rpcError{Code: codeUpstream, Message: "the MCP server sent a malformed tools/list result"}
		return true
	}
	if err := decode(res["tools"], &tools); err != nil {
		m.Result, m.Error = nil, &rpcError{Code: codeUpstream, Message: "the MCP server sent a malformed tools/list result"}
		return true
	}
	defs := make([]*toolDef, 0, len(tools))
	hashes := map[string]string{}
	conflict := map[string]bool{}
	for _, raw := range tools {
		def, err := g.tools.observe(raw)
		if err != nil {
			g.log.Warn("tool hidden: malformed definition", "err", err)
			continue
		}
		if h, seen := hashes[def.name]; seen && h != def.hash {
			conflict[def.name] = true
		}
		hashes[def.name] = def.hash
		defs = append(defs, def)
	}
	out := make([]json.RawMessage, 0, len(defs))
	listed := map[string]bool{}
	for _, def := range defs {
		if conflict[def.name] {
			g.log.Warn("tool hidden: the server lists two different definitions under one name", "tool", def.name)
			continue
		}
		if listed[def.name] {
			continue
		}
		listed[def.name] = true
		if ok, _ := g.tools.allowed(def); !ok {
			continue
		}
		if c.principal != nil {
			if _, ok := g.policy.Grant(def.name, c.principal.Scopes); !ok {
				continue
			}
		}
		out = append(out, def.listed)
	}
	list, err := json.Marshal(out)
	if err != nil {
		return false
	}
	res["tools"] = list
	// the result's other members (nextCursor, _meta) are filtered like any other result
	for k, raw := range res {
		if k == "tools" {
			continue
		}
		var v any
		if decode(raw, &v) != nil {
			delete(res, k)
			continue
		}
		if v, f := sanitize.Value(v); f.Any() {
			delete(res, k)
			clean, _ := sanitize.Text(k)
			if _, taken := res[clean]; !taken && clean != "tools" {
				if b, err := json.Marshal(v); err == nil {
					res[clean] = b
				}
			}
		}
	}
	if m.Result, err = json.Marshal(res); err != nil {
		m.Result, m.Error = nil, &rpcError{Code: codeInternalError, Message: "gateway could not encode tools/list"}
	}
	return true
}

// withheldResult replaces a tool result that failed a check.
func withheldResult(text string) map[string]any {
	return map[string]any{"content": []any{map[string]any{"type": "text", "text": text}}, "isError": true}
}

// filterCall checks a tool result against the output schema, sanitizes it and audits the call.
func (g *Gateway) filterCall(m *message, pc *pendingCall) bool {
	reason := pc.reason
	if m.Error != nil {
		sanitizeRPCError(m)
		g.auditCall(pc, audit.Allow, reason, "rpc_error")
		return true
	}
	var res map[string]any
	if err := decode(m.Result, &res); err != nil || res == nil {
		m.Result, m.Error = nil, &rpcError{Code: codeUpstream, Message: "the MCP server sent a malformed tools/call result"}
		g.auditCall(pc, audit.Allow, "malformed result", "upstream_error")
		return true
	}
	result, changed := "ok", false
	if rt, _ := res["resultType"].(string); rt == "input_required" {
		// the server asks the client for input; the client will retry the call
		result = "input_required"
		if pc.approved != nil {
			upstream, _ := res["requestState"].(string)
			st := *pc.approved
			st.Approved, st.Upstream = true, upstream
			st.Expires = time.Now().Add(g.cfg.Limits.ApprovalTimeout.Duration).Unix()
			res["requestState"], changed = g.seal(st), true
		}
	} else if isErr, _ := res["isError"].(bool); isErr {
		result = "tool_error"
		if content, ok := res["content"].([]any); ok {
			for _, item := range content {
				if it, ok := item.(map[string]any); ok && it["type"] == "text" {
					if s, ok := it["text"].(string); ok {
						if clean := sanitize.Error(s); clean != s {
							it["text"], changed = clean, true
						}
					}
				}
			}
		}
	} else if pc.tool != nil && pc.tool.schemas.output != nil {
		sc, has := res["structuredContent"]
		err := errors.New("structuredContent is missing")
		if has {
			err = pc.tool.schemas.output.Validate(sc)
		}
		if err != nil {
			g.log.Warn("tool result withheld: it does not match the pinned output schema", "tool", pc.name, "err", err)
			res = withheldResult("The result of tool " + pc.name + " was withheld: it does not match the tool's output schema.")
			result, reason, changed = "output_invalid", "output schema: "+err.Error(), true
		}
	}
	if _, f := sanitize.Value(res); f.Any() {
		changed = true
		note := fmt.Sprintf("result sanitized: %d hidden characters, %d HTML comments, %d secrets removed", f.Hidden, f.Comments, f.Secrets)
		g.metrics.countSanitized(f)
		g.log.Warn("hidden content or secrets removed from a tool result", "tool", pc.name, "hidden", f.Hidden, "htmlComments", f.Comments, "secrets", f.Secrets)
		reason = strings.TrimPrefix(reason+"; "+note, "; ")
	}
	g.auditCall(pc, audit.Allow, reason, result)
	if !changed {
		return false
	}
	out, err := json.Marshal(res)
	if err != nil {
		m.Result, m.Error = nil, &rpcError{Code: codeInternalError, Message: "gateway could not encode the tool result"}
		return true
	}
	m.Result = out
	return true
}

// serveGET relays the server-to-client event stream, filtered like POST responses.
func (g *Gateway) serveGET(w http.ResponseWriter, r *http.Request, c *caller) {
	g.forwardBodyless(w, r, c, g.cfg.Limits.StreamTimeout.Duration, func(sess *session, resp *http.Response) *exchange {
		return &exchange{caller: c, sess: sess, stream: true}
	})
}

// serveDELETE ends a session at the server.
func (g *Gateway) serveDELETE(w http.ResponseWriter, r *http.Request, c *caller) {
	g.forwardBodyless(w, r, c, g.cfg.Limits.CallTimeout.Duration, func(sess *session, resp *http.Response) *exchange {
		if resp.StatusCode < 300 {
			g.sessions.remove(sess.id)
		}
		return &exchange{caller: c, sess: sess}
	})
}

// forwardBodyless sends a GET or DELETE of the caller's session to the server under timeout and relays
// the response, filtered; then decides what the response means for the session.
func (g *Gateway) forwardBodyless(w http.ResponseWriter, r *http.Request, c *caller, timeout time.Duration, then func(*session, *http.Response) *exchange) {
	sess, ok := g.sessionFor(w, r, c)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	req, err := g.newUpstreamRequest(ctx, r.Method, r, nil)
	if err != nil {
		writeHTTPError(w, http.StatusBadGateway, codeUpstream, "the MCP server is unavailable")
		return
	}
	resp, err := g.upstream.Do(req)
	if err != nil {
		writeHTTPError(w, http.StatusBadGateway, codeUpstream, "the MCP server is unavailable")
		return
	}
	defer resp.Body.Close()
	g.relay(ctx, w, resp, then(sess, resp), nil)
}
