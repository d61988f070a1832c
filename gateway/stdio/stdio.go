// Package stdio runs an MCP server that speaks JSON-RPC over stdin/stdout as a child process and serves
// it as a minimal streamable HTTP endpoint on loopback, so the gateway applies exactly the same controls
// to it as to a server that speaks HTTP itself.
//
// The bridge offers the session-based protocol revisions (2025-11-25 and earlier); clients that try
// server/discover first fall back to initialize. A stdio server has one session: the first initialize is forwarded and its result is replayed to later
// clients, each of which gets its own Mcp-Session-Id. Request ids are rewritten so that concurrent
// clients cannot collide. Server-to-client notifications go to every open event stream (HTTP GET);
// server-to-client requests go to one of them.
package stdio

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mcp-warden/mcp-warden/gateway/strictjson"
)

// MaxMessageBytes bounds one JSON-RPC message in either direction.
const MaxMessageBytes = 16 << 20

// Bridge is a running child MCP server with its loopback HTTP endpoint.
type Bridge struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	log   *slog.Logger

	writeMu sync.Mutex
	nextID  atomic.Uint64

	mu       sync.Mutex
	sessions map[string]bool // the session ids handed out by initialize
	pending  map[string]chan json.RawMessage
	streams  map[chan []byte]string // event streams, with their session ids
	// inflight counts each session's requests the server is working on; asked maps the id of a request
	// the server sent to the session it was sent to, so that only that session can answer it.
	inflight    map[string]int
	asked       map[string]string
	initResult  json.RawMessage
	initialized bool

	initMu sync.Mutex // one initialize at a time
	exited chan struct{}
	err    error
	srv    *http.Server
	ln     net.Listener
}

// Start runs argv as a child process and serves it on 127.0.0.1 at an ephemeral port (see URL).
func Start(argv []string, log *slog.Logger) (*Bridge, error) {
	if len(argv) == 0 {
		return nil, errors.New("stdio: no server command given; use gateway --stdio -- COMMAND [ARGS...]")
	}
	if log == nil {
		log = slog.Default()
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = os.Environ()
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("stdio: %w", err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("stdio: %w", err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, fmt.Errorf("stdio: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("stdio: listen on loopback: %w", err)
	}
	if err := cmd.Start(); err != nil {
		ln.Close()
		return nil, fmt.Errorf("stdio: start %s: %w", argv[0], err)
	}
	b := &Bridge{cmd: cmd, stdin: stdin, log: log, pending: map[string]chan json.RawMessage{}, sessions: map[string]bool{}, streams: map[chan []byte]string{},
		inflight: map[string]int{}, asked: map[string]string{},
		exited: make(chan struct{}), ln: ln}
	b.srv = &http.Server{Handler: b, ReadHeaderTimeout: 10 * time.Second}
	go b.readStdout(stdout)
	go b.logStderr(stderr)
	go func() {
		b.err = cmd.Wait()
		close(b.exited)
		log.Error("MCP server process exited", "err", b.err)
	}()
	go func() { _ = b.srv.Serve(ln) }()
	return b, nil
}

// URL is the loopback MCP endpoint of the child server.
func (b *Bridge) URL() string { return "http://" + b.ln.Addr().String() + "/mcp" }

// Exited is closed when the child process has exited.
func (b *Bridge) Exited() <-chan struct{} { return b.exited }

// Close stops serving, closes the child's stdin and waits up to grace for it to exit before killing it.
func (b *Bridge) Close(grace time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	_ = b.srv.Shutdown(ctx)
	_ = b.stdin.Close()
	select {
	case <-b.exited:
	case <-ctx.Done():
		_ = b.cmd.Process.Kill()
		<-b.exited
	}
	return nil
}

type message struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id,omitempty"`
	Method  string          `json:"method,omitempty"`
	Params  json.RawMessage `json:"params,omitempty"`
	Result  json.RawMessage `json:"result,omitempty"`
	Error   json.RawMessage `json:"error,omitempty"`
}

func hasID(id json.RawMessage) bool { return len(id) > 0 && string(id) != "null" }

func (b *Bridge) readStdout(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), MaxMessageBytes)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var m message
		if err := strictjson.Unmarshal(line, &m); err != nil {
			b.log.Warn("MCP server wrote a line that is not strict JSON-RPC; dropped", "err", err)
			continue
		}
		if hasID(m.ID) {
			id, err := strictjson.Canonical(m.ID)
			if err != nil {
				continue
			}
			m.ID = id
		}
		b.log.Debug("from the MCP server", "id", string(m.ID), "method", m.Method)
		if m.Method == "" && hasID(m.ID) {
			b.mu.Lock()
			ch := b.pending[string(m.ID)]
			delete(b.pending, string(m.ID))
			b.mu.Unlock()
			if ch != nil {
				ch <- append(json.RawMessage(nil), line...)
			}
			continue
		}
		b.toStreams(append([]byte(nil), line...), m.ID)
	}
	if err := sc.Err(); err != nil {
		b.log.Error("reading the MCP server's stdout failed", "err", err)
	}
}

// toStreams sends a server-initiated message to the open event streams: a notification to all, a
// request (sampling, elicitation, roots) to a stream of the one session with a request in flight, since
// the server asks on behalf of the call it is running. With no such session, or several (the request
// could belong to either), the request is dropped rather than shown to a session it may not belong to.
func (b *Bridge) toStreams(line []byte, id json.RawMessage) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !hasID(id) {
		for ch := range b.streams {
			select {
			case ch <- line:
			default:
				b.log.Warn("dropped a server message: the client's event stream is not reading")
			}
		}
		return
	}
	owner := ""
	for sid, n := range b.inflight {
		if n > 0 {
			if owner != "" {
				b.log.Warn("dropped a server request: several sessions have calls in flight, so the request's session is unknown")
				return
			}
			owner = sid
		}
	}
	for ch, sid := range b.streams {
		if owner == "" || sid != owner {
			continue
		}
		select {
		case ch <- line:
			if len(b.asked) < maxSessions {
				b.asked[string(id)] = owner
			}
		default:
			b.log.Warn("dropped a server request: the client's event stream is not reading")
		}
		return
	}
	b.log.Warn("dropped a server request: no event stream of the session with a call in flight is open")
}

func (b *Bridge) logStderr(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), 64<<10)
	for sc.Scan() {
		b.log.Info("MCP server stderr", "line", sc.Text())
	}
}

func (b *Bridge) write(line []byte) error {
	b.writeMu.Lock()
	defer b.writeMu.Unlock()
	if _, err := b.stdin.Write(append(line, '\n')); err != nil {
		return fmt.Errorf("write to the MCP server: %w", err)
	}
	return nil
}

// roundTrip sends a request with a bridge-unique id and returns the response with the caller's id.
func (b *Bridge) roundTrip(ctx context.Context, m *message) (json.RawMessage, error) {
	orig := m.ID
	id := json.RawMessage(strconv.Quote("bridge-" + strconv.FormatUint(b.nextID.Add(1), 10)))
	m.ID = id
	line, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode request: %w", err)
	}
	ch := make(chan json.RawMessage, 1)
	b.mu.Lock()
	b.pending[string(id)] = ch
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		delete(b.pending, string(id))
		b.mu.Unlock()
	}()
	b.log.Debug("to the MCP server", "id", string(id), "method", m.Method)
	if err := b.write(line); err != nil {
		return nil, err
	}
	select {
	case raw := <-ch:
		var resp message
		if err := strictjson.Unmarshal(raw, &resp); err != nil {
			return nil, fmt.Errorf("decode response: %w", err)
		}
		resp.ID = orig
		out, err := json.Marshal(resp)
		if err != nil {
			return nil, fmt.Errorf("encode response: %w", err)
		}
		return out, nil
	case <-b.exited:
		return nil, errors.New("the MCP server process exited")
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for the MCP server: %w", ctx.Err())
	}
}

func newSessionID() string {
	var r [16]byte
	_, _ = rand.Read(r[:])
	return hex.EncodeToString(r[:])
}

// ServeHTTP implements the subset of the streamable HTTP transport the gateway uses.
func (b *Bridge) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodPost:
		b.servePOST(w, r)
	case http.MethodGet:
		if b.checkSession(w, r) {
			b.serveGET(w, r)
		}
	case http.MethodDelete:
		if b.checkSession(w, r) {
			b.mu.Lock()
			delete(b.sessions, r.Header.Get("Mcp-Session-Id"))
			b.mu.Unlock()
			w.WriteHeader(http.StatusNoContent)
		}
	default:
		w.Header().Set("Allow", "GET, POST, DELETE")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	}
}

func (b *Bridge) servePOST(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxMessageBytes+1))
	if err != nil || len(body) > MaxMessageBytes {
		http.Error(w, "request too large", http.StatusRequestEntityTooLarge)
		return
	}
	var m message
	if err := strictjson.Unmarshal(body, &m); err != nil {
		http.Error(w, "the stdio bridge takes one JSON-RPC message per request", http.StatusBadRequest)
		return
	}
	if m.Method != "initialize" && m.Method != "server/discover" && !b.checkSession(w, r) {
		return
	}
	switch {
	case m.Method == "server/discover" && hasID(m.ID):
		// The bridge speaks the session-based revisions only (one stdio session shared by all clients):
		// clients fall back to initialize.
		w.Header().Set("Content-Type", "application/json")
		_, _ = fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"error":{"code":-32601,"message":"server/discover is not supported by this server; use initialize"}}`, m.ID)
	case m.Method == "initialize" && hasID(m.ID):
		b.initialize(w, r, &m)
	case m.Method != "" && hasID(m.ID):
		sid := r.Header.Get("Mcp-Session-Id")
		b.mu.Lock()
		b.inflight[sid]++
		b.mu.Unlock()
		out, err := b.roundTrip(r.Context(), &m)
		b.mu.Lock()
		if b.inflight[sid]--; b.inflight[sid] <= 0 {
			delete(b.inflight, sid)
		}
		b.mu.Unlock()
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(out)
	default: // a notification, or a response to a server request
		if m.Method == "" {
			// only the session the server's request was sent to may answer it
			id, err := strictjson.Canonical(m.ID)
			sid := r.Header.Get("Mcp-Session-Id")
			b.mu.Lock()
			ok := err == nil && hasID(m.ID) && b.asked[string(id)] == sid
			if ok {
				delete(b.asked, string(id))
			}
			b.mu.Unlock()
			if !ok {
				http.Error(w, "the response answers no request the server sent to this session", http.StatusBadRequest)
				return
			}
		}
		if m.Method == "notifications/initialized" {
			b.mu.Lock()
			already := b.initialized
			b.initialized = true
			b.mu.Unlock()
			if already {
				w.WriteHeader(http.StatusAccepted)
				return
			}
		}
		if err := b.write(bytes.TrimSpace(body)); err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		w.WriteHeader(http.StatusAccepted)
	}
}

// initialize forwards the first initialize and replays its result to later clients.
func (b *Bridge) initialize(w http.ResponseWriter, r *http.Request, m *message) {
	b.initMu.Lock()
	defer b.initMu.Unlock()
	b.mu.Lock()
	cached := b.initResult
	b.mu.Unlock()
	var out []byte
	if cached != nil {
		var err error
		out, err = json.Marshal(message{JSONRPC: "2.0", ID: m.ID, Result: cached})
		if err != nil {
			http.Error(w, "encode initialize result", http.StatusInternalServerError)
			return
		}
	} else {
		resp, err := b.roundTrip(r.Context(), m)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		var rm message
		if strictjson.Unmarshal(resp, &rm) == nil && len(rm.Result) > 0 {
			b.mu.Lock()
			b.initResult = rm.Result
			b.mu.Unlock()
		}
		out = resp
	}
	sid := newSessionID()
	b.mu.Lock()
	if len(b.sessions) >= maxSessions {
		for k := range b.sessions { // forget an arbitrary one
			delete(b.sessions, k)
			break
		}
	}
	b.sessions[sid] = true
	b.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Mcp-Session-Id", sid)
	_, _ = w.Write(out)
}

// maxSessions bounds the session ids the bridge remembers.
const maxSessions = 10000

// checkSession requires a session id that initialize handed out, as the streamable HTTP transport
// does: 400 without one, 404 for an unknown one. It has answered when it returns false.
func (b *Bridge) checkSession(w http.ResponseWriter, r *http.Request) bool {
	sid := r.Header.Get("Mcp-Session-Id")
	if sid == "" {
		http.Error(w, "missing Mcp-Session-Id: initialize first", http.StatusBadRequest)
		return false
	}
	b.mu.Lock()
	ok := b.sessions[sid]
	b.mu.Unlock()
	if !ok {
		http.Error(w, "session not found", http.StatusNotFound)
		return false
	}
	return true
}

func (b *Bridge) serveGET(w http.ResponseWriter, r *http.Request) {
	f, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	ch := make(chan []byte, 64)
	b.mu.Lock()
	b.streams[ch] = r.Header.Get("Mcp-Session-Id")
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		delete(b.streams, ch)
		b.mu.Unlock()
	}()
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	f.Flush()
	for {
		select {
		case line := <-ch:
			if _, err := fmt.Fprintf(w, "event: message\ndata: %s\n\n", line); err != nil {
				return
			}
			f.Flush()
		case <-r.Context().Done():
			return
		case <-b.exited:
			return
		}
	}
}
