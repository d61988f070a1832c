package stdio

import (
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestSessionIDsAreChecked: the bridge serves only sessions it handed out, like the streamable HTTP
// transport: a missing id is 400, an unknown one 404, for POST, GET and DELETE.
func TestSessionIDsAreChecked(t *testing.T) {
	b, err := Start([]string{"cat"}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close(time.Second) })
	client := &http.Client{Timeout: 5 * time.Second}
	do := func(method, sid, body string) int {
		req, err := http.NewRequest(method, b.URL(), strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		if sid != "" {
			req.Header.Set("Mcp-Session-Id", sid)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	list := `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`
	for _, tc := range []struct {
		method, sid string
		want        int
	}{
		{http.MethodPost, "", http.StatusBadRequest},
		{http.MethodPost, "0123456789abcdef0123456789abcdef", http.StatusNotFound},
		{http.MethodGet, "0123456789abcdef0123456789abcdef", http.StatusNotFound},
		{http.MethodDelete, "0123456789abcdef0123456789abcdef", http.StatusNotFound},
		{http.MethodGet, "", http.StatusBadRequest},
	} {
		if got := do(tc.method, tc.sid, list); got != tc.want {
			t.Errorf("%s with session %q: status %d, want %d", tc.method, tc.sid, got, tc.want)
		}
	}
}
