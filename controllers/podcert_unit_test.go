package controllers

import (
	"strings"
	"testing"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
	"github.com/mcp-warden/mcp-warden/controllers/desired"
)

// TestCheckPodRefusesSharedPIDsAndGatewayUsers: a pod whose owner chain checks out (for example one of
// a ReplicaSet a tenant made under the server's Deployment) but that shares its PID namespace, or runs
// its server as the gateway's user, could read the gateway's key from the gateway's files; the signer
// refuses it. The pod the operator renders passes.
func TestCheckPodRefusesSharedPIDsAndGatewayUsers(t *testing.T) {
	s := &mcpv1alpha1.MCPServer{}
	s.Namespace, s.Name, s.UID = "ns", "files", types.UID("u")
	s.Spec.Image = "registry.example/files@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	r := &PodCertSigner{GatewayImage: "registry.example/gateway@sha256:abcdefabcdefabcdefabcdefabcdefabcdefabcdefabcdefabcdefabcdefabcd"}
	render := func() *corev1.Pod {
		spec := desired.Deployment(s, desired.Options{GatewayImage: r.GatewayImage}, "").Spec.Template.Spec
		spec.NodeName = "node"
		return &corev1.Pod{Spec: spec}
	}
	pcr := func(p *corev1.Pod) *certificatesv1.PodCertificateRequest {
		return &certificatesv1.PodCertificateRequest{Spec: certificatesv1.PodCertificateRequestSpec{ServiceAccountName: p.Spec.ServiceAccountName, NodeName: "node"}}
	}
	if why := r.checkPod(s, render(), pcr(render())); why != "" {
		t.Fatalf("the rendered pod is refused: %s", why)
	}
	shared := render()
	shared.Spec.ShareProcessNamespace = ptr.To(true)
	if why := r.checkPod(s, shared, pcr(shared)); !strings.Contains(why, "PID namespace") {
		t.Errorf("a pod sharing its PID namespace: %q", why)
	}
	asGateway := render()
	for i := range asGateway.Spec.Containers {
		sc := asGateway.Spec.Containers[i].SecurityContext.DeepCopy()
		sc.RunAsUser, sc.RunAsGroup = ptr.To(int64(65533)), ptr.To(int64(65533))
		asGateway.Spec.Containers[i].SecurityContext = sc
	}
	if why := r.checkPod(s, asGateway, pcr(asGateway)); !strings.Contains(why, "runs as user 65533") {
		t.Errorf("a pod whose server runs as the gateway's user: %q", why)
	}
	podUsers := render()
	podUsers.Spec.SecurityContext = podUsers.Spec.SecurityContext.DeepCopy()
	podUsers.Spec.SecurityContext.SupplementalGroups = []int64{65533}
	if why := r.checkPod(s, podUsers, pcr(podUsers)); !strings.Contains(why, "groups [65533]") {
		t.Errorf("a pod with the gateway's group as a supplemental group: %q", why)
	}
}
