package stdio

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// fakeServer is a stdio MCP server: it answers initialize, and runs tools/call by asking the client
// for a sampling result (server request id 77) and returning what the client answered.
func fakeServer() {
	in := bufio.NewScanner(os.Stdin)
	var call json.RawMessage
	for in.Scan() {
		var m struct {
			ID     json.RawMessage `json:"id"`
			Method string          `json:"method"`
			Result json.RawMessage `json:"result"`
		}
		if json.Unmarshal(in.Bytes(), &m) != nil {
			continue
		}
		switch {
		case m.Method == "initialize":
			fmt.Printf(`{"jsonrpc":"2.0","id":%s,"result":{"protocolVersion":"2025-06-18","capabilities":{},"serverInfo":{"name":"fake","version":"1"}}}`+"\n", m.ID)
		case m.Method == "tools/call":
			call = m.ID
			fmt.Println(`{"jsonrpc":"2.0","id":77,"method":"sampling/createMessage","params":{"messages":[],"maxTokens":1}}`)
		case m.Method == "" && string(m.ID) == "77" && call != nil:
			fmt.Printf(`{"jsonrpc":"2.0","id":%s,"result":{"content":[{"type":"text","text":%q}]}}`+"\n", call, string(m.Result))
			call = nil
		}
	}
}

func TestMain(m *testing.M) {
	if sock := os.Getenv("MCP_WARDEN_STDIO_EXEC"); sock != "" {
		// the server container's side: connect and exec the fake server on the socket
		os.Unsetenv("MCP_WARDEN_STDIO_EXEC")
		os.Setenv("MCP_WARDEN_FAKE_STDIO_SERVER", "1")
		fmt.Fprintln(os.Stderr, Exec(sock, []string{os.Args[0]}, 5*time.Second))
		os.Exit(3)
	}
	if os.Getenv("MCP_WARDEN_FAKE_STDIO_SERVER") == "1" {
		fakeServer()
		return
	}
	os.Exit(m.Run())
}

// TestServerRequestsStayWithTheirSession: all clients share the one server process, and a request the
// server sent while running session A's call (sampling) went to whichever event stream was open, here
// session B's (another principal behind the gateway); B's answer then became A's tool result. A
// server request now goes only to the session with a call in flight, and only that session's answer
// reaches the server.
func TestServerRequestsStayWithTheirSession(t *testing.T) {
	t.Setenv("MCP_WARDEN_FAKE_STDIO_SERVER", "1")
	b, err := Start([]string{os.Args[0]}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close(time.Second) })
	c := bridgeClient{t: t, url: b.URL(), client: &http.Client{Timeout: 5 * time.Second}}
	initialize := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`
	ra, _ := c.post("", initialize)
	rb, _ := c.post("", initialize)
	a, bsid := ra.Header.Get("Mcp-Session-Id"), rb.Header.Get("Mcp-Session-Id")
	if a == "" || bsid == "" || a == bsid {
		t.Fatalf("sessions %q %q", a, bsid)
	}
	// B listens on its event stream
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := openStream(ctx, t, b.URL(), bsid)
	result := make(chan string, 1)
	go func() {
		_, out := c.post(a, `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"x","arguments":{}}}`)
		result <- out
	}()
	select {
	case line := <-got:
		t.Errorf("session B's stream got the server's request made for session A's call: %s", line)
	case <-time.After(500 * time.Millisecond):
	}
	// B answers the request it may have seen, with a forged sampling result
	if resp, _ := c.post(bsid, `{"jsonrpc":"2.0","id":77,"result":{"role":"assistant","content":{"type":"text","text":"from B"}}}`); resp.StatusCode == http.StatusAccepted {
		t.Errorf("session B's answer to a request it was never sent was passed to the server")
	}
	select {
	case out := <-result:
		if strings.Contains(out, "from B") {
			t.Errorf("session A's tool result is session B's answer: %s", out)
		}
	case <-time.After(time.Second):
	}
	cancel()

	t.Run("control: the session with the call in flight is asked and answers", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		asked := openStream(ctx, t, b.URL(), a)
		c := c
		c.t = t
		result := make(chan string, 1)
		go func() {
			_, out := c.post(a, `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"x","arguments":{}}}`)
			result <- out
		}()
		select {
		case line := <-asked:
			if !strings.Contains(line, "sampling/createMessage") {
				t.Fatalf("unexpected event: %s", line)
			}
		case <-time.After(3 * time.Second):
			t.Fatal("session A was not asked")
		}
		if resp, out := c.post(a, `{"jsonrpc":"2.0","id":77,"result":{"role":"assistant","content":{"type":"text","text":"from A"}}}`); resp.StatusCode != http.StatusAccepted {
			t.Fatalf("A's answer refused: %d %s", resp.StatusCode, out)
		}
		select {
		case out := <-result:
			if !strings.Contains(out, "from A") {
				t.Fatalf("result: %s", out)
			}
		case <-time.After(3 * time.Second):
			t.Fatal("no result")
		}
	})
}

// bridgeClient posts JSON-RPC messages to a bridge.
type bridgeClient struct {
	t      *testing.T
	url    string
	client *http.Client
}

// post sends body in session sid (none if empty) and returns the response and its body.
func (c bridgeClient) post(sid, body string) (*http.Response, string) {
	req, _ := http.NewRequest(http.MethodPost, c.url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if sid != "" {
		req.Header.Set("Mcp-Session-Id", sid)
	}
	resp, err := c.client.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp, string(out)
}

// openStream opens session sid's event stream on the bridge at url until ctx ends (or the test) and
// returns the data lines it carries.
func openStream(ctx context.Context, t *testing.T, url, sid string) <-chan string {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	req.Header.Set("Mcp-Session-Id", sid)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = resp.Body.Close() })
	lines := make(chan string, 4)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "data: ") {
				lines <- sc.Text()
			}
		}
	}()
	return lines
}
