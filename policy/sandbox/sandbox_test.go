package sandbox

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/utils/ptr"
)

func sandboxedPod() *corev1.PodSpec {
	vols, mounts := Volumes()
	return &corev1.PodSpec{
		AutomountServiceAccountToken: ptr.To(false),
		EnableServiceLinks:           ptr.To(false),
		SecurityContext:              PodSecurityContext(),
		Volumes:                      vols,
		Containers: []corev1.Container{{
			Name:            "server",
			SecurityContext: ContainerSecurityContext(),
			VolumeMounts:    mounts,
			Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{
				corev1.ResourceCPU: resource.MustParse("1"), corev1.ResourceMemory: resource.MustParse("1Gi"),
			}},
		}},
	}
}

func TestSandboxedPodHasNoViolations(t *testing.T) {
	if v := Violations(sandboxedPod()); len(v) != 0 {
		t.Fatalf("violations = %v", v)
	}
}

func TestViolations(t *testing.T) {
	cases := map[string]struct {
		mutate func(*corev1.PodSpec)
		want   string
	}{
		"host network":  {func(p *corev1.PodSpec) { p.HostNetwork = true }, "spec.hostNetwork"},
		"host pid":      {func(p *corev1.PodSpec) { p.HostPID = true }, "spec.hostPID"},
		"host ipc":      {func(p *corev1.PodSpec) { p.HostIPC = true }, "spec.hostIPC"},
		"token mounted": {func(p *corev1.PodSpec) { p.AutomountServiceAccountToken = nil }, "automountServiceAccountToken"},
		"service links": {func(p *corev1.PodSpec) { p.EnableServiceLinks = ptr.To(true) }, "enableServiceLinks"},
		"root allowed":  {func(p *corev1.PodSpec) { p.SecurityContext.RunAsNonRoot = nil }, "spec.securityContext.runAsNonRoot"},
		"uid 0":         {func(p *corev1.PodSpec) { p.SecurityContext.RunAsUser = ptr.To[int64](0) }, "runAsUser: must not be 0"},
		"no seccomp":    {func(p *corev1.PodSpec) { p.SecurityContext.SeccompProfile = nil }, "seccompProfile"},
		"hostPath volume": {func(p *corev1.PodSpec) {
			p.Volumes = append(p.Volumes, corev1.Volume{Name: "h", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/"}}})
		}, "spec.volumes[2] (h)"},
		"privileged":    {func(p *corev1.PodSpec) { p.Containers[0].SecurityContext.Privileged = ptr.To(true) }, "containers[0].securityContext.privileged"},
		"escalation":    {func(p *corev1.PodSpec) { p.Containers[0].SecurityContext.AllowPrivilegeEscalation = nil }, "allowPrivilegeEscalation"},
		"writable root": {func(p *corev1.PodSpec) { p.Containers[0].SecurityContext.ReadOnlyRootFilesystem = ptr.To(false) }, "readOnlyRootFilesystem"},
		"capability added": {func(p *corev1.PodSpec) {
			p.Containers[0].SecurityContext.Capabilities.Add = []corev1.Capability{"NET_ADMIN"}
		}, "capabilities.add: must be empty, has [NET_ADMIN]"},
		"capabilities kept":   {func(p *corev1.PodSpec) { p.Containers[0].SecurityContext.Capabilities.Drop = nil }, "capabilities.drop: must contain ALL"},
		"no security context": {func(p *corev1.PodSpec) { p.Containers[0].SecurityContext = nil }, "containers[0].securityContext.allowPrivilegeEscalation"},
		"unconfined seccomp": {func(p *corev1.PodSpec) {
			p.Containers[0].SecurityContext.SeccompProfile = &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeUnconfined}
		}, "containers[0].securityContext.seccompProfile"},
		"no limits": {func(p *corev1.PodSpec) { p.Containers[0].Resources = corev1.ResourceRequirements{} }, "resources.limits"},
		"host port": {func(p *corev1.PodSpec) {
			p.Containers[0].Ports = []corev1.ContainerPort{{ContainerPort: 80, HostPort: 80}}
		}, "hostPort"},
		"init container":  {func(p *corev1.PodSpec) { p.InitContainers = []corev1.Container{{Name: "init"}} }, "spec.initContainers[0].securityContext"},
		"ephemeral debug": {func(p *corev1.PodSpec) { p.EphemeralContainers = []corev1.EphemeralContainer{{}} }, "ephemeralContainers"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			p := sandboxedPod()
			tc.mutate(p)
			v := Violations(p)
			if !strings.Contains(strings.Join(v, "\n"), tc.want) {
				t.Fatalf("violations = %q, want one containing %q", v, tc.want)
			}
		})
	}
}
