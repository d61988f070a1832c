package webhooks

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/mcp-warden/mcp-warden/guardrails"
)

// LabelImagePolicy opts a namespace in to image checks on raw workloads: with the value "enforce", Pods,
// Deployments, StatefulSets, DaemonSets, Jobs and CronJobs created there directly must use images that
// satisfy the namespace's MCPServerPolicies, so nobody bypasses the operator with a plain Deployment.
const LabelImagePolicy = "mcp.warden.dev/image-policy"

// WorkloadPath is where the workload webhook is served.
const WorkloadPath = "/validate-workloads"

// +kubebuilder:webhook:path=/validate-workloads,mutating=false,failurePolicy=fail,sideEffects=None,groups="";apps;batch,resources=pods;deployments;statefulsets;daemonsets;jobs;cronjobs,verbs=create;update,versions=v1,name=vworkloads.mcp.warden.dev,admissionReviewVersions=v1,timeoutSeconds=10

// WorkloadValidator checks every image of a pod or pod controller in an opted-in namespace.
type WorkloadValidator struct {
	// Reader reads namespaces and policies (the manager's cache).
	Reader client.Reader
	// Verifier checks signatures and attestations.
	Verifier ImageVerifier
	// Timeout bounds one admission's verification.
	Timeout time.Duration
}

var _ admission.Handler = &WorkloadValidator{}

// Handle admits or denies one workload.
func (v *WorkloadValidator) Handle(ctx context.Context, req admission.Request) admission.Response {
	ns := &corev1.Namespace{}
	if err := v.Reader.Get(ctx, client.ObjectKey{Name: req.Namespace}, ns); err != nil {
		return admission.Errored(http.StatusInternalServerError, fmt.Errorf("get namespace %s: %w", req.Namespace, err))
	}
	if ns.Labels[LabelImagePolicy] != "enforce" {
		return admission.Allowed("namespace does not enforce the image policy")
	}
	spec, err := podSpec(req.Kind.Kind, req.Object.Raw)
	if err != nil {
		return admission.Errored(http.StatusBadRequest, err)
	}
	if spec == nil {
		return admission.Allowed("not a workload")
	}
	policies, err := guardrails.Matching(ctx, v.Reader, req.Namespace)
	if err != nil {
		return admission.Errored(http.StatusInternalServerError, err)
	}
	what := fmt.Sprintf("%s %s/%s", req.Kind.Kind, req.Namespace, req.Name)
	var denials []string
	for _, c := range containers(spec) {
		if err := digestPinned(c.image); err != nil {
			denials = append(denials, fmt.Sprintf("%s: %v", c.path, err))
			continue
		}
		for _, fe := range guardrails.CheckRegistry(nil, c.image, policies) {
			denials = append(denials, fmt.Sprintf("%s: %s", c.path, fe.Detail))
		}
		if NeedsVerification(policies) {
			pull := spec.ImagePullSecrets
			if err := verifyImage(ctx, v.Verifier, v.Timeout, ImageRequest{Image: c.image, Namespace: req.Namespace, PullSecrets: pull, Policies: policies}); err != nil {
				denials = append(denials, fmt.Sprintf("%s: %v", c.path, err))
			}
		}
	}
	if len(denials) > 0 {
		return admission.Denied(fmt.Sprintf("%s denied by the MCP image policy of namespace %s: %s", what, req.Namespace, strings.Join(denials, "; ")))
	}
	return admission.Allowed("")
}

type containerImage struct{ path, image string }

func containers(spec *corev1.PodSpec) []containerImage {
	var out []containerImage
	for i, c := range spec.InitContainers {
		out = append(out, containerImage{fmt.Sprintf("initContainers[%d] (%s)", i, c.Name), c.Image})
	}
	for i, c := range spec.Containers {
		out = append(out, containerImage{fmt.Sprintf("containers[%d] (%s)", i, c.Name), c.Image})
	}
	for i, c := range spec.EphemeralContainers {
		out = append(out, containerImage{fmt.Sprintf("ephemeralContainers[%d] (%s)", i, c.Name), c.Image})
	}
	return out
}

// podSpec extracts the pod spec of a Pod or pod controller; nil for other kinds.
func podSpec(kind string, raw []byte) (*corev1.PodSpec, error) {
	decode := func(obj any) error {
		if err := json.Unmarshal(raw, obj); err != nil {
			return fmt.Errorf("decode %s: %w", kind, err)
		}
		return nil
	}
	switch kind {
	case "Pod":
		o := &corev1.Pod{}
		return &o.Spec, decode(o)
	case "Deployment":
		o := &appsv1.Deployment{}
		return &o.Spec.Template.Spec, decode(o)
	case "StatefulSet":
		o := &appsv1.StatefulSet{}
		return &o.Spec.Template.Spec, decode(o)
	case "DaemonSet":
		o := &appsv1.DaemonSet{}
		return &o.Spec.Template.Spec, decode(o)
	case "ReplicaSet":
		o := &appsv1.ReplicaSet{}
		return &o.Spec.Template.Spec, decode(o)
	case "Job":
		o := &batchv1.Job{}
		return &o.Spec.Template.Spec, decode(o)
	case "CronJob":
		o := &batchv1.CronJob{}
		return &o.Spec.JobTemplate.Spec.Template.Spec, decode(o)
	}
	return nil, nil
}
