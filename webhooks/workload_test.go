package webhooks_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
	"github.com/mcp-warden/mcp-warden/operator"
	"github.com/mcp-warden/mcp-warden/policy/sandbox"
	"github.com/mcp-warden/mcp-warden/supplychain/imageverify"
	"github.com/mcp-warden/mcp-warden/webhooks"
)

const pinned = "ghcr.io/acme/files@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// recordingVerifier denies the images in deny, hangs (until ctx ends) on those in hang, and records
// what it was asked.
type recordingVerifier struct {
	mu         sync.Mutex
	asked      []string
	deny, hang map[string]bool
}

func (r *recordingVerifier) VerifyImage(ctx context.Context, req imageverify.ImageRequest) (*imageverify.ImageVerdict, error) {
	r.mu.Lock()
	r.asked = append(r.asked, req.Image)
	r.mu.Unlock()
	if r.hang[req.Image] {
		<-ctx.Done()
		return nil, fmt.Errorf("image %s could not be verified: timeout", req.Image)
	}
	if r.deny[req.Image] {
		return nil, fmt.Errorf("image %s has no signature", req.Image)
	}
	return &imageverify.ImageVerdict{}, nil
}

func reader(t *testing.T, nsLabels map[string]string, spec mcpv1alpha1.MCPServerPolicySpec) client.Reader {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "tenant", Labels: nsLabels}}
	objs := []client.Object{ns}
	if spec.Authorities != nil || spec.AllowedRegistries != nil {
		objs = append(objs, &mcpv1alpha1.MCPServerPolicy{ObjectMeta: metav1.ObjectMeta{Name: "prod"}, Spec: spec})
	}
	return fake.NewClientBuilder().WithScheme(operator.Scheme()).WithObjects(objs...).Build()
}

var signing = mcpv1alpha1.MCPServerPolicySpec{
	AllowedRegistries: []string{"ghcr.io/acme"},
	Authorities:       []mcpv1alpha1.Authority{{Name: "release-key", Key: &mcpv1alpha1.KeyAuthority{Data: "unused"}}},
}

func request(t *testing.T, kind, subresource string, obj runtime.Object) admission.Request {
	t.Helper()
	raw, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	group := ""
	if kind == "Deployment" {
		group = "apps"
	}
	return admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		Kind: metav1.GroupVersionKind{Group: group, Version: "v1", Kind: kind}, Namespace: "tenant", Name: "w",
		SubResource: subresource, Operation: admissionv1.Update, Object: runtime.RawExtension{Raw: raw},
	}}
}

// denied asserts the response is a denial that names each field.
func denied(t *testing.T, resp admission.Response, fields ...string) string {
	t.Helper()
	if resp.Allowed {
		t.Fatalf("allowed, want a denial naming %v", fields)
	}
	msg := resp.Result.Message
	for _, f := range fields {
		if !strings.Contains(msg, f) {
			t.Fatalf("denial %q does not name %s", msg, f)
		}
	}
	return msg
}

func sandboxedPod(labels map[string]string, images ...string) *corev1.Pod {
	vols, mounts := sandbox.Volumes()
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "w", Labels: labels}, Spec: corev1.PodSpec{
		SecurityContext: sandbox.PodSecurityContext(), Volumes: vols,
		AutomountServiceAccountToken: ptr.To(false), EnableServiceLinks: ptr.To(false),
	}}
	for i, im := range images {
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: fmt.Sprintf("c%d", i), Image: im,
			SecurityContext: sandbox.ContainerSecurityContext(), VolumeMounts: mounts,
			Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1"), corev1.ResourceMemory: resource.MustParse("1Gi")}}})
	}
	return p
}

// TestEverythingAPodRunsIsChecked: ephemeral containers (kubectl debug) and image volumes are checked,
// and every denial names its field.
func TestEverythingAPodRunsIsChecked(t *testing.T) {
	v := &webhooks.WorkloadValidator{Reader: reader(t, map[string]string{webhooks.LabelImagePolicy: "enforce"}, mcpv1alpha1.MCPServerPolicySpec{AllowedRegistries: []string{"ghcr.io/acme"}})}
	ctx := context.Background()

	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "w"}, Spec: corev1.PodSpec{
		Containers:          []corev1.Container{{Name: "server", Image: pinned}},
		EphemeralContainers: []corev1.EphemeralContainer{{EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "debugger", Image: "busybox:latest"}}},
	}}
	denied(t, v.Handle(ctx, request(t, "Pod", "ephemeralcontainers", pod)), "spec.ephemeralContainers[0].image", "busybox:latest is not pinned by digest")

	pod.Spec.EphemeralContainers = nil
	pod.Spec.Volumes = []corev1.Volume{{Name: "models", VolumeSource: corev1.VolumeSource{Image: &corev1.ImageVolumeSource{Reference: "ghcr.io/acme-evil/models@sha256:" + strings.Repeat("0", 64)}}}}
	denied(t, v.Handle(ctx, request(t, "Pod", "", pod)), "spec.volumes[0].image.reference", "is not from a registry")

	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "w"}, Spec: appsv1.DeploymentSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
		Containers: []corev1.Container{{Name: "ok", Image: pinned}, {Name: "tagged", Image: "ghcr.io/acme/files:1.2"}}}}}}
	denied(t, v.Handle(ctx, request(t, "Deployment", "", d)), "spec.template.spec.containers[1].image", `Deployment.apps "w" is invalid`)
}

// TestMCPServerPodsAreCheckedWithoutTheOptIn: in a namespace a signing policy governs but that has not
// opted in, a pod labelled as an MCP server is verified (an edited image is denied) and must be
// sandboxed; the operator's own gateway image is its choice, not the tenant's.
func TestMCPServerPodsAreCheckedWithoutTheOptIn(t *testing.T) {
	swapped := "ghcr.io/acme/evil@sha256:" + strings.Repeat("e", 64)
	gateway := "ghcr.io/mcp-warden/gateway:dev"
	rv := &recordingVerifier{deny: map[string]bool{swapped: true}}
	v := &webhooks.WorkloadValidator{Reader: reader(t, nil, signing), Verifier: rv, GatewayImage: gateway}
	ctx := context.Background()
	labels := map[string]string{webhooks.LabelServer: "files"}

	if resp := v.Handle(ctx, request(t, "Pod", "", sandboxedPod(labels, pinned, gateway))); !resp.Allowed {
		t.Fatalf("the operator's own pod was denied: %v", resp.Result.Message)
	}
	denied(t, v.Handle(ctx, request(t, "Pod", "", sandboxedPod(labels, swapped, gateway))), "spec.containers[0].image", "has no signature")

	privileged := sandboxedPod(labels, pinned)
	privileged.Spec.HostPID = true
	privileged.Spec.Containers[0].SecurityContext.Privileged = ptr.To(true)
	denied(t, v.Handle(ctx, request(t, "Pod", "", privileged)), "spec.hostPID", "spec.containers[0].securityContext.privileged", "MCP server pods run sandboxed")

	// Without the label, a namespace that has not opted in is not checked.
	if resp := v.Handle(ctx, request(t, "Pod", "", sandboxedPod(nil, swapped))); !resp.Allowed {
		t.Fatalf("an unlabelled pod in a namespace without the opt-in was checked: %v", resp.Result.Message)
	}
}

// TestOneDeadlinePerAdmission: four containers from a hanging registry are verified concurrently under
// one deadline, so the denial comes at the deadline, not four deadlines later.
func TestOneDeadlinePerAdmission(t *testing.T) {
	var images []string
	hang := map[string]bool{}
	for i := range 4 {
		im := fmt.Sprintf("ghcr.io/acme/c%d@sha256:%064d", i, i)
		images = append(images, im)
		hang[im] = true
	}
	const timeout = 400 * time.Millisecond
	v := &webhooks.WorkloadValidator{Reader: reader(t, map[string]string{webhooks.LabelImagePolicy: "enforce"}, signing), Verifier: &recordingVerifier{hang: hang}, Timeout: timeout}
	start := time.Now()
	denied(t, v.Handle(context.Background(), request(t, "Pod", "", sandboxedPod(nil, images...))), "spec.containers[0].image", "spec.containers[3].image", "timeout")
	if took := time.Since(start); took > timeout+300*time.Millisecond {
		t.Fatalf("four hanging images took %s against a %s admission deadline", took, timeout)
	}
}

// TestPolicyWithoutRegistriesWarns: authorities without allowedRegistries are admitted with a warning.
func TestPolicyWithoutRegistriesWarns(t *testing.T) {
	key := "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE7+4l2P1kQ8Zq6V0q8Vj0f3f8xV9QkM0m0p9E0i3b1vY0Zb3mXq3l8C3sWm8bq0C8W7d9m9b4y1C6o1s0g2x8Jw==\n-----END PUBLIC KEY-----"
	p := &mcpv1alpha1.MCPServerPolicy{ObjectMeta: metav1.ObjectMeta{Name: "open"}, Spec: mcpv1alpha1.MCPServerPolicySpec{
		Authorities: []mcpv1alpha1.Authority{{Name: "k", Key: &mcpv1alpha1.KeyAuthority{Data: key}}}}}
	w, err := webhooks.PolicyValidator{}.ValidateCreate(context.Background(), p)
	if len(w) != 1 || !strings.Contains(w[0], "spec.allowedRegistries is empty") {
		t.Fatalf("warnings = %v (err %v)", w, err)
	}
}

// TestDigestParsedAsTheVerifierParsesIt: the admission parses digests with the verifier's parser, so a
// reference that only ends like a digest (a second "@", a sha512 digest, no repository) is refused with
// the hint, not admitted as pinned.
func TestDigestParsedAsTheVerifierParsesIt(t *testing.T) {
	v := &webhooks.WorkloadValidator{Reader: reader(t, map[string]string{webhooks.LabelImagePolicy: "enforce"}, mcpv1alpha1.MCPServerPolicySpec{AllowedRegistries: []string{"ghcr.io/acme"}})}
	hex := strings.Repeat("0", 64)
	for _, image := range []string{
		"ghcr.io/acme/files@latest@sha256:" + hex,
		"ghcr.io/acme/files@sha512:" + hex + hex,
	} {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "w"}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "server", Image: image}}}}
		denied(t, v.Handle(context.Background(), request(t, "Pod", "", pod)), "spec.containers[0].image", "is not pinned by digest; use ghcr.io/acme/files@sha256:<digest>")
	}
}
