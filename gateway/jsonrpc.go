package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	gojson "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"

	"github.com/mcp-warden/mcp-warden/gateway/strictjson"
)

// JSON-RPC error codes used by the gateway.
const (
	codeParseError     = -32700
	codeInvalidRequest = -32600
	codeInvalidParams  = -32602
	codeInternalError  = -32603
	// codePolicy is a call refused by the gateway's policy (approval, pinning, rate).
	codePolicy = -32001
	// codeUpstream is a failure of the server behind the gateway.
	codeUpstream = -32002
)

// message is one JSON-RPC 2.0 message as the gateway checked it; its raw members are canonical, and
// what the gateway forwards is always the encoding of this value, never the bytes it received.
type message struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id,omitzero"`
	Method  string          `json:"method,omitzero"`
	Params  json.RawMessage `json:"params,omitzero"`
	Result  json.RawMessage `json:"result,omitzero"`
	Error   *rpcError       `json:"error,omitzero"`
}

type rpcError struct {
	Code    int             `json:"code"`
	Message string          `json:"message"`
	Data    json.RawMessage `json:"data,omitzero"`
}

func hasID(id json.RawMessage) bool { return len(id) > 0 && string(id) != "null" }

func (m *message) isRequest() bool      { return m.Method != "" && hasID(m.ID) }
func (m *message) isNotification() bool { return m.Method != "" && !hasID(m.ID) }
func (m *message) isResponse() bool     { return m.Method == "" && hasID(m.ID) }

// idKey is the map key of a JSON-RPC id. Ids are canonical once parsed (parseMessage), so two
// spellings of one id ("\u0061" and "a") have one key, and ids that peers could read as different
// values (21.0, 2.1e1, -0) never get this far.
func idKey(id json.RawMessage) string { return string(id) }

// maxSafeID bounds integer ids: every peer reads them exactly, including those that decode numbers as
// IEEE 754 doubles (the MCP Go SDK and JavaScript do).
const maxSafeID = 1<<53 - 1

// parseMessages decodes a POST body or a server payload strictly: one message, or a batch (array).
func parseMessages(body []byte) ([]*message, bool, error) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return nil, false, errors.New("empty body")
	}
	if err := strictjson.Check(body); err != nil {
		return nil, body[0] == '[', err
	}
	if body[0] == '[' {
		var raws []jsontext.Value
		if err := strictjson.DecodeChecked(body, &raws); err != nil {
			return nil, true, fmt.Errorf("decode batch: %w", err)
		}
		if len(raws) == 0 {
			return nil, true, errors.New("empty batch")
		}
		msgs := make([]*message, 0, len(raws))
		for i, raw := range raws {
			m, err := parseChecked(raw)
			if err != nil {
				return nil, true, fmt.Errorf("batch element %d: %w", i, err)
			}
			msgs = append(msgs, m)
		}
		return msgs, true, nil
	}
	m, err := parseChecked(body)
	if err != nil {
		return nil, false, err
	}
	return []*message{m}, false, nil
}

// parseMessage decodes one message strictly (see parseChecked).
func parseMessage(raw []byte) (*message, error) {
	if err := strictjson.Check(raw); err != nil {
		return nil, err
	}
	return parseChecked(raw)
}

// wireMessage is a message as sent: every member that JSON-RPC 2.0 defines, and no other.
type wireMessage struct {
	JSONRPC jsontext.Value `json:"jsonrpc"`
	ID      jsontext.Value `json:"id"`
	Method  jsontext.Value `json:"method"`
	Params  jsontext.Value `json:"params"`
	Result  jsontext.Value `json:"result"`
	Error   jsontext.Value `json:"error"`
}

// parseChecked decodes one message that strictjson.Check accepted. Member names must be exactly those
// of JSON-RPC 2.0; a request has a non-empty method, a canonical id and object params; a notification
// has no id; a response has an id and exactly one of result and error. Ids, params, results and error
// data come back in canonical form, which is what the gateway forwards.
func parseChecked(raw []byte) (*message, error) {
	var w wireMessage
	if err := strictjson.DecodeChecked(raw, &w, gojson.RejectUnknownMembers(true)); err != nil {
		return nil, fmt.Errorf("not a JSON-RPC 2.0 message: %w", err)
	}
	if string(w.JSONRPC) != `"2.0"` {
		return nil, errors.New(`not a JSON-RPC 2.0 message (jsonrpc must be "2.0")`)
	}
	m := &message{JSONRPC: "2.0"}
	if w.ID != nil {
		id, err := canonicalID(w.ID)
		if err != nil {
			return nil, err
		}
		m.ID = id
	}
	check := checkResponse
	if w.Method != nil {
		check = checkCall
	}
	if err := check(&w, m); err != nil {
		return nil, err
	}
	return m, nil
}

// checkCall fills m from the members of a request or notification (w has a method): a non-empty
// string method, no result or error, a non-null id unless the method is a notification, object params.
func checkCall(w *wireMessage, m *message) error {
	if w.Method.Kind() != '"' {
		return errors.New("method must be a string")
	}
	if err := strictjson.DecodeChecked(w.Method, &m.Method); err != nil || m.Method == "" {
		return errors.New("method must be a non-empty string")
	}
	if w.Result != nil || w.Error != nil {
		return errors.New("a message with a method cannot carry result or error")
	}
	if w.ID != nil && !hasID(m.ID) {
		return errors.New("a request id cannot be null")
	}
	if w.ID == nil && !strings.HasPrefix(m.Method, "notifications/") {
		// a peer could run a request sent without an id; the gateway checks requests, so it refuses
		return fmt.Errorf("method %s needs an id: only notifications/* are sent without one", strictjson.Quote(m.Method))
	}
	if w.Params == nil {
		return nil
	}
	if w.Params.Kind() != '{' {
		return errors.New("params must be an object")
	}
	p, err := strictjson.Canonical(w.Params)
	if err != nil {
		return err
	}
	m.Params = p
	return nil
}

// checkResponse fills m from the members of a response (w has no method): an id, no params, and
// exactly one of a result (which needs a non-null id) and an error.
func checkResponse(w *wireMessage, m *message) error {
	if w.ID == nil {
		return errors.New("message has neither method nor id")
	}
	if w.Params != nil {
		return errors.New("a response cannot carry params")
	}
	if (w.Result == nil) == (w.Error == nil) {
		return errors.New("a response carries exactly one of result and error")
	}
	if w.Result == nil {
		return checkErrorMember(w.Error, m)
	}
	if !hasID(m.ID) {
		return errors.New("a result needs a request id")
	}
	r, err := strictjson.Canonical(w.Result)
	if err != nil {
		return err
	}
	m.Result = r
	return nil
}

// checkErrorMember fills m.Error from a response's error member: an object with exactly an integer
// code, a string message and optional data.
func checkErrorMember(raw jsontext.Value, m *message) error {
	var e struct {
		Code    *int64         `json:"code"`
		Message *string        `json:"message"`
		Data    jsontext.Value `json:"data"`
	}
	if err := strictjson.DecodeChecked(raw, &e, gojson.RejectUnknownMembers(true)); err != nil {
		return fmt.Errorf("error must be an object with code, message and data: %w", err)
	}
	if e.Code == nil || e.Message == nil {
		return errors.New("error needs an integer code and a string message")
	}
	m.Error = &rpcError{Code: int(*e.Code), Message: *e.Message}
	if e.Data == nil {
		return nil
	}
	d, err := strictjson.Canonical(e.Data)
	if err != nil {
		return err
	}
	m.Error.Data = d
	return nil
}

// canonicalID accepts a string id (returned with minimal escapes) or an integer id in canonical form
// (no sign on zero, no leading zeros, no fraction or exponent, within +-(2^53-1)); null is kept for
// error responses.
func canonicalID(v jsontext.Value) (json.RawMessage, error) {
	switch v.Kind() {
	case 'n':
		return json.RawMessage("null"), nil
	case '"':
		c, err := strictjson.Canonical(v)
		if err != nil {
			return nil, err
		}
		return json.RawMessage(c), nil
	case '0':
		s := string(v)
		if !canonicalInt.MatchString(s) || s == "-0" {
			return nil, errors.New("id must be a string or an integer written without fraction, exponent, leading zeros or -0")
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n > maxSafeID || n < -maxSafeID {
			return nil, errors.New("integer id is out of range (at most 2^53-1 in magnitude)")
		}
		return json.RawMessage(s), nil
	}
	return nil, errors.New("id must be a string or an integer")
}

var canonicalInt = regexp.MustCompile(`^-?(?:0|[1-9][0-9]*)$`)

// encodeMessage encodes a message in canonical form.
func encodeMessage(m *message) []byte {
	b, err := strictjson.Marshal(m)
	if err != nil { // only raw members, which were valid JSON when decoded
		return errorResponse(m.ID, codeInternalError, "gateway could not encode a message")
	}
	return b
}

// encodeBatch encodes the messages the gateway forwards or passes on: one message, or a batch.
func encodeBatch(msgs []*message, batch bool) []byte {
	if !batch && len(msgs) == 1 {
		return encodeMessage(msgs[0])
	}
	parts := make([][]byte, len(msgs))
	for i, m := range msgs {
		parts[i] = encodeMessage(m)
	}
	return joinBatch(parts)
}

// joinBatch is the one place a batch array is built: encoded messages, in order, as one JSON array.
func joinBatch(parts [][]byte) []byte {
	n := 2
	for _, p := range parts {
		n += len(p) + 1
	}
	b := make([]byte, 0, n)
	b = append(b, '[')
	for i, p := range parts {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, p...)
	}
	return append(b, ']')
}

// decode decodes a member the gateway reads (params, results) strictly, with exact member names.
func decode(data []byte, v any) error { return strictjson.Unmarshal(data, v) }

// errorResponse encodes a JSON-RPC error response.
func errorResponse(id json.RawMessage, code int, msg string) []byte {
	if !hasID(id) {
		id = json.RawMessage("null")
	}
	b, _ := strictjson.Marshal(&message{JSONRPC: "2.0", ID: id, Error: &rpcError{Code: code, Message: msg}}) // id is valid raw JSON
	return b
}

// toolCallParams are the parameters of tools/call the gateway reads.
type toolCallParams struct {
	Name      string          `json:"name"`
	Arguments json.RawMessage `json:"arguments,omitempty"`
}

// inexactInteger reports an integer literal beyond +-(2^53-1) in a checked JSON value. The gateway reads
// argument numbers as IEEE 754 doubles, as the MCP Go SDK's untyped arguments and JavaScript do, while a
// server with integer fields (Go int64, Python) reads them exactly: the gateway would validate, show for
// approval and audit another number than the one the server executes.
func inexactInteger(v []byte) bool {
	dec := jsontext.NewDecoder(bytes.NewReader(v))
	for {
		tok, err := dec.ReadToken()
		if err != nil {
			return false
		}
		if tok.Kind() != '0' {
			continue
		}
		if s := tok.String(); !strings.ContainsAny(s, ".eE") {
			if n, err := strconv.ParseInt(s, 10, 64); err != nil || n > maxSafeID || n < -maxSafeID {
				return true
			}
		}
	}
}
