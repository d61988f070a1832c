package webhooks

import (
	"context"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/validation/field"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
	"github.com/mcp-warden/mcp-warden/policy/gatewayconfig"
	"github.com/mcp-warden/mcp-warden/policy/guardrails"
	"github.com/mcp-warden/mcp-warden/supplychain/imageverify"
)

// +kubebuilder:webhook:path=/validate-mcp-warden-dev-v1alpha1-mcpserver,mutating=false,failurePolicy=fail,sideEffects=None,groups=mcp.warden.dev,resources=mcpservers,verbs=create;update,versions=v1alpha1,name=vmcpserver.mcp.warden.dev,admissionReviewVersions=v1,timeoutSeconds=10

// MCPServerValidator admits an MCPServer only if every MCPServerPolicy governing its namespace allows
// it: image registry, signatures and attestations, and egress ceilings.
type MCPServerValidator struct {
	// Reader reads policies and namespaces (the manager's cache).
	Reader client.Reader
	// Verifier checks signatures and attestations; nil denies any image a policy requires to be signed.
	Verifier imageverify.ImageVerifier
	// Timeout bounds the whole admission (default DefaultVerifyTimeout); keep it below the webhook's
	// timeoutSeconds.
	Timeout time.Duration
	// Discovery confirms a jwksURL against the issuer's metadata where a policy lists allowed issuers
	// (nil: such a jwksURL is refused).
	Discovery guardrails.IssuerDiscovery
}

var _ admission.Validator[*mcpv1alpha1.MCPServer] = &MCPServerValidator{}

// SetupWithManager registers the webhook.
func (v *MCPServerValidator) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewWebhookManagedBy(mgr, &mcpv1alpha1.MCPServer{}).WithValidator(v).Complete()
}

// ValidateCreate checks a new MCPServer.
func (v *MCPServerValidator) ValidateCreate(ctx context.Context, s *mcpv1alpha1.MCPServer) (admission.Warnings, error) {
	return nil, v.validate(ctx, s)
}

// ValidateUpdate checks a changed MCPServer; unchanged specs (status or metadata updates) pass.
func (v *MCPServerValidator) ValidateUpdate(ctx context.Context, old, s *mcpv1alpha1.MCPServer) (admission.Warnings, error) {
	if old.Generation == s.Generation && old.Generation != 0 {
		return nil, nil
	}
	return nil, v.validate(ctx, s)
}

// ValidateDelete allows deletion.
func (v *MCPServerValidator) ValidateDelete(context.Context, *mcpv1alpha1.MCPServer) (admission.Warnings, error) {
	return nil, nil
}

func (v *MCPServerValidator) validate(ctx context.Context, s *mcpv1alpha1.MCPServer) error {
	ctx, cancel := admissionContext(ctx, v.Timeout)
	defer cancel()
	policies, err := guardrails.Matching(ctx, v.Reader, s.Namespace)
	if err != nil {
		return apierrors.NewInternalError(err)
	}
	imagePath := field.NewPath("spec", "image")
	var errs field.ErrorList
	if err := digestPinned(s.Spec.Image); err != nil {
		errs = append(errs, field.Invalid(imagePath, s.Spec.Image, err.Error()))
	}
	errs = append(errs, guardrails.CheckRegistry(imagePath, s.Spec.Image, policies)...)
	errs = append(errs, guardrails.CheckEgress(&s.Spec, policies)...)
	errs = append(errs, guardrails.CheckGateway(&s.Spec, policies)...)
	errs = append(errs, guardrails.CheckSecretRefs(&s.Spec, policies)...)
	// What the gateway would refuse at start is refused here, so an admitted spec never stalls.
	errs = append(errs, gatewayconfig.Check(s)...)
	if len(errs) == 0 {
		jwks, err := guardrails.CheckIssuerJWKS(ctx, s, policies, v.Discovery)
		if err != nil {
			// Fail closed: a jwksURL that cannot be confirmed is not admitted.
			jwks = append(jwks, field.Forbidden(field.NewPath("spec", "gateway", "auth", "jwksURL"), err.Error()))
		}
		errs = append(errs, jwks...)
	}
	if len(errs) == 0 && imageverify.NeedsVerification(policies) {
		if err := v.verify(ctx, imageverify.ImageRequest{Image: s.Spec.Image, Namespace: s.Namespace, Policies: policies}); err != nil {
			errs = append(errs, field.Forbidden(imagePath, err.Error()))
		}
	}
	if len(errs) > 0 {
		return apierrors.NewInvalid(mcpv1alpha1.GroupVersion.WithKind("MCPServer").GroupKind(), s.Name, errs)
	}
	return nil
}

func (v *MCPServerValidator) verify(ctx context.Context, req imageverify.ImageRequest) error {
	return verifyImage(ctx, v.Verifier, req)
}

// DefaultVerifyTimeout bounds one whole admission (every policy, every image) unless configured: below
// the webhooks' timeoutSeconds (10), so the user reads the denial, not the API server's timeout.
const DefaultVerifyTimeout = 8 * time.Second

// admissionContext is the one deadline of an admission: the configured timeout, or an earlier deadline
// the caller already has.
func admissionContext(ctx context.Context, timeout time.Duration) (context.Context, context.CancelFunc) {
	if timeout <= 0 {
		timeout = DefaultVerifyTimeout
	}
	return context.WithTimeout(ctx, timeout)
}

// verifyImage runs the verifier under the admission's deadline, failing closed without a verifier.
func verifyImage(ctx context.Context, verifier imageverify.ImageVerifier, req imageverify.ImageRequest) error {
	if verifier == nil {
		return fmt.Errorf("image %s must be verified against MCPServerPolicy signatures, but the operator runs without an image verifier", req.Image)
	}
	_, err := verifier.VerifyImage(ctx, req)
	return err
}
