package gateway

import (
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/mcp-warden/mcp-warden/gateway/audit"
	"github.com/mcp-warden/mcp-warden/gateway/sanitize"
)

// pendingCall is a request of the client's on its way to the server (or refused on the way): a
// tools/call has an audit record, which its exchange writes.
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
	// forwarded is set once the call is sent to the server.
	forwarded bool

	mu sync.Mutex
	// outcome is what the stage that decided the call found (admission, approval, relay, filter); the
	// first decision stands.
	outcome *outcome
	written bool
}

// outcome is the decision and result of a call, as its audit record names them.
type outcome struct {
	decision string
	reason   string
	result   string
}

// settle records the call's outcome unless a stage settled it already: a failure after the answer,
// or an answer the call's exchange no longer waits for, does not change it.
func (pc *pendingCall) settle(decision, reason, result string) {
	if pc.method != "tools/call" {
		return
	}
	pc.mu.Lock()
	if pc.outcome == nil {
		pc.outcome = &outcome{decision: decision, reason: reason, result: result}
	}
	pc.mu.Unlock()
}

// exchange is one client request (a POST, GET or DELETE of the MCP endpoint) from intake to its last
// byte. It owns the audit records of the tools/call requests it carries: the stage that decides a call
// settles its outcome, and the exchange writes each record exactly once, in writeRecords, which runs
// before the framing stage passes an outcome to the client (so that a record exists before the
// client can read the answer) and, deferred where the exchange is created, when the request ends.
type exchange struct {
	auditor *auditor
	caller  *caller
	sess    *session
	// initElicit is set when the request is an initialize: whether the client can elicit.
	initElicit *bool
	// listen is set for subscriptions/listen (protocol 2026-07-28), whose response is a long-lived stream.
	listen bool
	// stream is set for a GET: the server-to-client stream of a session.
	stream bool
	// deletes is set for a DELETE: a success ends the session.
	deletes bool
	// records are the tools/call requests of the client's request, in message order, refused or not.
	records []*pendingCall

	mu       sync.Mutex
	calls    map[string]*pendingCall
	requests []json.RawMessage
	answered map[string]bool
}

// record makes the exchange the owner of a tools/call's audit record.
func (ex *exchange) record(p *pendingCall) {
	if p.method == "tools/call" {
		ex.records = append(ex.records, p)
	}
}

// add tracks a request forwarded to the server until its answer.
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

// forwarding marks the exchange's calls as sent to the server.
func (ex *exchange) forwarding() {
	for _, pc := range ex.calls {
		pc.mu.Lock()
		pc.forwarded = true
		pc.mu.Unlock()
	}
}

// settleAll settles every call forwarded in this exchange that has no outcome yet.
func (ex *exchange) settleAll(decision, reason, result string) {
	for _, pc := range ex.calls {
		pc.settle(decision, reason, result)
	}
}

// commit writes the records of the calls whose outcome is settled; the framing stage runs it before
// it passes an outcome to the client.
func (ex *exchange) commit() { ex.writeRecords(false) }

// finish writes every record not yet written; the one place that creates exchanges defers it. A call
// no stage settled was forwarded and not answered (no_response), or, if the request ended before the
// call was forwarded, was not run.
func (ex *exchange) finish() { ex.writeRecords(true) }

func (ex *exchange) writeRecords(all bool) {
	for _, pc := range ex.records {
		pc.mu.Lock()
		o := pc.outcome
		if pc.written || (o == nil && !all) {
			pc.mu.Unlock()
			continue
		}
		if o == nil {
			o = &outcome{decision: audit.Allow, reason: pc.reason, result: audit.ResultNoResponse}
			if !pc.forwarded {
				o = &outcome{decision: audit.Deny, reason: "the request ended before the gateway forwarded the call", result: audit.ResultNone}
			}
		}
		pc.written = true
		pc.mu.Unlock()
		ex.auditor.call(pc, o)
	}
}

// drop records a message from the server that the gateway did not pass on; it has a record of its
// own, written at once (a stream may live for long).
func (ex *exchange) drop(reason string) { ex.auditor.drop(ex, reason) }

// auditor is the audit stage: it writes the records exchanges hand it, counts them and marks the
// request's span. It decides nothing.
type auditor struct {
	log     *slog.Logger
	audit   *audit.Logger
	metrics *metrics
	// known reports whether a tool name is one the server lists or the scopes grant (else a span does
	// not carry the client's text).
	known func(name string) bool
}

// call writes a call's one audit record.
func (a *auditor) call(pc *pendingCall, o *outcome) {
	a.metrics.countCall(o.decision, o.result, time.Since(pc.start).Seconds())
	args := pc.args
	if args != nil {
		args, _ = sanitize.Value(args)
	}
	rec := audit.Record{
		Time: pc.start.UTC(), Principal: pc.caller.name, TokenID: pc.caller.tokenID, Tool: pc.name, Arguments: args,
		Decision: o.decision, Reason: o.reason, Scope: pc.scope, RequestID: string(pc.id), Result: o.result,
		LatencyMS: float64(time.Since(pc.start).Microseconds()) / 1000, TraceID: pc.caller.trace.traceID,
	}
	if pc.session != nil && !strings.HasPrefix(pc.session.id, "principal:") {
		rec.Session = pc.session.id
	}
	if err := a.audit.Write(rec); err != nil {
		a.log.Error("audit record lost", "err", err, "tool", pc.name, "principal", pc.caller.name)
	}
	pc.caller.spanCall(pc.name, pc.tool != nil || a.known(pc.name), o.decision, o.result)
}

// drop writes the record of a message from the server that the gateway did not pass on.
func (a *auditor) drop(ex *exchange, reason string) {
	a.metrics.dropped.Inc()
	a.log.Warn("dropped a message from the MCP server", "reason", reason)
	rec := audit.Record{Time: time.Now().UTC(), Principal: ex.caller.name, TokenID: ex.caller.tokenID, Tool: "-", Decision: audit.Drop, Reason: reason, Result: audit.ResultNone}
	if ex.sess != nil && !strings.HasPrefix(ex.sess.id, "principal:") {
		rec.Session = ex.sess.id
	}
	if err := a.audit.Write(rec); err != nil {
		a.log.Error("audit record lost", "err", err)
	}
}
