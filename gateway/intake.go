package gateway

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"

	"github.com/mcp-warden/mcp-warden/gateway/audit"
)

// serve is the intake stage: the metadata and health endpoints, then, for the MCP endpoint, the origin,
// the session id (a session another replica holds is relayed there), the caller (asked of admission)
// and, for a request without a session, the principal's home replica (relayed there when it is another
// one); then serveCaller.
func (g *Gateway) serve(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case g.metadataPath, "/.well-known/oauth-protected-resource":
		g.metadataHandler.ServeHTTP(w, r)
		return
	case "/healthz":
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, "ok\n")
		return
	}
	if origin := r.Header.Get("Origin"); origin != "" && !g.origins[origin] {
		g.log.Warn("request refused: origin not allowed", "origin", origin)
		writeHTTPError(w, http.StatusForbidden, codeInvalidRequest, fmt.Sprintf("origin %q is not allowed", origin))
		return
	}
	r, ok := g.openSession(w, r)
	if !ok {
		return
	}
	c, refused := g.admission.authenticate(r)
	if refused != nil {
		refused.write(w)
		return
	}
	//nolint:contextcheck // r is the request openSession returned, whose context carries the session
	if ref := sessionRefFrom(r.Context()); ref != nil && ref.Principal != c.name {
		g.log.Warn("request refused: session belongs to another principal", "principal", c.name)
		writeHTTPError(w, http.StatusNotFound, codeInvalidRequest, "session not found")
		return
	}
	if g.relayHome(w, r, c) {
		return
	}
	g.serveCaller(w, r, c)
}

// serveCaller serves the request of an authenticated caller here: its span, its rate, and the one
// exchange of the request, which writes the request's audit records when it ends.
func (g *Gateway) serveCaller(w http.ResponseWriter, r *http.Request, c *caller) {
	ctx, span, tc := g.tracer.start(r.Context(), requestTrace(r.Header), r)
	rec := &statusRecorder{ResponseWriter: w}
	w = rec
	defer func() {
		span.SetAttributes(attribute.Int("http.response.status_code", rec.status))
		if rec.status >= 500 {
			span.SetStatus(codes.Error, http.StatusText(rec.status))
		}
		span.End()
	}()
	c.trace, c.span = tc, span
	r = r.WithContext(withTrace(ctx, tc))
	if refused := g.admission.rate(c); refused != nil {
		refused.write(w)
		return
	}
	// The one place an exchange is created: whatever path the request takes, its records are written
	// exactly once, before the span ends.
	ex := &exchange{auditor: g.auditor, caller: c}
	defer ex.finish()
	switch r.Method {
	case http.MethodPost:
		g.servePOST(w, r, ex)
	case http.MethodGet:
		ex.stream = true
		g.serveBodyless(w, r, ex, g.cfg.Limits.StreamTimeout.Duration)
	case http.MethodDelete:
		ex.deletes = true
		g.serveBodyless(w, r, ex, g.cfg.Limits.CallTimeout.Duration)
	default:
		w.Header().Set("Allow", "GET, POST, DELETE")
		writeHTTPError(w, http.StatusMethodNotAllowed, codeInvalidRequest, "method not allowed")
	}
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

// serveBodyless relays a GET (the server-to-client event stream of the caller's session, filtered like
// POST responses) or a DELETE (the end of the session at the server).
func (g *Gateway) serveBodyless(w http.ResponseWriter, r *http.Request, ex *exchange, timeout time.Duration) {
	sess, ok := g.sessionFor(w, r, ex.caller)
	if !ok {
		return
	}
	ex.sess = sess
	g.forward(w, r, ex, nil, nil, timeout)
}

// servePOST reads and strictly parses the client's messages, asks admission about each tools/call and
// forwards what passed, or answers with the refusals.
func (g *Gateway) servePOST(w http.ResponseWriter, r *http.Request, ex *exchange) {
	msgs, batch, ok := g.readPOST(w, r)
	if !ok {
		return
	}
	sess, ok := g.sessionFor(w, r, ex.caller)
	if !ok {
		return
	}
	ex.sess = sess
	keep, denials, needsApproval := g.admitMessages(r, ex, msgs, batch)
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

// readPOST reads the body of a POST (bounded) and parses its messages strictly: a batch only where the
// protocol revision allows one, the Mcp-Method and Mcp-Name headers matching the body. ok is false
// when it has answered.
func (g *Gateway) readPOST(w http.ResponseWriter, r *http.Request) (msgs []*message, batch, ok bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, g.cfg.Limits.MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeHTTPError(w, http.StatusRequestEntityTooLarge, codeInvalidRequest, fmt.Sprintf("request body exceeds %d bytes", mbe.Limit))
			return nil, false, false
		}
		writeHTTPError(w, http.StatusBadRequest, codeInvalidRequest, "could not read the request body")
		return nil, false, false
	}
	msgs, batch, err = parseMessages(body)
	if err != nil {
		writeHTTPError(w, http.StatusBadRequest, codeParseError, "invalid JSON-RPC: "+err.Error())
		return nil, false, false
	}
	if proto := r.Header.Get("Mcp-Protocol-Version"); batch && !batchAllowed(proto) {
		writeHTTPError(w, http.StatusBadRequest, codeInvalidRequest, "JSON-RPC batches are not allowed in MCP protocol revision "+proto+"; send one message per request")
		return nil, false, false
	}
	if msg := headerMismatch(r, msgs, batch); msg != "" {
		writeHTTPError(w, http.StatusBadRequest, codeInvalidRequest, msg)
		return nil, false, false
	}
	return msgs, batch, true
}

// admitMessages asks admission about each message of a POST: the ones to forward (keep), the refused
// ones, and the tools/call that needs a person's approval, if any. Responses that answer the gateway's
// own approval requests are delivered, not forwarded.
func (g *Gateway) admitMessages(r *http.Request, ex *exchange, msgs []*message, batch bool) (keep []*message, denials []*denial, needsApproval *pendingCall) {
	c, sess := ex.caller, ex.sess
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
			pc, d := g.admitCall(r, ex, m, batch)
			if d != nil {
				denials = append(denials, d)
				continue
			}
			if pc.approval != "" {
				needsApproval = pc
			}
		}
		if m.isRequest() {
			ex.requests = append(ex.requests, m.ID)
			if m.Method != "tools/call" && m.Method != "initialize" {
				ex.add(&pendingCall{key: idKey(m.ID), id: m.ID, method: m.Method, caller: c, session: sess, start: time.Now()})
			}
		}
		keep = append(keep, m)
	}
	return keep, denials, needsApproval
}

// admitCall asks admission about one tools/call and records it in the exchange: a refusal settles its
// record; an admitted call is added to the calls to forward. A call that needs approval cannot be asked
// inside a batch.
func (g *Gateway) admitCall(r *http.Request, ex *exchange, m *message, batch bool) (*pendingCall, *denial) {
	pc, d := g.admission.call(r.Context(), ex.caller, ex.sess, m)
	ex.record(pc)
	if d == nil && pc.approval != "" && batch {
		d = refuse(pc, http.StatusOK, codePolicy, "tool "+pc.name+" needs a person's approval, which cannot be asked inside a batch; send the call on its own", "")
	}
	if d != nil {
		pc.settle(audit.Deny, d.msg, audit.ResultNone)
		return pc, d
	}
	ex.add(pc)
	return pc, nil
}

// forwardPOST forwards the checked messages of a POST under the call timeout (the stream timeout for a
// subscription).
func (g *Gateway) forwardPOST(w http.ResponseWriter, r *http.Request, ex *exchange, body []byte, sw *sseWriter) {
	timeout := g.cfg.Limits.CallTimeout.Duration
	if ex.listen {
		timeout = g.cfg.Limits.StreamTimeout.Duration // a subscription stream lives long
	}
	g.forward(w, r, ex, body, sw, timeout)
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

// deny answers a single message that was refused (the refusal settles the call's record).
func (g *Gateway) deny(w http.ResponseWriter, ex *exchange, pc *pendingCall, d *denial) {
	pc.settle(audit.Deny, d.msg, audit.ResultNone)
	g.writeDenials(w, false, nil, []*denial{d}, ex)
}

// writeDenials answers a request some of whose messages were refused. A single message gets its own
// status (403 with a challenge for a missing scope); a batch is refused whole (fail closed).
func (g *Gateway) writeDenials(w http.ResponseWriter, batch bool, msgs []*message, denials []*denial, ex *exchange) {
	if !batch {
		d := denials[0]
		ex.commit()
		if d.challenge != "" {
			w.Header().Set("WWW-Authenticate", d.challenge)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(d.status)
		_, _ = w.Write(errorResponse(d.id, d.code, d.msg))
		return
	}
	ex.settleAll(audit.Deny, "another message in the batch was refused", audit.ResultNone)
	ex.commit()
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
	_, _ = w.Write(joinBatch(parts))
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
