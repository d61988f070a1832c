package webhooks

import (
	"context"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
	"github.com/mcp-warden/mcp-warden/policy/guardrails"
)

// +kubebuilder:webhook:path=/validate-mcp-warden-dev-v1alpha1-mcpserverpolicy,mutating=false,failurePolicy=fail,sideEffects=None,groups=mcp.warden.dev,resources=mcpserverpolicies,verbs=create;update,versions=v1alpha1,name=vmcpserverpolicy.mcp.warden.dev,admissionReviewVersions=v1,timeoutSeconds=10

// PolicyValidator refuses an MCPServerPolicy with an unusable field (a registry entry that is not a
// registry or path, an FQDN wildcard that matches everything, a bad regular expression, CIDR, issuer,
// key or root), naming each field, so a policy never fails only when it denies. It warns about a
// policy with authorities but no allowedRegistries.
type PolicyValidator struct{}

var _ admission.Validator[*mcpv1alpha1.MCPServerPolicy] = PolicyValidator{}

// SetupWithManager registers the webhook.
func (v PolicyValidator) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewWebhookManagedBy(mgr, &mcpv1alpha1.MCPServerPolicy{}).WithValidator(v).Complete()
}

// ValidateCreate checks a new policy.
func (PolicyValidator) ValidateCreate(_ context.Context, p *mcpv1alpha1.MCPServerPolicy) (admission.Warnings, error) {
	return validatePolicy(p)
}

// ValidateUpdate checks a changed policy; a metadata-only update of a policy admitted before these
// checks existed passes (its status says what is wrong).
func (PolicyValidator) ValidateUpdate(_ context.Context, old, p *mcpv1alpha1.MCPServerPolicy) (admission.Warnings, error) {
	if old.Generation == p.Generation && old.Generation != 0 {
		return nil, nil
	}
	return validatePolicy(p)
}

// ValidateDelete allows deletion.
func (PolicyValidator) ValidateDelete(context.Context, *mcpv1alpha1.MCPServerPolicy) (admission.Warnings, error) {
	return nil, nil
}

func validatePolicy(p *mcpv1alpha1.MCPServerPolicy) (admission.Warnings, error) {
	warnings := admission.Warnings(guardrails.PolicyWarnings(p))
	if errs := guardrails.ValidatePolicy(p); len(errs) > 0 {
		return warnings, apierrors.NewInvalid(mcpv1alpha1.GroupVersion.WithKind("MCPServerPolicy").GroupKind(), p.Name, errs)
	}
	return warnings, nil
}
