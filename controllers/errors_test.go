package controllers

import (
	"errors"
	"fmt"
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
	"github.com/mcp-warden/mcp-warden/supplychain/imageverify"
)

// kstatusOf is what kstatus (the status library of kubectl wait, Flux, Argo CD's and Config Sync's
// health checks) reads from an MCPServer with these conditions.
func kstatusOf(t *testing.T, generation, observed int64, conditions []metav1.Condition) status.Status {
	t.Helper()
	s := &mcpv1alpha1.MCPServer{TypeMeta: metav1.TypeMeta{APIVersion: mcpv1alpha1.GroupVersion.String(), Kind: "MCPServer"},
		ObjectMeta: metav1.ObjectMeta{Name: "files", Namespace: "tenant", Generation: generation}}
	s.Status.Conditions, s.Status.ObservedGeneration = conditions, observed
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(s)
	if err != nil {
		t.Fatal(err)
	}
	res, err := status.Compute(&unstructured.Unstructured{Object: u})
	if err != nil {
		t.Fatal(err)
	}
	return res.Status
}

// TestComputeStatus: the outcome of a reconcile (a stall, a transient error with or without a
// reason, success ready or not) gives Ready, Reconciling and Stalled, the observed generation, the
// retry, and the kstatus that tools read: Failed when stalled, InProgress while retrying or rolling
// out, Current when ready.
func TestComputeStatus(t *testing.T) {
	denial := &imageverify.Denial{Image: "ghcr.io/acme/files", Check: imageverify.CheckNoSignature}
	unreachable := &imageverify.Denial{Image: "ghcr.io/acme/files", Check: imageverify.CheckRegistryUnreachable}
	cond := func(t string, s metav1.ConditionStatus, reason string) metav1.Condition {
		return metav1.Condition{Type: t, Status: s, Reason: reason}
	}
	for name, tc := range map[string]struct {
		err      error
		ready    readiness
		want     []metav1.Condition // Stalled, Ready, Reconciling (Status empty: absent)
		observed bool
		retry    bool
		kstatus  status.Status
	}{
		"stalled by a verification denial": {
			err:      fmt.Errorf("reconcile: %w", stalling(ReasonVerificationFailed, denial)),
			want:     []metav1.Condition{cond("Stalled", "True", ReasonVerificationFailed), cond("Ready", "False", ReasonVerificationFailed), cond("Reconciling", "", "")},
			observed: true, kstatus: status.FailedStatus,
		},
		"registry unreachable": {
			err:   transient(ReasonRegistryUnreachable, unreachable),
			want:  []metav1.Condition{cond("Stalled", "", ""), cond("Ready", "False", ReasonRegistryUnreachable), cond("Reconciling", "True", ReasonRegistryUnreachable)},
			retry: true, kstatus: status.InProgressStatus,
		},
		"a failed list": {
			err:   transient(ReasonListFailed, errors.New("list NetworkPolicies: timeout")),
			want:  []metav1.Condition{cond("Stalled", "", ""), cond("Ready", "False", ReasonListFailed), cond("Reconciling", "True", ReasonListFailed)},
			retry: true, kstatus: status.InProgressStatus,
		},
		"a failed apply": {
			err:   errors.New("apply Deployment files: conflict"),
			want:  []metav1.Condition{cond("Stalled", "", ""), cond("Ready", "False", ReasonApplyFailed), cond("Reconciling", "True", ReasonApplyFailed)},
			retry: true, kstatus: status.InProgressStatus,
		},
		"rolling out": {
			ready:    readiness{status: metav1.ConditionFalse, reason: ReasonProgressing, message: "0 of 1 replicas ready"},
			want:     []metav1.Condition{cond("Stalled", "", ""), cond("Ready", "False", ReasonProgressing), cond("Reconciling", "True", ReasonProgressing)},
			observed: true, kstatus: status.InProgressStatus,
		},
		"ready": {
			ready:    readiness{status: metav1.ConditionTrue, reason: ReasonAvailable, message: "1 of 1 replicas ready"},
			want:     []metav1.Condition{cond("Stalled", "", ""), cond("Ready", "True", ReasonAvailable), cond("Reconciling", "", "")},
			observed: true, kstatus: status.CurrentStatus,
		},
	} {
		t.Run(name, func(t *testing.T) {
			// The conditions a previous, opposite outcome left are replaced.
			conds := []metav1.Condition{
				{Type: "Stalled", Status: "True", Reason: ReasonInvalidSpec}, {Type: "Reconciling", Status: "True", Reason: ReasonProgressing},
				{Type: "Ready", Status: "Unknown", Reason: "Init"},
			}
			if tc.want[0].Status == "True" {
				conds = conds[1:]
			}
			observed, retry := computeStatus(&conds, 3, tc.err, tc.ready)
			for _, w := range tc.want {
				got := meta.FindStatusCondition(conds, w.Type)
				switch {
				case w.Status == "" && got != nil:
					t.Errorf("%s is %s (%s), want it absent", w.Type, got.Status, got.Reason)
				case w.Status != "" && (got == nil || got.Status != w.Status || got.Reason != w.Reason || got.ObservedGeneration != 3):
					t.Errorf("%s = %+v, want %s (%s) at generation 3", w.Type, got, w.Status, w.Reason)
				}
			}
			if observed != tc.observed || (retry != nil) != tc.retry {
				t.Errorf("observed %v retry %v, want observed %v retry %v", observed, retry, tc.observed, tc.retry)
			}
			if retry != nil && !errors.Is(retry, tc.err) {
				t.Errorf("retry %v is not the reconcile's error", retry)
			}
			gen := int64(2)
			if observed {
				gen = 3
			}
			if got := kstatusOf(t, 3, gen, conds); got != tc.kstatus {
				t.Errorf("kstatus %s, want %s", got, tc.kstatus)
			}
		})
	}
}

// TestTypedErrorsWrapTheirCause: errors.As sees through a stall and a transient error to the denial,
// and the stall's message keeps the cause's with what stays enforced.
func TestTypedErrorsWrapTheirCause(t *testing.T) {
	denial := &imageverify.Denial{Image: "ghcr.io/acme/files", Check: imageverify.CheckSignatureMismatch, Policy: "prod"}
	stall := &StallingError{Reason: ReasonVerificationFailed, Err: denial, Note: "; the children of generation 1 stay enforced"}
	var d *imageverify.Denial
	if !errors.As(fmt.Errorf("reconcile: %w", stall), &d) || d.Check != imageverify.CheckSignatureMismatch {
		t.Fatalf("errors.As does not find the denial in the stall")
	}
	if want := denial.Error() + "; the children of generation 1 stay enforced"; stall.Error() != want {
		t.Fatalf("stall message %q, want %q", stall.Error(), want)
	}
	var tr *TransientError
	err := fmt.Errorf("spec: %w", transient(ReasonRegistryUnreachable, denial))
	if !errors.As(err, &tr) || tr.Reason != ReasonRegistryUnreachable || !errors.As(err, &d) {
		t.Fatalf("errors.As does not find the transient error and its denial in %v", err)
	}
	if transient(ReasonReadFailed, nil) != nil {
		t.Fatal("transient(nil) is not nil")
	}
}
