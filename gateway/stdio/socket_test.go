package stdio

import (
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSocketServerRestarts: the server runs in another process that connected to the bridge's unix
// socket with Exec (stdin and stdout are the socket, the process is the server itself after exec).
// When it exits, its sessions are gone (404, so clients initialize again) and calls fail at once
// instead of hanging; a new server connecting gets a fresh session.
func TestSocketServerRestarts(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "stdio.sock")
	if err := os.WriteFile(sock, []byte("stale"), 0o600); err != nil { // left by an earlier run
		t.Fatal(err)
	}
	b, err := Listen(sock, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close(time.Second) })
	if fi, err := os.Stat(sock); err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o777 {
		t.Fatalf("socket %v %v: want a socket every user may connect to", fi.Mode(), err)
	}
	client := &http.Client{Timeout: 5 * time.Second}
	post := func(sid, body string) (int, string, string) {
		req, _ := http.NewRequest(http.MethodPost, b.URL(), strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if sid != "" {
			req.Header.Set("Mcp-Session-Id", sid)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("Mcp-Session-Id"), string(out)
	}
	initialize := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`
	if code, _, out := post("", initialize); code != http.StatusBadGateway || !strings.Contains(out, "no MCP server is connected") {
		t.Fatalf("before a server connects: %d %s", code, out)
	}
	server := func() *exec.Cmd {
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), "MCP_WARDEN_STDIO_EXEC="+sock)
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		return cmd
	}
	waitInit := func() string {
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			if code, sid, out := post("", initialize); code == http.StatusOK && strings.Contains(out, `"name":"fake"`) {
				return sid
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Fatal("the server on the socket never answered initialize")
		return ""
	}
	first := server()
	<-b.Changes()
	sid := waitInit()
	if err := first.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = first.Wait()
	deadline := time.Now().Add(5 * time.Second)
	for {
		code, _, _ := post(sid, `{"jsonrpc":"2.0","id":2,"method":"tools/list"}`)
		if code == http.StatusNotFound {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the exited server's session still answers %d", code)
		}
		time.Sleep(50 * time.Millisecond)
	}
	server()
	if sid2 := waitInit(); sid2 == sid {
		t.Fatal("the new server's session reuses the old id")
	}
}
