package gateway

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/mcp-warden/mcp-warden/gateway/audit"
	"github.com/mcp-warden/mcp-warden/gateway/sanitize"
)

// serveApproval asks the person behind the client (MCP elicitation, sent on the response's event stream)
// whether a call may run, and runs it only if they accept.
func (g *Gateway) serveApproval(w http.ResponseWriter, r *http.Request, ex *exchange, body []byte, pc *pendingCall) {
	if !ex.sess.elicit {
		msg := fmt.Sprintf("tool %s needs a person's approval (%s), but this client cannot ask for it: it did not declare the MCP elicitation capability; use a client that supports elicitation", quoteName(pc.name), pc.approval)
		pc.settle(audit.Deny, msg, audit.ResultNone)
		ex.commit()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(errorResponse(pc.id, codePolicy, msg))
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	sw := newSSEWriter(w)
	sw.flush()

	id, wait := g.approval.add(ex.sess)
	defer g.approval.remove(id)
	req := &message{JSONRPC: "2.0", ID: id, Method: "elicitation/create", Params: approvalParams(pc)}
	if err := sw.writeFlush(sseEvent{data: encodeMessage(req)}); err != nil {
		pc.settle(audit.Deny, "approval could not be requested: client went away", audit.ResultNone)
		return
	}
	timer := time.NewTimer(g.cfg.Limits.ApprovalTimeout.Duration)
	defer timer.Stop()
	var answer *message
	select {
	case answer = <-wait.answer:
	case <-timer.C:
	case <-r.Context().Done():
		pc.settle(audit.Deny, "approval not given: client went away", audit.ResultNone)
		return
	}
	approved, why := approvalAnswer(answer)
	if !approved {
		msg := fmt.Sprintf("tool %s was not approved (%s): %s", quoteName(pc.name), pc.approval, why)
		pc.settle(audit.Deny, msg, audit.ResultNone)
		ex.commit()
		_ = sw.writeFlush(sseEvent{data: errorResponse(pc.id, codePolicy, msg)})
		return
	}
	pc.reason = "approved by the user: " + pc.approval
	ex.sess.chain.Ran(g.policy, pc.name)
	g.forwardPOST(w, r, ex, body, sw)
}

// approvalParams are the elicitation/create params: a form with one boolean.
func approvalParams(pc *pendingCall) json.RawMessage {
	args, _ := json.Marshal(pc.args)
	shown, _ := sanitize.Text(string(args))
	if len(shown) > 500 {
		shown = shown[:500] + "..."
	}
	params := map[string]any{
		"message": fmt.Sprintf("Allow the tool %s to run? Reason for asking: %s. Arguments: %s", pc.name, pc.approval, shown),
		"requestedSchema": map[string]any{
			"type": "object",
			"properties": map[string]any{
				"approve": map[string]any{"type": "boolean", "title": "Approve this call", "description": "Run " + pc.name + " with the arguments shown"},
			},
			"required": []string{"approve"},
		},
	}
	b, _ := json.Marshal(params) // plain values
	return b
}

// approvalAnswer reads an elicitation result: only "accept" with approve=true approves.
func approvalAnswer(m *message) (bool, string) {
	if m == nil {
		return false, "no answer in time"
	}
	if m.Error != nil {
		return false, "the client could not ask: " + sanitize.Error(m.Error.Message)
	}
	var res struct {
		Action  string         `json:"action"`
		Content map[string]any `json:"content"`
	}
	if err := decode(m.Result, &res); err != nil {
		return false, "malformed answer"
	}
	if res.Action != "accept" {
		return false, "the user chose " + strings.ToLower(res.Action)
	}
	if ok, _ := res.Content["approve"].(bool); !ok {
		return false, "the user did not approve"
	}
	return true, ""
}

// Approval for protocol revisions with multi round-trip requests (2026-07-28 and later): the gateway
// answers the call with an input_required result carrying an elicitation, and the client retries the
// call with the person's answer. The state the gateway needs between the two requests travels in
// requestState, sealed with a key only this gateway process knows.

const (
	// approvalKey names the gateway's input request among any the server makes.
	approvalKey = "mcp-warden-approval"
	statePrefix = "mcp-warden.v1."
	// metaProtocolVersion and metaClientCapabilities are the per-request _meta keys of 2026-07-28.
	metaProtocolVersion    = "io.modelcontextprotocol/protocolVersion"
	metaClientCapabilities = "io.modelcontextprotocol/clientCapabilities"
)

// approvalState is sealed into requestState.
type approvalState struct {
	Subject  string `json:"s"`
	Tool     string `json:"t"`
	Args     string `json:"a"`
	Expires  int64  `json:"e"`
	Approved bool   `json:"ok,omitempty"`
	// Upstream is the server's own requestState, restored when the call is forwarded.
	Upstream string `json:"u,omitempty"`
}

func (g *Gateway) seal(st approvalState) string {
	payload, _ := json.Marshal(st) // plain values
	mac := hmac.New(sha256.New, g.stateKey)
	mac.Write(payload)
	return statePrefix + base64.RawURLEncoding.EncodeToString(payload) + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

func (g *Gateway) open(s string) (*approvalState, bool) {
	rest, ok := strings.CutPrefix(s, statePrefix)
	if !ok {
		return nil, false
	}
	p64, m64, ok := strings.Cut(rest, ".")
	if !ok {
		return nil, false
	}
	payload, err1 := base64.RawURLEncoding.DecodeString(p64)
	sum, err2 := base64.RawURLEncoding.DecodeString(m64)
	if err1 != nil || err2 != nil {
		return nil, false
	}
	mac := hmac.New(sha256.New, g.stateKey)
	mac.Write(payload)
	if !hmac.Equal(sum, mac.Sum(nil)) {
		return nil, false
	}
	var st approvalState
	if decode(payload, &st) != nil || time.Now().Unix() > st.Expires {
		return nil, false
	}
	return &st, true
}

// argsDigest identifies the arguments an approval was given for.
func argsDigest(args any) string {
	b, _ := json.Marshal(args) // decoded JSON; map keys are sorted
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// callMeta reads the per-request protocol version and whether the client can elicit.
func callMeta(r *http.Request, params json.RawMessage) (newProtocol, canElicit bool) {
	var p struct {
		Meta map[string]json.RawMessage `json:"_meta"`
	}
	_ = decode(params, &p)
	version := r.Header.Get("Mcp-Protocol-Version")
	var v string
	if decode(p.Meta[metaProtocolVersion], &v) == nil && v != "" {
		version = v
	}
	var caps struct {
		Elicitation json.RawMessage `json:"elicitation"`
	}
	_ = decode(p.Meta[metaClientCapabilities], &caps)
	return version >= "2026-07-28", len(caps.Elicitation) > 0 && string(caps.Elicitation) != "null"
}

// serveRoundTripApproval handles a call that needs approval under the multi round-trip protocol.
func (g *Gateway) serveRoundTripApproval(w http.ResponseWriter, r *http.Request, ex *exchange, m *message, pc *pendingCall, canElicit bool) {
	var params map[string]json.RawMessage
	if err := decode(m.Params, &params); err != nil {
		g.deny(w, ex, pc, refuse(pc, http.StatusOK, codeInvalidParams, "malformed tools/call params", ""))
		return
	}
	digest := argsDigest(pc.args)
	var rs string
	_ = decode(params["requestState"], &rs)
	st, valid := g.open(rs)
	valid = valid && st.Subject == pc.caller.name && st.Tool == pc.name && st.Args == digest
	approved := valid && st.Approved
	var responses map[string]json.RawMessage
	_ = decode(params["inputResponses"], &responses)
	if valid && !approved {
		if raw, ok := responses[approvalKey]; ok {
			ok, why := approvalAnswer(&message{Result: raw})
			if !ok {
				msg := fmt.Sprintf("tool %s was not approved (%s): %s", quoteName(pc.name), pc.approval, why)
				g.deny(w, ex, pc, refuse(pc, http.StatusOK, codePolicy, msg, ""))
				return
			}
			approved = true
		}
	}
	if !approved {
		if !canElicit {
			msg := fmt.Sprintf("tool %s needs a person's approval (%s), but this client cannot ask for it: it did not declare the MCP elicitation capability; use a client that supports elicitation", quoteName(pc.name), pc.approval)
			g.deny(w, ex, pc, refuse(pc, http.StatusOK, codePolicy, msg, ""))
			return
		}
		var ask map[string]any
		_ = decode(approvalParams(pc), &ask)
		ask["mode"] = "form"
		upstream := ""
		if valid {
			upstream = st.Upstream
		} else if !strings.HasPrefix(rs, statePrefix) {
			upstream = rs
		}
		result, _ := json.Marshal(map[string]any{
			"resultType":    "input_required",
			"inputRequests": map[string]any{approvalKey: map[string]any{"method": "elicitation/create", "params": ask}},
			"requestState": g.seal(approvalState{Subject: pc.caller.name, Tool: pc.name, Args: digest,
				Expires: time.Now().Add(g.cfg.Limits.ApprovalTimeout.Duration).Unix(), Upstream: upstream}),
		})
		pc.settle(audit.Ask, "asked the user for approval: "+pc.approval, audit.ResultInputRequired)
		ex.commit()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(encodeMessage(&message{JSONRPC: "2.0", ID: m.ID, Result: result}))
		return
	}
	// approved: the server sees neither the gateway's input response nor its state
	delete(responses, approvalKey)
	if len(responses) == 0 {
		delete(params, "inputResponses")
	} else {
		params["inputResponses"], _ = json.Marshal(responses)
	}
	if st.Upstream == "" {
		delete(params, "requestState")
	} else {
		params["requestState"], _ = json.Marshal(st.Upstream)
	}
	m.Params, _ = json.Marshal(params)
	pc.reason = "approved by the user: " + pc.approval
	pc.approved = &approvalState{Subject: st.Subject, Tool: st.Tool, Args: st.Args}
	ex.sess.chain.Ran(g.policy, pc.name)
	g.forwardPOST(w, r, ex, encodeMessage(m), nil)
}
