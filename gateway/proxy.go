package gateway

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/jsonschema-go/jsonschema"
	"golang.org/x/time/rate"
)

// Gateway is the HTTP handler in front of one MCP server.
type Gateway struct {
	cfg      *Config
	auth     *verifier
	audit    *Auditor
	upstream *http.Client
	log      *slog.Logger

	mu       sync.Mutex
	limiters map[string]*rate.Limiter
	tools    map[string]*toolInfo // by name, from the last tools/list seen
}

type toolInfo struct {
	hash     string
	schema   *jsonschema.Resolved
	rejected bool // its pin changed: hidden until a person approves the new hash
}

// New returns a gateway; audit records go to auditOut.
func New(cfg *Config, auditOut io.Writer, log *slog.Logger) (*Gateway, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	g := &Gateway{cfg: cfg, audit: NewAuditor(auditOut), log: log, limiters: map[string]*rate.Limiter{}, tools: map[string]*toolInfo{},
		upstream: &http.Client{Timeout: cfg.Limits.CallTimeout.Duration}}
	if !cfg.Auth.Disabled {
		g.auth = newVerifier(cfg.Auth, cfg.Resource)
	}
	return g, nil
}

const metadataPath = "/.well-known/oauth-protected-resource"

type rpcMessage struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id,omitempty"`
	Method  string          `json:"method,omitempty"`
	Params  json.RawMessage `json:"params,omitempty"`
	Result  json.RawMessage `json:"result,omitempty"`
	Error   *rpcError       `json:"error,omitempty"`
}

type rpcError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

// ServeHTTP applies the controls and forwards what passes.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == metadataPath {
		g.serveMetadata(w)
		return
	}
	if o := r.Header.Get("Origin"); o != "" && !slices.Contains(g.cfg.AllowedOrigins, o) {
		http.Error(w, "origin not allowed", http.StatusForbidden)
		return
	}
	principal := &Principal{Subject: "anonymous"}
	if g.auth != nil {
		p, err := g.auth.verify(r.Context(), r.Header.Get("Authorization"))
		if err != nil {
			g.deny(w, err)
			return
		}
		principal = p
	}
	if !g.limiter(principal.Subject).Allow() {
		w.Header().Set("Retry-After", "1")
		http.Error(w, "rate limit exceeded", http.StatusTooManyRequests)
		return
	}
	if r.Method != http.MethodPost {
		g.forward(w, r, nil, nil, principal)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, g.cfg.Limits.MaxBodyBytes))
	if err != nil {
		http.Error(w, fmt.Sprintf("request body over %d bytes", g.cfg.Limits.MaxBodyBytes), http.StatusRequestEntityTooLarge)
		return
	}
	if t := bytes.TrimSpace(body); len(t) > 0 && t[0] == '[' {
		writeRPCError(w, nil, -32600, "JSON-RPC batches are not supported by this protocol revision")
		return
	}
	var msg rpcMessage
	if err := json.Unmarshal(body, &msg); err != nil {
		writeRPCError(w, nil, -32700, "parse error")
		return
	}
	if msg.Method == "tools/call" {
		if !g.authorizeCall(w, r, &msg, principal) {
			return
		}
	}
	g.forward(w, r, body, &msg, principal)
}

func (g *Gateway) serveMetadata(w http.ResponseWriter) {
	scopes := make([]string, 0, len(g.cfg.Scopes))
	for s := range g.cfg.Scopes {
		scopes = append(scopes, s)
	}
	slices.Sort(scopes)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"resource":                 g.cfg.Resource,
		"authorization_servers":    []string{g.cfg.Auth.Issuer},
		"scopes_supported":         scopes,
		"bearer_methods_supported": []string{"header"},
	})
}

func (g *Gateway) deny(w http.ResponseWriter, err error) {
	var ae *authError
	if !errors.As(err, &ae) {
		ae = &authError{status: http.StatusUnauthorized, code: "invalid_token", msg: err.Error()}
	}
	challenge := fmt.Sprintf(`Bearer resource_metadata=%q, error=%q, error_description=%q`, strings.TrimSuffix(g.cfg.Resource, "/")+metadataPath, ae.code, ae.msg)
	if ae.scope != "" {
		challenge += fmt.Sprintf(`, scope=%q`, ae.scope)
	}
	w.Header().Set("WWW-Authenticate", challenge)
	http.Error(w, ae.msg, ae.status)
}

func (g *Gateway) limiter(principal string) *rate.Limiter {
	g.mu.Lock()
	defer g.mu.Unlock()
	l, ok := g.limiters[principal]
	if !ok {
		l = rate.NewLimiter(rate.Limit(g.cfg.Limits.RatePerSecond), g.cfg.Limits.Burst)
		g.limiters[principal] = l
	}
	return l
}

// allowedTools returns the tools the principal's scopes grant (all when auth is off).
func (g *Gateway) allowedTools(p *Principal) map[string]string {
	out := map[string]string{}
	for scope, tools := range g.cfg.Scopes {
		if g.auth != nil && !slices.Contains(p.Scopes, scope) {
			continue
		}
		for _, t := range tools {
			out[t] = scope
		}
	}
	return out
}

// authorizeCall checks a tools/call: scope, pin, destructive, input schema. It writes the refusal and
// audits the decision.
func (g *Gateway) authorizeCall(w http.ResponseWriter, r *http.Request, msg *rpcMessage, p *Principal) bool {
	var params struct {
		Name      string         `json:"name"`
		Arguments map[string]any `json:"arguments"`
	}
	_ = json.Unmarshal(msg.Params, &params)
	rec := Record{Time: time.Now().UTC(), Principal: p.Subject, TokenID: p.TokenID, Tool: params.Name, Args: params.Arguments, Session: r.Header.Get("Mcp-Session-Id")}
	refuse := func(reason string, status int) bool {
		rec.Decision, rec.Reason, rec.Result = "deny", reason, "refused"
		g.audit.Log(rec)
		if status == http.StatusForbidden {
			g.deny(w, &authError{status: status, code: "insufficient_scope", msg: reason, scope: g.scopeFor(params.Name)})
		} else {
			writeRPCError(w, msg.ID, -32602, reason)
		}
		return false
	}
	scope, ok := g.allowedTools(p)[params.Name]
	if !ok {
		return refuse(fmt.Sprintf("tool %q is not granted by the token's scopes", params.Name), http.StatusForbidden)
	}
	rec.Scope = scope
	info, err := g.tool(r.Context(), r, params.Name)
	if err != nil {
		return refuse(err.Error(), 0)
	}
	if info.rejected {
		return refuse(fmt.Sprintf("tool %q changed since it was pinned; a person must approve the new definition", params.Name), 0)
	}
	if slices.Contains(g.cfg.Destructive, params.Name) {
		return refuse(fmt.Sprintf("tool %q is destructive and needs human approval, which this client cannot give", params.Name), 0)
	}
	if info.schema != nil {
		args := any(params.Arguments)
		if params.Arguments == nil {
			args = map[string]any{}
		}
		if err := info.schema.Validate(args); err != nil {
			return refuse(fmt.Sprintf("arguments of %q do not match its input schema: %v", params.Name, err), 0)
		}
	}
	rec.Decision = "allow"
	g.audit.Log(rec)
	return true
}

func (g *Gateway) scopeFor(tool string) string {
	for scope, tools := range g.cfg.Scopes {
		if slices.Contains(tools, tool) {
			return scope
		}
	}
	return ""
}

// tool returns the pinned definition of a tool, listing the upstream's tools if it has not been seen.
func (g *Gateway) tool(ctx context.Context, r *http.Request, name string) (*toolInfo, error) {
	g.mu.Lock()
	info, ok := g.tools[name]
	g.mu.Unlock()
	if ok {
		return info, nil
	}
	body := []byte(`{"jsonrpc":"2.0","id":"mcp-warden-gateway","method":"tools/list"}`)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, g.cfg.Upstream, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	copyMCPHeaders(req.Header, r.Header)
	resp, err := g.upstream.Do(req)
	if err != nil {
		return nil, errors.New("upstream unavailable")
	}
	defer resp.Body.Close()
	var sink bytes.Buffer
	if err := g.rewrite(&sink, resp, &rpcMessage{Method: "tools/list"}, &Principal{}); err != nil {
		return nil, err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if info, ok := g.tools[name]; ok {
		return info, nil
	}
	return nil, fmt.Errorf("unknown tool %q", name)
}

func copyMCPHeaders(dst, src http.Header) {
	for _, h := range []string{"Accept", "Content-Type", "Mcp-Session-Id", "Mcp-Protocol-Version", "Last-Event-Id"} {
		if v := src.Get(h); v != "" {
			dst.Set(h, v)
		}
	}
	if dst.Get("Accept") == "" {
		dst.Set("Accept", "application/json, text/event-stream")
	}
	if dst.Get("Content-Type") == "" {
		dst.Set("Content-Type", "application/json")
	}
}

// forward sends the request upstream with a fresh request (the client's token is never forwarded) and
// rewrites the response.
func (g *Gateway) forward(w http.ResponseWriter, r *http.Request, body []byte, msg *rpcMessage, p *Principal) {
	ctx, cancel := context.WithTimeout(r.Context(), g.cfg.Limits.CallTimeout.Duration)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, r.Method, g.cfg.Upstream, bytes.NewReader(body))
	if err != nil {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	copyMCPHeaders(req.Header, r.Header)
	start := time.Now()
	resp, err := g.upstream.Do(req)
	if err != nil {
		http.Error(w, "upstream unavailable", http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	for _, h := range []string{"Content-Type", "Mcp-Session-Id", "Mcp-Protocol-Version"} {
		if v := resp.Header.Get(h); v != "" {
			w.Header().Set(h, v)
		}
	}
	w.WriteHeader(resp.StatusCode)
	if msg == nil {
		msg = &rpcMessage{}
	}
	if err := g.rewrite(w, resp, msg, p); err != nil {
		g.log.Warn("rewrite response", "err", err)
	}
	if msg.Method == "tools/call" {
		g.log.Debug("tool call", "latency", time.Since(start))
	}
}

// rewrite copies the upstream response to w, filtering each JSON-RPC message, whether the body is one
// JSON message or a server-sent event stream.
func (g *Gateway) rewrite(w io.Writer, resp *http.Response, req *rpcMessage, p *Principal) error {
	flusher, _ := w.(http.Flusher)
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
		if err != nil {
			return err
		}
		if len(bytes.TrimSpace(body)) == 0 {
			return nil
		}
		_, err = w.Write(g.filter(body, req, p))
		return err
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if data, ok := bytes.CutPrefix(line, []byte("data:")); ok {
			line = append([]byte("data: "), g.filter(bytes.TrimSpace(data), req, p)...)
		}
		if _, err := w.Write(append(line, '\n')); err != nil {
			return err
		}
		if flusher != nil && len(line) == 0 {
			flusher.Flush()
		}
	}
	if flusher != nil {
		flusher.Flush()
	}
	return sc.Err()
}

// filter rewrites one server-to-client JSON-RPC message.
func (g *Gateway) filter(data []byte, req *rpcMessage, p *Principal) []byte {
	var msg rpcMessage
	if json.Unmarshal(data, &msg) != nil {
		return data
	}
	if msg.Error != nil {
		msg.Error.Message = sanitizeError(msg.Error.Message)
		out, _ := json.Marshal(msg)
		return out
	}
	if msg.Result == nil {
		return data
	}
	var result map[string]any
	if json.Unmarshal(msg.Result, &result) != nil {
		return data
	}
	switch req.Method {
	case "tools/list":
		result["tools"] = g.filterTools(result["tools"], p)
	default:
		result = sanitizeValue(result).(map[string]any)
	}
	msg.Result, _ = json.Marshal(result)
	out, _ := json.Marshal(msg)
	return out
}

// filterTools pins every tool, hides tools whose pin changed and tools the principal may not use, and
// strips hidden content from descriptions.
func (g *Gateway) filterTools(v any, p *Principal) []any {
	tools, _ := v.([]any)
	allowed := g.allowedTools(p)
	out := make([]any, 0, len(tools))
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, t := range tools {
		tool, ok := t.(map[string]any)
		if !ok {
			continue
		}
		name, _ := tool["name"].(string)
		pinBody, _ := json.Marshal([]any{tool["name"], tool["description"], tool["inputSchema"], tool["outputSchema"]})
		sum := sha256.Sum256(pinBody)
		hash := hex.EncodeToString(sum[:])
		info := g.tools[name]
		if info == nil {
			info = &toolInfo{hash: hash}
			if approved, ok := g.cfg.Pins[name]; ok && approved != hash {
				info.rejected = true
			}
			if schemaJSON, err := json.Marshal(tool["inputSchema"]); err == nil {
				var s jsonschema.Schema
				if json.Unmarshal(schemaJSON, &s) == nil {
					if s.AdditionalProperties == nil && s.Type == "object" {
						s.AdditionalProperties = &jsonschema.Schema{Not: &jsonschema.Schema{}} // unknown properties refused
					}
					info.schema, _ = s.Resolve(nil)
				}
			}
			g.tools[name] = info
		} else if info.hash != hash && !info.rejected {
			info.rejected = true
			g.log.Warn("tool definition changed since it was pinned; hiding it until approved", "tool", name, "pinned", info.hash, "now", hash)
		}
		if info.rejected {
			continue
		}
		if _, ok := allowed[name]; !ok && p.Subject != "" {
			continue
		}
		if d, ok := tool["description"].(string); ok {
			tool["description"], _ = Sanitize(d)
		}
		out = append(out, tool)
	}
	return out
}

func writeRPCError(w http.ResponseWriter, id json.RawMessage, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	if id == nil {
		id = json.RawMessage("null")
	}
	_ = json.NewEncoder(w).Encode(rpcMessage{JSONRPC: "2.0", ID: id, Error: &rpcError{Code: code, Message: msg}})
}
