package gateway

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/oauthex"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/time/rate"

	"github.com/mcp-warden/mcp-warden/gateway/audit"
	"github.com/mcp-warden/mcp-warden/gateway/auth"
	"github.com/mcp-warden/mcp-warden/gateway/pin"
	"github.com/mcp-warden/mcp-warden/gateway/policy"
)

// Options are the gateway's runtime dependencies; all are optional.
type Options struct {
	// AuditWriter receives one JSON line per tool call. Default os.Stdout.
	AuditWriter io.Writer
	// Logger receives operational logs. Default slog.Default().
	Logger *slog.Logger
	// OnPinChange is called when a tool is first pinned, changes, or matches its pin again.
	OnPinChange func(pin.Event)
	// AuthHTTPClient fetches the issuer's metadata and keys. Default: a client without proxy.
	AuthHTTPClient *http.Client
}

// Gateway is the MCP security gateway: an http.Handler in front of one MCP server.
type Gateway struct {
	cfg      Config
	log      *slog.Logger
	upstream *http.Client
	verifier *auth.Verifier
	policy   *policy.Policy
	pins     *pin.Store
	tools    *catalog
	audit    *audit.Logger
	limiter  *limiter
	sessions *sessionTable
	approval *approvals
	origins  map[string]bool
	metrics  *metrics
	tracer   *tracer
	// handler is ServeHTTP's instrumented serve.
	handler http.Handler

	metadataURL     string
	metadataPath    string
	metadataHandler http.Handler

	// sealer seals session ids and relay tokens; peerProxy relays sessions other replicas hold.
	sealer    *sealer
	peerProxy http.Handler

	// stateKey seals approval state handed to clients (multi round-trip approvals).
	stateKey []byte

	stop context.CancelFunc
	wg   sync.WaitGroup
}

// New checks the configuration (filling defaults) and builds a gateway. Call Start to list the server's
// tools in the background and Close to release the gateway's session with the server.
func New(cfg *Config, opts Options) (*Gateway, error) {
	if cfg == nil {
		return nil, errors.New("gateway: nil config")
	}
	c := *cfg
	c.WithDefaults()
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("gateway config: %w", err)
	}
	if opts.AuditWriter == nil {
		opts.AuditWriter = os.Stdout
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	auditLog, aerr := openAudit(c.Audit, opts.AuditWriter)
	if aerr != nil {
		return nil, aerr
	}
	g := &Gateway{
		metrics:  newMetrics(),
		cfg:      c,
		log:      opts.Logger,
		policy:   policy.New(c.Scopes, c.Destructive, c.ToolLabels),
		audit:    auditLog,
		limiter:  newLimiter(rate.Limit(c.Limits.RequestsPerSecond), c.Limits.Burst),
		sessions: newSessionTable(10000),
		approval: newApprovals(),
		origins:  map[string]bool{},
		stateKey: make([]byte, 32),
		upstream: &http.Client{Transport: &http.Transport{
			Proxy:               nil,
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:        256,
			MaxIdleConnsPerHost: 256,
			IdleConnTimeout:     90 * time.Second,
			DisableCompression:  true,
		},
			// a redirect would send a checked call (307 and 308 keep the body) past the loopback upstream
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
	var err error
	if g.sealer, err = newSealer(c.Sessions, c.Resource); err != nil {
		return nil, fmt.Errorf("gateway %w", err)
	}
	g.peerProxy = g.newPeerProxy()
	if g.tracer, err = newTracer(c.Telemetry, c.Resource); err != nil {
		return nil, err
	}
	if c.Telemetry.OTLPEndpoint != "" {
		// The exporter's errors (a collector down, a queue full) go to the gateway's log, not to the
		// standard logger. The handler is process-wide; the gateway binary runs one gateway.
		otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) { opts.Logger.Warn("trace export failed; spans dropped", "err", err) }))
	}
	if _, err := rand.Read(g.stateKey); err != nil {
		return nil, fmt.Errorf("gateway: random state key: %w", err)
	}
	// The gateway's own origin (its resource URL's) is always allowed: a page it serves is same-origin.
	if u, err := url.Parse(c.Resource); err == nil && u.Scheme != "" && u.Host != "" {
		g.origins[u.Scheme+"://"+u.Host] = true
	}
	for _, o := range c.AllowedOrigins {
		g.origins[strings.TrimSuffix(o, "/")] = true
	}
	onChange := func(ev pin.Event) {
		g.reportPin(ev)
		if opts.OnPinChange != nil {
			opts.OnPinChange(ev)
		}
	}
	if g.pins, err = pin.NewStore(c.Pins, c.PinStatePath, onChange); err != nil {
		return nil, fmt.Errorf("gateway pinStatePath: %w", err)
	}
	if c.KnownPinsPath != "" {
		known, err := pin.ReadKnown(c.KnownPinsPath)
		if err != nil {
			return nil, err
		}
		g.pins.Seed(known)
	}
	g.tools = newCatalog(g.pins, g.log, c.Upstream, g.upstream, c.Limits.CallTimeout.Duration)

	if g.metadataPath, err = auth.MetadataPath(c.Resource); err != nil {
		return nil, fmt.Errorf("gateway resource: %w", err)
	}
	g.metadataURL, _ = auth.MetadataURL(c.Resource)
	meta := &oauthex.ProtectedResourceMetadata{
		Resource:               c.Resource,
		BearerMethodsSupported: []string{"header"},
		ResourceName:           "MCP server " + c.Resource,
	}
	if !c.Auth.Disabled {
		meta.AuthorizationServers = []string{c.Auth.Issuer}
		scopes := append([]string(nil), c.Auth.RequiredScopes...)
		for s := range c.Scopes {
			scopes = append(scopes, s)
		}
		sort.Strings(scopes)
		meta.ScopesSupported = scopes
		g.verifier, err = auth.NewVerifier(auth.Options{
			Issuer: c.Auth.Issuer, JWKSURL: c.Auth.JWKSURL, KeysFile: c.Auth.JWKSFile, Audience: c.Resource,
			Algorithms: c.Auth.Algorithms, ClockSkew: c.Auth.ClockSkew.Duration, HTTPClient: opts.AuthHTTPClient,
		})
		if err != nil {
			return nil, fmt.Errorf("gateway auth: %w", err)
		}
	}
	if g.metadataHandler, err = auth.MetadataHandler(meta); err != nil {
		return nil, err
	}
	g.handler = g.metrics.instrument(http.HandlerFunc(g.serve))
	return g, nil
}

// reportPin logs pin changes; a changed tool is an error a person must act on.
func (g *Gateway) reportPin(ev pin.Event) {
	t := ev.Tool
	switch {
	case t.Status == pin.Changed:
		g.log.Error("tool definition changed: the tool is hidden and refused until a person approves the new hash in pins",
			"tool", t.Name, "pinnedHash", t.PinnedHash, "observedHash", t.ObservedHash)
	case ev.Previous == pin.Changed:
		g.log.Info("tool matches its pin again", "tool", t.Name, "status", t.Status, "hash", t.ObservedHash)
	default:
		g.log.Info("tool pinned", "tool", t.Name, "status", t.Status, "hash", t.ObservedHash)
	}
	if ev.StateError != nil {
		g.log.Error("writing the pin state file failed", "err", ev.StateError)
	}
}

// Start lists the server's tools in the background (retrying until the server answers), then every
// five minutes and whenever the server says its list changed, so that pins are checked before any
// client asks. It is the gateway's one refresh loop; Close waits for it.
func (g *Gateway) Start(ctx context.Context) {
	ctx, g.stop = context.WithCancel(ctx)
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		backoff := 500 * time.Millisecond
		for {
			err := g.tools.refresh(ctx, 0)
			wait := 5 * time.Minute
			if err != nil {
				g.log.Warn("listing the server's tools failed; retrying", "err", err, "in", backoff)
				// Until the server has answered once, retry often: readiness waits on it.
				ceiling := 30 * time.Second
				if !g.tools.answered.Load() {
					ceiling = 5 * time.Second
				}
				wait, backoff = backoff, min(backoff*2, ceiling)
			} else {
				backoff = 500 * time.Millisecond
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			case <-g.tools.kick: // notifications/tools/list_changed
			}
		}
	}()
}

// Close stops background work and ends the gateway's session with the server.
func (g *Gateway) Close() error {
	if g.stop != nil {
		g.stop()
	}
	g.wg.Wait()
	g.tools.close()
	// Flush the spans still queued, within a deadline: a collector that is down does not hold a
	// shutdown.
	ctx, cancel := context.WithTimeout(context.Background(), spanExportTimeout)
	defer cancel()
	if err := g.tracer.shutdown(ctx); err != nil {
		g.log.Warn("exporting the last spans failed", "err", err)
	}
	return nil
}

// Pins returns the current pin state (also written to Config.PinStatePath).
func (g *Gateway) Pins() pin.State { return g.pins.Snapshot() }

// caller is an authenticated (or, with auth disabled, anonymous) client.
type caller struct {
	name      string
	tokenID   string
	principal *auth.Principal
	rateKey   string
	trace     traceContext
	// span is the request's span (non-recording without trace export).
	span trace.Span
}

// spanMethod records a JSON-RPC method on the request's span: a name the gateway knows, else "other"
// (the method is the client's text).
func (c *caller) spanMethod(method string) {
	if c.span == nil || method == "" {
		return
	}
	if !knownMethods[method] {
		method = "other"
	}
	c.span.SetAttributes(attribute.String("mcp.method.name", method))
}

// spanCall records a tools/call's tool, decision and result class on the request's span (never its
// arguments or result). A tool that is not known is "unknown": the name is the client's text.
func (c *caller) spanCall(tool string, listed bool, decision, result string) {
	if c.span == nil {
		return
	}
	if !listed {
		tool = "unknown"
	}
	c.span.SetAttributes(attribute.String("mcp.tool.name", tool), attribute.String("mcp.decision", decision), attribute.String("mcp.result", result))
}

// knownMethods are the MCP methods a span names; any other is "other".
var knownMethods = map[string]bool{
	"initialize": true, "notifications/initialized": true, "ping": true, "tools/list": true, "tools/call": true,
	"resources/list": true, "resources/read": true, "resources/templates/list": true, "resources/subscribe": true,
	"resources/unsubscribe": true, "prompts/list": true, "prompts/get": true, "completion/complete": true,
	"logging/setLevel": true, "notifications/cancelled": true, "notifications/progress": true,
	"notifications/roots/list_changed": true, "subscriptions/listen": true,
}

// ServeHTTP serves the protected resource metadata, health checks and the proxied MCP endpoint.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	g.handler.ServeHTTP(w, r)
}

func (g *Gateway) serve(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case g.metadataPath, "/.well-known/oauth-protected-resource":
		g.metadataHandler.ServeHTTP(w, r)
		return
	case "/healthz":
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, "ok\n")
		return
	}
	if origin := r.Header.Get("Origin"); origin != "" && !g.origins[origin] {
		g.log.Warn("request refused: origin not allowed", "origin", origin)
		writeHTTPError(w, http.StatusForbidden, codeInvalidRequest, fmt.Sprintf("origin %q is not allowed", origin))
		return
	}
	r, ok := g.openSession(w, r)
	if !ok {
		return
	}
	c, ok := g.authenticate(w, r)
	if !ok {
		return
	}
	if ss := sealedFrom(r.Context()); ss != nil && ss.Principal != c.name {
		g.log.Warn("request refused: session belongs to another principal", "principal", c.name)
		writeHTTPError(w, http.StatusNotFound, codeInvalidRequest, "session not found")
		return
	}
	ctx, span, tc := g.tracer.start(r.Context(), requestTrace(r.Header), r)
	rec := &statusRecorder{ResponseWriter: w}
	w = rec
	defer func() {
		span.SetAttributes(attribute.Int("http.response.status_code", rec.status))
		if rec.status >= 500 {
			span.SetStatus(codes.Error, http.StatusText(rec.status))
		}
		span.End()
	}()
	c.trace, c.span = tc, span
	r = r.WithContext(withTrace(ctx, tc))
	if !g.limiter.allow(c.rateKey) {
		w.Header().Set("Retry-After", "1")
		writeHTTPError(w, http.StatusTooManyRequests, codePolicy, "rate limit exceeded for "+c.name+"; retry later")
		return
	}
	switch r.Method {
	case http.MethodPost:
		g.servePOST(w, r, c)
	case http.MethodGet:
		g.serveGET(w, r, c)
	case http.MethodDelete:
		g.serveDELETE(w, r, c)
	default:
		w.Header().Set("Allow", "GET, POST, DELETE")
		writeHTTPError(w, http.StatusMethodNotAllowed, codeInvalidRequest, "method not allowed")
	}
}

// authenticate verifies the bearer token; on failure it has written a 401 or 403 with a challenge.
func (g *Gateway) authenticate(w http.ResponseWriter, r *http.Request) (*caller, bool) {
	if g.verifier == nil {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		if client, ok := peerClient(r.Context()); ok {
			host = client // relayed by a replica: the client's own address
		}
		return &caller{name: "anonymous", rateKey: "addr:" + host}, true
	}
	tok, ok := auth.BearerToken(r)
	if !ok {
		g.metrics.authFailures.WithLabelValues("no token").Inc()
		w.Header().Set("WWW-Authenticate", auth.Challenge(g.metadataURL, "", "", ""))
		writeHTTPError(w, http.StatusUnauthorized, codePolicy, "authentication required: send an OAuth bearer token for "+g.cfg.Resource)
		return nil, false
	}
	p, err := g.verifier.Verify(r.Context(), tok)
	if err != nil {
		desc := "invalid token"
		var ae *auth.Error
		if errors.As(err, &ae) {
			desc = ae.Description
		}
		g.metrics.authFailures.WithLabelValues(desc).Inc()
		g.log.Warn("token refused", "reason", desc, "err", err, "remote", r.RemoteAddr)
		w.Header().Set("WWW-Authenticate", auth.Challenge(g.metadataURL, "invalid_token", desc, ""))
		writeHTTPError(w, http.StatusUnauthorized, codePolicy, "invalid token: "+desc)
		return nil, false
	}
	for _, s := range g.cfg.Auth.RequiredScopes {
		if !p.HasScope(s) {
			need := strings.Join(g.cfg.Auth.RequiredScopes, " ")
			w.Header().Set("WWW-Authenticate", auth.Challenge(g.metadataURL, "insufficient_scope", "token lacks scope "+s, need))
			writeHTTPError(w, http.StatusForbidden, codePolicy, "insufficient scope: this server requires "+need)
			return nil, false
		}
	}
	return &caller{name: p.Subject, tokenID: p.TokenID, principal: p, rateKey: "sub:" + p.Subject}, true
}

// writeHTTPError writes a JSON-RPC error (id null) with an HTTP status.
func writeHTTPError(w http.ResponseWriter, status, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(errorResponse(nil, code, msg))
}

// limiter keeps a token bucket per principal.
type limiter struct {
	mu        sync.Mutex
	limit     rate.Limit
	burst     int
	buckets   map[string]*bucket
	lastSweep time.Time
}

type bucket struct {
	lim  *rate.Limiter
	seen time.Time
}

func newLimiter(l rate.Limit, burst int) *limiter {
	return &limiter{limit: l, burst: burst, buckets: map[string]*bucket{}, lastSweep: time.Now()}
}

func (l *limiter) allow(key string) bool {
	now := time.Now()
	l.mu.Lock()
	if now.Sub(l.lastSweep) > time.Minute {
		for k, b := range l.buckets {
			if now.Sub(b.seen) > 10*time.Minute {
				delete(l.buckets, k)
			}
		}
		l.lastSweep = now
	}
	b := l.buckets[key]
	if b == nil {
		b = &bucket{lim: rate.NewLimiter(l.limit, l.burst)}
		l.buckets[key] = b
	}
	b.seen = now
	l.mu.Unlock()
	return b.lim.AllowN(now, 1)
}
