package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// MCPServerPolicySpec is a platform team's guardrail for the MCP servers in the namespaces it selects:
// which registries images may come from, who must have signed them, which attestations they must carry,
// and how far their egress may reach. Several policies may select a namespace; all of them apply.
type MCPServerPolicySpec struct {
	// NamespaceSelector selects the namespaces the policy governs. An empty selector ({}) selects every
	// namespace.
	NamespaceSelector metav1.LabelSelector `json:"namespaceSelector"`

	// AllowedRegistries are the registries, optionally with a repository path, images must come from,
	// e.g. "ghcr.io/acme" or "registry.internal.example:5000/mcp". They match on reference components at
	// path boundaries: "ghcr.io/acme" admits ghcr.io/acme/files, not ghcr.io/acme-evil/files. Empty
	// allows any registry. Image verification contacts a registry at a loopback, private or link-local
	// address, or over plain HTTP, only if it is named here.
	// +kubebuilder:validation:MaxItems=64
	// +optional
	AllowedRegistries []string `json:"allowedRegistries,omitempty"`

	// Authorities are the signers an image must have a valid cosign signature from (any one of them).
	// Empty means the policy does not require signatures.
	// +kubebuilder:validation:MaxItems=16
	// +listType=map
	// +listMapKey=name
	// +optional
	Authorities []Authority `json:"authorities,omitempty"`

	// Attestations are in-toto attestations an image must carry, each signed by one of the policy's
	// authorities.
	// +kubebuilder:validation:MaxItems=16
	// +listType=map
	// +listMapKey=name
	// +optional
	Attestations []AttestationRequirement `json:"attestations,omitempty"`

	// Egress is the ceiling on what MCPServer egress allow-lists may contain.
	// +optional
	Egress EgressCeiling `json:"egress,omitempty"`

	// Gateway bounds the MCP gateway settings of MCPServers: whether authentication may be turned off,
	// and which authorization servers tokens may come from.
	// +optional
	Gateway GatewayCeiling `json:"gateway,omitempty"`

	// AllowedSecretNames, when set, are the only Secrets MCPServers may expose to their server through
	// env[].valueFrom.secretKeyRef: exact names, or prefixes ending in "*" (e.g. "mcp-*"). Without it any
	// Secret of the namespace may be referenced, so a user who may create MCPServers but not read
	// Secrets could hand any of them to a server. Matching is by name so the operator needs no access to
	// tenants' Secrets.
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=253
	// +optional
	AllowedSecretNames []string `json:"allowedSecretNames,omitempty"`
	// ViolationAction is what happens to a running MCPServer that no longer complies with the policy (the
	// policy tightened after the server was admitted, or the server was admitted while the webhook was
	// unavailable). ScaleToZero (the default) scales its Deployment to zero replicas until the spec
	// complies; Report only reports it (Stalled=True and Ready=False with reason PolicyViolation naming
	// the field and the policy, and an event) while the server keeps running with its last good
	// configuration. Where several policies govern a namespace, Report applies only if all say Report.
	// +kubebuilder:default=ScaleToZero
	// +optional
	ViolationAction ViolationAction `json:"violationAction,omitempty"`
	// RegistryCredentials name Secrets in the operator's namespace, of type
	// kubernetes.io/dockerconfigjson (as `kubectl create secret docker-registry` makes them), whose
	// credentials are used to read images, signatures and attestations from private registries during
	// verification. Without them registries are read anonymously, and a private registry's images are
	// refused as unreachable. Give the operator read-only credentials.
	// +kubebuilder:validation:MaxItems=8
	// +optional
	RegistryCredentials []corev1.LocalObjectReference `json:"registryCredentials,omitempty"`
}

// ViolationAction is ScaleToZero or Report.
// +kubebuilder:validation:Enum=ScaleToZero;Report
type ViolationAction string

const (
	// ViolationScaleToZero scales a non-compliant server to zero replicas.
	ViolationScaleToZero ViolationAction = "ScaleToZero"
	// ViolationReport only reports a non-compliant server.
	ViolationReport ViolationAction = "Report"
)

// Authority is a trusted signer: a public key or a keyless (certificate) identity.
// +kubebuilder:validation:XValidation:rule="has(self.key) != has(self.keyless)",message="authority: set exactly one of key or keyless"
type Authority struct {
	// Name identifies the authority in denials and status, e.g. "release-key".
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	// +kubebuilder:validation:MaxLength=63
	Name string `json:"name"`

	// Key is a public key (ECDSA P-256/P-384, Ed25519 or RSA).
	// +optional
	Key *KeyAuthority `json:"key,omitempty"`

	// Keyless is a certificate identity issued by a Fulcio-style CA.
	// +optional
	Keyless *KeylessAuthority `json:"keyless,omitempty"`
}

// KeyAuthority is a public key, inline or in a Secret.
// +kubebuilder:validation:XValidation:rule="has(self.data) != has(self.secretRef)",message="key: set exactly one of data or secretRef"
type KeyAuthority struct {
	// Data is the PEM-encoded public key.
	// +kubebuilder:validation:MaxLength=8192
	// +optional
	Data string `json:"data,omitempty"`

	// SecretRef names a key of a Secret holding the PEM-encoded public key, in the operator's namespace.
	// +optional
	SecretRef *corev1.SecretKeySelector `json:"secretRef,omitempty"`
}

// KeylessAuthority trusts signatures whose certificate chains to Roots and names the given issuer and
// subject (the OIDC identity that signed).
// +kubebuilder:validation:XValidation:rule="has(self.issuer) != has(self.issuerRegExp)",message="keyless: set exactly one of issuer or issuerRegExp"
// +kubebuilder:validation:XValidation:rule="has(self.subject) != has(self.subjectRegExp)",message="keyless: set exactly one of subject or subjectRegExp"
type KeylessAuthority struct {
	// Issuer is the exact OIDC issuer in the certificate, e.g. https://token.actions.githubusercontent.com.
	// +optional
	Issuer string `json:"issuer,omitempty"`
	// IssuerRegExp matches the OIDC issuer.
	// +optional
	IssuerRegExp string `json:"issuerRegExp,omitempty"`
	// Subject is the exact certificate subject (email or URI SAN).
	// +optional
	Subject string `json:"subject,omitempty"`
	// SubjectRegExp matches the certificate subject.
	// +optional
	SubjectRegExp string `json:"subjectRegExp,omitempty"`

	// Roots is the PEM bundle of the CA root and intermediate certificates to verify against (for
	// example Fulcio's, or a private CA's for an air-gapped cluster).
	// +kubebuilder:validation:MinLength=1
	Roots string `json:"roots"`

	// RequireSCT requires a certificate transparency SCT in the certificate. Turn off only for a private
	// CA without a CT log.
	// +kubebuilder:default=true
	// +optional
	RequireSCT *bool `json:"requireSCT,omitempty"`

	// RequireTlog requires a transparency-log inclusion proof bundled with the signature. Turn off for
	// air-gapped clusters that verify offline.
	// +kubebuilder:default=true
	// +optional
	RequireTlog *bool `json:"requireTlog,omitempty"`

	// CTLogPublicKeys is the PEM bundle of CT log keys used to check SCTs.
	// +optional
	CTLogPublicKeys string `json:"ctLogPublicKeys,omitempty"`

	// RekorPublicKeys is the PEM bundle of transparency-log keys used to check inclusion proofs.
	// +optional
	RekorPublicKeys string `json:"rekorPublicKeys,omitempty"`
}

// AttestationRequirement is an attestation an image must carry.
type AttestationRequirement struct {
	// Name identifies the requirement in denials, e.g. "provenance".
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	// +kubebuilder:validation:MaxLength=63
	Name string `json:"name"`

	// PredicateType is the in-toto predicate type, e.g. https://slsa.dev/provenance/v1,
	// https://spdx.dev/Document or https://cyclonedx.org/bom.
	// +kubebuilder:validation:MinLength=1
	PredicateType string `json:"predicateType"`

	// Authorities are the names of the policy's authorities that may sign the attestation; empty means
	// any of them.
	// +optional
	Authorities []string `json:"authorities,omitempty"`
}

// AddressClass is a class of protected address ranges an MCPServer egress allow-list may open only when a
// policy permits it.
// +kubebuilder:validation:Enum=private;loopback;link-local;unspecified;reserved
type AddressClass string

// EgressCeiling bounds MCPServer egress allow-lists.
type EgressCeiling struct {
	// AllowedAddressClasses are protected range classes allow-lists may open: "private" (10/8,
	// 172.16/12, 192.168/16, 100.64/10, fc00::/7, local-use NAT64 64:ff9b:1::/48), "loopback",
	// "link-local" (includes cloud metadata 169.254.169.254 and Azure's 168.63.129.16; almost never
	// right), "unspecified" (0.0.0.0/8, IPv4-mapped IPv6), "reserved" (multicast, broadcast,
	// 240.0.0.0/4, 192.0.0.0/24, 198.18.0.0/15). Each IPv4 range is also closed as spelled through NAT64
	// (64:ff9b::/96), 6to4 (2002::/16) and IPv4-compatible IPv6 (::a.b.c.d).
	// +kubebuilder:validation:MaxItems=5
	// +optional
	AllowedAddressClasses []AddressClass `json:"allowedAddressClasses,omitempty"`

	// AllowedCIDRs, when set, are the only networks allow-list CIDRs may fall within.
	// +kubebuilder:validation:MaxItems=64
	// +optional
	AllowedCIDRs []string `json:"allowedCIDRs,omitempty"`

	// AllowedFQDNs, when set, are the only DNS names (exact, or "*.example.com" wildcards) allow-list
	// names may use. A wildcard is "*." followed by a name of two labels or more: "*", "*.com" and
	// "*example.com" are refused.
	// +kubebuilder:validation:MaxItems=64
	// +optional
	AllowedFQDNs []string `json:"allowedFQDNs,omitempty"`

	// MaxEntries caps the number of egress entries per MCPServer.
	// +kubebuilder:validation:Minimum=0
	// +optional
	MaxEntries *int32 `json:"maxEntries,omitempty"`
}

// GatewayCeiling bounds the gateway settings (spec.gateway) of the MCPServers a policy governs.
type GatewayCeiling struct {
	// AllowAuthDisabled lets MCPServers turn gateway authentication off (spec.gateway.auth.disabled:
	// true), so that every request reaches the server unauthenticated. Default false: in a namespace
	// that any policy governs, authentication can be turned off only if every governing policy allows it.
	// +optional
	AllowAuthDisabled bool `json:"allowAuthDisabled,omitempty"`

	// AllowPlaintext lets MCPServers serve their gateway over plaintext HTTP (spec.gateway.tls.mode:
	// Disabled), e.g. where a service mesh encrypts and authenticates pod-to-pod traffic with mTLS.
	// Default false: plaintext needs at least one governing policy, and every governing policy, to
	// allow it.
	// +optional
	AllowPlaintext bool `json:"allowPlaintext,omitempty"`

	// AllowedIssuers, when set, are the only OAuth authorization servers (exact issuer URLs, as in
	// spec.gateway.auth.issuer) MCPServers may accept tokens from, e.g. the organisation's identity
	// provider. Empty allows any issuer.
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:Pattern=`^https?://`
	// +optional
	AllowedIssuers []string `json:"allowedIssuers,omitempty"`
}

// MCPServerPolicyStatus is the observed state of an MCPServerPolicy.
type MCPServerPolicyStatus struct {
	// ObservedGeneration is the generation the conditions describe.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Conditions: Ready is True when the policy can be enforced, and False, with the field and the
	// reason, when it cannot (a key that does not parse, a missing Secret, a regular expression that
	// does not compile, an attestation naming an authority the policy lacks); the webhook then denies the
	// images the policy governs, failing closed. Policies that read Secrets are checked again every
	// five minutes.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// MCPServerPolicy is a cluster-wide guardrail owned by the platform team: trusted signers and required
// attestations for images, allowed registries, egress ceilings and gateway ceilings, for the namespaces it
// selects.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=mcpp,categories=mcp
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:printcolumn:name="Message",type=string,priority=1,JSONPath=`.status.conditions[?(@.type=="Ready")].message`
type MCPServerPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec is the guardrail.
	Spec MCPServerPolicySpec `json:"spec,omitempty"`

	// Status is written by the operator.
	// +optional
	Status MCPServerPolicyStatus `json:"status,omitempty"`
}

// MCPServerPolicyList is a list of MCPServerPolicies.
// +kubebuilder:object:root=true
type MCPServerPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	// Items are the policies.
	Items []MCPServerPolicy `json:"items"`
}

func init() {
	SchemeBuilder.Register(func(s *runtime.Scheme) error {
		s.AddKnownTypes(GroupVersion, &MCPServerPolicy{}, &MCPServerPolicyList{})
		return nil
	})
}
