package main

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcp-warden/mcp-warden/internal/syncbuf"
)

// TestPeerPortFromPodIP: with sessions.peerListen in the configuration, the binary takes its peer
// address from $MCP_WARDEN_POD_IP, issues sealed session ids and serves the peer port, which refuses a
// request without a relay token; without the variable it refuses to start, naming it.
func TestPeerPortFromPodIP(t *testing.T) {
	t.Setenv("GATEWAY_TEST_STDIO_SERVER", "1")
	addr, peer := freePort(t), freePort(t)
	dir := t.TempDir()
	keyPath, cfgPath := filepath.Join(dir, "session.key"), filepath.Join(dir, "gateway.json")
	if err := os.WriteFile(keyPath, []byte(strings.Repeat("ab", 32)), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, _ := json.Marshal(map[string]any{
		"listen": addr, "resource": "https://files.mcp.example/mcp", "auth": map[string]any{"disabled": true},
		"stdio": true, "sessions": map[string]any{"keyPath": keyPath, "peerListen": peer},
	})
	if err := os.WriteFile(cfgPath, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	var out, logs syncbuf.Buffer
	if code := run(context.Background(), []string{"--config", cfgPath, "--stdio", "--", exe}, &out, &logs); code != 1 || !strings.Contains(logs.String(), "MCP_WARDEN_POD_IP") {
		t.Fatalf("without the pod's IP: exit %d, logs %s", code, logs.String())
	}

	t.Setenv("MCP_WARDEN_POD_IP", "127.0.0.1")
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"--config", cfgPath, "--stdio", "--", exe}, &out, &logs) }()
	client := mcp.NewClient(&mcp.Implementation{Name: "test", Version: "1"}, nil)
	var cs *mcp.ClientSession
	for ctx.Err() == nil {
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		cs, err = client.Connect(cctx, &mcp.StreamableClientTransport{Endpoint: "http://" + addr + "/mcp", HTTPClient: &http.Client{}, MaxRetries: -1}, nil)
		ccancel()
		if err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if cs == nil {
		t.Fatalf("connect: %v\nlogs: %s", err, logs.String())
	}
	if !strings.HasPrefix(cs.ID(), "mw1.") || !strings.Contains(logs.String(), `"advertise":"`+peer+`"`) {
		t.Fatalf("session id %q, logs %s", cs.ID(), logs.String())
	}
	if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "read_file", Arguments: map[string]any{"path": "a.txt"}}); err != nil {
		t.Fatalf("call: %v", err)
	}
	req, _ := http.NewRequest(http.MethodPost, "http://"+peer+"/mcp", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`))
	req.Header.Set("Mcp-Session-Id", cs.ID())
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("peer port without a relay token: %d, want 403", resp.StatusCode)
	}
	_ = cs.Close()
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("exit %d\nlogs: %s", code, logs.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("gateway did not stop")
	}
}
