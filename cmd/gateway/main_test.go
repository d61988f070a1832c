package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcp-warden/mcp-warden/gateway"
	"github.com/mcp-warden/mcp-warden/gateway/audit"
	"github.com/mcp-warden/mcp-warden/gateway/canonical"
	"github.com/mcp-warden/mcp-warden/internal/syncbuf"
)

// TestMain doubles as the stdio MCP server that TestStdioBridge runs as a child process.
func TestMain(m *testing.M) {
	if sock := os.Getenv("GATEWAY_TEST_STDIO_EXEC"); sock != "" {
		// the server container's side of --stdio-socket
		os.Unsetenv("GATEWAY_TEST_STDIO_EXEC")
		os.Setenv("GATEWAY_TEST_STDIO_SERVER", "1")
		os.Exit(run(context.Background(), []string{"stdio-exec", sock, "--", os.Args[0]}, os.Stdout, os.Stderr))
	}
	if os.Getenv("GATEWAY_TEST_STDIO_SERVER") == "1" {
		s := mcp.NewServer(&mcp.Implementation{Name: "stdio-files", Version: "1"}, nil)
		type args struct {
			Path string `json:"path"`
		}
		mcp.AddTool(s, &mcp.Tool{Name: "read_file", Description: "Read a file."}, func(_ context.Context, _ *mcp.CallToolRequest, in args) (*mcp.CallToolResult, any, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "contents of " + in.Path + "\u200b\U000E0041 key AKIAIOSFODNN7EXAMPLE"}}}, nil, nil
		})
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := s.Run(ctx, &mcp.StdioTransport{}); err != nil && ctx.Err() == nil {
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func writeLog(t *testing.T, n int) (string, []string) {
	t.Helper()
	var buf bytes.Buffer
	l := audit.NewLogger(&buf)
	for i := range n {
		if err := l.Write(audit.Record{Time: time.Now(), Principal: "u", Tool: "read_file", Decision: audit.Allow, Result: "ok", Arguments: map[string]any{"i": i}}); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, strings.Split(strings.TrimSpace(buf.String()), "\n")
}

func TestAuditVerifyCommand(t *testing.T) {
	path, lines := writeLog(t, 4)
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"audit", "verify", path}, &out, &errOut); code != 0 || !strings.Contains(out.String(), "4 records") {
		t.Fatalf("intact log: exit %d, %s %s", code, out.String(), errOut.String())
	}
	edited := append([]string(nil), lines...)
	edited[2] = strings.Replace(edited[2], `"result":"ok"`, `"result":"tool_error"`, 1)
	deleted := append(append([]string(nil), lines[:1]...), lines[2:]...)
	for name, tc := range map[string]struct {
		lines []string
		want  string
	}{"edited": {edited, "line 3"}, "deleted": {deleted, "line 2"}} {
		t.Run(name, func(t *testing.T) {
			if err := os.WriteFile(path, []byte(strings.Join(tc.lines, "\n")+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			var out, errOut bytes.Buffer
			code := run(context.Background(), []string{"audit", "verify", path}, &out, &errOut)
			if code == 0 || !strings.Contains(errOut.String(), tc.want) {
				t.Fatalf("exit %d, stderr %q; want non-zero naming %s", code, errOut.String(), tc.want)
			}
		})
	}
}

func TestConfigCheckNamesTheField(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gateway.json")
	cfg := `{"upstream":"http://10.0.0.5:8080/mcp","resource":"https://files.mcp.example/mcp","auth":{"disabled":true}}`
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"config", "check", path}, &out, &errOut); code != 1 || !strings.Contains(errOut.String(), "upstream:") {
		t.Fatalf("exit %d, stderr %q", code, errOut.String())
	}
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestStdioBridge(t *testing.T) {
	t.Setenv("GATEWAY_TEST_STDIO_SERVER", "1")
	addr := freePort(t)
	cfgPath := filepath.Join(t.TempDir(), "gateway.json")
	cfg, _ := json.Marshal(map[string]any{
		"listen": addr, "resource": "https://files.mcp.example/mcp", "auth": map[string]any{"disabled": true},
		"limits": map[string]any{"callTimeout": "10s"}, "stdio": true,
	})
	if err := os.WriteFile(cfgPath, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Second)
	defer cancel()
	auditOut, logs := &syncbuf.Buffer{}, &syncbuf.Buffer{}
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"--config", cfgPath, "--log-level", "debug", "--stdio", "--", exe}, auditOut, logs)
	}()

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
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "read_file", Arguments: map[string]any{"path": "a.txt"}})
	if err != nil {
		t.Fatalf("call: %v\nlogs: %s", err, logs.String())
	}
	got := res.Content[0].(*mcp.TextContent).Text
	if !strings.HasPrefix(got, "contents of a.txt") || strings.Contains(got, "\u200b") || strings.Contains(got, "AKIA") {
		t.Fatalf("result not sanitized: %q", got)
	}
	if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "read_file", Arguments: map[string]any{"path": "a", "x": 1}}); err == nil {
		t.Fatal("schema violation passed the stdio bridge")
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
	if s, err := audit.Verify(strings.NewReader(auditOut.String())); err != nil || s.Records != 2 {
		t.Fatalf("audit of the stdio session: %+v %v\n%s", s, err, auditOut.String())
	}
}

// TestInstallCopiesItself checks the init container's step of a stdio server's pod: the binary copies
// itself, executable and read-only.
func TestInstallCopiesItself(t *testing.T) {
	dst := filepath.Join(t.TempDir(), "gateway")
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"install", dst}, &out, &errOut); code != 0 {
		t.Fatalf("install: exit %d: %s", code, errOut.String())
	}
	exe, _ := os.Executable()
	want, _ := os.ReadFile(exe)
	got, err := os.ReadFile(dst)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("installed copy differs from the binary (err %v)", err)
	}
	if fi, _ := os.Stat(dst); fi.Mode().Perm() != 0o555 {
		t.Fatalf("mode %v, want r-xr-xr-x", fi.Mode().Perm())
	}
	if code := run(context.Background(), []string{"install", filepath.Join(t.TempDir(), "missing", "gateway")}, &out, &errOut); code != 1 {
		t.Fatalf("install into a missing directory: exit %d", code)
	}
}

// TestStdioConfigNeedsCommand: a configuration rendered for a stdio server is refused without the
// server command, with a message saying so.
func TestStdioConfigNeedsCommand(t *testing.T) {
	cfgPath := filepath.Join(t.TempDir(), "gateway.json")
	cfg, _ := json.Marshal(map[string]any{"listen": freePort(t), "resource": "https://files.mcp.example/mcp", "auth": map[string]any{"disabled": true}, "stdio": true})
	if err := os.WriteFile(cfgPath, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	var out, logs bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if code := run(ctx, []string{"--config", cfgPath}, &out, &logs); code != 1 || !strings.Contains(logs.String(), "must follow --stdio --") {
		t.Fatalf("exit %d, logs %s", code, logs.String())
	}
}

func TestAuditVerifyKeyAndHead(t *testing.T) {
	dir := t.TempDir()
	keyPath, headPath, logPath := filepath.Join(dir, "key"), filepath.Join(dir, "head.json"), filepath.Join(dir, "audit.jsonl")
	if err := os.WriteFile(keyPath, append(bytes.Repeat([]byte{0xA5}, 32), '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	key, err := audit.ReadKey(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	l, err := audit.Open(&buf, audit.Options{Key: key, StatePath: headPath})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		if err := l.Write(audit.Record{Time: time.Now(), Principal: "u", Tool: "read_file", Decision: audit.Allow, Result: "ok", Arguments: map[string]any{"i": i}}); err != nil {
			t.Fatal(err)
		}
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	verify := func(lines []string) (int, string, string) {
		if err := os.WriteFile(logPath, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		var out, errOut bytes.Buffer
		code := run(context.Background(), []string{"audit", "verify", "--key", keyPath, "--head", headPath, logPath}, &out, &errOut)
		return code, out.String(), errOut.String()
	}
	if code, out, errOut := verify(lines); code != 0 || !strings.Contains(out, "4 records") || !strings.Contains(out, "4 MACs") || !strings.Contains(out, "head at seq 3") {
		t.Fatalf("intact log: exit %d, %s %s", code, out, errOut)
	}
	if code, _, errOut := verify(lines[:2]); code != 1 || !strings.Contains(errOut, "line 3") || !strings.Contains(errOut, "truncated") {
		t.Fatalf("truncated log: exit %d, %s", code, errOut)
	}
	// line 2 rewritten and every hash after it recomputed, as someone without the key would
	rewritten := append([]string(nil), lines...)
	prev := ""
	for i := range rewritten {
		var m map[string]any
		if err := json.Unmarshal([]byte(rewritten[i]), &m); err != nil {
			t.Fatal(err)
		}
		if i == 1 {
			m["decision"] = "deny"
		}
		if i >= 1 {
			m["prev"] = prev
			delete(m, "hash")
			delete(m, "mac")
			m["hash"] = canonicalHash(t, m)
			m["mac"] = strings.Repeat("0", 64)
		}
		prev = m["hash"].(string)
		b, _ := json.Marshal(m)
		rewritten[i] = string(b)
	}
	if code, _, errOut := verify(rewritten); code != 1 || !strings.Contains(errOut, "line 2") || !strings.Contains(errOut, "rewritten") {
		t.Fatalf("rewritten log: exit %d, %s", code, errOut)
	}
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"audit", "verify", "--key"}, &out, &errOut); code != 2 {
		t.Fatalf("usage error: exit %d", code)
	}
}

// canonicalHash is the record hash of m (which has no hash or mac member).
func canonicalHash(t *testing.T, m map[string]any) string {
	t.Helper()
	body, err := canonical.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(body)
	return hex.EncodeToString(sum[:])
}

// TestAuditChainSurvivesARestart runs the gateway twice with the same key and head file: the second
// process continues the first one's chain, and the two outputs verify as one log.
func TestAuditChainSurvivesARestart(t *testing.T) {
	t.Setenv("GATEWAY_TEST_STDIO_SERVER", "1")
	dir := t.TempDir()
	keyPath, headPath := filepath.Join(dir, "key"), filepath.Join(dir, "head.json")
	if err := os.WriteFile(keyPath, bytes.Repeat([]byte("0123456789abcdef"), 2), 0o600); err != nil {
		t.Fatal(err)
	}
	var log strings.Builder
	for range 2 {
		log.WriteString(stdioSession(t, "--audit-key", keyPath, "--audit-state", headPath))
	}
	logPath := filepath.Join(dir, "audit.jsonl")
	if err := os.WriteFile(logPath, []byte(log.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"audit", "verify", "--key", keyPath, "--head", headPath, logPath}, &out, &errOut); code != 0 ||
		!strings.Contains(out.String(), "2 records in 1 chain(s)") {
		t.Fatalf("exit %d: %s %s\n%s", code, out.String(), errOut.String(), log.String())
	}
}

// stdioSession starts the gateway in front of this test binary as a stdio server, makes one tool call,
// stops it and returns its audit output.
func stdioSession(t *testing.T, args ...string) string {
	t.Helper()
	addr := freePort(t)
	cfgPath := filepath.Join(t.TempDir(), "gateway.json")
	cfg, _ := json.Marshal(map[string]any{
		"listen": addr, "resource": "https://files.mcp.example/mcp", "auth": map[string]any{"disabled": true},
		"limits": map[string]any{"callTimeout": "10s"}, "stdio": true,
	})
	if err := os.WriteFile(cfgPath, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Second)
	defer cancel()
	auditOut, logs := &syncbuf.Buffer{}, &syncbuf.Buffer{}
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, append(append([]string{"--config", cfgPath}, args...), "--stdio", "--", exe), auditOut, logs)
	}()
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
	if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "read_file", Arguments: map[string]any{"path": "a.txt"}}); err != nil {
		t.Fatalf("call: %v\nlogs: %s", err, logs.String())
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
	return auditOut.String()
}

// TestStdioSocket runs a stdio server as a pod runs it: the gateway listens on a unix socket
// (--stdio-socket), and another process (the server's container) runs `gateway stdio-exec SOCKET --
// COMMAND`, which becomes the server with the socket as its stdin and stdout. Calls go through the
// gateway's controls, and the status port reports the server's initialize result and tool count.
func TestStdioSocket(t *testing.T) {
	addr, statusAddr := freePort(t), freePort(t)
	dir := t.TempDir()
	sock, cfgPath := filepath.Join(dir, "stdio.sock"), filepath.Join(dir, "gateway.json")
	cfg, _ := json.Marshal(map[string]any{
		"listen": addr, "statusListen": statusAddr, "resource": "https://files.mcp.example/mcp", "auth": map[string]any{"disabled": true},
		"limits": map[string]any{"callTimeout": "10s"}, "stdio": true,
	})
	if err := os.WriteFile(cfgPath, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	auditOut, logs := &syncbuf.Buffer{}, &syncbuf.Buffer{}
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"--config", cfgPath, "--stdio-socket", sock}, auditOut, logs) }()
	server := exec.Command(os.Args[0])
	server.Env = append(os.Environ(), "GATEWAY_TEST_STDIO_EXEC="+sock)
	server.Stderr = os.Stderr
	if err := server.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = server.Process.Kill(); _ = server.Wait() })

	var st gateway.Status
	for ctx.Err() == nil {
		if resp, err := http.Get("http://" + statusAddr + "/status"); err == nil {
			_ = json.NewDecoder(resp.Body).Decode(&st)
			resp.Body.Close()
			if st.Upstream.Initialized {
				break
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	if u := st.Upstream; !u.Initialized || u.ServerName != "stdio-files" || u.ToolCount != 1 {
		t.Fatalf("status: %+v\nlogs: %s", u, logs.String())
	}
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "test", Version: "1"}, nil).Connect(ctx,
		&mcp.StreamableClientTransport{Endpoint: "http://" + addr + "/mcp", HTTPClient: &http.Client{}, MaxRetries: -1}, nil)
	if err != nil {
		t.Fatalf("connect: %v\nlogs: %s", err, logs.String())
	}
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "read_file", Arguments: map[string]any{"path": "a.txt"}})
	if err != nil {
		t.Fatalf("call: %v\nlogs: %s", err, logs.String())
	}
	if got := res.Content[0].(*mcp.TextContent).Text; !strings.HasPrefix(got, "contents of a.txt") || strings.Contains(got, "AKIA") {
		t.Fatalf("result not sanitized: %q", got)
	}
	_ = cs.Close()
	// The server exits; the gateway stays (the kubelet restarts the server's container) and is no
	// longer ready.
	_ = server.Process.Kill()
	_ = server.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + statusAddr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusServiceUnavailable {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the gateway is still ready after its server exited: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("exit %d\nlogs: %s", code, logs.String())
	}
}
