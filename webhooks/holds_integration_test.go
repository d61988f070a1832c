package webhooks_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
	"github.com/mcp-warden/mcp-warden/supplychain/imageverify"
	"github.com/mcp-warden/mcp-warden/supplychain/imageverify/imagetest"
	"github.com/mcp-warden/mcp-warden/webhooks"
)

// TestEphemeralContainersAndImageVolumesThroughTheAPIServer: `kubectl debug` (the ephemeralcontainers
// subresource) and image volumes go through the image policy, and the denial names the field.
func TestEphemeralContainersAndImageVolumesThroughTheAPIServer(t *testing.T) {
	needCluster(t)
	ctx := context.Background()
	ns := namespace(t, map[string]string{webhooks.LabelImagePolicy: "enforce"}, mcpv1alpha1.MCPServerPolicySpec{AllowedRegistries: []string{"ghcr.io/acme"}})
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: ns}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "server", Image: goodImage}}}}
	createEventually(t, pod, "")
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(pod), pod); err != nil {
		t.Fatal(err)
	}
	pod.Spec.EphemeralContainers = []corev1.EphemeralContainer{{EphemeralContainerCommon: corev1.EphemeralContainerCommon{
		Name: "debugger", Image: "busybox:latest", TerminationMessagePolicy: corev1.TerminationMessageReadFile, ImagePullPolicy: corev1.PullAlways}}}
	err := k8s.SubResource("ephemeralcontainers").Update(ctx, pod)
	if err == nil || !strings.Contains(err.Error(), "spec.ephemeralContainers[0].image") || !strings.Contains(err.Error(), "busybox:latest is not pinned by digest") {
		t.Fatalf("adding an unpinned debug container: %v", err)
	}
	vol := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "v", Namespace: ns}, Spec: corev1.PodSpec{
		Containers: []corev1.Container{{Name: "server", Image: goodImage, VolumeMounts: []corev1.VolumeMount{{Name: "models", MountPath: "/models"}}}},
		Volumes:    []corev1.Volume{{Name: "models", VolumeSource: corev1.VolumeSource{Image: &corev1.ImageVolumeSource{Reference: "ghcr.io/acme-evil/models@sha256:" + strings.Repeat("0", 64), PullPolicy: corev1.PullIfNotPresent}}}},
	}}
	createEventually(t, vol, `spec.volumes[0].image.reference: Forbidden: image ghcr.io/acme-evil/models@sha256:`)
}

// TestMCPServerPodsWithoutTheOptIn: in a namespace a policy governs that has not opted in, a pod
// labelled as an MCP server must be sandboxed and use allowed images; other pods are not sent to the
// webhook at all (config/webhook's objectSelector is not applied by envtest, the handler decides).
func TestMCPServerPodsWithoutTheOptIn(t *testing.T) {
	needCluster(t)
	ns := namespace(t, nil, mcpv1alpha1.MCPServerPolicySpec{AllowedRegistries: []string{"ghcr.io/acme"}})
	labels := map[string]string{webhooks.LabelServer: "files"}
	privileged := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "fake-server", Namespace: ns, Labels: labels}, Spec: corev1.PodSpec{
		HostPID: true, Containers: []corev1.Container{{Name: "server", Image: goodImage}}}}
	createEventually(t, privileged, "spec.hostPID: Forbidden: MCP server pods run sandboxed")
	swapped := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "swapped", Namespace: ns, Labels: labels}, Spec: corev1.PodSpec{
		Containers: []corev1.Container{{Name: "server", Image: "docker.io/library/busybox@sha256:" + strings.Repeat("0", 64)}}}}
	createEventually(t, swapped, "spec.containers[0].image: Forbidden: image docker.io/library/busybox")
	plain := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "plain", Namespace: ns}, Spec: corev1.PodSpec{
		HostPID: true, Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}
	createEventually(t, plain, "")
}

// TestPolicyValidatedAtTheDoor: an MCPServerPolicy with unusable fields is refused, each field named.
func TestPolicyValidatedAtTheDoor(t *testing.T) {
	needCluster(t)
	ctx := context.Background()
	bad := &mcpv1alpha1.MCPServerPolicy{ObjectMeta: metav1.ObjectMeta{Name: "unusable"}, Spec: mcpv1alpha1.MCPServerPolicySpec{
		AllowedRegistries: []string{"ghcr.io/*"},
		Egress:            mcpv1alpha1.EgressCeiling{AllowedFQDNs: []string{"*github.com"}, AllowedCIDRs: []string{"10.0.0.1/8"}},
		Authorities: []mcpv1alpha1.Authority{{Name: "k", Key: &mcpv1alpha1.KeyAuthority{Data: "-----BEGIN PUBLIC KEY-----\nAA==\n-----END PUBLIC KEY-----"}},
			{Name: "ci", Keyless: &mcpv1alpha1.KeylessAuthority{Issuer: "https://issuer.example", SubjectRegExp: "(", Roots: "x"}}},
	}}
	err := k8s.Create(ctx, bad)
	for _, f := range []string{"spec.allowedRegistries[0]", "spec.egress.allowedFQDNs[0]", "spec.egress.allowedCIDRs[0]", "spec.authorities[0].key.data", "spec.authorities[1].keyless.subjectRegExp", "spec.authorities[1].keyless.roots"} {
		if err == nil || !strings.Contains(err.Error(), f) {
			_ = k8s.Delete(ctx, bad)
			t.Fatalf("creating an unusable policy: %v (want %s named)", err, f)
		}
	}
}

// TestHangingRegistryThroughTheAPIServer: a registry that never answers yields the verifier's
// actionable denial within the admission deadline (8s), not the API server's timeout (10s).
func TestHangingRegistryThroughTheAPIServer(t *testing.T) {
	needCluster(t)
	release := make(chan struct{})
	hang := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(hang.Close)
	t.Cleanup(func() { close(release) })
	key, err := imagetest.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	host := hang.Listener.Addr().String()
	verifier.v = &imageverify.CosignVerifier{Verifier: imageverify.New(imageverify.Options{}), Reader: k8s}
	t.Cleanup(func() { verifier.v = nil })
	ns := namespace(t, nil, mcpv1alpha1.MCPServerPolicySpec{AllowedRegistries: []string{host},
		Authorities: []mcpv1alpha1.Authority{{Name: "release-key", Key: &mcpv1alpha1.KeyAuthority{Data: string(key.PublicPEM())}}}})
	s := server(ns, host+"/acme/files@sha256:"+strings.Repeat("0", 64))
	var createErr error
	var took time.Duration
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		start := time.Now()
		createErr = k8s.Create(context.Background(), s.DeepCopy())
		took = time.Since(start)
		if createErr != nil && strings.Contains(createErr.Error(), "registry unreachable") {
			break
		}
	}
	if createErr == nil || !strings.Contains(createErr.Error(), "timeout: no answer") || strings.Contains(createErr.Error(), "context deadline exceeded") {
		t.Fatalf("create against a hanging registry: %v", createErr)
	}
	if took > 9500*time.Millisecond {
		t.Fatalf("the denial took %s, too close to the API server's 10s", took)
	}
	t.Logf("denied after %s: %v", took, createErr)
}
