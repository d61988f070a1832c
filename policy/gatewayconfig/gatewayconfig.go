// Package gatewayconfig renders the MCP gateway's configuration from an MCPServer and checks it as the
// gateway will at start, so that the admission webhook refuses what the gateway would refuse and the
// controller never stalls on a spec it admitted.
package gatewayconfig

import (
	"encoding/json"
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
	"github.com/mcp-warden/mcp-warden/gateway/config"
	"github.com/mcp-warden/mcp-warden/gateway/policy"
	"github.com/mcp-warden/mcp-warden/policy/guardrails"
)

const (
	// GatewayPort is where the gateway listens in every server pod; the Service and the NetworkPolicy
	// send clients there, never to the server's own port.
	GatewayPort = 8443
	// StatusPort is where the gateway serves its status (the pin state) to the operator.
	StatusPort = 8444
	// PeerPort is where a gateway serves the sessions it holds to the other replicas of its server,
	// which relay those sessions' requests there over mutual TLS (with TLS on only). Only the server's
	// own pods may reach it.
	PeerPort = 8445
	// KnownPinsPath is where the gateway reads the pins the operator has recorded (the ConfigMap's
	// pins.json, mounted with the configuration).
	KnownPinsPath = "/etc/mcp-warden/pins.json"
	// KeysPath is where the gateway reads its issuer's signing keys: the ConfigMap's jwks.json, which
	// the operator fetches and refreshes, mounted with the configuration. The pod needs no egress to the
	// issuer, so the server in it cannot reach the issuer either.
	KeysPath = "/etc/mcp-warden/jwks.json"
	// StateDir is the gateway container's own emptyDir: the audit head file lives there, so a restarted
	// gateway continues its chain. The server container does not mount it.
	StateDir = "/var/lib/mcp-warden"
	// AuditKeyDir is where the audit key Secret is mounted, in the gateway container only.
	AuditKeyDir = "/etc/mcp-warden-audit"
	// TLSDir is where the gateway's credential bundle (TLSBundleFile) and the CA bundle (CABundleKey)
	// are mounted, in the gateway container only; the gateway reloads the bundle when the kubelet
	// refreshes it.
	TLSDir = "/etc/mcp-warden-tls"
	// TLSBundleFile holds the gateway's private key and then its certificate chain (PEM), in one file
	// so that one read sees a key and the certificate issued for it.
	TLSBundleFile = "tls.pem"
	// GatewaySigner is the signer the gateways' pod certificates are requested from: the operator, which
	// issues them only to its own gateway pods, from its CA, for the server's Service names.
	GatewaySigner = "mcp.warden.dev/gateway-serving"
	// GatewayKeyType is the key the kubelet generates for a gateway's pod certificate.
	GatewayKeyType = "ECDSAP256"
	// GatewayCertSeconds is the longest a gateway's pod certificate lives (24 hours); the kubelet
	// refreshes it at two thirds of its life.
	GatewayCertSeconds int32 = 24 * 60 * 60
	// CABundleConfigMap is the ConfigMap, in every namespace with servers, whose key CABundleKey holds
	// the CA certificates the gateways' serving certificates chain to, for clients to mount.
	CABundleConfigMap = "mcp-warden-ca"
	// CABundleKey is the CA bundle's key in CABundleConfigMap.
	CABundleKey = "ca.crt"
	// MaxConfigBytes bounds the rendered configuration, well inside a ConfigMap's 1 MiB.
	MaxConfigBytes = 256 << 10
)

// Check renders the configuration and validates it as the gateway does, and refuses a server port the
// gateway uses itself. Errors name the spec field.
func Check(s *mcpv1alpha1.MCPServer) field.ErrorList {
	var errs field.ErrorList
	if err := CheckName(s); err != nil {
		errs = append(errs, err)
	}
	if p := Port(s); s.Spec.Transport != mcpv1alpha1.TransportStdio && (p == GatewayPort || p == StatusPort || p == PeerPort) {
		errs = append(errs, field.Invalid(field.NewPath("spec", "port"), p, fmt.Sprintf("ports %d, %d and %d are the gateway's own, in the same pod; use another port, e.g. 8080", GatewayPort, StatusPort, PeerPort)))
	}
	errs = append(errs, guardrails.CheckJWKSURL(s)...)
	cfg := Render(s, "cluster.local")
	cfg.WithDefaults()
	if body, err := json.Marshal(cfg); err == nil && len(body) > MaxConfigBytes {
		errs = append(errs, &field.Error{Type: field.ErrorTypeTooLong, Field: "spec.gateway", BadValue: field.OmitValueType{},
			Detail: fmt.Sprintf("the gateway configuration would be %d bytes, more than %d: grant tools by fewer, shorter names (e.g. \"*\" for all), or split the server", len(body), MaxConfigBytes)})
	}
	if err := cfg.Validate(); err != nil {
		errs = append(errs, &field.Error{Type: field.ErrorTypeInvalid, Field: specField(err.Error()), BadValue: field.OmitValueType{}, Detail: "the gateway would refuse this configuration: " + err.Error()})
	}
	return errs
}

// CheckName refuses a server name that is not an RFC 1035 label: the name is its Service's, and the
// gateway's certificate carries <name>.<namespace>[.svc[.<cluster domain>]], so a name with dots
// ("files.tools.svc.cluster" in namespace "local") would claim another namespace's Service
// ("files.tools.svc.cluster.local") in a certificate from the CA every gateway's clients trust.
func CheckName(s *mcpv1alpha1.MCPServer) *field.Error {
	if msgs := validation.IsDNS1035Label(s.Name); len(msgs) > 0 {
		return field.Invalid(field.NewPath("metadata", "name"), s.Name, "an MCPServer's name is its Service's name and the first label of its gateway's certificate names, so it must be an RFC 1035 label (lower-case letters, digits and '-', starting with a letter, at most 63 characters), e.g. \"files\": "+strings.Join(msgs, "; "))
	}
	return nil
}

// specFields maps the gateway configuration's keys to the MCPServer fields they come from.
var specFields = map[string]string{
	"pins": "pinnedTools", "scopes": "scopes", "destructive": "destructiveTools", "auth": "auth",
	"resource": "auth.resource", "allowedOrigins": "allowedOrigins",
}

// specField names the spec field a gateway config error is about (spec.gateway when unknown).
func specField(msg string) string {
	key, _, _ := strings.Cut(msg, ":")
	head, rest, _ := strings.Cut(key, ".")
	f, ok := specFields[head]
	if !ok {
		return "spec.gateway"
	}
	if rest != "" && head == "pins" {
		return "spec.gateway." + f + "[" + rest + "]"
	}
	return "spec.gateway." + f
}

// Render renders the gateway's configuration from the spec.
func Render(s *mcpv1alpha1.MCPServer, clusterDomain string) *config.Config {
	g := s.Spec.Gateway
	cfg := &config.Config{
		Listen:                  fmt.Sprintf(":%d", GatewayPort),
		StatusListen:            fmt.Sprintf(":%d", StatusPort),
		Upstream:                upstream(s),
		Stdio:                   s.Spec.Transport == mcpv1alpha1.TransportStdio,
		Resource:                g.Auth.Resource,
		Auth:                    config.AuthConfig{Disabled: g.Auth.Disabled, Issuer: g.Auth.Issuer, JWKSURL: g.Auth.JWKSURL},
		Scopes:                  map[string][]string{},
		Destructive:             g.DestructiveTools,
		Pins:                    g.PinnedTools,
		AllowedOrigins:          g.AllowedOrigins,
		KnownPinsPath:           KnownPinsPath,
		BlockSecretsInArguments: g.BlockSecretsInArguments,
	}
	if !g.Auth.Disabled {
		cfg.Auth.JWKSFile = KeysPath
	}
	if TLSEnabled(s) {
		bundle := TLSDir + "/" + TLSBundleFile
		cfg.TLS = config.TLSConfig{CertFile: bundle, KeyFile: bundle}
		// Every replica can relay to the others (the gateway sets sessions.advertise from the pod's IP),
		// so scaling does not change the configuration. The relay is authenticated by mutual TLS: every
		// replica's certificate is issued for the Service's names, and each checks a peer's against the
		// CA bundle mounted beside it. Without TLS there is no peer port: each replica serves only its
		// own sessions (the Service keeps a client on one replica, see desired.Service).
		// The live replicas are the addresses of the headless Service PeersServiceName (there only at
		// spec.replicas > 1; at one replica the name does not resolve and the replica serves everything).
		cfg.Sessions = config.SessionsConfig{PeerListen: fmt.Sprintf(":%d", PeerPort),
			PeerCAFile: TLSDir + "/" + CABundleKey, PeerServerName: DNSNames(s, clusterDomain)[3],
			PeersDNS: PeersServiceName(s) + "." + s.Namespace + ".svc." + clusterDomain + "."}
	}
	// Every server, stdio too, runs in a container of its own: the audit key and head are the
	// gateway container's alone.
	cfg.Audit.StatePath = StateDir + "/audit-head.json"
	if g.AuditKeySecretName != "" {
		cfg.Audit.KeyPath = AuditKeyDir + "/key"
	}
	if cfg.Resource == "" {
		cfg.Resource = Endpoint(s, clusterDomain)
	}
	for _, sg := range g.Scopes {
		cfg.Scopes[sg.Scope] = sg.Tools
	}
	label := func(tools []string, l string) {
		for _, t := range tools {
			if cfg.ToolLabels == nil {
				cfg.ToolLabels = map[string][]string{}
			}
			cfg.ToolLabels[t] = append(cfg.ToolLabels[t], l)
		}
	}
	label(g.PrivateDataTools, policy.ReadsPrivate)
	label(g.ExternalWriteTools, policy.WritesExternal)
	if g.RatePerSecond != nil {
		cfg.Limits.RequestsPerSecond = float64(*g.RatePerSecond)
		cfg.Limits.Burst = 2 * int(*g.RatePerSecond)
	}
	if g.MaxBodyBytes != nil {
		cfg.Limits.MaxBodyBytes = *g.MaxBodyBytes
	}
	return cfg
}

// upstream is where the gateway sends requests: the server's loopback port, or nothing for a stdio
// server (the gateway serves its child process).
func upstream(s *mcpv1alpha1.MCPServer) string {
	if s.Spec.Transport == mcpv1alpha1.TransportStdio {
		return ""
	}
	return fmt.Sprintf("http://127.0.0.1:%d%s", Port(s), Path(s))
}

// Port is the server's port (default 8080).
func Port(s *mcpv1alpha1.MCPServer) int32 {
	if s.Spec.Port == 0 {
		return 8080
	}
	return s.Spec.Port
}

// Path is the MCP endpoint's path (default /mcp).
func Path(s *mcpv1alpha1.MCPServer) string {
	if s.Spec.Path == "" {
		return "/mcp"
	}
	return s.Spec.Path
}

// Endpoint is the in-cluster URL of the server's MCP endpoint (through the gateway): https:// unless
// spec.gateway.tls.mode is Disabled.
func Endpoint(s *mcpv1alpha1.MCPServer, clusterDomain string) string {
	scheme := "https"
	if !TLSEnabled(s) {
		scheme = "http"
	}
	return fmt.Sprintf("%s://%s.%s.svc.%s:%d%s", scheme, s.Name, s.Namespace, clusterDomain, Port(s), Path(s))
}

// TLSEnabled reports whether the gateway serves HTTPS (every mode but Disabled).
func TLSEnabled(s *mcpv1alpha1.MCPServer) bool {
	return s.Spec.Gateway.TLS.Mode != mcpv1alpha1.TLSDisabled
}

// TLSSecretName is the Secret, in the server's namespace, where cert-manager writes the gateway's
// serving certificate when the operator leaves issuance to cert-manager (type kubernetes.io/tls, with
// tls-combined.pem), mounted into the gateway container only.
func TLSSecretName(s *mcpv1alpha1.MCPServer) string { return s.Name + "-gateway-tls" }

// PeersServiceName is the headless Service of the server's ready pods at spec.replicas > 1: its DNS
// name resolves to the live replicas, among which each principal's home replica is picked.
func PeersServiceName(s *mcpv1alpha1.MCPServer) string { return s.Name + "-peers" }

// DNSNames are the names the gateway's serving certificate is for: the server's Service, short and
// qualified.
func DNSNames(s *mcpv1alpha1.MCPServer, clusterDomain string) []string {
	return []string{
		s.Name,
		s.Name + "." + s.Namespace,
		s.Name + "." + s.Namespace + ".svc",
		s.Name + "." + s.Namespace + ".svc." + clusterDomain,
	}
}
