package webhooks

import (
	"context"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
)

// ImageVerifier checks an image's cosign signatures and attestations against the policies that govern it.
// Implementations must bound every registry call by ctx and fail closed: an unreachable registry is a
// denial.
type ImageVerifier interface {
	// VerifyImage returns what was verified, or an error whose message is the denial a person reads
	// (which image, which policy and authority, which check failed).
	VerifyImage(ctx context.Context, req ImageRequest) (*ImageVerdict, error)
}

// ImageRequest is one image to verify.
type ImageRequest struct {
	// Image is the reference as written in the object.
	Image string
	// Namespace is the workload's namespace; pull secrets are read there.
	Namespace string
	// PullSecrets are the workload's imagePullSecrets (and its service account's).
	PullSecrets []corev1.LocalObjectReference
	// Policies are the MCPServerPolicies that govern the namespace; each must be satisfied.
	Policies []mcpv1alpha1.MCPServerPolicy
}

// ImageVerdict is what a successful verification established.
type ImageVerdict struct {
	// Digest is the verified manifest digest.
	Digest string
	// Signers are the identities whose signatures verified (key authority names or certificate
	// subject and issuer).
	Signers []string
	// Attestations are the predicate types verified.
	Attestations []string
}

// NeedsVerification reports whether any policy asks for signatures or attestations.
func NeedsVerification(policies []mcpv1alpha1.MCPServerPolicy) bool {
	for _, p := range policies {
		if len(p.Spec.Authorities) > 0 || len(p.Spec.Attestations) > 0 {
			return true
		}
	}
	return false
}

// digestPinned returns a denial for an image not pinned by digest, telling how to pin it.
func digestPinned(image string) error {
	at := strings.LastIndex(image, "@")
	if at < 0 || !strings.HasPrefix(image[at+1:], "sha256:") || len(image[at+len("@sha256:"):]) != 64 || strings.Trim(image[at+len("@sha256:"):], "0123456789abcdef") != "" {
		base := image
		if at >= 0 {
			base = image[:at]
		}
		if slash, colon := strings.LastIndex(base, "/"), strings.LastIndex(base, ":"); colon > slash {
			base = base[:colon]
		}
		return fmt.Errorf("image %s is not pinned by digest; use %s@sha256:<digest> (e.g. from `crane digest %s`)", image, base, image)
	}
	return nil
}
