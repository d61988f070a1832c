package controllers

import (
	"errors"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
)

// Reasons of transient errors: Ready=False and Reconciling=True with one of these (or ApplyFailed for a
// failed apply), retried with backoff.
const (
	// ReasonRegistryUnreachable: the image's registry could not be reached to verify its signatures.
	ReasonRegistryUnreachable = "RegistryUnreachable"
	// ReasonIssuerUnreachable: the token issuer's metadata could not be read to confirm spec.gateway.auth.jwksURL.
	ReasonIssuerUnreachable = "IssuerUnreachable"
	// ReasonListFailed: listing objects the reconcile depends on (policies, NetworkPolicies) failed.
	ReasonListFailed = "ListFailed"
	// ReasonReadFailed: reading an object the reconcile depends on failed.
	ReasonReadFailed = "ReadFailed"
)

// StallingError is an error retrying cannot fix (a spec the policies or the gateway refuse, a child
// another owner holds, an image that fails verification): the MCPServer stalls (Stalled=True with
// Reason) until its spec, or a policy, changes. It wraps its cause, so errors.As sees the denial.
type StallingError struct {
	// Reason is the Stalled and Ready reason.
	Reason string
	// Err is the cause; its message is the condition's message.
	Err error
	// Note is appended to the message: what the operator keeps enforcing while stalled.
	Note string
}

func (e *StallingError) Error() string { return e.Err.Error() + e.Note }

// Unwrap returns the cause.
func (e *StallingError) Unwrap() error { return e.Err }

// TransientError is an error a retry may fix (an unreachable registry or issuer, a failed list or
// read): Ready=False and Reconciling=True with Reason, retried with backoff. It wraps its cause.
type TransientError struct {
	// Reason is the Reconciling and Ready reason.
	Reason string
	// Err is the cause.
	Err error
}

func (e *TransientError) Error() string { return e.Err.Error() }

// Unwrap returns the cause.
func (e *TransientError) Unwrap() error { return e.Err }

// stalling wraps err as a stall with reason.
func stalling(reason string, err error) error { return &StallingError{Reason: reason, Err: err} }

// transient wraps err (when not nil) as a transient error with reason.
func transient(reason string, err error) error {
	if err == nil {
		return nil
	}
	return &TransientError{Reason: reason, Err: err}
}

// readiness is what the children say of a reconcile that returned no error: Ready's status, reason and
// message.
type readiness struct {
	status          metav1.ConditionStatus
	reason, message string
}

// computeStatus derives Ready, Reconciling and Stalled from a reconcile's outcome, as kstatus reads
// them: a stalling error stalls (Stalled=True, Ready=False, no Reconciling; the generation counts as
// observed, and nothing is retried); any other error is transient (Reconciling=True, Ready=False, with
// the TransientError's reason or ApplyFailed; retried); no error takes ready (Reconciling=True while
// not ready). It returns whether the generation was observed and the error to retry with.
func computeStatus(conditions *[]metav1.Condition, generation int64, err error, ready readiness) (observed bool, retry error) {
	set := func(t string, status metav1.ConditionStatus, reason, msg string) {
		meta.SetStatusCondition(conditions, metav1.Condition{Type: t, Status: status, Reason: reason, Message: msg, ObservedGeneration: generation})
	}
	var stall *StallingError
	var tr *TransientError
	switch {
	case errors.As(err, &stall):
		set(mcpv1alpha1.ConditionStalled, metav1.ConditionTrue, stall.Reason, stall.Error())
		set(mcpv1alpha1.ConditionReady, metav1.ConditionFalse, stall.Reason, stall.Error())
		meta.RemoveStatusCondition(conditions, mcpv1alpha1.ConditionReconciling)
		return true, nil
	case err != nil:
		reason := ReasonApplyFailed
		if errors.As(err, &tr) {
			reason = tr.Reason
		}
		msg := err.Error()
		set(mcpv1alpha1.ConditionReconciling, metav1.ConditionTrue, reason, "retrying: "+msg)
		set(mcpv1alpha1.ConditionReady, metav1.ConditionFalse, reason, msg)
		meta.RemoveStatusCondition(conditions, mcpv1alpha1.ConditionStalled)
		return false, err
	}
	meta.RemoveStatusCondition(conditions, mcpv1alpha1.ConditionStalled)
	if ready.status == metav1.ConditionTrue {
		set(mcpv1alpha1.ConditionReady, metav1.ConditionTrue, ready.reason, ready.message)
		meta.RemoveStatusCondition(conditions, mcpv1alpha1.ConditionReconciling)
	} else {
		set(mcpv1alpha1.ConditionReady, metav1.ConditionFalse, ready.reason, ready.message)
		set(mcpv1alpha1.ConditionReconciling, metav1.ConditionTrue, ready.reason, ready.message)
	}
	return true, nil
}
