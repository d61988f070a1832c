// Package webhooks holds the admission webhooks for MCPServer and for pods and pod controllers in
// namespaces that opt in: images must be pinned by digest, signed and attested by a trusted authority,
// and within the platform's MCPServerPolicy guardrails.
package webhooks

// Certificate rotation keeps the serving certificate in a Secret in the operator's namespace and the CA
// bundle of the webhook configuration current. The manager reads and writes Secrets only in its own
// namespace (a Role: signing keys and registry credentials that policies name live there too), and
// changes only its own webhook configuration (listing them is how the rotator watches it).
// +kubebuilder:rbac:groups="",namespace=system,resources=secrets,verbs=get;list;watch;create;update;patch
// +kubebuilder:rbac:groups=admissionregistration.k8s.io,resources=validatingwebhookconfigurations,verbs=list;watch
// +kubebuilder:rbac:groups=admissionregistration.k8s.io,resources=validatingwebhookconfigurations,verbs=get;update;patch,resourceNames=mcp-warden-validating-webhook-configuration
