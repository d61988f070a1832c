package webhooks

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/mcp-warden/mcp-warden/policy/guardrails"
	"github.com/mcp-warden/mcp-warden/policy/sandbox"
	"github.com/mcp-warden/mcp-warden/supplychain/imageverify"
)

// LabelImagePolicy opts a namespace in to image checks on raw workloads: with the value "enforce", Pods
// (and their ephemeral containers), Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs and CronJobs
// created there directly must use images that satisfy the namespace's MCPServerPolicies, so nobody
// bypasses the operator with a plain Deployment.
const LabelImagePolicy = "mcp.warden.dev/image-policy"

// WorkloadPath is where the workload webhook is served.
const WorkloadPath = "/validate-workloads"

// +kubebuilder:webhook:path=/validate-workloads,mutating=false,failurePolicy=fail,sideEffects=None,groups="";apps;batch,resources=pods;pods/ephemeralcontainers;deployments;statefulsets;daemonsets;replicasets;jobs;cronjobs,verbs=create;update,versions=v1,name=vworkloads.mcp.warden.dev,admissionReviewVersions=v1,timeoutSeconds=10
// +kubebuilder:webhook:path=/validate-workloads,mutating=false,failurePolicy=fail,sideEffects=None,groups="";apps;batch,resources=pods;pods/ephemeralcontainers;deployments;statefulsets;daemonsets;replicasets;jobs;cronjobs,verbs=create;update,versions=v1,name=vmcpserverpods.mcp.warden.dev,admissionReviewVersions=v1,timeoutSeconds=10

// The two registrations share the handler: config/webhook gives vworkloads the namespaces that opted in
// and vmcpserverpods the objects labelled mcp.warden.dev/server in the other namespaces, so a dead
// webhook never blocks a pod that is neither.

// WorkloadValidator checks pods and pod controllers. In a namespace that opted in (LabelImagePolicy),
// every image of every workload. Anywhere, a workload whose pods carry the MCP server label
// (mcp.warden.dev/server) must meet the sandbox and, where a policy governs the namespace, its images
// the policies: so nobody swaps the image of an MCPServer's pod or dresses up a privileged pod as one.
type WorkloadValidator struct {
	// Reader reads namespaces and policies (the manager's cache).
	Reader client.Reader
	// Verifier checks signatures and attestations.
	Verifier imageverify.ImageVerifier
	// Timeout bounds the whole admission (default DefaultVerifyTimeout); keep it below the webhook's
	// timeoutSeconds.
	Timeout time.Duration
	// GatewayImage is the operator's gateway sidecar image: in MCP server pods outside an opted-in
	// namespace it is the operator's choice, not the tenant's, and is not checked against the policies.
	GatewayImage string
}

var _ admission.Handler = &WorkloadValidator{}

// Handle admits or denies one workload.
func (v *WorkloadValidator) Handle(ctx context.Context, req admission.Request) admission.Response {
	ctx, cancel := admissionContext(ctx, v.Timeout)
	defer cancel()
	w, err := decodeWorkload(req.Kind.Kind, req.Object.Raw)
	if err != nil {
		return admission.Errored(http.StatusBadRequest, err)
	}
	if w == nil {
		return admission.Allowed("not a workload")
	}
	ns := &corev1.Namespace{}
	if err := v.Reader.Get(ctx, client.ObjectKey{Name: req.Namespace}, ns); err != nil {
		return admission.Errored(http.StatusInternalServerError, fmt.Errorf("get namespace %s: %w", req.Namespace, err))
	}
	enforce := ns.Labels[LabelImagePolicy] == "enforce"
	mcpPod := w.labels[LabelServer] != ""
	if !enforce && !mcpPod {
		return admission.Allowed("namespace does not enforce the image policy and the workload is not an MCP server")
	}
	var errs field.ErrorList
	if mcpPod {
		errs = append(errs, sandboxErrors(w.path, w.spec)...)
	}
	policies, err := guardrails.Matching(ctx, v.Reader, req.Namespace)
	if err != nil {
		return admission.Errored(http.StatusInternalServerError, err)
	}
	if enforce || len(policies) > 0 {
		images := podImages(w.path, w.spec)
		if !enforce && v.GatewayImage != "" {
			images = slices.DeleteFunc(images, func(i podImage) bool { return i.image == v.GatewayImage })
		}
		errs = append(errs, checkImages(ctx, v.Verifier, imageverify.ImageRequest{Namespace: req.Namespace, PullSecrets: w.spec.ImagePullSecrets, Policies: policies}, images)...)
	}
	if len(errs) == 0 {
		return admission.Allowed("")
	}
	gk := schema.GroupKind{Group: req.Kind.Group, Kind: req.Kind.Kind}
	status := apierrors.NewInvalid(gk, req.Name, errs).Status()
	return admission.Response{AdmissionResponse: admissionv1.AdmissionResponse{Allowed: false, Result: &status}}
}

// LabelServer marks the pods of an MCPServer (the controller sets it to the server's name).
const LabelServer = "mcp.warden.dev/server"

// podImage is one image of a pod spec and where it is written.
type podImage struct {
	path  *field.Path
	image string
}

// podImages lists every image a pod runs or mounts: init, regular and ephemeral containers, and image
// volumes.
func podImages(base *field.Path, spec *corev1.PodSpec) []podImage {
	var out []podImage
	for i, c := range spec.InitContainers {
		out = append(out, podImage{base.Child("initContainers").Index(i).Child("image"), c.Image})
	}
	for i, c := range spec.Containers {
		out = append(out, podImage{base.Child("containers").Index(i).Child("image"), c.Image})
	}
	for i, c := range spec.EphemeralContainers {
		out = append(out, podImage{base.Child("ephemeralContainers").Index(i).Child("image"), c.Image})
	}
	for i, vol := range spec.Volumes {
		if vol.Image != nil {
			out = append(out, podImage{base.Child("volumes").Index(i).Child("image", "reference"), vol.Image.Reference})
		}
	}
	return out
}

// checkImages checks each image (digest, registry) and verifies the distinct ones concurrently under
// ctx, the admission's one deadline. Each error names the field.
func checkImages(ctx context.Context, verifier imageverify.ImageVerifier, base imageverify.ImageRequest, images []podImage) field.ErrorList {
	var errs field.ErrorList
	verify := map[string][]*field.Path{}
	var order []string
	for _, im := range images {
		if err := digestPinned(im.image); err != nil {
			errs = append(errs, field.Invalid(im.path, im.image, err.Error()))
			continue
		}
		reg := guardrails.CheckRegistry(im.path, im.image, base.Policies)
		errs = append(errs, reg...)
		if len(reg) == 0 && imageverify.NeedsVerification(base.Policies) {
			if _, ok := verify[im.image]; !ok {
				order = append(order, im.image)
			}
			verify[im.image] = append(verify[im.image], im.path)
		}
	}
	results := make([]error, len(order))
	var wg sync.WaitGroup
	for i, image := range order {
		wg.Go(func() {
			req := base
			req.Image = image
			results[i] = verifyImage(ctx, verifier, req)
		})
	}
	wg.Wait()
	for i, image := range order {
		if results[i] != nil {
			for _, p := range verify[image] {
				errs = append(errs, field.Forbidden(p, results[i].Error()))
			}
		}
	}
	return errs
}

// sandboxErrors are the sandbox's violations of a pod spec, as field errors under base.
func sandboxErrors(base *field.Path, spec *corev1.PodSpec) field.ErrorList {
	var errs field.ErrorList
	for _, v := range sandbox.Violations(spec) {
		path, msg, _ := strings.Cut(v, ": ")
		rest := strings.TrimPrefix(strings.TrimPrefix(path, "spec"), ".")
		p := base
		if rest != "" {
			p = field.NewPath(base.String() + "." + rest)
		}
		errs = append(errs, field.Forbidden(p, "MCP server pods run sandboxed: "+msg))
	}
	return errs
}

// workload is the pod template of a Pod or pod controller.
type workload struct {
	spec   *corev1.PodSpec
	labels map[string]string
	path   *field.Path
}

// decodeWorkload extracts the pod spec, pod labels and the spec's field path of a Pod or pod
// controller; nil for other kinds.
func decodeWorkload(kind string, raw []byte) (*workload, error) {
	decode := func(obj any) error {
		if err := json.Unmarshal(raw, obj); err != nil {
			return fmt.Errorf("decode %s: %w", kind, err)
		}
		return nil
	}
	template := field.NewPath("spec", "template", "spec")
	var w *workload
	var err error
	switch kind {
	case "Pod":
		o := &corev1.Pod{}
		err = decode(o)
		w = &workload{&o.Spec, o.Labels, field.NewPath("spec")}
	case "Deployment":
		o := &appsv1.Deployment{}
		err = decode(o)
		w = &workload{&o.Spec.Template.Spec, o.Spec.Template.Labels, template}
	case "StatefulSet":
		o := &appsv1.StatefulSet{}
		err = decode(o)
		w = &workload{&o.Spec.Template.Spec, o.Spec.Template.Labels, template}
	case "DaemonSet":
		o := &appsv1.DaemonSet{}
		err = decode(o)
		w = &workload{&o.Spec.Template.Spec, o.Spec.Template.Labels, template}
	case "ReplicaSet":
		o := &appsv1.ReplicaSet{}
		err = decode(o)
		w = &workload{&o.Spec.Template.Spec, o.Spec.Template.Labels, template}
	case "Job":
		o := &batchv1.Job{}
		err = decode(o)
		w = &workload{&o.Spec.Template.Spec, o.Spec.Template.Labels, template}
	case "CronJob":
		o := &batchv1.CronJob{}
		err = decode(o)
		w = &workload{&o.Spec.JobTemplate.Spec.Template.Spec, o.Spec.JobTemplate.Spec.Template.Labels, field.NewPath("spec", "jobTemplate", "spec", "template", "spec")}
	default:
		return nil, nil
	}
	return w, err
}
