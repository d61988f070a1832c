package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/jsonschema-go/jsonschema"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcp-warden/mcp-warden/gateway/canonical"
	"github.com/mcp-warden/mcp-warden/gateway/pin"
	"github.com/mcp-warden/mcp-warden/gateway/sanitize"
)

// toolDef is one tool as the server describes it, with its compiled schemas; it is immutable. Whether
// it may be used is asked of the pin store each time (see catalog.allowed).
type toolDef struct {
	name string
	hash string
	// listed is the definition shown to clients: hidden content stripped and secrets redacted.
	listed   json.RawMessage
	findings sanitize.Findings
	schemas  *compiledSchemas
}

// compiledSchemas are a tool's resolved schemas; they are cached by the tool's pin hash.
type compiledSchemas struct {
	input  *jsonschema.Resolved
	output *jsonschema.Resolved
	err    error
}

// validToolName is the tool name syntax of the MCP specification; other names (for example with hidden
// characters) are never shown.
var validToolName = regexp.MustCompile(`^[A-Za-z0-9_.\-/]{1,128}$`)

// catalog keeps the server's tools: it lists them over the gateway's own MCP session with the server
// (following pagination, refreshed on notifications/tools/list_changed and periodically) and from every
// tools/list response it relays.
type catalog struct {
	pins *pin.Store
	log  *slog.Logger

	mu      sync.RWMutex
	byName  map[string]*toolDef
	byRaw   map[string]*toolDef         // raw definition -> decision, so repeated listings are not rehashed
	schemas map[string]*compiledSchemas // by pin hash

	// the gateway's own session with the server
	endpoint    string
	httpClient  *http.Client
	timeout     time.Duration
	sessMu      sync.Mutex
	session     *mcp.ClientSession
	lastRefresh time.Time
	refreshing  chan struct{}
	// kick asks the gateway's one refresh loop (Gateway.Start) for a listing now.
	kick chan struct{}
	// upstream records each listing's outcome (the MCP handshake), answered whether one ever succeeded.
	upstream *upstreamState
	answered atomic.Bool
}

// requestRefresh asks for a listing soon (after notifications/tools/list_changed), without blocking and
// without a goroutine of its own: the refresh loop runs it under the gateway's lifetime.
func (c *catalog) requestRefresh() {
	select {
	case c.kick <- struct{}{}:
	default: // one is pending already
	}
}

func newCatalog(pins *pin.Store, log *slog.Logger, endpoint string, hc *http.Client, timeout time.Duration) *catalog {
	return &catalog{pins: pins, log: log, byName: map[string]*toolDef{}, byRaw: map[string]*toolDef{}, schemas: map[string]*compiledSchemas{},
		endpoint: endpoint, httpClient: hc, timeout: timeout, kick: make(chan struct{}, 1), upstream: newUpstreamState()}
}

// rawTool is the part of a tool definition that is pinned.
type rawTool struct {
	Name         string          `json:"name"`
	Title        string          `json:"title"`
	Description  string          `json:"description"`
	InputSchema  json.RawMessage `json:"inputSchema"`
	OutputSchema json.RawMessage `json:"outputSchema"`
	Annotations  json.RawMessage `json:"annotations"`
}

// observe records a tool definition as the server sent it and returns the gateway's decision about it.
func (c *catalog) observe(raw json.RawMessage) (*toolDef, error) {
	key := string(raw)
	c.mu.RLock()
	def := c.byRaw[key]
	c.mu.RUnlock()
	if def != nil {
		c.mu.Lock()
		c.byName[def.name] = def
		c.mu.Unlock()
		return def, nil
	}
	var rt rawTool
	if err := decode(raw, &rt); err != nil {
		return nil, fmt.Errorf("decode tool definition: %w", err)
	}
	if !validToolName.MatchString(rt.Name) {
		return nil, fmt.Errorf("tool name %q is not a valid MCP tool name", rt.Name)
	}
	hash, err := pin.Hash(pin.Definition{Name: rt.Name, Title: rt.Title, Description: rt.Description,
		InputSchema: rt.InputSchema, OutputSchema: rt.OutputSchema, Annotations: rt.Annotations})
	if err != nil {
		return nil, err
	}
	def = &toolDef{name: rt.Name, hash: hash}
	c.pins.Observe(rt.Name, hash) // pins on first sight, reports a change
	def.listed, def.findings, err = sanitizeToolDef(raw)
	if err != nil {
		return nil, err
	}
	def.schemas = c.compile(hash, rt)
	c.mu.Lock()
	if len(c.byRaw) > 4096 {
		clear(c.byRaw)
	}
	c.byRaw[key] = def
	c.byName[rt.Name] = def
	c.mu.Unlock()
	if def.findings.Any() {
		c.log.Warn("hidden content or secrets removed from a tool definition", "tool", rt.Name,
			"hidden", def.findings.Hidden, "htmlComments", def.findings.Comments, "secrets", def.findings.Secrets)
	}
	return def, nil
}

// listedMembers are the members of a tool definition shown to clients: those the pin covers, and the
// MCP specification's _meta, icons and execution, which are not shown to the model. Any other member
// could change without the tool counting as changed, so it is not passed on.
var listedMembers = map[string]bool{"name": true, "title": true, "description": true, "inputSchema": true,
	"outputSchema": true, "annotations": true, "_meta": true, "icons": true, "execution": true}

// sanitizeToolDef strips hidden content and secrets from every string of a definition except its name,
// and keeps only listedMembers.
func sanitizeToolDef(raw json.RawMessage) (json.RawMessage, sanitize.Findings, error) {
	v, err := canonical.Decode(raw)
	if err != nil {
		return nil, sanitize.Findings{}, err
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, sanitize.Findings{}, errors.New("tool definition is not a JSON object")
	}
	dropped := false
	for k := range m {
		if !listedMembers[k] {
			delete(m, k)
			dropped = true
		}
	}
	name := m["name"]
	_, f := sanitize.Value(m)
	m["name"] = name
	if !f.Any() && !dropped {
		return raw, f, nil
	}
	out, err := json.Marshal(m)
	if err != nil {
		return nil, f, fmt.Errorf("encode tool definition: %w", err)
	}
	return out, f, nil
}

// compile resolves a tool's schemas once per pin hash. Object schemas that do not say whether other
// properties are allowed are closed, so unknown arguments are refused.
func (c *catalog) compile(hash string, rt rawTool) *compiledSchemas {
	c.mu.RLock()
	cs := c.schemas[hash]
	c.mu.RUnlock()
	if cs != nil {
		return cs
	}
	cs = &compiledSchemas{}
	if len(rt.InputSchema) == 0 || string(rt.InputSchema) == "null" {
		cs.err = errors.New("tool has no input schema")
	} else if cs.input, cs.err = resolveSchema(rt.InputSchema, true); cs.err != nil {
		cs.err = fmt.Errorf("input schema: %w", cs.err)
	}
	if cs.err == nil && len(rt.OutputSchema) > 0 && string(rt.OutputSchema) != "null" {
		if cs.output, cs.err = resolveSchema(rt.OutputSchema, false); cs.err != nil {
			cs.err = fmt.Errorf("output schema: %w", cs.err)
		}
	}
	c.mu.Lock()
	c.schemas[hash] = cs
	c.mu.Unlock()
	return cs
}

func resolveSchema(raw json.RawMessage, closeObjects bool) (*jsonschema.Resolved, error) {
	var s jsonschema.Schema
	if err := decode(raw, &s); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	if closeObjects {
		closeSchema(&s, 0)
	}
	r, err := s.Resolve(nil)
	if err != nil {
		return nil, fmt.Errorf("resolve: %w", err)
	}
	return r, nil
}

// closeSchema sets additionalProperties to false on object schemas that leave it open by omission.
func closeSchema(s *jsonschema.Schema, depth int) {
	if s == nil || depth > 32 {
		return
	}
	isObject := s.Type == "object" || len(s.Properties) > 0
	for _, t := range s.Types {
		isObject = isObject || t == "object"
	}
	if isObject && s.AdditionalProperties == nil && s.PatternProperties == nil && s.UnevaluatedProperties == nil &&
		len(s.AllOf) == 0 && len(s.AnyOf) == 0 && len(s.OneOf) == 0 && s.Ref == "" {
		s.AdditionalProperties = &jsonschema.Schema{Not: &jsonschema.Schema{}}
	}
	for _, p := range s.Properties {
		closeSchema(p, depth+1)
	}
	closeSchema(s.Items, depth+1)
	for _, d := range s.Defs {
		closeSchema(d, depth+1)
	}
	for _, d := range s.Definitions {
		closeSchema(d, depth+1)
	}
}

// allowed reports whether a definition matches its pin (the pin may have been approved or learned since).
func (c *catalog) allowed(def *toolDef) (bool, pin.Status) { return c.pins.Observe(def.name, def.hash) }

// get returns a known tool.
func (c *catalog) get(name string) *toolDef {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.byName[name]
}

// lookup returns a tool, listing the server's tools first when the tool has not been seen.
func (c *catalog) lookup(ctx context.Context, name string) *toolDef {
	if def := c.get(name); def != nil {
		return def
	}
	if err := c.refresh(ctx, time.Second); err != nil {
		c.log.Warn("listing the server's tools failed", "err", err)
	}
	return c.get(name)
}

// refresh lists all tools over the gateway's own session, unless a listing finished less than minAge ago.
// Concurrent callers share one listing.
func (c *catalog) refresh(ctx context.Context, minAge time.Duration) error {
	c.sessMu.Lock()
	if time.Since(c.lastRefresh) < minAge {
		c.sessMu.Unlock()
		return nil
	}
	if ch := c.refreshing; ch != nil {
		c.sessMu.Unlock()
		select {
		case <-ch:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	done := make(chan struct{})
	c.refreshing = done
	c.sessMu.Unlock()
	err := c.list(ctx)
	if err != nil && ctx.Err() == nil {
		c.upstream.failed(err)
	}
	c.sessMu.Lock()
	c.refreshing = nil
	if err == nil {
		c.lastRefresh = time.Now()
	}
	c.sessMu.Unlock()
	close(done)
	return err
}

func (c *catalog) list(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	cs, err := c.connect(ctx)
	if err != nil {
		return err
	}
	seen := 0
	params := &mcp.ListToolsParams{}
	for page := 0; page < 1000; page++ {
		res, err := cs.ListTools(ctx, params)
		if err != nil {
			c.dropSession(cs)
			return fmt.Errorf("tools/list: %w", err)
		}
		for _, t := range res.Tools {
			raw, err := json.Marshal(t)
			if err != nil {
				return fmt.Errorf("encode tool %q: %w", t.Name, err)
			}
			if _, err := c.observe(raw); err != nil {
				c.log.Warn("tool definition refused", "err", err)
			}
			seen++
		}
		if res.NextCursor == "" {
			c.log.Debug("listed the server's tools", "tools", seen, "pages", page+1)
			c.upstream.succeeded(cs.InitializeResult(), seen)
			c.answered.Store(true)
			return nil
		}
		params = &mcp.ListToolsParams{Cursor: res.NextCursor}
	}
	return errors.New("tools/list: more than 1000 pages")
}

func (c *catalog) connect(ctx context.Context) (*mcp.ClientSession, error) {
	c.sessMu.Lock()
	cs := c.session
	c.sessMu.Unlock()
	if cs != nil {
		return cs, nil
	}
	client := mcp.NewClient(&mcp.Implementation{Name: "mcp-warden-gateway", Version: "v1"}, &mcp.ClientOptions{
		ToolListChangedHandler: func(context.Context, *mcp.ToolListChangedRequest) { c.requestRefresh() },
	})
	cs, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: c.endpoint, HTTPClient: c.httpClient, MaxRetries: 2}, nil)
	if err != nil {
		return nil, fmt.Errorf("connect to the server at %s: %w", c.endpoint, err)
	}
	c.sessMu.Lock()
	if c.session != nil { // another goroutine connected meanwhile
		c.sessMu.Unlock()
		_ = cs.Close()
		return c.session, nil
	}
	c.session = cs
	c.sessMu.Unlock()
	return cs, nil
}

func (c *catalog) dropSession(cs *mcp.ClientSession) {
	c.sessMu.Lock()
	if c.session == cs {
		c.session = nil
	}
	c.sessMu.Unlock()
	_ = cs.Close()
}

// close ends the gateway's own session.
func (c *catalog) close() {
	c.sessMu.Lock()
	cs := c.session
	c.session = nil
	c.sessMu.Unlock()
	if cs != nil {
		_ = cs.Close()
	}
}
