package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
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

// message is one JSON-RPC 2.0 message; members are kept raw so that untouched messages are forwarded
// byte for byte.
type message struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id,omitempty"`
	Method  string          `json:"method,omitempty"`
	Params  json.RawMessage `json:"params,omitempty"`
	Result  json.RawMessage `json:"result,omitempty"`
	Error   *rpcError       `json:"error,omitempty"`
}

type rpcError struct {
	Code    int             `json:"code"`
	Message string          `json:"message"`
	Data    json.RawMessage `json:"data,omitempty"`
}

func hasID(id json.RawMessage) bool { return len(id) > 0 && string(id) != "null" }

func (m *message) isRequest() bool      { return m.Method != "" && hasID(m.ID) }
func (m *message) isNotification() bool { return m.Method != "" && !hasID(m.ID) }
func (m *message) isResponse() bool     { return m.Method == "" && hasID(m.ID) }

// idKey normalizes a JSON-RPC id for use as a map key.
func idKey(id json.RawMessage) string { return string(bytes.TrimSpace(id)) }

// parseMessages decodes a POST body: one message, or a batch (array).
func parseMessages(body []byte) ([]*message, bool, error) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return nil, false, errors.New("empty body")
	}
	if body[0] == '[' {
		var raws []json.RawMessage
		if err := json.Unmarshal(body, &raws); err != nil {
			return nil, true, fmt.Errorf("decode batch: %w", err)
		}
		if len(raws) == 0 {
			return nil, true, errors.New("empty batch")
		}
		msgs := make([]*message, 0, len(raws))
		for i, raw := range raws {
			m, err := parseMessage(raw)
			if err != nil {
				return nil, true, fmt.Errorf("batch element %d: %w", i, err)
			}
			msgs = append(msgs, m)
		}
		return msgs, true, nil
	}
	m, err := parseMessage(body)
	if err != nil {
		return nil, false, err
	}
	return []*message{m}, false, nil
}

func parseMessage(raw []byte) (*message, error) {
	m := &message{}
	if err := json.Unmarshal(raw, m); err != nil {
		return nil, fmt.Errorf("decode JSON-RPC message: %w", err)
	}
	if m.JSONRPC != "2.0" {
		return nil, errors.New(`not a JSON-RPC 2.0 message (jsonrpc must be "2.0")`)
	}
	if m.Method == "" && !hasID(m.ID) {
		return nil, errors.New("message has neither method nor id")
	}
	return m, nil
}

func encodeMessage(m *message) []byte {
	b, err := json.Marshal(m)
	if err != nil { // only raw members, which were valid JSON when decoded
		return errorResponse(m.ID, codeInternalError, "gateway could not encode a message")
	}
	return b
}

// errorResponse encodes a JSON-RPC error response.
func errorResponse(id json.RawMessage, code int, msg string) []byte {
	if !hasID(id) {
		id = json.RawMessage("null")
	}
	b, _ := json.Marshal(&message{JSONRPC: "2.0", ID: id, Error: &rpcError{Code: code, Message: msg}}) // id is valid raw JSON
	return b
}

// toolCallParams are the parameters of tools/call the gateway reads.
type toolCallParams struct {
	Name      string          `json:"name"`
	Arguments json.RawMessage `json:"arguments,omitempty"`
}
