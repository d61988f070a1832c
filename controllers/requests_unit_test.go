package controllers

import (
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
)

// TestFingerprintSeesEveryChangeButStatus: a child whose status alone moved (and the bookkeeping the
// API server and the Deployment controller write) keeps its fingerprint, so it is not applied again;
// any change to its spec, labels, annotations or owner changes it, so drift is still reverted.
func TestFingerprintSeesEveryChangeButStatus(t *testing.T) {
	applied := testDeployment(testServer(), "abc")
	applied.ResourceVersion, applied.Generation = "100", 1
	applied.OwnerReferences = []metav1.OwnerReference{{APIVersion: "mcp.warden.dev/v1alpha1", Kind: "MCPServer", Name: "files", UID: "u1", Controller: ptr.To(true)}}
	want := fingerprint(applied)
	if want == ([32]byte{}) {
		t.Fatal("no fingerprint")
	}
	moved := applied.DeepCopy()
	moved.ResourceVersion, moved.Generation = "250", 1
	moved.Status = appsv1.DeploymentStatus{ObservedGeneration: 1, Replicas: 1, ReadyReplicas: 1, AvailableReplicas: 1}
	moved.Annotations = map[string]string{deploymentRevision: "1"}
	moved.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kube-controller-manager", Operation: metav1.ManagedFieldsOperationUpdate, Subresource: "status"}}
	moved.APIVersion, moved.Kind = "apps/v1", "Deployment"
	if fingerprint(moved) != want {
		t.Fatal("a status-only change changed the fingerprint")
	}
	for name, mutate := range map[string]func(*appsv1.Deployment){
		"spec":       func(d *appsv1.Deployment) { d.Spec.Template.Spec.HostNetwork = true },
		"replicas":   func(d *appsv1.Deployment) { d.Spec.Replicas = ptr.To(int32(5)) },
		"label":      func(d *appsv1.Deployment) { d.Labels[LabelManagedBy] = "someone" },
		"annotation": func(d *appsv1.Deployment) { d.Annotations = map[string]string{"x": "y"} },
		"owner":      func(d *appsv1.Deployment) { d.OwnerReferences = nil },
		"container": func(d *appsv1.Deployment) {
			d.Spec.Template.Spec.Containers = append(d.Spec.Template.Spec.Containers, corev1.Container{Name: "x"})
		},
	} {
		d := moved.DeepCopy()
		mutate(d)
		if fingerprint(d) == want {
			t.Errorf("%s changed but the fingerprint did not", name)
		}
	}
	if sameFingerprint([32]byte{}, applied) {
		t.Error("an object never fingerprinted matched")
	}
}

// TestProgressOnly: only a Progressing message that moved is held back; Ready, a failure, a new
// generation or a replica count are written at once.
func TestProgressOnly(t *testing.T) {
	progressing := func(msg string) *mcpv1alpha1.MCPServerStatus {
		s := &mcpv1alpha1.MCPServerStatus{ObservedGeneration: 1}
		for _, c := range []string{mcpv1alpha1.ConditionReady, mcpv1alpha1.ConditionReconciling} {
			status := metav1.ConditionTrue
			if c == mcpv1alpha1.ConditionReady {
				status = metav1.ConditionFalse
			}
			meta.SetStatusCondition(&s.Conditions, metav1.Condition{Type: c, Status: status, Reason: ReasonProgressing, Message: msg, ObservedGeneration: 1})
		}
		return s
	}
	base := progressing("waiting for the Deployment controller to observe the new spec")
	// As in a reconcile, the new status starts from the old one.
	moved := base.DeepCopy()
	for i := range moved.Conditions {
		moved.Conditions[i].Message = "0 of 1 replicas available"
	}
	if !progressOnly(base, moved) {
		t.Error("a moved progress message is not progress-only")
	}
	ready := base.DeepCopy()
	meta.SetStatusCondition(&ready.Conditions, metav1.Condition{Type: mcpv1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: ReasonAvailable, ObservedGeneration: 1})
	meta.RemoveStatusCondition(&ready.Conditions, mcpv1alpha1.ConditionReconciling)
	failed := moved.DeepCopy()
	meta.SetStatusCondition(&failed.Conditions, metav1.Condition{Type: mcpv1alpha1.ConditionReady, Status: metav1.ConditionFalse, Reason: ReasonApplyFailed, ObservedGeneration: 1})
	replicas := moved.DeepCopy()
	replicas.ReadyReplicas = 1
	newGen := moved.DeepCopy()
	newGen.ObservedGeneration = 2
	for i := range newGen.Conditions {
		newGen.Conditions[i].ObservedGeneration = 2
	}
	// The gateways' first report while the pods roll out, every tool matching its pin, waits too.
	reported := moved.DeepCopy()
	reported.Tools = []mcpv1alpha1.ToolPin{{Name: "read_file", PinnedHash: "sha256:aa", ObservedHash: "sha256:aa"}}
	reported.ServerInfo, reported.ToolCount = &mcpv1alpha1.ServerInfo{Name: "files", Version: "1"}, ptr.To(int32(1))
	meta.SetStatusCondition(&reported.Conditions, metav1.Condition{Type: mcpv1alpha1.ConditionToolsPinned, Status: metav1.ConditionTrue, Reason: ReasonToolsMatchPins, ObservedGeneration: 1})
	if !progressOnly(base, reported) {
		t.Error("the gateways' first report during the rollout, every tool pinned, is not held with the progress")
	}
	// A tool that no longer matches its pin is written at once, rolling out or not.
	changed := reported.DeepCopy()
	changed.Tools[0].ObservedHash = "sha256:bb"
	meta.SetStatusCondition(&changed.Conditions, metav1.Condition{Type: mcpv1alpha1.ConditionToolsPinned, Status: metav1.ConditionFalse, Reason: ReasonToolDefinitionChanged, ObservedGeneration: 1})
	// A changed tool approved (False -> True) is written at once too.
	approved := reported.DeepCopy()
	changedBase := changed.DeepCopy()
	for name, now := range map[string]*mcpv1alpha1.MCPServerStatus{"Ready": ready, "failure": failed, "replicas": replicas, "generation": newGen, "a changed tool": changed} {
		if progressOnly(base, now) {
			t.Errorf("%s is held back as progress", name)
		}
	}
	if progressOnly(changedBase, approved) {
		t.Error("an approved tool (ToolsPinned False -> True) is held back as progress")
	}
}

// TestStatusWriteInFlight: the status just written is not written again from the same (stale) read,
// but a status someone else wrote since, or a different status, is.
func TestStatusWriteInFlight(t *testing.T) {
	var w statusWrites
	base := &mcpv1alpha1.MCPServer{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "s", ResourceVersion: "10"}}
	st := &mcpv1alpha1.MCPServerStatus{ObservedGeneration: 1, Conditions: []metav1.Condition{{Type: mcpv1alpha1.ConditionReady, Status: metav1.ConditionFalse, Reason: ReasonProgressing, LastTransitionTime: metav1.Now()}}}
	if w.inFlight(base, st) {
		t.Fatal("nothing was written yet")
	}
	w.wrote(base, st)
	again := st.DeepCopy()
	again.Conditions[0].LastTransitionTime = metav1.NewTime(again.Conditions[0].LastTransitionTime.Add(1e9))
	if !w.inFlight(base, again) {
		t.Fatal("the same status from the same read is written twice")
	}
	other := base.DeepCopy()
	other.ResourceVersion = "11"
	if w.inFlight(other, again) {
		t.Fatal("a status read after someone else's write is skipped")
	}
	changed := st.DeepCopy()
	changed.ReadyReplicas = 1
	if w.inFlight(base, changed) {
		t.Fatal("a different status is skipped")
	}
}

// TestStaleCacheAfterApplyIsNotApplied: a reconcile that runs before the cache delivered the operator's
// last apply sees the object at the resourceVersion the apply was made over, and sends nothing; the
// same object at any other resourceVersion (anyone's later write) is compared by its content, and a
// changed one is applied again, as is one applied from another desired object.
func TestStaleCacheAfterApplyIsNotApplied(t *testing.T) {
	cm := func(rv, pins string) *corev1.ConfigMap {
		return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "files-gateway", ResourceVersion: rv}, Data: map[string]string{"pins.json": pins}}
	}
	applied := cm("20", "new")
	prev := appliedState{hash: [32]byte{1}, resourceVersion: "20", live: fingerprint(applied), from: "10"}
	if !prev.unchanged([32]byte{1}, cm("10", "old"), true) {
		t.Error("the cache at the resourceVersion the apply was made over is applied again")
	}
	if !prev.unchanged([32]byte{1}, applied, true) {
		t.Error("the object as the apply left it is applied again")
	}
	if prev.unchanged([32]byte{1}, cm("30", "a tenant's"), true) {
		t.Error("a later write by someone else is not applied again")
	}
	if prev.unchanged([32]byte{2}, cm("10", "old"), true) {
		t.Error("a new desired object is not applied")
	}
	created := appliedState{hash: [32]byte{1}, resourceVersion: "20", live: fingerprint(applied)}
	// A caller that reads the live object after the apply (the Deployment's) never gets the stale one.
	if prev.unchanged([32]byte{1}, cm("10", "old"), false) {
		t.Error("a stale object was returned to a caller that reads it")
	}
	if created.unchanged([32]byte{1}, cm("", "old"), true) {
		t.Error("an object remembered from a create matched a resourceVersion it never had")
	}
}
