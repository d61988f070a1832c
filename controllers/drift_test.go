package controllers

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/utils/ptr"

	"github.com/mcp-warden/mcp-warden/policy/sandbox"
)

// TestDriftIsAnythingNotDesired: every field another writer may add to the pod template is drift, not
// only the ones a deny-list knows; each case was kept by the old deny-list check.
func TestDriftIsAnythingNotDesired(t *testing.T) {
	cases := []struct {
		name, path string
		mutate     func(*corev1.PodSpec)
	}{
		{"shareProcessNamespace", "template.spec.shareProcessNamespace", func(p *corev1.PodSpec) { p.ShareProcessNamespace = ptr.To(true) }},
		{"hostAliases", "template.spec.hostAliases", func(p *corev1.PodSpec) {
			p.HostAliases = []corev1.HostAlias{{IP: "203.0.113.9", Hostnames: []string{"auth.example.com"}}}
		}},
		{"dnsPolicy", "template.spec.dnsPolicy", func(p *corev1.PodSpec) { p.DNSPolicy = corev1.DNSNone }},
		{"dnsConfig", "template.spec.dnsConfig", func(p *corev1.PodSpec) { p.DNSConfig = &corev1.PodDNSConfig{Nameservers: []string{"203.0.113.53"}} }},
		{"nodeName", "template.spec.nodeName", func(p *corev1.PodSpec) { p.NodeName = "control-plane-1" }},
		{"tolerations", "template.spec.tolerations", func(p *corev1.PodSpec) {
			p.Tolerations = []corev1.Toleration{{Key: "node-role.kubernetes.io/control-plane", Operator: corev1.TolerationOpExists}}
		}},
		{"priorityClassName", "template.spec.priorityClassName", func(p *corev1.PodSpec) { p.PriorityClassName = "system-node-critical" }},
		{"runtimeClassName", "template.spec.runtimeClassName", func(p *corev1.PodSpec) { p.RuntimeClassName = ptr.To("runc-unconfined") }},
		{"sysctls", "template.spec.securityContext.sysctls", func(p *corev1.PodSpec) {
			p.SecurityContext.Sysctls = []corev1.Sysctl{{Name: "net.ipv4.ip_unprivileged_port_start", Value: "0"}}
		}},
		{"supplementalGroups [0]", "template.spec.securityContext.supplementalGroups", func(p *corev1.PodSpec) { p.SecurityContext.SupplementalGroups = []int64{0} }},
		{"AppArmor Unconfined", "template.spec.containers[0].securityContext.appArmorProfile", func(p *corev1.PodSpec) {
			p.Containers[0].SecurityContext.AppArmorProfile = &corev1.AppArmorProfile{Type: corev1.AppArmorProfileTypeUnconfined}
		}},
		{"SELinux options", "template.spec.securityContext.seLinuxOptions", func(p *corev1.PodSpec) {
			p.SecurityContext.SELinuxOptions = &corev1.SELinuxOptions{Type: "spc_t"}
		}},
		{"procMount Unmasked", "template.spec.containers[0].securityContext.procMount", func(p *corev1.PodSpec) {
			p.Containers[0].SecurityContext.ProcMount = ptr.To(corev1.UnmaskedProcMount)
		}},
		{"swapped Secret volume", "template.spec.volumes", func(p *corev1.PodSpec) {
			for i := range p.Volumes {
				if p.Volumes[i].ConfigMap != nil {
					p.Volumes[i].VolumeSource = corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "cloud-credentials"}}
				}
			}
		}},
		{"image", "template.spec.containers[0].image", func(p *corev1.PodSpec) { p.Containers[0].Image = "busybox:latest" }},
		// The gateway sidecar as the server's user, or as a plain init container the server outlives.
		{"gateway as the server's user", "template.spec.initContainers[0].securityContext.runAsUser", func(p *corev1.PodSpec) {
			p.InitContainers[0].SecurityContext.RunAsUser = ptr.To(sandbox.UID)
		}},
		{"gateway not a sidecar", "template.spec.initContainers[0].restartPolicy", func(p *corev1.PodSpec) { p.InitContainers[0].RestartPolicy = nil }},
		{"shared PID namespace", "template.spec.shareProcessNamespace", func(p *corev1.PodSpec) { p.ShareProcessNamespace = ptr.To(true) }},
	}
	desired := testDeployment(testServer(), "abc")
	// What the API server stores is the desired spec plus defaults; here the desired spec stands for it.
	want := desired.Spec.DeepCopy()
	if d := specDiff(want, desired.Spec.DeepCopy()); len(d) > 0 {
		t.Fatalf("an untouched spec differs: %v", d)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			live := desired.Spec.DeepCopy()
			tc.mutate(&live.Template.Spec)
			if equality.Semantic.DeepEqual(*want, *live) {
				t.Fatal("the change is not seen as drift")
			}
			diff := specDiff(want, live)
			if !strings.Contains(strings.Join(diff, " "), tc.path) {
				t.Fatalf("drift = %v, want it to name %s", diff, tc.path)
			}
		})
	}
}
