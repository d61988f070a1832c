package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/mcp-warden/mcp-warden/gateway/audit"
	"github.com/mcp-warden/mcp-warden/gateway/policy"
	"github.com/mcp-warden/mcp-warden/gateway/sanitize"
	"github.com/mcp-warden/mcp-warden/gateway/strictjson"
)

// filter is the stage that applies the controls to every message from the server before it reaches the
// client: it drops what is not strict JSON-RPC or answers no pending request, hides the tools the
// caller may not use or whose pin changed, checks tool results against their output schema, and strips
// hidden content and secrets. It settles the outcome of the calls it sees answered.
type filter struct {
	log     *slog.Logger
	metrics *metrics
	tools   *catalog
	policy  *policy.Policy
	// seal seals approval state into a server's input_required result, good for approvalTimeout.
	seal            func(approvalState) string
	approvalTimeout time.Duration
}

// payload filters one message or a batch of messages from the server and returns the encoding
// of what passed (never the bytes received), or nil when nothing passed: a payload that is not strict
// JSON-RPC, and responses that answer no pending request, are dropped and audited.
func (fl *filter) payload(data []byte, ex *exchange) []byte {
	msgs, batch, err := parseMessages(data)
	if err != nil {
		ex.drop("the MCP server sent a message that is not strict JSON-RPC: " + err.Error())
		return nil
	}
	keep := msgs[:0]
	for _, m := range msgs {
		if fl.out(m, ex) {
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
func (fl *filter) out(m *message, ex *exchange) bool {
	if m.Method == "" && !m.isResponse() {
		// an error with id null answers no request: dropped like any reply without a pending request
		ex.drop("the MCP server sent an error response with id null, which answers no pending request")
		return false
	}
	if !m.isResponse() {
		if m.Method == "notifications/tools/list_changed" {
			fl.tools.requestRefresh()
		}
		fl.params(m)
		return true
	}
	pc := ex.take(idKey(m.ID))
	if pc == nil {
		ex.drop("the MCP server sent a response with id " + strictjson.Quote(string(m.ID)) + " that answers no pending request")
		return false
	}
	switch pc.method {
	case "tools/list":
		fl.list(m, ex.caller)
	case "tools/call":
		fl.call(m, pc)
	default:
		fl.content(m, pc.method)
	}
	return true
}

// filterParams strips hidden content and secrets from the params of a message the server sends.
func (fl *filter) params(m *message) {
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
	fl.metrics.countSanitized(f)
	fl.log.Warn("hidden content or secrets removed from a message the MCP server sent", "method", m.Method, "hidden", f.Hidden, "htmlComments", f.Comments, "secrets", f.Secrets)
	out, err := strictjson.Marshal(v)
	if err != nil {
		m.Params = json.RawMessage(`{}`)
		return
	}
	m.Params = out
}

// filterContent strips hidden content and secrets from a result (base64 "blob" and "data" payloads
// excepted) and sanitizes errors.
func (fl *filter) content(m *message, method string) bool {
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
	fl.metrics.countSanitized(f)
	fl.log.Warn("hidden content or secrets removed from a result", "method", method, "hidden", f.Hidden, "htmlComments", f.Comments, "secrets", f.Secrets)
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
func (fl *filter) list(m *message, c *caller) bool {
	if m.Error != nil {
		sanitizeRPCError(m)
		return true
	}
	var res map[string]json.RawMessage
	var tools []json.RawMessage
	if decode(m.Result, &res) != nil || decode(res["tools"], &tools) != nil {
		m.Result, m.Error = nil, &rpcError{Code: codeUpstream, Message: "the MCP server sent a malformed tools/list result"}
		return true
	}
	list, err := json.Marshal(fl.visibleTools(fl.observeTools(tools), c))
	if err != nil {
		return false
	}
	res["tools"] = list
	sanitizeListMembers(res)
	if m.Result, err = json.Marshal(res); err != nil {
		m.Result, m.Error = nil, &rpcError{Code: codeInternalError, Message: "gateway could not encode tools/list"}
	}
	return true
}

// observedTools are the well-formed definitions of a tools/list result, in order, and the names under
// which the server lists two different definitions.
type observedTools struct {
	defs     []*toolDef
	conflict map[string]bool
}

// observeTools records every tool definition of a tools/list result in the catalog; malformed ones
// are dropped.
func (fl *filter) observeTools(tools []json.RawMessage) observedTools {
	o := observedTools{defs: make([]*toolDef, 0, len(tools)), conflict: map[string]bool{}}
	hashes := map[string]string{}
	for _, raw := range tools {
		def, err := fl.tools.observe(raw)
		if err != nil {
			fl.log.Warn("tool hidden: malformed definition", "err", err)
			continue
		}
		if h, seen := hashes[def.name]; seen && h != def.hash {
			o.conflict[def.name] = true
		}
		hashes[def.name] = def.hash
		o.defs = append(o.defs, def)
	}
	return o
}

// visibleTools returns the listed form of the tools the caller sees: one per name, none whose name
// carries two definitions, none the pins refuse, and none outside the caller's scopes.
func (fl *filter) visibleTools(o observedTools, c *caller) []json.RawMessage {
	out := make([]json.RawMessage, 0, len(o.defs))
	listed := map[string]bool{}
	for _, def := range o.defs {
		if o.conflict[def.name] {
			fl.log.Warn("tool hidden: the server lists two different definitions under one name", "tool", def.name)
			continue
		}
		if listed[def.name] {
			continue
		}
		listed[def.name] = true
		if fl.visible(def, c) {
			out = append(out, def.listed)
		}
	}
	return out
}

// visible reports whether the pins allow a tool and, for an authenticated caller, a scope grants it.
func (fl *filter) visible(def *toolDef, c *caller) bool {
	if ok, _ := fl.tools.allowed(def); !ok {
		return false
	}
	if c.principal == nil {
		return true
	}
	_, ok := fl.policy.Grant(def.name, c.principal.Scopes)
	return ok
}

// sanitizeListMembers filters the members of a tools/list result other than tools (nextCursor,
// _meta) like any other result: a member that is not JSON is dropped, one with hidden content or
// secrets is replaced by its sanitized value under its sanitized name (unless that name is taken).
func sanitizeListMembers(res map[string]json.RawMessage) {
	for k, raw := range res {
		if k == "tools" {
			continue
		}
		var v any
		if decode(raw, &v) != nil {
			delete(res, k)
			continue
		}
		v, f := sanitize.Value(v)
		if !f.Any() {
			continue
		}
		delete(res, k)
		clean, _ := sanitize.Text(k)
		if _, taken := res[clean]; taken || clean == "tools" {
			continue
		}
		if b, err := json.Marshal(v); err == nil {
			res[clean] = b
		}
	}
}

// withheldResult replaces a tool result that failed a check.
func withheldResult(text string) map[string]any {
	return map[string]any{"content": []any{map[string]any{"type": "text", "text": text}}, "isError": true}
}

// filterCall checks a tool result against the output schema, sanitizes it and audits the call.
func (fl *filter) call(m *message, pc *pendingCall) bool {
	if m.Error != nil {
		sanitizeRPCError(m)
		pc.settle(audit.Allow, pc.reason, audit.ResultRPCError)
		return true
	}
	var res map[string]any
	if err := decode(m.Result, &res); err != nil || res == nil {
		m.Result, m.Error = nil, &rpcError{Code: codeUpstream, Message: "the MCP server sent a malformed tools/call result"}
		pc.settle(audit.Allow, "malformed result", audit.ResultUpstreamError)
		return true
	}
	v := fl.checkResult(res, pc)
	if _, f := sanitize.Value(v.res); f.Any() {
		v.changed = true
		note := fmt.Sprintf("result sanitized: %d hidden characters, %d HTML comments, %d secrets removed", f.Hidden, f.Comments, f.Secrets)
		fl.metrics.countSanitized(f)
		fl.log.Warn("hidden content or secrets removed from a tool result", "tool", pc.name, "hidden", f.Hidden, "htmlComments", f.Comments, "secrets", f.Secrets)
		v.reason = strings.TrimPrefix(v.reason+"; "+note, "; ")
	}
	pc.settle(audit.Allow, v.reason, v.result)
	if !v.changed {
		return false
	}
	out, err := json.Marshal(v.res)
	if err != nil {
		m.Result, m.Error = nil, &rpcError{Code: codeInternalError, Message: "gateway could not encode the tool result"}
		return true
	}
	m.Result = out
	return true
}

// callVerdict is what the checks of a tool result decided: the result to pass on, its audit result
// and reason, and whether it differs from what the server sent.
type callVerdict struct {
	res     map[string]any
	result  string
	reason  string
	changed bool
}

// checkResult applies the check that fits a tool result: an input_required result gets the approval
// sealed into its request state, a tool error loses secrets from its text, any other result must
// match the tool's pinned output schema or is withheld.
func (fl *filter) checkResult(res map[string]any, pc *pendingCall) callVerdict {
	v := callVerdict{res: res, result: audit.ResultOK, reason: pc.reason}
	if rt, _ := res["resultType"].(string); rt == "input_required" {
		// the server asks the client for input; the client will retry the call
		v.result, v.changed = audit.ResultInputRequired, fl.sealApproval(res, pc)
		return v
	}
	if isErr, _ := res["isError"].(bool); isErr {
		v.result, v.changed = audit.ResultToolError, sanitizeToolErrorText(res)
		return v
	}
	if pc.tool == nil || pc.tool.schemas.output == nil {
		return v
	}
	sc, has := res["structuredContent"]
	err := errors.New("structuredContent is missing")
	if has {
		err = pc.tool.schemas.output.Validate(sc)
	}
	if err != nil {
		fl.log.Warn("tool result withheld: it does not match the pinned output schema", "tool", pc.name, "err", err)
		v.res = withheldResult("The result of tool " + pc.name + " was withheld: it does not match the tool's output schema.")
		v.result, v.reason, v.changed = audit.ResultOutputInvalid, "output schema: "+err.Error(), true
	}
	return v
}

// sealApproval seals the approval a call was run under into the request state of its input_required
// result, so the client's retry carries it (with the server's own state); it reports whether it did.
func (fl *filter) sealApproval(res map[string]any, pc *pendingCall) bool {
	if pc.approved == nil {
		return false
	}
	upstream, _ := res["requestState"].(string)
	st := *pc.approved
	st.Approved, st.Upstream = true, upstream
	st.Expires = time.Now().Add(fl.approvalTimeout).Unix()
	res["requestState"] = fl.seal(st)
	return true
}

// sanitizeToolErrorText sanitizes the text items of a tool error's content like an error message and
// reports whether any changed.
func sanitizeToolErrorText(res map[string]any) bool {
	content, _ := res["content"].([]any)
	changed := false
	for _, item := range content {
		it, ok := item.(map[string]any)
		if !ok || it["type"] != "text" {
			continue
		}
		if s, ok := it["text"].(string); ok {
			if clean := sanitize.Error(s); clean != s {
				it["text"], changed = clean, true
			}
		}
	}
	return changed
}
