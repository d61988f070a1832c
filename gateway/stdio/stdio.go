// Package stdio serves an MCP server that speaks JSON-RPC over stdin/stdout as a minimal streamable HTTP
// endpoint on loopback, so the gateway applies exactly the same controls to it as to a server that
// speaks HTTP itself. The server is either a child process (Start) or, in a server pod, a process in
// another container whose stdin and stdout are a unix socket the bridge listens on (Listen, with Exec
// on the server's side): the server then runs as another user than the gateway, in its own container.
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

// Bridge is a stdio MCP server (a child process, or the peer of a unix socket) with its loopback HTTP
// endpoint.
type Bridge struct {
	cmd *exec.Cmd
	log *slog.Logger
	// peer is the connected server (nil while none is); a new peer starts a new MCP session, so the
	// old session ids are refused with 404 and clients initialize again.
	peer *peer
	// sock is the unix socket listener (Listen), changed is signalled when a peer comes or goes.
	sock    net.Listener
	changed chan struct{}

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

// peer is one connection to the server: where to write, and closed when it is gone.
type peer struct {
	w    io.WriteCloser
	gone chan struct{}
}

// writeTimeout bounds one write to the server: a server that stops reading cannot hold the bridge.
const writeTimeout = 30 * time.Second

func newBridge(log *slog.Logger) (*Bridge, error) {
	if log == nil {
		log = slog.Default()
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("stdio: listen on loopback: %w", err)
	}
	b := &Bridge{log: log, pending: map[string]chan json.RawMessage{}, sessions: map[string]bool{}, streams: map[chan []byte]string{},
		inflight: map[string]int{}, asked: map[string]string{}, exited: make(chan struct{}), ln: ln, changed: make(chan struct{}, 1)}
	b.srv = &http.Server{Handler: b, ReadHeaderTimeout: 10 * time.Second}
	return b, nil
}

// connect makes p the server the bridge talks to, with a fresh MCP session.
func (b *Bridge) connect(p *peer) {
	b.mu.Lock()
	b.peer = p
	b.resetLocked()
	b.mu.Unlock()
	b.signal()
}

// disconnect forgets p (if it is still the peer) and everything of its session.
func (b *Bridge) disconnect(p *peer) {
	b.mu.Lock()
	if b.peer == p {
		b.peer = nil
		b.resetLocked()
	}
	b.mu.Unlock()
	close(p.gone)
	b.signal()
}

func (b *Bridge) resetLocked() {
	clear(b.sessions)
	clear(b.inflight)
	clear(b.asked)
	b.initResult, b.initialized = nil, false
}

func (b *Bridge) signal() {
	select {
	case b.changed <- struct{}{}:
	default:
	}
}

// Changes is signalled when a server connects or goes away (Listen), for the gateway to check it again.
func (b *Bridge) Changes() <-chan struct{} { return b.changed }

// Listen serves the stdio server whose stdin and stdout connect to the unix socket at path (see Exec),
// one connection at a time: when it ends (the server exited), the bridge waits for the next (the
// kubelet restarts the server's container). The socket is created writable by every user, since the
// server runs as another user than the gateway: keep it in a directory only the two share.
func Listen(path string, log *slog.Logger) (*Bridge, error) {
	b, err := newBridge(log)
	if err != nil {
		return nil, err
	}
	// A socket left by an earlier run of the gateway (the emptyDir outlives it) is replaced; Remove does
	// not follow a symbolic link put there.
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		b.ln.Close()
		return nil, fmt.Errorf("stdio: remove the old socket %s: %w", path, err)
	}
	sock, err := listenUnixForAll(path)
	if err != nil {
		b.ln.Close()
		return nil, fmt.Errorf("stdio: listen on %s: %w", path, err)
	}
	b.sock = sock
	go b.accept()
	go func() { _ = b.srv.Serve(b.ln) }()
	return b, nil
}

func (b *Bridge) accept() {
	for {
		c, err := b.sock.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			b.log.Warn("accepting on the stdio socket failed", "err", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		b.log.Info("the MCP server connected to the stdio socket")
		p := &peer{w: deadlineWriter{c}, gone: make(chan struct{})}
		b.connect(p)
		b.readStdout(c)
		_ = c.Close()
		b.disconnect(p)
		b.log.Warn("the MCP server disconnected from the stdio socket; waiting for it to connect again")
	}
}

// deadlineWriter bounds each write to a connection.
type deadlineWriter struct{ c net.Conn }

func (d deadlineWriter) Write(p []byte) (int, error) {
	_ = d.c.SetWriteDeadline(time.Now().Add(writeTimeout))
	return d.c.Write(p)
}

func (d deadlineWriter) Close() error { return d.c.Close() }

// Start runs argv as a child process and serves it on 127.0.0.1 at an ephemeral port (see URL).
func Start(argv []string, log *slog.Logger) (*Bridge, error) {
	if len(argv) == 0 {
		return nil, errors.New("stdio: no server command given; use gateway --stdio -- COMMAND [ARGS...]")
	}
	b, err := newBridge(log)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = os.Environ()
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.ln.Close()
		return nil, fmt.Errorf("stdio: %w", err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.ln.Close()
		return nil, fmt.Errorf("stdio: %w", err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		b.ln.Close()
		return nil, fmt.Errorf("stdio: %w", err)
	}
	if err := cmd.Start(); err != nil {
		b.ln.Close()
		return nil, fmt.Errorf("stdio: start %s: %w", argv[0], err)
	}
	b.cmd = cmd
	p := &peer{w: stdin, gone: make(chan struct{})}
	b.connect(p)
	go b.readStdout(stdout)
	go b.logStderr(stderr)
	go func() {
		b.err = cmd.Wait()
		b.disconnect(p)
		close(b.exited)
		b.log.Error("MCP server process exited", "err", b.err)
	}()
	go func() { _ = b.srv.Serve(b.ln) }()
	return b, nil
}

// URL is the loopback MCP endpoint of the child server.
func (b *Bridge) URL() string { return "http://" + b.ln.Addr().String() + "/mcp" }

// Exited is closed when the child process has exited (Start); a socket's server (Listen) may always
// connect again, so it is never closed.
func (b *Bridge) Exited() <-chan struct{} { return b.exited }

// Close stops serving and closes the connection to the server; for a child process it closes its
// stdin and waits up to grace for it to exit before killing it. It runs when the caller's context is
// done (a shutdown), so grace bounds it, not that context.
//
//nolint:contextcheck // a shutdown step: its context is detached from the one that has ended.
func (b *Bridge) Close(grace time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	_ = b.srv.Shutdown(ctx)
	if b.sock != nil {
		_ = b.sock.Close()
	}
	b.mu.Lock()
	p := b.peer
	b.mu.Unlock()
	if p != nil {
		_ = p.w.Close()
	}
	if b.cmd == nil {
		return nil
	}
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

// errNoServer is returned while no server is connected.
var errNoServer = errors.New("no MCP server is connected to the stdio bridge (it is starting, or it exited)")

// current returns the connected server.
func (b *Bridge) current() (*peer, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.peer == nil {
		return nil, errNoServer
	}
	return b.peer, nil
}

func (b *Bridge) write(p *peer, line []byte) error {
	b.writeMu.Lock()
	defer b.writeMu.Unlock()
	if _, err := p.w.Write(append(line, '\n')); err != nil {
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
	p, err := b.current()
	if err != nil {
		return nil, err
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
	if err := b.write(p, line); err != nil {
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
	case <-p.gone:
		return nil, errors.New("the MCP server went away (its process exited)")
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
		b.serveCall(w, r, &m)
	default: // a notification, or a response to a server request
		b.serveOneWay(w, r, &m, body)
	}
}

// serveCall passes a request to the server and returns its response, counting the request as in
// flight for its session meanwhile.
func (b *Bridge) serveCall(w http.ResponseWriter, r *http.Request, m *message) {
	sid := r.Header.Get("Mcp-Session-Id")
	b.mu.Lock()
	b.inflight[sid]++
	b.mu.Unlock()
	out, err := b.roundTrip(r.Context(), m)
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
}

// serveOneWay passes a notification, or a response to a request the server sent this session, on to
// the server; the server sees notifications/initialized once, however many clients send it.
func (b *Bridge) serveOneWay(w http.ResponseWriter, r *http.Request, m *message, body []byte) {
	if m.Method == "" && !b.answersAsked(r, m) {
		http.Error(w, "the response answers no request the server sent to this session", http.StatusBadRequest)
		return
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
	p, err := b.current()
	if err == nil {
		err = b.write(p, bytes.TrimSpace(body))
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	w.WriteHeader(http.StatusAccepted)
}

// answersAsked reports whether the response m answers a request the server sent to the request's
// session (only that session may answer it), and if so forgets the request.
func (b *Bridge) answersAsked(r *http.Request, m *message) bool {
	id, err := strictjson.Canonical(m.ID)
	sid := r.Header.Get("Mcp-Session-Id")
	b.mu.Lock()
	defer b.mu.Unlock()
	ok := err == nil && hasID(m.ID) && b.asked[string(id)] == sid
	if ok {
		delete(b.asked, string(id))
	}
	return ok
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
	p, err := b.current()
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
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
		case <-p.gone:
			return
		}
	}
}
