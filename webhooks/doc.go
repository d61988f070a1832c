// Package webhooks holds the admission webhooks for MCPServer and for pods and pod controllers in
// namespaces that opt in: images must be pinned by digest, signed and attested by a trusted authority,
// and within the platform's MCPServerPolicy guardrails.
package webhooks
