package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// Transport is how the MCP server speaks MCP inside its pod. Clients always reach it over streamable
// HTTP through the gateway.
// +kubebuilder:validation:Enum=streamable-http;stdio
type Transport string

const (
	// TransportStreamableHTTP is the MCP streamable HTTP transport: JSON-RPC over HTTP POST, with
	// optional server-sent event streams.
	TransportStreamableHTTP Transport = "streamable-http"
	// TransportStdio is a server that reads JSON-RPC from stdin and writes to stdout. It runs in the
	// server container with a unix socket to the gateway sidecar as its stdin and stdout, and the
	// gateway serves it over streamable HTTP.
	TransportStdio Transport = "stdio"
)

// Protocol is a transport-layer protocol for an egress destination.
// +kubebuilder:validation:Enum=TCP;UDP
type Protocol string

const (
	// ProtocolTCP is TCP.
	ProtocolTCP Protocol = "TCP"
	// ProtocolUDP is UDP.
	ProtocolUDP Protocol = "UDP"
)

// MCPServerSpec says what runs: the image, how clients reach it, and what it may reach. How it is
// sandboxed is decided by the operator and cannot be changed here: every pod runs as a non-root user
// with all capabilities dropped, a read-only root filesystem, seccomp RuntimeDefault, no privilege
// escalation, no service-account token, and resource limits, behind default-deny network policies.
// +kubebuilder:validation:XValidation:rule="!has(self.transport) || self.transport != 'stdio' || (has(self.command) && size(self.command) > 0)",message="spec.command is required with transport stdio: the server container starts the command through the gateway's stdio-exec and cannot read the image's entrypoint; set spec.command (and spec.args) to the server's stdio command"
type MCPServerSpec struct {
	// Image is the container image of the MCP server, pinned by digest:
	// registry/repository@sha256:<64 hex characters>. Tags are refused because a tag can be moved to
	// different code after review; resolve a tag with `crane digest IMAGE:TAG` and use the digest.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=512
	// +kubebuilder:validation:XValidation:rule="self.matches('^[^@\\\\s]+@sha256:[a-f0-9]{64}$')",message="spec.image must be pinned by digest (registry/repository@sha256:<64 hex characters>); tags can be moved after review. Resolve the tag to its digest (e.g. `crane digest IMAGE:TAG`) and use IMAGE@sha256:..."
	Image string `json:"image"`

	// Transport is how the server speaks MCP inside its pod. streamable-http: the server listens on
	// spec.port and the gateway sidecar proxies to it. stdio: the server reads and writes JSON-RPC on
	// stdin/stdout; the server container (its own user, apart from the gateway's) runs
	// `gateway stdio-exec SOCKET -- COMMAND ARGS...`, which connects to the gateway sidecar's unix socket
	// on a shared emptyDir and execs the command with the socket as its stdin and stdout, so clients get
	// the same controls over streamable HTTP. stdio needs spec.command.
	// +kubebuilder:default=streamable-http
	// +optional
	Transport Transport `json:"transport,omitempty"`

	// Port is the TCP port the MCP server listens on inside its pod (streamable-http), and the port of
	// its Service. 8443, 8444 and 8445 are reserved for the gateway.
	// +kubebuilder:validation:Minimum=1024
	// +kubebuilder:validation:Maximum=65535
	// +kubebuilder:validation:XValidation:rule="self != 8443 && self != 8444 && self != 8445",message="spec.port: 8443, 8444 and 8445 are the gateway's own ports in the server pod; use another port, e.g. 8080"
	// +kubebuilder:default=8080
	// +optional
	Port int32 `json:"port,omitempty"`

	// Path is the HTTP path of the MCP endpoint, used in status.endpoint.
	// +kubebuilder:validation:Pattern=`^/[A-Za-z0-9._~/-]*$`
	// +kubebuilder:validation:MaxLength=256
	// +kubebuilder:default=/mcp
	// +optional
	Path string `json:"path,omitempty"`

	// Command overrides the image's entrypoint. Required with transport stdio.
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=4096
	// +optional
	Command []string `json:"command,omitempty"`

	// Args are the arguments to the entrypoint (at most 256, each at most 4096 characters, 64 KiB in all).
	// +kubebuilder:validation:MaxItems=256
	// +kubebuilder:validation:items:MaxLength=4096
	// +kubebuilder:validation:XValidation:rule="self.map(a, size(a)).sum() <= 65536",message="spec.args: at most 64 KiB in all"
	// +optional
	Args []string `json:"args,omitempty"`

	// Env sets environment variables in the server container. Secrets must come from a Secret by
	// reference (valueFrom.secretKeyRef): a literal value whose name or content looks like a credential
	// (password, token, API key, private key, cloud access key, JWT) is refused.
	// +kubebuilder:validation:MaxItems=64
	// +listType=map
	// +listMapKey=name
	// +optional
	Env []EnvVar `json:"env,omitempty"`

	// Resources are the server container's compute requests and limits. Missing values default to
	// requests cpu=50m, memory=64Mi and limits cpu=500m, memory=256Mi; limits are always set.
	// +optional
	Resources corev1.ResourceRequirements `json:"resources,omitempty"`

	// Replicas is the number of server pods.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=20
	// +kubebuilder:default=1
	// +optional
	Replicas *int32 `json:"replicas,omitempty"`

	// Clients are the pods allowed to connect to the server. Each entry selects pods by namespace and/or
	// pod labels, as in a NetworkPolicy peer. With no entries, no pod may connect: ingress is denied by
	// default.
	// +kubebuilder:validation:MaxItems=32
	// +optional
	Clients []ClientSelector `json:"clients,omitempty"`

	// Egress is the allow-list of destinations the server may open connections to. Everything else is
	// denied, except DNS to the cluster's DNS pods. Link-local (cloud metadata, 169.254.0.0/16,
	// 168.63.129.16, fe80::/10), loopback, private (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16,
	// 100.64.0.0/10, fc00::/7), multicast and reserved ranges, and their IPv6 spellings (NAT64
	// 64:ff9b::/96, 6to4 2002::/16, IPv4-mapped and IPv4-compatible addresses), are never opened unless an
	// MCPServerPolicy allows their class: a CIDR inside them is refused, and a wider CIDR such as
	// 0.0.0.0/0 or ::/0 gets them as exceptions.
	// +kubebuilder:validation:MaxItems=64
	// +optional
	Egress []EgressRule `json:"egress,omitempty"`

	// Gateway configures the MCP security gateway the operator runs in front of the server: every
	// request is authenticated (OAuth 2.1 bearer tokens), authorized per tool by scope, validated,
	// rate limited, sanitized and audited before it reaches the server.
	Gateway GatewaySpec `json:"gateway"`
}

// TLSMode says whether the gateway serves HTTPS or plaintext HTTP.
// +kubebuilder:validation:Enum=Enabled;Disabled
type TLSMode string

const (
	// TLSEnabled serves HTTPS (the default).
	TLSEnabled TLSMode = "Enabled"
	// TLSDisabled serves plaintext HTTP, for a mesh that encrypts and authenticates pod traffic itself
	// (mTLS); only where an MCPServerPolicy allows it.
	TLSDisabled TLSMode = "Disabled"
)

// GatewayTLS configures the gateway's serving certificate.
type GatewayTLS struct {
	// Mode is Enabled (the default: HTTPS with a certificate for <name>, <name>.<namespace>,
	// <name>.<namespace>.svc and <name>.<namespace>.svc.<cluster domain>, whose CA bundle the operator
	// publishes in the ConfigMap mcp-warden-ca, key ca.crt, of this namespace) or Disabled (plaintext
	// HTTP, bearer tokens unencrypted on the pod network: allowed only when every MCPServerPolicy
	// governing the namespace, and at least one, sets spec.gateway.allowPlaintext, e.g. because a mesh
	// does mTLS).
	// +kubebuilder:default=Enabled
	// +optional
	Mode TLSMode `json:"mode,omitempty"`
}

// GatewaySpec configures the MCP gateway sidecar.
type GatewaySpec struct {
	// Auth configures token validation.
	Auth GatewayAuth `json:"auth"`

	// Scopes grant tools: a token carrying the scope may list and call the tools. Tools no scope
	// grants are hidden from everyone.
	// +kubebuilder:validation:MaxItems=64
	// +listType=map
	// +listMapKey=scope
	// +optional
	Scopes []ScopeGrant `json:"scopes,omitempty"`

	// DestructiveTools need human approval; without it they are refused.
	// +kubebuilder:validation:MaxItems=256
	// +kubebuilder:validation:items:MaxLength=128
	// +optional
	DestructiveTools []string `json:"destructiveTools,omitempty"`

	// PrivateDataTools read private data. After one of them is called in a session, calls to
	// ExternalWriteTools need a person's approval (the read-private-then-exfiltrate chain).
	// +kubebuilder:validation:MaxItems=256
	// +kubebuilder:validation:items:MaxLength=128
	// +optional
	PrivateDataTools []string `json:"privateDataTools,omitempty"`

	// ExternalWriteTools write to destinations outside the cluster (send mail, post, push).
	// +kubebuilder:validation:MaxItems=256
	// +kubebuilder:validation:items:MaxLength=128
	// +optional
	ExternalWriteTools []string `json:"externalWriteTools,omitempty"`

	// PinnedTools are approved tool definition hashes (tool name to "sha256:<hex>"); tools without an
	// entry are pinned on first sight. A tool whose definition changes is hidden and refused until its
	// new hash (status.tools[].observedHash, after review) is approved here.
	// +kubebuilder:validation:MaxProperties=512
	// +kubebuilder:validation:XValidation:rule="self.all(k, size(k) <= 128 && size(self[k]) <= 71)",message="spec.gateway.pinnedTools: each key is a tool name of at most 128 characters and each value a hash, \"sha256:\" and 64 hex digits (copy status.tools[].observedHash)"
	// +optional
	PinnedTools map[string]string `json:"pinnedTools,omitempty"`

	// BlockSecretsInArguments refuses a tools/call whose arguments carry a secret the gateway's
	// redaction rules find (cloud keys, tokens, private keys), so that a model steered by injected text
	// cannot post a credential out through a tool. The refusal is audited with the rule that matched.
	// +optional
	BlockSecretsInArguments bool `json:"blockSecretsInArguments,omitempty"`

	// AuditKeySecretName names a Secret in this namespace whose "key" entry (at least 32 random bytes)
	// MACs every audit record (HMAC-SHA256), so that a log rewritten with recomputed hashes is detected
	// by whoever holds the key. It is mounted into the gateway container only, never the server's (a
	// stdio server too runs in a container of its own). Create it with
	// `kubectl create secret generic files-audit --from-literal=key=$(openssl rand -hex 32)`.
	// +kubebuilder:validation:MaxLength=253
	// +optional
	AuditKeySecretName string `json:"auditKeySecretName,omitempty"`

	// TLS configures how the gateway serves clients. By default it serves HTTPS with a certificate for
	// the server's Service names, issued by the operator's CA (or by cert-manager where the operator is
	// configured with an issuer), and status.endpoint is https://.
	// +optional
	TLS GatewayTLS `json:"tls,omitempty"`

	// RatePerSecond limits requests per principal (default 10, burst twice that).
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=10000
	// +optional
	RatePerSecond *int32 `json:"ratePerSecond,omitempty"`

	// MaxBodyBytes caps a request body (default 1 MiB).
	// +kubebuilder:validation:Minimum=1024
	// +kubebuilder:validation:Maximum=67108864
	// +optional
	MaxBodyBytes *int64 `json:"maxBodyBytes,omitempty"`

	// AllowedOrigins are browser origins allowed to call; other Origins are refused.
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MaxLength=256
	// +optional
	AllowedOrigins []string `json:"allowedOrigins,omitempty"`
}

// GatewayAuth configures the OAuth 2.1 resource server.
// +kubebuilder:validation:XValidation:rule="self.disabled || has(self.issuer)",message="gateway.auth.issuer is required unless gateway.auth.disabled is true (which a platform policy may forbid)"
type GatewayAuth struct {
	// Disabled turns authentication off. Every request then reaches the server unauthenticated. In a
	// namespace an MCPServerPolicy governs it is refused unless every governing policy sets
	// gateway.allowAuthDisabled; Kyverno policy mcp-gateway-auth-on forbids it everywhere.
	// +optional
	Disabled bool `json:"disabled,omitempty"`
	// Issuer is the authorization server (tokens' iss), e.g. https://auth.example.com.
	// +kubebuilder:validation:Pattern=`^https?://`
	// +kubebuilder:validation:MaxLength=2048
	// +optional
	Issuer string `json:"issuer,omitempty"`
	// JWKSURL is where the issuer's signing keys are (default: the jwks_uri of the issuer's metadata,
	// found by OpenID Connect discovery, then RFC 8414; the operator fetches the keys and delivers them
	// to the gateway). Never
	// a loopback, link-local or localhost address or the server's own Service; where a policy lists
	// allowed issuers, it must be absent or equal to the jwks_uri the issuer publishes.
	// +kubebuilder:validation:MaxLength=2048
	// +optional
	JWKSURL string `json:"jwksURL,omitempty"`
	// Resource is the canonical URI clients use for this server; tokens must carry it as audience
	// (default: status.endpoint).
	// +kubebuilder:validation:MaxLength=2048
	// +optional
	Resource string `json:"resource,omitempty"`
}

// ScopeGrant grants tools to an OAuth scope.
type ScopeGrant struct {
	// Scope is the OAuth scope, e.g. files:read.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=128
	Scope string `json:"scope"`
	// Tools are the tool names the scope grants.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=128
	// +kubebuilder:validation:items:MaxLength=128
	Tools []string `json:"tools"`
}

// EnvVar is an environment variable of the server container: a literal value, or a reference to a key of a
// Secret or ConfigMap in the MCPServer's namespace.
// +kubebuilder:validation:XValidation:rule="has(self.value) != has(self.valueFrom)",message="env: set exactly one of value or valueFrom"
// +kubebuilder:validation:XValidation:rule="!has(self.value) || !self.name.matches('(?i)(passw|secret|token|api_?key|apikey|private_?key|credential|auth)')",message="env: a literal value for a variable whose name looks like a credential is refused; put it in a Secret and use valueFrom.secretKeyRef"
// +kubebuilder:validation:XValidation:rule="!has(self.value) || !self.value.matches('(AKIA|ASIA)[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,}|xox[abposr]-[A-Za-z0-9-]{10,}|sk-[A-Za-z0-9_-]{20,}|AIza[0-9A-Za-z_-]{35}|-----BEGIN [A-Z ]*PRIVATE KEY-----|eyJ[A-Za-z0-9_-]{8,}[.][A-Za-z0-9_-]{8,}[.][A-Za-z0-9_-]{8,}')",message="env: this literal value looks like a credential (cloud key, token, private key or JWT); put it in a Secret and use valueFrom.secretKeyRef"
type EnvVar struct {
	// Name of the environment variable.
	// +kubebuilder:validation:Pattern=`^[A-Za-z_][A-Za-z0-9_]*$`
	// +kubebuilder:validation:MaxLength=256
	Name string `json:"name"`

	// Value is a literal value. Credentials are refused here; use valueFrom.secretKeyRef.
	// +kubebuilder:validation:MaxLength=2048
	// +optional
	Value *string `json:"value,omitempty"`

	// ValueFrom takes the value from a key of a Secret or ConfigMap.
	// +optional
	ValueFrom *EnvVarSource `json:"valueFrom,omitempty"`
}

// EnvVarSource is a reference to a key of a Secret or a ConfigMap in the MCPServer's namespace.
// +kubebuilder:validation:XValidation:rule="has(self.secretKeyRef) != has(self.configMapKeyRef)",message="env.valueFrom: set exactly one of secretKeyRef or configMapKeyRef"
type EnvVarSource struct {
	// SecretKeyRef selects a key of a Secret.
	// +optional
	SecretKeyRef *corev1.SecretKeySelector `json:"secretKeyRef,omitempty"`

	// ConfigMapKeyRef selects a key of a ConfigMap.
	// +optional
	ConfigMapKeyRef *corev1.ConfigMapKeySelector `json:"configMapKeyRef,omitempty"`
}

// ClientSelector selects pods allowed to connect to the server, as a NetworkPolicy peer does: with only a
// podSelector, pods in the MCPServer's namespace; with only a namespaceSelector, every pod in those
// namespaces; with both, the selected pods in the selected namespaces.
// +kubebuilder:validation:XValidation:rule="has(self.namespaceSelector) || has(self.podSelector)",message="clients: set namespaceSelector, podSelector, or both"
type ClientSelector struct {
	// NamespaceSelector selects namespaces by label. An empty selector ({}) selects every namespace.
	// +optional
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`

	// PodSelector selects pods by label. An empty selector ({}) selects every pod.
	// +optional
	PodSelector *metav1.LabelSelector `json:"podSelector,omitempty"`
}

// EgressRule allows connections to one destination, given by CIDR or by DNS name, on the listed ports.
// +kubebuilder:validation:XValidation:rule="has(self.cidr) != has(self.fqdn)",message="egress: set exactly one of cidr or fqdn"
type EgressRule struct {
	// CIDR is an IPv4 or IPv6 network, e.g. 140.82.112.0/20. Private, loopback and link-local ranges
	// are refused; a CIDR containing them gets them as exceptions.
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:XValidation:rule="isCIDR(self)",message="egress.cidr must be a CIDR such as 140.82.112.0/20 or 2606:50c0::/32"
	// +optional
	CIDR *string `json:"cidr,omitempty"`

	// FQDN is a DNS name, e.g. api.github.com, or a wildcard such as *.github.com. DNS-name egress is
	// enforced only where the cluster runs Cilium; elsewhere the MCPServer reports condition
	// EgressEnforced=False and nothing is opened for the entry.
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^(\*\.)?([a-z0-9]([-a-z0-9]*[a-z0-9])?\.)+[a-z]{2,63}$`
	// +optional
	FQDN *string `json:"fqdn,omitempty"`

	// Ports are the destination ports allowed. At least one is required: opening every port of a
	// destination is almost never what a tool needs.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	Ports []EgressPort `json:"ports"`
}

// EgressPort is a destination port and protocol.
type EgressPort struct {
	// Port number.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Port int32 `json:"port"`

	// Protocol is TCP or UDP.
	// +kubebuilder:default=TCP
	// +optional
	Protocol Protocol `json:"protocol,omitempty"`
}

// MCPServerStatus is the observed state of an MCPServer, following the kstatus conventions: Ready,
// Reconciling and Stalled conditions and observedGeneration.
type MCPServerStatus struct {
	// ObservedGeneration is the metadata.generation this status describes; it is set only once that
	// generation has been fully reconciled.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Conditions: Ready (all children applied, the Deployment rolled out and available, and, where the
	// operator reads the gateways' status, the server answered the gateway's MCP initialize and
	// tools/list: reason ServerNotSpeakingMCP quotes what the gateway saw when it did not),
	// Reconciling (work in progress), Stalled (a spec error the operator cannot fix by retrying; the
	// message says which field and how to fix it), EgressEnforced (every egress entry is enforced).
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// Endpoint is the in-cluster URL of the MCP endpoint.
	// +optional
	Endpoint string `json:"endpoint,omitempty"`

	// ReadyReplicas is the number of server pods that are ready.
	// +optional
	ReadyReplicas int32 `json:"readyReplicas,omitempty"`

	// Image is what verification established about spec.image under the MCPServerPolicies that govern
	// the namespace (empty when no policy asks for signatures).
	// +optional
	Image *VerifiedImage `json:"image,omitempty"`

	// Tools are the tool definitions the gateways of ready pods report, with their pin state. A tool
	// whose status is "changed" is hidden and refused; approve it by copying observedHash into
	// spec.gateway.pinnedTools (see the ToolsPinned condition).
	// +kubebuilder:validation:MaxItems=512
	// +listType=map
	// +listMapKey=name
	// +optional
	Tools []ToolPin `json:"tools,omitempty"`

	// ServerInfo is what the server said about itself when the gateway initialized its MCP session with
	// it (the initialize result's serverInfo and protocolVersion), as the gateways of the server's pods
	// report it. Absent until a gateway has completed initialize and tools/list, or when the operator
	// does not read the gateways' status.
	// +optional
	ServerInfo *ServerInfo `json:"serverInfo,omitempty"`

	// ToolCount is how many tools the server listed to the gateway on its last tools/list (every
	// page), before pinning and authorization: the tools a client may call are a subset.
	// +optional
	ToolCount *int32 `json:"toolCount,omitempty"`

	// LastGood is the spec of the last generation that reconciled without a stall. While a later
	// generation is stalled, the children built from it stay enforced (drift reverted, the sandbox, the
	// NetworkPolicies, the gateway configuration), also after the operator restarts; the operator checks
	// it against today's policies again before using it, and fences the server off when it no longer
	// passes. Written by the operator.
	// +optional
	LastGood *LastGoodSpec `json:"lastGood,omitempty"`
}

// ServerInfo identifies the MCP server behind the gateway, as it answered initialize. The values come
// from the server and are shown as reported (cut to 128 characters); they prove nothing about the image.
type ServerInfo struct {
	// Name is the server's implementation name (serverInfo.name).
	// +kubebuilder:validation:MaxLength=256
	// +optional
	Name string `json:"name,omitempty"`
	// Version is the server's implementation version (serverInfo.version).
	// +kubebuilder:validation:MaxLength=256
	// +optional
	Version string `json:"version,omitempty"`
	// ProtocolVersion is the MCP protocol revision the server chose, e.g. 2025-06-18.
	// +kubebuilder:validation:MaxLength=256
	// +optional
	ProtocolVersion string `json:"protocolVersion,omitempty"`
}

// LastGoodSpec is a spec that reconciled without a stall.
type LastGoodSpec struct {
	// Generation is the metadata.generation that had this spec.
	Generation int64 `json:"generation"`
	// Spec is that generation's spec.
	// +kubebuilder:pruning:PreserveUnknownFields
	// +kubebuilder:validation:Type=object
	Spec runtime.RawExtension `json:"spec"`
}

// ToolPin is the pin state of one tool as the gateway reports it.
type ToolPin struct {
	// Name is the tool name.
	Name string `json:"name"`
	// Status is pinned (matches the hash seen first), approved (matches spec.gateway.pinnedTools) or
	// changed (differs from its pin: hidden and refused until approved).
	Status string `json:"status"`
	// PinnedHash is the hash the tool must match.
	PinnedHash string `json:"pinnedHash"`
	// ObservedHash is the hash of the definition the server now serves; when it differs from
	// pinnedHash, it is the value to approve after reviewing the new definition.
	// +optional
	ObservedHash string `json:"observedHash,omitempty"`
}

// VerifiedImage is the outcome of verifying an image's signatures and attestations.
type VerifiedImage struct {
	// Digest is the verified manifest digest.
	Digest string `json:"digest"`
	// Signers are the authorities whose signatures verified, as policy/authority.
	// +optional
	Signers []string `json:"signers,omitempty"`
	// Attestations are the verified attestation predicate types.
	// +optional
	Attestations []string `json:"attestations,omitempty"`
}

// MCPServer runs a Model Context Protocol server sandboxed by construction: a hardened Deployment, a
// ServiceAccount without API credentials, a Service, and default-deny NetworkPolicies that allow only
// DNS, the listed clients, and the egress allow-list.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=mcps,categories=mcp
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Image",type=string,JSONPath=`.spec.image`,priority=1
// +kubebuilder:printcolumn:name="Verified",type=string,JSONPath=`.status.conditions[?(@.type=="Verified")].status`
// +kubebuilder:printcolumn:name="Endpoint",type=string,JSONPath=`.status.endpoint`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="!self.metadata.name.endsWith('-peers')",message="metadata.name must not end in -peers: the suffix names the headless Service of another server's replicas (server <name> with spec.replicas > 1 owns Service <name>-peers), so the two would claim one Service; rename the server, e.g. to end in -peer or -p"
type MCPServer struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec says what runs and what it may reach.
	Spec MCPServerSpec `json:"spec,omitempty"`

	// Status is the observed state, written by the operator.
	// +optional
	Status MCPServerStatus `json:"status,omitempty"`
}

// MCPServerList is a list of MCPServers.
// +kubebuilder:object:root=true
type MCPServerList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	// Items are the MCPServers.
	Items []MCPServer `json:"items"`
}

func init() {
	SchemeBuilder.Register(func(s *runtime.Scheme) error {
		s.AddKnownTypes(GroupVersion, &MCPServer{}, &MCPServerList{})
		return nil
	})
}

// Condition types an MCPServer reports.
const (
	// ConditionReady is True when every child object is applied and the Deployment is rolled out and
	// available.
	ConditionReady = "Ready"
	// ConditionReconciling is True while the operator is working towards the desired state.
	ConditionReconciling = "Reconciling"
	// ConditionStalled is True when the spec cannot be reconciled until it changes; the message names
	// the field and the fix.
	ConditionStalled = "Stalled"
	// ConditionEgressEnforced is False when an egress entry cannot be enforced on this cluster (for
	// example a DNS name without Cilium); such entries open nothing.
	ConditionEgressEnforced = "EgressEnforced"
	// ConditionVerified is True when the image's signatures and attestations satisfy every policy that
	// governs the namespace (status.image says what was verified), False when they do not.
	ConditionVerified = "Verified"
	// ConditionToolsPinned is True when every tool the server serves matches its pin, and False when a
	// tool's name, description or schemas changed after it was pinned (reason ToolDefinitionChanged: the
	// tool is hidden and refused until a person approves the new hash in spec.gateway.pinnedTools).
	ConditionToolsPinned = "ToolsPinned"
	// ConditionIssuerKeysDelivered is True when the operator has fetched the token issuer's signing keys
	// and delivered them to the gateway (the ConfigMap's jwks.json), so the pod needs no egress to the
	// issuer. False while they cannot be fetched (reason IssuerKeysUnavailable; the message has the
	// error): Ready is then False too, as the gateway refuses every token. Absent when authentication
	// is disabled.
	ConditionIssuerKeysDelivered = "IssuerKeysDelivered"
	// ConditionSessionsKept says how MCP sessions fare across the server's replicas. True: every request
	// of a session reaches the replica that holds it, whichever replica the Service sends it to, and
	// every principal's sessions are on one replica, its home (reason SingleReplica, or
	// RoutedToPrincipalHome with several replicas: the home is picked among the ready pods of the
	// headless Service <name>-peers), so the tool-chain rule and the rate limit count once per
	// principal; a replica's loss costs its clients one re-initialize, and the chain state and rate
	// bucket of the principals homed there. False (reason NotRelayedWithoutTLS) with several replicas and
	// spec.gateway.tls.mode Disabled: the replicas do not relay sessions to each other without mutual
	// TLS, so a session lives on one replica, which the Service keeps a client on by its IP address.
	// It is a warning: Ready does not wait on it.
	ConditionSessionsKept = "SessionsKept"
)
