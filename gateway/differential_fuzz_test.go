package gateway

import (
	"bytes"
	"reflect"
	"strconv"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	segjson "github.com/segmentio/encoding/json"
)

// sdkDecode decodes like the MCP Go SDK does: segmentio/encoding with exact member names.
func sdkDecode(data []byte, v any) error {
	dec := segjson.NewDecoder(bytes.NewReader(data))
	dec.DontMatchCaseInsensitiveStructFields()
	return dec.Decode(v)
}

// sdkView is what the MCP Go SDK reads from one message: kind, method, id, tool name and arguments.
type sdkView struct {
	kind, method, name string
	id                 any
	args               any
}

func viewSDK(_ *testing.T, data []byte) (sdkView, error) {
	msg, err := jsonrpc.DecodeMessage(data)
	if err != nil {
		return sdkView{}, err
	}
	var v sdkView
	switch m := msg.(type) {
	case *jsonrpc.Request:
		v.kind, v.method, v.id = "request", m.Method, m.ID.Raw()
		if !m.ID.IsValid() {
			v.kind = "notification"
		}
		if m.Method == "tools/call" {
			var p struct {
				Name      string `json:"name"`
				Arguments any    `json:"arguments"`
			}
			if err := sdkDecode(m.Params, &p); err != nil {
				return v, err
			}
			v.name, v.args = p.Name, p.Arguments
		}
	case *jsonrpc.Response:
		v.kind, v.id = "response", m.ID.Raw()
	}
	return v, nil
}

// viewGateway is what the gateway reads from one message; ok is false when admission would refuse it
// (arguments that do not decode, such as a number out of range, are refused by admit).
func viewGateway(t *testing.T, m *message) (v sdkView, ok bool) {
	switch {
	case m.isRequest():
		v.kind = "request"
	case m.isNotification():
		v.kind = "notification"
	default:
		v.kind = "response"
	}
	v.method = m.Method
	if hasID(m.ID) {
		if m.ID[0] == '"' {
			s, err := strconv.Unquote(string(m.ID))
			if err != nil {
				t.Fatalf("canonical id %s does not unquote: %v", m.ID, err)
			}
			v.id = s
		} else {
			n, err := strconv.ParseInt(string(m.ID), 10, 64)
			if err != nil {
				t.Fatalf("canonical id %s is not an integer: %v", m.ID, err)
			}
			v.id = n
		}
	}
	if m.Method == "tools/call" && m.isRequest() {
		// admit refuses a call without params, without a name, or whose params do not decode
		var p toolCallParams
		if len(m.Params) == 0 || decode(m.Params, &p) != nil || p.Name == "" {
			return v, false
		}
		{
			v.name = p.Name
			if len(p.Arguments) > 0 {
				var a any
				if err := decode(p.Arguments, &a); err != nil {
					return v, false
				}
				v.args = a
			}
		}
	}
	return v, true
}

// FuzzParseAgainstGoSDK feeds the same bytes to the gateway's parser and to the MCP Go SDK's. Whatever
// the gateway accepts, the SDK must read the same way (kind, method, id, tool name, arguments), both in
// the bytes received and in the bytes the gateway forwards; otherwise the gateway must refuse.
func FuzzParseAgainstGoSDK(f *testing.F) {
	for _, s := range []string{
		`{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"a"}}}`,
		`{"jsonrpc":"2.0","id":4,"method":"tools/call","Method":"ping","params":{"name":"admin_reset","arguments":{}}}`,
		`{"jsonrpc":"2.0","id":"\u0061bc","method":"tools/call","params":{"name":"admin_reset","NAME":"read_file"}}`,
		`{"jsonrpc":"2.0","id":21.0,"result":{}}`,
		`{"jsonrpc":"2.0","id":-0,"method":"ping"}`,
		`{"jsonrpc":"2.0","method":"notifications/initialized"}`,
		`{"jsonrpc":"2.0","id":1,"error":{"code":-1,"message":"x"}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{"x":1e400}}}`,
		`{"jsonrpc":"2.0","id":9007199254740993,"method":"ping"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		msgs, batch, err := parseMessages(data)
		if err != nil || batch {
			return // refused (or a batch, which the SDK's transport splits before decoding)
		}
		gw, ok := viewGateway(t, msgs[0])
		if !ok {
			return
		}
		forwarded := encodeMessage(msgs[0])
		for what, b := range map[string][]byte{"received": data, "forwarded": forwarded} {
			sdk, err := viewSDK(t, b)
			if err != nil {
				t.Fatalf("the gateway accepts %q but the SDK refuses the %s bytes %q: %v", data, what, b, err)
			}
			if sdk.kind != gw.kind || sdk.method != gw.method || sdk.name != gw.name || !reflect.DeepEqual(sdk.id, gw.id) || !reflect.DeepEqual(sdk.args, gw.args) {
				t.Fatalf("differential on %q (%s bytes %q):\n gateway %+v\n sdk     %+v", data, what, b, gw, sdk)
			}
		}
	})
}
