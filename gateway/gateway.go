package gateway

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/oauthex"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/time/rate"

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
	// LookupPeers resolves sessions.peersDNS to the live replicas' addresses. Default: the system
	// resolver.
	LookupPeers func(ctx context.Context, host string) ([]netip.Addr, error)
}

// Gateway is the MCP security gateway: an http.Handler in front of one MCP server. A client's request
// passes its stages in order: intake (serve: HTTP, strict parse, session, the request's exchange),
// admission (decides), upstream (forwards), relay (frames the response) and filter (the controls on
// every message from the server); the exchange writes the request's audit records through the auditor.
type Gateway struct {
	cfg      Config
	log      *slog.Logger
	policy   *policy.Policy
	pins     *pin.Store
	tools    *catalog
	sessions *sessionTable
	approval *approvals
	origins  map[string]bool
	metrics  *metrics
	tracer   *tracer
	// handler is ServeHTTP's instrumented serve.
	handler http.Handler

	// the stages after intake
	admission *admission
	upstream  *forwarder
	relay     *relay
	filter    *filter
	auditor   *auditor

	metadataURL     string
	metadataPath    string
	metadataHandler http.Handler

	// ids issues session ids and keeps what their handles stand for; peerProxy relays sessions other
	// replicas hold; certs is the gateway's certificate (nil without tls), presented to its peers.
	ids       *sessionIDs
	peers     *peerSet
	peerProxy http.Handler
	certs     *CertReloader

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
		sessions: newSessionTable(maxSessions, sessionsPerPrincipal(&c)),
		approval: newApprovals(),
		origins:  map[string]bool{},
		stateKey: make([]byte, 32),
		upstream: newForwarder(c.Upstream),
	}
	var err error
	if g.ids, err = newSessionIDs(c.Sessions, sessionsPerPrincipal(&c)); err != nil {
		return nil, fmt.Errorf("gateway %w", err)
	}
	g.peers = newPeerSet(c.Sessions, g.ids, opts.LookupPeers, opts.Logger)
	if c.TLS.Enabled() {
		if g.certs, err = NewCertReloader(c.TLS.CertFile, c.TLS.KeyFile, opts.Logger.With("component", "tls")); err != nil {
			return nil, err
		}
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
	g.tools = newCatalog(g.pins, g.log, c.Upstream, g.upstream.client, c.Limits.CallTimeout.Duration)
	g.auditor = &auditor{log: g.log, audit: auditLog, metrics: g.metrics,
		known: func(name string) bool { return g.tools.get(name) != nil || g.policy.ScopesFor(name) != "" }}
	g.filter = &filter{log: g.log, metrics: g.metrics, tools: g.tools, policy: g.policy, seal: g.seal, approvalTimeout: c.Limits.ApprovalTimeout.Duration}
	g.relay = &relay{log: g.log, metrics: g.metrics, filter: g.filter, sessions: g.sessions, maxResponse: c.Limits.MaxResponseBytes,
		callTimeout: c.Limits.CallTimeout.Duration, sessionID: g.clientSessionID, forgetSessionID: g.forgetSessionID}
	g.admission = &admission{log: g.log, metrics: g.metrics, policy: g.policy, tools: g.tools,
		limiter: newLimiter(rate.Limit(c.Limits.RequestsPerSecond), c.Limits.Burst), resource: c.Resource,
		requiredScopes: c.Auth.RequiredScopes, blockSecrets: c.BlockSecretsInArguments}

	if g.metadataPath, err = auth.MetadataPath(c.Resource); err != nil {
		return nil, fmt.Errorf("gateway resource: %w", err)
	}
	g.metadataURL, _ = auth.MetadataURL(c.Resource)
	g.admission.metadataURL = g.metadataURL
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
		g.admission.verifier, err = auth.NewVerifier(auth.Options{
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
		g.refreshLoop(ctx)
	}()
}

// refreshLoop is the gateway's one refresh of the server's tools: at start (retrying with backoff),
// every five minutes, and at once when a listing is asked for (notifications/tools/list_changed on
// the gateway's own session or relayed to a client, a readiness probe). It runs on the gateway's
// lifetime (Start's context, cancelled by Close, which waits for it): a listing in flight at Close
// is cancelled, never left running.
func (g *Gateway) refreshLoop(ctx context.Context) {
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
}

// Close stops background work and ends the gateway's session with the server. It runs when the
// caller's context is done (a shutdown), so the last spans are flushed under a deadline of its own.
//
//nolint:contextcheck // a shutdown step: its context is detached from the one that has ended.
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

// writeHTTPError writes a JSON-RPC error (id null) with an HTTP status.
func writeHTTPError(w http.ResponseWriter, status, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(errorResponse(nil, code, msg))
}
