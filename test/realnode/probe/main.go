// Command probe runs in pods on the real node and reports what the kernel and the network do, as one
// JSON object on stdout per command:
//
//	probe serve [--port 8080]    an MCP server (streamable HTTP at /mcp), the demo server's tools; each
//	                             request's traceparent header is reported on stdout ({"Traceparent":...})
//	probe serve --stdio          the same MCP server on stdin/stdout
//	probe isolation [--bind A,B] [--files P,Q] [--root-file P]
//	                             what this process can do to the other processes it sees (signal, read
//	                             environ, open a file in their root), bind the addresses, read the files
//	probe get URL                an HTTP GET (5 s): status and body (at most 64 KiB)
//	probe facts                  this process's and PID 1's identity, capabilities, seccomp, writes
//	probe dial HOST:PORT...      a TCP connect to each address, 2 s each
//	probe mcp [--call TOOL --arguments JSON] [--ca FILE|--ca-pem PEM] [--server-name NAME] [--traceparent TP] URL [TOKEN]
//	                             an MCP client (go-sdk): connect, list tools, call one; and the raw HTTP
//	                             status; --traceparent is sent on every request
//	probe session [--ca FILE|--ca-pem PEM] [--server-name NAME] [--rounds N] [--ready ADDR] TOKEN URL...
//	                             go-sdk sessions whose requests rotate across the URLs (the replicas'
//	                             pod IPs), one session initialized at each; waits for the first URL's
//	                             pod to go and continues, re-initializing a session the gateway
//	                             answers 404 for (see session.go)
//	probe otlp [--port 4318]     an OTLP/HTTP trace collector that counts the spans it receives by
//	                             trace id (GET /spans reports them)
//	probe sleep                  wait for SIGTERM (a client pod to exec in)
//	probe resolve NAME...        look each name up with the pod's resolver (its /etc/resolv.conf)
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcp-warden/mcp-warden/internal/demoserver"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: probe serve|facts|dial|mcp|sleep|resolve ...")
		os.Exit(2)
	}
	var out any
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve(os.Args[2:])
	case "facts":
		out = facts()
	case "dial":
		out = dial(os.Args[2:])
	case "mcp":
		out, err = mcpClient(os.Args[2:])
	case "session":
		out, err = sessions(os.Args[2:])
	case "otlp":
		err = collector(os.Args[2:])
	case "resolve":
		out = resolve(os.Args[2:])
	case "isolation":
		out = isolation(os.Args[2:])
	case "get":
		out, err = get(os.Args[2:])
	case "noop":
	case "sleep":
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
		<-sig
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "probe:", err)
		os.Exit(1)
	}
	if out != nil {
		_ = json.NewEncoder(os.Stdout).Encode(out)
	}
}

func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	port := fs.Int("port", 8080, "listen port")
	stdio := fs.Bool("stdio", false, "speak MCP on stdin/stdout")
	_ = fs.Parse(args)
	if *stdio {
		// stdout is the protocol: the startup report goes to stderr
		_ = json.NewEncoder(os.Stderr).Encode(facts())
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
		defer stop()
		return demoserver.New().Run(ctx, &mcp.StdioTransport{})
	}
	_ = json.NewEncoder(os.Stdout).Encode(facts())
	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return demoserver.New() }, nil)
	mux := http.NewServeMux()
	// The trace context the gateway passes on, as the server sees it.
	var logMu sync.Mutex
	enc := json.NewEncoder(os.Stdout)
	mux.Handle("/mcp", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if tp := r.Header.Get("traceparent"); tp != "" {
			logMu.Lock()
			_ = enc.Encode(struct{ Traceparent string }{tp})
			logMu.Unlock()
		}
		h.ServeHTTP(w, r)
	}))
	srv := &http.Server{Addr: fmt.Sprintf(":%d", *port), Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Facts is what a process observes about its own sandbox.
type Facts struct {
	// Self and PID1 are fields of /proc/self/status and /proc/1/status (Uid, Gid, CapEff, CapBnd, CapPrm,
	// CapInh, CapAmb, NoNewPrivs, Seccomp).
	Self, PID1 map[string]string
	// WriteRoot, WriteTmp and WriteHome are the errors of creating a file there ("" when it worked).
	WriteRoot, WriteTmp, WriteHome string
	// Home is $HOME.
	Home string
	// ServiceAccountToken says whether a service-account token file exists.
	ServiceAccountToken bool
	// CloneNewUser is the error of clone(CLONE_NEWUSER), which RuntimeDefault seccomp refuses.
	CloneNewUser string
}

func facts() Facts {
	f := Facts{Self: status("/proc/self/status"), PID1: status("/proc/1/status"), Home: os.Getenv("HOME")}
	f.WriteRoot = tryWrite("/")
	f.WriteTmp = tryWrite(os.TempDir())
	if f.Home != "" {
		f.WriteHome = tryWrite(f.Home)
	} else {
		f.WriteHome = "HOME is not set"
	}
	_, err := os.Stat("/var/run/secrets/kubernetes.io/serviceaccount/token")
	f.ServiceAccountToken = err == nil
	f.CloneNewUser = errString(cloneNewUser())
	return f
}

// cloneNewUser starts this binary (probe noop) in a new user namespace, clone(CLONE_NEWUSER): the
// RuntimeDefault seccomp profile refuses it (EPERM) where Unconfined allows it.
func cloneNewUser() error {
	cmd := exec.Command("/proc/self/exe", "noop")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWUSER}
	return cmd.Run()
}

func status(path string) map[string]string {
	keys := map[string]bool{"Uid": true, "Gid": true, "CapEff": true, "CapBnd": true, "CapPrm": true, "CapInh": true, "CapAmb": true, "NoNewPrivs": true, "Seccomp": true}
	m := map[string]string{}
	f, err := os.Open(path)
	if err != nil {
		m["error"] = err.Error()
		return m
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && keys[k] {
			m[k] = strings.Join(strings.Fields(v), " ")
		}
	}
	return m
}

func tryWrite(dir string) string {
	p := filepath.Join(dir, fmt.Sprintf(".probe-%d", os.Getpid()))
	if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
		return err.Error()
	}
	_ = os.Remove(p)
	return ""
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// DialResult is one TCP connect: "connected", "refused", "timeout" or another error.
type DialResult struct {
	Addr, Result string
}

func dial(addrs []string) []DialResult {
	var out []DialResult
	for _, a := range addrs {
		c, err := net.DialTimeout("tcp", a, 2*time.Second)
		r := "connected"
		switch {
		case err == nil:
			c.Close()
		case errors.Is(err, syscall.ECONNREFUSED):
			r = "refused"
		case isTimeout(err):
			r = "timeout"
		default:
			r = err.Error()
		}
		out = append(out, DialResult{Addr: a, Result: r})
	}
	return out
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// MCPResult is what an MCP client saw.
type MCPResult struct {
	// ConnectError is the go-sdk client's error connecting ("" when it connected).
	ConnectError string
	// Tools are the tools listed after connecting.
	Tools []string
	// Status is the HTTP status of a raw initialize request (-1: no response).
	Status int
	// WWWAuthenticate is the header of the raw initialize request's response.
	WWWAuthenticate string
	// Calls are the results of calling the tools named after the token: the tool's text, or
	// "error: ..." for a refusal.
	Calls map[string]string `json:",omitempty"`
	// CallError is the error of the tools/call (--call), or the tool's own error result; CallText is
	// the text content the tool returned.
	CallError, CallText string
	// SessionID is the go-sdk client's session id; InitSessionID the one the raw initialize got: two
	// sessions of the token's principal.
	SessionID, InitSessionID string `json:",omitempty"`
}

func mcpClient(args []string) (*MCPResult, error) {
	fs := flag.NewFlagSet("mcp", flag.ContinueOnError)
	call := fs.String("call", "", "a tool to call after listing tools")
	arguments := fs.String("arguments", "{}", "the tool's arguments, a JSON object")
	caFile := fs.String("ca", "", "PEM file of the CAs to trust for an https URL (e.g. the mounted mcp-warden-ca ConfigMap); default the system roots")
	caPEM := fs.String("ca-pem", "", "PEM CAs to trust, inline")
	serverName := fs.String("server-name", "", "the name to verify the server's certificate for (default the URL's host)")
	traceparent := fs.String("traceparent", "", "a W3C traceparent header to send on every request")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	transport, err := tlsTransport(*caFile, *caPEM, *serverName)
	if err != nil {
		return nil, err
	}
	args = fs.Args()
	if len(args) < 1 {
		return nil, errors.New("usage: probe mcp [--call TOOL --arguments JSON] URL [TOKEN [TOOL[=JSON-ARGUMENTS]...]]")
	}
	url, token := args[0], ""
	if len(args) > 1 {
		token = args[1]
	}
	var callArgs map[string]any
	if err := json.Unmarshal([]byte(*arguments), &callArgs); err != nil {
		return nil, fmt.Errorf("--arguments: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if *traceparent != "" {
		transport = header{"traceparent", *traceparent, transport}
	}
	hc := &http.Client{Timeout: 10 * time.Second, Transport: bearer{token, transport}}
	res := &MCPResult{}
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "probe", Version: "1"}, nil).Connect(ctx, &mcp.StreamableClientTransport{Endpoint: url, HTTPClient: hc, MaxRetries: -1}, nil)
	if err != nil {
		res.ConnectError = err.Error()
	} else {
		defer cs.Close()
		res.SessionID = cs.ID()
		if err := useSession(ctx, cs, res, args[min(len(args), 2):], *call, callArgs); err != nil {
			return nil, err
		}
	}
	return rawInitialize(ctx, hc, url, res)
}

// useSession lists the tools, calls each of calls (TOOL or TOOL=JSON-ARGUMENTS) into res.Calls, and
// then call (--call) with callArgs, when set.
func useSession(ctx context.Context, cs *mcp.ClientSession, res *MCPResult, calls []string, call string, callArgs map[string]any) error {
	tools, err := cs.ListTools(ctx, nil)
	if err != nil {
		res.ConnectError = "list tools: " + err.Error()
	} else {
		for _, t := range tools.Tools {
			res.Tools = append(res.Tools, t.Name)
		}
	}
	for _, c := range calls {
		// TOOL or TOOL=JSON-ARGUMENTS
		name, raw, _ := strings.Cut(c, "=")
		arguments := map[string]any{}
		if raw != "" {
			if err := json.Unmarshal([]byte(raw), &arguments); err != nil {
				return fmt.Errorf("arguments of %s: %w", name, err)
			}
		}
		if res.Calls == nil {
			res.Calls = map[string]string{}
		}
		r, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: arguments})
		switch {
		case err != nil:
			res.Calls[name] = "error: " + err.Error()
		case r.IsError:
			res.Calls[name] = "error: " + toolText(r)
		default:
			res.Calls[name] = toolText(r)
		}
	}
	if call != "" {
		callNamed(ctx, cs, res, call, callArgs)
	}
	return nil
}

// callNamed calls the tool into res.CallText, or res.CallError.
func callNamed(ctx context.Context, cs *mcp.ClientSession, res *MCPResult, name string, arguments map[string]any) {
	r, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: arguments})
	if err != nil {
		res.CallError = err.Error()
		return
	}
	for _, c := range r.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			res.CallText += tc.Text
		}
	}
	if r.IsError {
		res.CallError = "the tool returned an error: " + res.CallText
	}
}

// rawInitialize posts an initialize request without the MCP client and records the response's status
// and WWW-Authenticate header in res (-1 and the error when there is none).
func rawInitialize(ctx context.Context, hc *http.Client, url string, res *MCPResult) (*MCPResult, error) {
	body := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"probe","version":"1"}}}`
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	resp, err := hc.Do(req)
	if err != nil {
		res.Status = -1
		res.WWWAuthenticate = err.Error()
		return res, nil
	}
	resp.Body.Close()
	res.Status, res.WWWAuthenticate = resp.StatusCode, resp.Header.Get("WWW-Authenticate")
	res.InitSessionID = resp.Header.Get("Mcp-Session-Id")
	return res, nil
}

func toolText(r *mcp.CallToolResult) string {
	var b strings.Builder
	for _, c := range r.Content {
		if t, ok := c.(*mcp.TextContent); ok {
			b.WriteString(t.Text)
		}
	}
	return b.String()
}

// tlsTransport trusts the CAs of caFile and caPEM (none: the system roots) and verifies serverName.
func tlsTransport(caFile, caPEM, serverName string) (http.RoundTripper, error) {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = &tls.Config{ServerName: serverName, MinVersion: tls.VersionTLS12}
	pem := []byte(caPEM)
	if caFile != "" {
		b, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("--ca: %w", err)
		}
		pem = append(pem, b...)
	}
	if len(pem) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, errors.New("--ca/--ca-pem: no PEM certificate")
		}
		t.TLSClientConfig.RootCAs = pool
	}
	return t, nil
}

type bearer struct {
	token string
	next  http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	if b.token == "" {
		return b.next.RoundTrip(r)
	}
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.next.RoundTrip(r)
}

// header sets one request header.
type header struct {
	name, value string
	next        http.RoundTripper
}

func (h header) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set(h.name, h.value)
	return h.next.RoundTrip(r)
}

// ResolveResult is one lookup: the addresses, or the error.
type ResolveResult struct {
	Name  string
	Addrs []string
	Error string
}

func resolve(names []string) []ResolveResult {
	var out []ResolveResult
	for _, n := range names {
		ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
		addrs, err := net.DefaultResolver.LookupHost(ctx, n)
		cancel()
		out = append(out, ResolveResult{Name: n, Addrs: addrs, Error: errString(err)})
	}
	return out
}

// Isolation is what a process in one container can do to the rest of its pod.
type Isolation struct {
	// Self is this process's Uid, Gid and Groups (from /proc/self/status).
	Self map[string]string
	// Processes are the other processes visible in /proc (this PID namespace).
	Processes []ProcessView
	// Binds are the results of listening on each address, plainly and with SO_REUSEADDR+SO_REUSEPORT.
	Binds []BindResult
	// Files are the results of reading each file ("" when it could be read).
	Files []FileResult
}

// ProcessView is another process and what this one could do to it ("" when it worked).
type ProcessView struct {
	Pid        int
	Name       string
	UID        string `json:"Uid"`
	Kill0      string
	Environ    string
	RootFile   string `json:",omitempty"`
	SameUserAs bool
}

// BindResult is one listen attempt.
type BindResult struct {
	Addr      string
	ReusePort bool
	Result    string
}

// FileResult is one read attempt.
type FileResult struct{ Path, Result string }

func isolation(args []string) Isolation {
	fs := flag.NewFlagSet("isolation", flag.ExitOnError)
	binds := fs.String("bind", "", "comma-separated addresses to listen on")
	files := fs.String("files", "", "comma-separated files to read")
	rootFile := fs.String("root-file", "", "a file to open through each other process's /proc/PID/root")
	_ = fs.Parse(args)
	self := status("/proc/self/status")
	out := Isolation{Self: map[string]string{"Uid": self["Uid"], "Gid": self["Gid"]}}
	if raw, err := os.ReadFile("/proc/self/status"); err == nil {
		for _, line := range strings.Split(string(raw), "\n") {
			if v, ok := strings.CutPrefix(line, "Groups:"); ok {
				out.Self["Groups"] = strings.TrimSpace(v)
			}
		}
	}
	out.Processes = otherProcesses(self["Uid"], *rootFile)
	for _, a := range splitComma(*binds) {
		for _, reuse := range []bool{false, true} {
			out.Binds = append(out.Binds, tryListen(a, reuse))
		}
	}
	for _, p := range splitComma(*files) {
		_, err := os.ReadFile(p)
		out.Files = append(out.Files, FileResult{Path: p, Result: errString(err)})
	}
	return out
}

// otherProcesses are the other processes in /proc and what this one (user uid) could do to them:
// signal, read their environment and, with rootFile set, open rootFile through their /proc/PID/root.
func otherProcesses(uid, rootFile string) []ProcessView {
	var views []ProcessView
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		st := status(filepath.Join("/proc", e.Name(), "status"))
		name, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "comm"))
		v := ProcessView{Pid: pid, Name: strings.TrimSpace(string(name)), UID: st["Uid"], SameUserAs: st["Uid"] == uid}
		v.Kill0 = errString(syscall.Kill(pid, 0))
		_, err = os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		v.Environ = errString(err)
		if rootFile != "" {
			_, err = os.ReadFile(filepath.Join("/proc", e.Name(), "root", rootFile))
			v.RootFile = errString(err)
		}
		views = append(views, v)
	}
	return views
}

// tryListen listens on addr, with SO_REUSEADDR and SO_REUSEPORT when reuse is set, and closes the
// listener again.
func tryListen(addr string, reuse bool) BindResult {
	lc := net.ListenConfig{}
	if reuse {
		lc.Control = func(_, _ string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				if serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1); serr == nil {
					serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, 0xf /* SO_REUSEPORT */, 1)
				}
			})
			if err != nil {
				return err
			}
			return serr
		}
	}
	ln, err := lc.Listen(context.Background(), "tcp", addr)
	r := "listening"
	if err != nil {
		r = err.Error()
	} else {
		ln.Close()
	}
	return BindResult{Addr: addr, ReusePort: reuse, Result: r}
}

func splitComma(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// GetResult is one HTTP GET.
type GetResult struct {
	Status int
	Body   string
	Error  string `json:",omitempty"`
}

func get(args []string) (*GetResult, error) {
	if len(args) != 1 {
		return nil, errors.New("usage: probe get URL")
	}
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil}}
	resp, err := c.Get(args[0])
	if err != nil {
		return &GetResult{Status: -1, Error: err.Error()}, nil
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return &GetResult{Status: resp.StatusCode, Body: string(body), Error: errString(err)}, nil
}
