// Package config is the contract between the operator and the MCP gateway: the configuration the
// operator renders from the MCPServer resource into a JSON file the gateway reads with Load, its
// defaults and its validation, and the status the gateway reports back on its status port. It imports
// no part of the gateway's runtime, so the operator links the contract and not the proxy.
package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mcp-warden/mcp-warden/gateway/policy"
)

// Asymmetric lists the signature algorithms the gateway accepts in its configuration; HMAC and "none"
// are never accepted.
var Asymmetric = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}

// Config is the gateway configuration. Zero values of optional fields take the defaults documented on
// each field (see WithDefaults).
type Config struct {
	// Listen is the TCP address the gateway serves MCP clients on. Default ":8443".
	Listen string `json:"listen,omitempty"`
	// StatusListen is the TCP address of the status endpoint the operator polls (GET /pins: the pin
	// state as JSON). Empty: no status endpoint.
	StatusListen string `json:"statusListen,omitempty"`
	// Upstream is the MCP endpoint of the server behind the gateway, which must listen on loopback,
	// e.g. "http://127.0.0.1:8080/mcp". Empty with stdio: the binary sets it (--stdio, --stdio-socket).
	Upstream string `json:"upstream"`
	// Stdio says the server speaks stdio: the gateway's child process (`gateway --stdio -- COMMAND`) or
	// a process in another container on a unix socket (`gateway --stdio-socket PATH`, and `gateway
	// stdio-exec PATH -- COMMAND` on the server's side), so the configuration has no upstream.
	Stdio bool `json:"stdio,omitempty"`
	// Resource is this server's canonical resource URI as clients address it, e.g.
	// "https://files.mcp.example.com/mcp". Tokens must name it in their aud claim; it also locates the
	// RFC 9728 metadata document.
	Resource string `json:"resource"`
	// Auth configures bearer-token authentication. It is on unless auth.disabled is true.
	Auth AuthConfig `json:"auth"`
	// Scopes maps an OAuth scope to the tools it grants; "*" as a tool grants every tool. Tools that no
	// scope of the token grants are hidden from tools/list and refused at tools/call. Ignored when
	// auth.disabled is true.
	Scopes map[string][]string `json:"scopes,omitempty"`
	// Destructive lists tools that need a person's approval on every call (asked through MCP elicitation;
	// refused when the client cannot ask).
	Destructive []string `json:"destructive,omitempty"`
	// ToolLabels labels tools for the tool-chain rule: "reads-private" or "writes-external". After a
	// reads-private tool has run in a session, writes-external tools need a person's approval.
	ToolLabels map[string][]string `json:"toolLabels,omitempty"`
	// Pins maps tool names to approved definition hashes ("sha256:<hex>", as reported in the pin state
	// file). Tools without an entry are pinned on first sight. A tool whose definition no longer matches
	// its pin is hidden and refused until its new hash is approved here.
	Pins map[string]string `json:"pins,omitempty"`
	// PinStatePath is where the gateway writes the pin state (JSON) for the operator; empty disables the
	// file. Pins learned on first sight are read back from it on restart.
	PinStatePath string `json:"pinStatePath,omitempty"`
	// KnownPinsPath is a pin state file (the PinStatePath format) read once at start: its pins are held
	// as first-seen pins for tools not pinned otherwise. The operator writes there the pins it has seen
	// from every replica, so a restart, a rollout or a new replica does not pin a changed tool anew. A
	// missing file is no pins.
	KnownPinsPath string `json:"knownPinsPath,omitempty"`
	// Limits bound requests.
	Limits Limits `json:"limits"`
	// Audit configures the audit chain's key and head file. Records always go to stdout as JSON lines.
	Audit AuditConfig `json:"audit,omitzero"`
	// BlockSecretsInArguments refuses (and audits) a tools/call whose arguments carry a secret that the
	// redaction rules find (sanitize.ContainsSecret), so that a hijacked model cannot post a key out.
	// Default false: arguments are redacted in the audit record and forwarded.
	BlockSecretsInArguments bool `json:"blockSecretsInArguments,omitempty"`
	// AllowedOrigins lists browser origins (scheme://host[:port]) allowed to call the gateway; requests
	// with any other Origin header are refused. Requests without an Origin header are not affected.
	AllowedOrigins []string `json:"allowedOrigins,omitempty"`
	// TLS makes the gateway serve HTTPS on Listen. Empty: plaintext HTTP.
	TLS TLSConfig `json:"tls,omitzero"`
	// Sessions configures how MCP sessions work across the replicas of one server.
	Sessions SessionsConfig `json:"sessions,omitzero"`
	// Telemetry configures trace export. The platform sets it (the operator's --otlp-endpoint), never
	// the MCPServer's author.
	Telemetry TelemetryConfig `json:"telemetry,omitzero"`
}

// TLSConfig is the gateway's serving certificate: PEM files, read again when they change (see
// CertReloader), so a renewed certificate is served without a restart.
type TLSConfig struct {
	// CertFile is the certificate chain (PEM), leaf first. An absolute path.
	CertFile string `json:"certFile,omitempty"`
	// KeyFile is the certificate's private key (PEM). An absolute path.
	KeyFile string `json:"keyFile,omitempty"`
}

// SessionsConfig configures sessions across replicas. The gateway issues its own session ids: the
// replica that initializes a session names its own peer address and a random handle in the id, and
// keeps what the handle stands for itself; no key is shared. A replica that gets a request for a
// session another replica holds relays it, over mutual TLS, to that replica's peer port, which does
// every check; a replica that is gone or restarted answers 404, so the client initializes a new
// session.
type SessionsConfig struct {
	// PeerListen is the TCP address of the peer port, where the other replicas relay requests of the
	// sessions this replica holds, e.g. ":8445". Needs tls: the relay is authenticated by mutual TLS
	// with the gateways' certificates. Empty: no relaying; each replica serves only the sessions it
	// issued (route a client to one replica, e.g. by Service session affinity).
	PeerListen string `json:"peerListen,omitempty"`
	// Advertise is this replica's peer address (pod IP and the peer port), named in the session ids it
	// issues. Needed with peerListen; when empty the gateway binary sets it from $MCP_WARDEN_POD_IP.
	Advertise string `json:"advertise,omitempty"`
	// PeerCIDRs are the ranges a replica's address must be in for a session id naming it to be relayed.
	// Empty: any address except loopback, link-local, unspecified and multicast ones. The port is always
	// this replica's own peer port.
	PeerCIDRs []string `json:"peerCIDRs,omitempty"`
	// PeerCAFile is the CA bundle (PEM) a replica's certificate must chain to, read again at each new
	// peer connection so a rotated CA is picked up. Needed with peerListen: the peer hop runs over
	// mutual TLS, each side presenting its own certificate (tls.certFile). An absolute path.
	PeerCAFile string `json:"peerCAFile,omitempty"`
	// PeerServerName is the DNS name a replica's certificate must carry, as a server and as a client
	// (every replica's certificate is issued for the Service's names). Needed with peerListen.
	PeerServerName string `json:"peerServerName,omitempty"`
	// PeersDNS is the DNS name whose addresses are the live replicas (a headless Service selecting the
	// server's ready pods, e.g. "github-peers.tools.svc.cluster.local"). With it, every request without
	// a session id (an initialize; every request to a server that issues no session) is served by its
	// principal's home: the replica rendezvous hashing picks among the live ones, filtered as session
	// ids are (peerCIDRs, the peer port). So all of a principal's sessions, its tool-chain state and its
	// rate bucket are on one replica. Resolved with a 2s cache and a 1s deadline; a resolve error or an
	// empty answer serves the request on the replica it reached. Needs peerListen.
	PeersDNS string `json:"peersDNS,omitempty"`
}

// TelemetryConfig configures OpenTelemetry trace export.
type TelemetryConfig struct {
	// OTLPEndpoint is the OTLP/HTTP (protobuf) traces URL of the platform's collector, e.g.
	// "http://otel-collector.observability.svc:4318/v1/traces" (a URL without a path gets /v1/traces).
	// The gateway then exports one span per request, with the W3C trace context it passes to the
	// server and the trace id of the audit record; spans carry the decision, the method and the tool,
	// never arguments, results or tokens. Export never blocks a request: spans wait in a bounded queue
	// (dropped when it is full) and each export has a deadline. Empty: no export.
	OTLPEndpoint string `json:"otlpEndpoint,omitempty"`
}

// AuthConfig configures the OAuth 2.1 resource server.
type AuthConfig struct {
	// Disabled turns authentication off. Off is never the default: it must be set explicitly. With it,
	// every caller is "anonymous" and the scope map does not apply.
	Disabled bool `json:"disabled,omitempty"`
	// Issuer is the authorization server's issuer identifier; tokens must carry it as iss. Required
	// unless disabled; https, or http on loopback.
	Issuer string `json:"issuer,omitempty"`
	// JWKSURL is the issuer's JSON Web Key Set. Optional: when empty it is discovered from the issuer's
	// /.well-known/openid-configuration or /.well-known/oauth-authorization-server metadata.
	JWKSURL string `json:"jwksURL,omitempty"`
	// JWKSFile is a JSON Web Key Set file the keys are read from instead of fetching them: in a cluster
	// the operator fetches the issuer's keys (from jwksURL or the issuer's metadata) and delivers them
	// beside this configuration, so the pod needs no egress to the issuer. Read again every second and
	// at once when a token names an unknown key id. An absolute path.
	JWKSFile string `json:"jwksFile,omitempty"`
	// Algorithms are the accepted signature algorithms; asymmetric only (RS*, PS*, ES*, EdDSA).
	// Default ["RS256", "ES256"].
	Algorithms []string `json:"algorithms,omitempty"`
	// ClockSkew is the tolerance on exp and nbf, at most 5m. Default "30s".
	ClockSkew Duration `json:"clockSkew,omitzero"`
	// RequiredScopes must all be in every token, whatever it calls.
	RequiredScopes []string `json:"requiredScopes,omitempty"`
}

// AuditConfig configures the audit chain (see package audit).
type AuditConfig struct {
	// KeyPath is a file with the key (at least 32 bytes) that MACs every record with HMAC-SHA256, so
	// that a rewritten log is detected even when its hashes were recomputed. The operator mounts it from
	// a Secret that only the gateway container reads, never the MCP server's. Empty: records carry no MAC.
	KeyPath string `json:"keyPath,omitempty"`
	// StatePath is the head file: the seq and hash of the last record, replaced atomically after each
	// record; a restarted gateway continues the chain from it, and `gateway audit verify --head` detects
	// a log that ends before it. It must be on a volume that outlives the container (e.g. an emptyDir).
	// Empty: every start begins a new chain at seq 0.
	StatePath string `json:"statePath,omitempty"`
}

// Limits bound requests.
type Limits struct {
	// MaxBodyBytes caps a request body; larger requests get 413. Default 1048576 (1 MiB).
	MaxBodyBytes int64 `json:"maxBodyBytes,omitempty"`
	// MaxResponseBytes caps a JSON response or one SSE event from the server. Default 8388608 (8 MiB).
	MaxResponseBytes int64 `json:"maxResponseBytes,omitempty"`
	// RequestsPerSecond is the sustained request rate per principal. Default 10.
	RequestsPerSecond float64 `json:"requestsPerSecond,omitempty"`
	// Burst is the number of requests a principal may make at once above the rate. Default 20.
	Burst int `json:"burst,omitempty"`
	// CallTimeout bounds one request to the server, including a tool call. Default "30s".
	CallTimeout Duration `json:"callTimeout,omitzero"`
	// ApprovalTimeout bounds the wait for a person's approval. Default "2m".
	ApprovalTimeout Duration `json:"approvalTimeout,omitzero"`
	// StreamTimeout bounds a long-lived server-to-client event stream (HTTP GET). Default "1h".
	StreamTimeout Duration `json:"streamTimeout,omitzero"`
}

// Duration is a time.Duration written as a Go duration string ("30s", "2m") in JSON.
type Duration struct{ time.Duration }

// UnmarshalJSON reads a duration string such as "30s".
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string such as \"30s\", got %s", b)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration %q: %w", s, err)
	}
	d.Duration = v
	return nil
}

// MarshalJSON writes the duration as a string such as "30s".
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// Read decodes a configuration file without validating it; unknown fields are errors.
func Read(path string) (*Config, error) {
	body, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	c := &Config{}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(c); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("config %s: trailing data after the JSON object", path)
	}
	return c, nil
}

// Load reads a configuration file, fills defaults and validates it.
func Load(path string) (*Config, error) {
	c, err := Read(path)
	if err != nil {
		return nil, err
	}
	c.WithDefaults()
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// WithDefaults fills unset optional fields with their defaults.
func (c *Config) WithDefaults() {
	if c.Listen == "" {
		c.Listen = ":8443"
	}
	if !c.Auth.Disabled {
		if len(c.Auth.Algorithms) == 0 {
			c.Auth.Algorithms = []string{"RS256", "ES256"}
		}
		if c.Auth.ClockSkew.Duration == 0 {
			c.Auth.ClockSkew.Duration = 30 * time.Second
		}
	}
	l := &c.Limits
	if l.MaxBodyBytes == 0 {
		l.MaxBodyBytes = 1 << 20
	}
	if l.MaxResponseBytes == 0 {
		l.MaxResponseBytes = 8 << 20
	}
	if l.RequestsPerSecond == 0 {
		l.RequestsPerSecond = 10
	}
	if l.Burst == 0 {
		l.Burst = 20
	}
	if l.CallTimeout.Duration == 0 {
		l.CallTimeout.Duration = 30 * time.Second
	}
	if l.ApprovalTimeout.Duration == 0 {
		l.ApprovalTimeout.Duration = 2 * time.Minute
	}
	if l.StreamTimeout.Duration == 0 {
		l.StreamTimeout.Duration = time.Hour
	}
}

// Validate checks a configuration (after WithDefaults) and returns an error naming the first bad field
// and how to fix it.
func (c *Config) Validate() error {
	for _, step := range []func() error{
		c.validateEndpoints,
		c.validateAuth,
		c.validateTelemetry,
		c.validateScopes,
		c.validateToolSettings,
		func() error { return c.Audit.validate(c.PinStatePath) },
		c.TLS.validate,
		c.Limits.validate,
		c.validateSessions,
		c.validateOrigins,
	} {
		if err := step(); err != nil {
			return err
		}
	}
	return nil
}

// validateEndpoints checks the listen addresses, the upstream (loopback http) and the resource URI.
func (c *Config) validateEndpoints() error {
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return fmt.Errorf("listen: %q is not host:port; use e.g. \":8443\"", c.Listen)
	}
	if _, _, err := net.SplitHostPort(c.StatusListen); c.StatusListen != "" && err != nil {
		return fmt.Errorf("statusListen: %q is not host:port; use e.g. \":8444\"", c.StatusListen)
	}
	u, err := url.Parse(c.Upstream)
	stdioUnset := c.Stdio && c.Upstream == "" // --stdio sets it at start
	if !stdioUnset && (c.Upstream == "" || err != nil || u.Scheme != "http" || u.Host == "" || !isLoopback(u.Hostname())) {
		return fmt.Errorf("upstream: %q must be an http:// URL on loopback, e.g. \"http://127.0.0.1:8080/mcp\" (the server listens on 127.0.0.1 behind the gateway)", c.Upstream)
	}
	r, err := url.Parse(c.Resource)
	if c.Resource == "" || err != nil || (r.Scheme != "https" && r.Scheme != "http") || r.Host == "" || r.Fragment != "" {
		return fmt.Errorf("resource: %q must be the absolute URI clients use for this server, without a fragment, e.g. \"https://files.mcp.example.com/mcp\"", c.Resource)
	}
	return nil
}

// validateTelemetry checks the OTLP endpoint, if set.
func (c *Config) validateTelemetry() error {
	if c.Telemetry.OTLPEndpoint != "" {
		if _, err := OTLPTracesURL(c.Telemetry.OTLPEndpoint); err != nil {
			return err
		}
	}
	return nil
}

// validateScopes checks that every scope has a usable name and lists tools.
func (c *Config) validateScopes() error {
	for scope, tools := range c.Scopes {
		if scope == "" || strings.ContainsAny(scope, " \"\\") {
			return fmt.Errorf("scopes: scope %q must be non-empty and contain no spaces or quotes", scope)
		}
		if len(tools) == 0 {
			return fmt.Errorf("scopes.%s: lists no tools; list tool names, or \"*\" for all tools", scope)
		}
		for _, t := range tools {
			if t == "" {
				return fmt.Errorf("scopes.%s: contains an empty tool name", scope)
			}
		}
	}
	return nil
}

// validateToolSettings checks the destructive tools, the tool labels and the pins.
func (c *Config) validateToolSettings() error {
	for i, t := range c.Destructive {
		if t == "" {
			return fmt.Errorf("destructive[%d]: empty tool name", i)
		}
	}
	for tool, labels := range c.ToolLabels {
		for _, l := range labels {
			if l != policy.ReadsPrivate && l != policy.WritesExternal {
				return fmt.Errorf("toolLabels.%s: unknown label %q; use %q or %q", tool, l, policy.ReadsPrivate, policy.WritesExternal)
			}
		}
	}
	for tool, h := range c.Pins {
		if !validHash(h) {
			return fmt.Errorf("pins.%s: %q is not a tool hash; copy observedHash (\"sha256:\" and 64 hex digits) from the pin state file", tool, h)
		}
	}
	return nil
}

// validate checks that the limits are usable.
func (l Limits) validate() error {
	switch {
	case l.MaxBodyBytes < 1024:
		return fmt.Errorf("limits.maxBodyBytes: %d is too small; use at least 1024 (default 1048576)", l.MaxBodyBytes)
	case l.MaxResponseBytes < 1024:
		return fmt.Errorf("limits.maxResponseBytes: %d is too small; use at least 1024 (default 8388608)", l.MaxResponseBytes)
	case l.RequestsPerSecond <= 0:
		return fmt.Errorf("limits.requestsPerSecond: %v must be positive (default 10)", l.RequestsPerSecond)
	case l.Burst < 1:
		return fmt.Errorf("limits.burst: %d must be at least 1 (default 20)", l.Burst)
	case l.CallTimeout.Duration <= 0:
		return fmt.Errorf("limits.callTimeout: %s must be positive (default \"30s\")", l.CallTimeout)
	case l.ApprovalTimeout.Duration <= 0:
		return fmt.Errorf("limits.approvalTimeout: %s must be positive (default \"2m\")", l.ApprovalTimeout)
	case l.StreamTimeout.Duration <= 0:
		return fmt.Errorf("limits.streamTimeout: %s must be positive (default \"1h\")", l.StreamTimeout)
	}
	return nil
}

// validateSessions checks the sessions settings, and that a peer port runs over mutual TLS.
func (c *Config) validateSessions() error {
	if err := c.Sessions.validate(); err != nil {
		return err
	}
	if s := c.Sessions; s.PeerListen != "" && !c.TLS.Enabled() {
		return fmt.Errorf("sessions.peerListen %q: needs tls (tls.certFile, tls.keyFile): the replicas authenticate each other on the peer port by mutual TLS; without tls leave it empty, and each replica serves only its own sessions", s.PeerListen)
	}
	if s := c.Sessions; s.PeerListen != "" && (s.PeerCAFile == "" || s.PeerServerName == "") {
		return fmt.Errorf("sessions.peerCAFile %q and sessions.peerServerName %q: both are needed with sessions.peerListen, so the peer hop runs over mutual TLS; set them to the CA bundle of the serving certificate and one of its DNS names, e.g. \"/etc/mcp-warden-tls/ca.crt\" and \"github.tools.svc.cluster.local\"", s.PeerCAFile, s.PeerServerName)
	}
	return nil
}

// validateOrigins checks that every allowed origin is scheme://host[:port].
func (c *Config) validateOrigins() error {
	for i, o := range c.AllowedOrigins {
		ou, err := url.Parse(o)
		if err != nil || ou.Scheme == "" || ou.Host == "" || (ou.Path != "" && ou.Path != "/") || ou.RawQuery != "" {
			return fmt.Errorf("allowedOrigins[%d]: %q is not an origin; use scheme://host[:port], e.g. \"https://app.example.com\"", i, o)
		}
	}
	return nil
}

func (t TLSConfig) validate() error {
	if (t.CertFile == "") != (t.KeyFile == "") {
		return fmt.Errorf("tls: certFile %q and keyFile %q go together: set both (HTTPS) or neither (plaintext HTTP)", t.CertFile, t.KeyFile)
	}
	for field, p := range map[string]string{"tls.certFile": t.CertFile, "tls.keyFile": t.KeyFile} {
		if p != "" && !filepath.IsAbs(p) {
			return fmt.Errorf("%s: %q must be an absolute path, e.g. \"/etc/mcp-warden-tls/tls.crt\"", field, p)
		}
	}
	return nil
}

// Enabled reports whether the gateway serves HTTPS.
func (t TLSConfig) Enabled() bool { return t.CertFile != "" }

func (a AuditConfig) validate(pinStatePath string) error {
	for field, p := range map[string]string{"audit.keyPath": a.KeyPath, "audit.statePath": a.StatePath} {
		if p != "" && !filepath.IsAbs(p) {
			return fmt.Errorf("%s: %q must be an absolute path, e.g. \"/var/run/mcp-warden/audit-head.json\"", field, p)
		}
	}
	if a.StatePath != "" && (a.StatePath == a.KeyPath || a.StatePath == pinStatePath) {
		return fmt.Errorf("audit.statePath: %q is also the key or the pin state file; give the head file a path of its own", a.StatePath)
	}
	return nil
}

func (c *Config) validateAuth() error {
	a := c.Auth
	if a.Disabled {
		if a.Issuer != "" || a.JWKSURL != "" || a.JWKSFile != "" || len(a.RequiredScopes) > 0 {
			return errors.New("auth.disabled: is true but auth.issuer, auth.jwksURL or auth.requiredScopes is set; remove them, or set auth.disabled to false")
		}
		return nil
	}
	iu, err := url.Parse(a.Issuer)
	if a.Issuer == "" || err != nil || iu.Host == "" || !(iu.Scheme == "https" || (iu.Scheme == "http" && isLoopback(iu.Hostname()))) {
		return fmt.Errorf("auth.issuer: %q must be the authorization server's https issuer URL (required unless auth.disabled is true)", a.Issuer)
	}
	if a.JWKSURL != "" {
		ju, err := url.Parse(a.JWKSURL)
		if err != nil || ju.Host == "" || !(ju.Scheme == "https" || (ju.Scheme == "http" && isLoopback(ju.Hostname()))) {
			return fmt.Errorf("auth.jwksURL: %q must be an https URL, or empty to discover it from the issuer", a.JWKSURL)
		}
	}
	if a.JWKSFile != "" && !filepath.IsAbs(a.JWKSFile) {
		return fmt.Errorf("auth.jwksFile: %q must be an absolute path", a.JWKSFile)
	}
	if len(a.Algorithms) == 0 {
		return errors.New("auth.algorithms: empty; list asymmetric algorithms such as [\"RS256\", \"ES256\"]")
	}
	for _, alg := range a.Algorithms {
		if !slices.Contains(Asymmetric, alg) {
			return fmt.Errorf("auth.algorithms: %q is not allowed; use asymmetric algorithms only (%s)", alg, strings.Join(Asymmetric, ", "))
		}
	}
	if a.ClockSkew.Duration < 0 || a.ClockSkew.Duration > 5*time.Minute {
		return fmt.Errorf("auth.clockSkew: %s must be between 0s and 5m (default \"30s\")", a.ClockSkew)
	}
	if len(c.Scopes) == 0 {
		return errors.New("scopes: no scope grants any tool, so every tool would be hidden; map scopes to tools, e.g. {\"files:read\": [\"read_file\"]}, or {\"mcp\": [\"*\"]} for all tools")
	}
	return nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func validHash(h string) bool {
	hexPart, ok := strings.CutPrefix(h, "sha256:")
	if !ok || len(hexPart) != 64 {
		return false
	}
	for _, r := range hexPart {
		if !strings.ContainsRune("0123456789abcdef", r) {
			return false
		}
	}
	return true
}

func (c SessionsConfig) validate() error {
	if c.PeerCAFile != "" && !filepath.IsAbs(c.PeerCAFile) {
		return fmt.Errorf("sessions.peerCAFile: %q must be an absolute path, e.g. \"/etc/mcp-warden-tls/ca.crt\"", c.PeerCAFile)
	}
	for i, p := range c.PeerCIDRs {
		if _, err := netip.ParsePrefix(p); err != nil {
			return fmt.Errorf("sessions.peerCIDRs[%d]: %q is not a CIDR range, e.g. \"10.244.0.0/16\"", i, p)
		}
	}
	if c.PeersDNS != "" && !dnsName(c.PeersDNS) {
		return fmt.Errorf("sessions.peersDNS: %q is not a DNS name; use the headless Service of the replicas, e.g. \"github-peers.tools.svc.cluster.local\"", c.PeersDNS)
	}
	if c.PeerListen == "" {
		if c.PeersDNS != "" {
			return errors.New("sessions.peersDNS: is set but sessions.peerListen is not; a principal's requests are relayed to its home replica's peer port, so set both, or neither for one replica")
		}
		if c.Advertise != "" {
			return errors.New("sessions.advertise: is set but sessions.peerListen is not; set both, or neither for one replica")
		}
		return nil
	}
	_, port, err := net.SplitHostPort(c.PeerListen)
	if err != nil {
		return fmt.Errorf("sessions.peerListen: %q is not host:port; use e.g. \":8445\"", c.PeerListen)
	}
	if c.Advertise == "" {
		return nil // the gateway binary sets it from the pod's IP; New refuses to start without it
	}
	ap, err := netip.ParseAddrPort(c.Advertise)
	if err != nil || strconv.Itoa(int(ap.Port())) != port {
		return fmt.Errorf("sessions.advertise: %q must be this replica's IP and the peer port %s, e.g. \"10.244.1.7:%s\" (the gateway sets it from $MCP_WARDEN_POD_IP)", c.Advertise, port, port)
	}
	return nil
}

// dnsName reports whether s is a DNS name of letters, digits and hyphens, 253 characters at most, with
// no label empty, longer than 63 characters or starting or ending with a hyphen (a trailing dot allowed).
func dnsName(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for _, r := range l {
			if (r < 'a' || r > 'z') && (r < 'A' || r > 'Z') && (r < '0' || r > '9') && r != '-' {
				return false
			}
		}
	}
	return true
}

// OTLPTracesURL checks an OTLP/HTTP endpoint and returns the traces URL it names.
func OTLPTracesURL(endpoint string) (string, error) {
	u, err := url.Parse(endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("telemetry.otlpEndpoint: %q must be an http:// or https:// URL of an OTLP/HTTP collector without credentials, query or fragment, e.g. \"http://otel-collector.observability.svc:4318/v1/traces\"", endpoint)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = "/v1/traces"
	}
	return u.String(), nil
}
