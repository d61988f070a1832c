package controllers

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
	"github.com/mcp-warden/mcp-warden/policy/guardrails"
	"github.com/mcp-warden/mcp-warden/supplychain/imageverify"
)

// Reasons of an MCPServerPolicy's Ready condition.
const (
	// ReasonPolicyValid: the policy can be enforced.
	ReasonPolicyValid = "Valid"
	// ReasonPolicyInvalid: the policy cannot be enforced as written; the images it governs are denied.
	ReasonPolicyInvalid = "Invalid"
)

// PolicyChecker loads what enforcing a policy needs (keys, Secrets, roots) and reports the first problem.
type PolicyChecker interface {
	CheckPolicy(ctx context.Context, p mcpv1alpha1.MCPServerPolicy) error
}

// SecretRecheckInterval is how often a policy that reads Secrets is checked again, since a Secret can be
// deleted or changed without the policy changing.
const SecretRecheckInterval = 5 * time.Minute

// MCPServerPolicyReconciler reports whether each MCPServerPolicy can be enforced: condition Ready with
// the field and the fix when it cannot (a key that does not parse, a missing Secret, a regular
// expression that does not compile, an attestation naming an unknown authority), so the platform team
// sees a broken policy before MCP servers are denied by it. It writes only when the result changes.
type MCPServerPolicyReconciler struct {
	Client   client.Client
	Recorder events.EventRecorder
	// Checker loads the policy's keys and Secrets (nil: only the spec is checked).
	Checker PolicyChecker
}

// +kubebuilder:rbac:groups=mcp.warden.dev,resources=mcpserverpolicies/status,verbs=get;update;patch

// Reconcile checks one policy and records the outcome in its status.
func (r *MCPServerPolicyReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	p := &mcpv1alpha1.MCPServerPolicy{}
	if err := r.Client.Get(ctx, req.NamespacedName, p); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	cond := metav1.Condition{Type: mcpv1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: ReasonPolicyValid,
		Message: "the policy can be enforced", ObservedGeneration: p.Generation}
	if errs := guardrails.ValidatePolicy(p); len(errs) > 0 {
		cond.Status, cond.Reason, cond.Message = metav1.ConditionFalse, ReasonPolicyInvalid, errs.ToAggregate().Error()
	} else if r.Checker != nil {
		if err := r.Checker.CheckPolicy(ctx, *p); err != nil {
			cond.Status, cond.Reason, cond.Message = metav1.ConditionFalse, ReasonPolicyInvalid, err.Error()
		}
	}
	if cond.Status == metav1.ConditionFalse {
		cond.Message += "; the webhook denies every image this policy governs until it is fixed"
	}
	var result reconcile.Result
	if imageverify.UsesSecrets(*p) {
		result.RequeueAfter = SecretRecheckInterval
	}
	before := p.DeepCopy()
	was := meta.FindStatusCondition(p.Status.Conditions, mcpv1alpha1.ConditionReady)
	changed := was == nil || was.Status != cond.Status || was.Message != cond.Message
	meta.SetStatusCondition(&p.Status.Conditions, cond)
	p.Status.ObservedGeneration = p.Generation
	if equality.Semantic.DeepEqual(before.Status, p.Status) {
		return result, nil
	}
	if err := r.Client.Status().Patch(ctx, p, client.MergeFrom(before)); err != nil {
		if apierrors.IsNotFound(err) {
			return reconcile.Result{}, nil
		}
		return reconcile.Result{}, err
	}
	if changed && r.Recorder != nil {
		kind := corev1.EventTypeNormal
		if cond.Status == metav1.ConditionFalse {
			kind = corev1.EventTypeWarning
		}
		r.Recorder.Eventf(p, nil, kind, cond.Reason, "Check", "Ready=%s: %s", cond.Status, cond.Message)
	}
	return result, nil
}

// SetupWithManager registers the controller.
func (r *MCPServerPolicyReconciler) SetupWithManager(mgr manager.Manager) error {
	return builder.ControllerManagedBy(mgr).
		For(&mcpv1alpha1.MCPServerPolicy{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Named("mcpserverpolicy").
		WithOptions(controller.Options{MaxConcurrentReconciles: 2}).
		Complete(r)
}
