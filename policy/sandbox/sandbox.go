// Package sandbox defines the security context every MCP server pod runs with, and checks a pod spec
// against it. The controller builds pods from these values and uses Violations to detect drift; the
// workload admission webhook (webhooks.WorkloadValidator) uses Violations for the pods and pod
// controllers of namespaces that opt in. The MCPServer webhook does not: the spec has no pod fields.
package sandbox

import (
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/utils/ptr"
)

const (
	// UID is the fixed non-root user and group every sandboxed server container runs as; it is also
	// the pod's fsGroup.
	UID int64 = 65532
	// GatewayUID is the user and group of the MCP gateway sidecar in a server's pod: another user than
	// the server's, so the server can neither signal nor trace the gateway, read its /proc files, nor
	// share its port with SO_REUSEPORT (the kernel checks each against the caller's UID).
	GatewayUID int64 = 65533
	// TmpDir is the writable scratch directory (an emptyDir) mounted in every container.
	TmpDir = "/tmp"
	// HomeDir is the writable home directory (an emptyDir), so npx/uvx-style servers can cache packages.
	HomeDir = "/home/mcp"
	// TmpVolume is the name of the writable emptyDir volume mounted at TmpDir.
	TmpVolume = "tmp"
	// HomeVolume is the name of the writable emptyDir volume mounted at HomeDir.
	HomeVolume = "home"
)

// PodSecurityContext returns the pod-level security context: non-root with a fixed UID/GID and seccomp
// RuntimeDefault.
func PodSecurityContext() *corev1.PodSecurityContext {
	return &corev1.PodSecurityContext{
		RunAsNonRoot:   ptr.To(true),
		RunAsUser:      ptr.To(UID),
		RunAsGroup:     ptr.To(UID),
		FSGroup:        ptr.To(UID),
		SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
}

// ContainerSecurityContext returns the container-level security context: no privilege escalation, all
// capabilities dropped, read-only root filesystem, non-root (UID), seccomp RuntimeDefault.
func ContainerSecurityContext() *corev1.SecurityContext { return ContainerSecurityContextAs(UID) }

// ContainerSecurityContextAs is ContainerSecurityContext running as uid (user and primary group), which
// must not be 0.
func ContainerSecurityContextAs(uid int64) *corev1.SecurityContext {
	return &corev1.SecurityContext{
		AllowPrivilegeEscalation: ptr.To(false),
		Privileged:               ptr.To(false),
		ReadOnlyRootFilesystem:   ptr.To(true),
		RunAsNonRoot:             ptr.To(true),
		RunAsUser:                ptr.To(uid),
		RunAsGroup:               ptr.To(uid),
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
}

// Volumes returns the writable emptyDir volumes (bounded in size) and their mounts.
func Volumes() ([]corev1.Volume, []corev1.VolumeMount) {
	limit := func(s string) *corev1.EmptyDirVolumeSource {
		q := resource.MustParse(s)
		return &corev1.EmptyDirVolumeSource{SizeLimit: &q}
	}
	vols := []corev1.Volume{
		{Name: TmpVolume, VolumeSource: corev1.VolumeSource{EmptyDir: limit("256Mi")}},
		{Name: HomeVolume, VolumeSource: corev1.VolumeSource{EmptyDir: limit("512Mi")}},
	}
	mounts := []corev1.VolumeMount{{Name: TmpVolume, MountPath: TmpDir}, {Name: HomeVolume, MountPath: HomeDir}}
	return vols, mounts
}

// Violations lists every way the pod spec is weaker than the sandbox, each naming the field, e.g.
// "spec.containers[0].securityContext.capabilities.add: must be empty, has [NET_ADMIN]". An empty result
// means the pod is sandboxed.
func Violations(spec *corev1.PodSpec) []string {
	var v violations
	v.pod(spec)
	v.podSecurityContext(spec.SecurityContext)
	v.volumes(spec.Volumes)
	for i := range spec.InitContainers {
		v.container(fmt.Sprintf("spec.initContainers[%d]", i), &spec.InitContainers[i])
	}
	for i := range spec.Containers {
		v.container(fmt.Sprintf("spec.containers[%d]", i), &spec.Containers[i])
	}
	if len(spec.EphemeralContainers) > 0 {
		v.add("spec.ephemeralContainers: not allowed")
	}
	return v
}

// violations collects the ways a pod spec is weaker than the sandbox, in the order they are found.
type violations []string

func (v *violations) add(format string, args ...any) { *v = append(*v, fmt.Sprintf(format, args...)) }

// pod checks the pod's host namespaces, service account token and service links.
func (v *violations) pod(spec *corev1.PodSpec) {
	if spec.HostNetwork {
		v.add("spec.hostNetwork: must be false")
	}
	if spec.HostPID {
		v.add("spec.hostPID: must be false")
	}
	if spec.HostIPC {
		v.add("spec.hostIPC: must be false")
	}
	if ptr.Deref(spec.AutomountServiceAccountToken, true) {
		v.add("spec.automountServiceAccountToken: must be false")
	}
	if ptr.Deref(spec.EnableServiceLinks, true) {
		v.add("spec.enableServiceLinks: must be false")
	}
}

// podSecurityContext checks the pod's security context (none counts as an empty one).
func (v *violations) podSecurityContext(psc *corev1.PodSecurityContext) {
	if psc == nil {
		psc = &corev1.PodSecurityContext{}
	}
	if !ptr.Deref(psc.RunAsNonRoot, false) {
		v.add("spec.securityContext.runAsNonRoot: must be true")
	}
	if ptr.Deref(psc.RunAsUser, UID) == 0 {
		v.add("spec.securityContext.runAsUser: must not be 0")
	}
	if psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		v.add("spec.securityContext.seccompProfile.type: must be RuntimeDefault")
	}
}

// volumes checks that every volume is of a kind that holds only files.
func (v *violations) volumes(vols []corev1.Volume) {
	for i, vol := range vols {
		if vol.EmptyDir == nil && vol.ConfigMap == nil && vol.Secret == nil && !projectsFiles(vol.Projected) {
			v.add("spec.volumes[%d] (%s): only emptyDir, configMap, secret and projected volumes of configMap, secret and podCertificate sources are allowed", i, vol.Name)
		}
	}
}

// container checks the container at path: its security context, resource limits and host ports.
func (v *violations) container(path string, c *corev1.Container) {
	v.containerSecurityContext(path, c.SecurityContext)
	if c.Resources.Limits.Cpu().IsZero() || c.Resources.Limits.Memory().IsZero() {
		v.add("%s.resources.limits: cpu and memory limits are required", path)
	}
	for _, p := range c.Ports {
		if p.HostPort != 0 {
			v.add("%s.ports: hostPort is not allowed", path)
		}
	}
}

// containerSecurityContext checks the security context of the container at path (none counts as an
// empty one).
func (v *violations) containerSecurityContext(path string, sc *corev1.SecurityContext) {
	if sc == nil {
		sc = &corev1.SecurityContext{}
	}
	if ptr.Deref(sc.Privileged, false) {
		v.add("%s.securityContext.privileged: must be false", path)
	}
	if ptr.Deref(sc.AllowPrivilegeEscalation, true) {
		v.add("%s.securityContext.allowPrivilegeEscalation: must be false", path)
	}
	if !ptr.Deref(sc.ReadOnlyRootFilesystem, false) {
		v.add("%s.securityContext.readOnlyRootFilesystem: must be true", path)
	}
	if sc.RunAsUser != nil && *sc.RunAsUser == 0 {
		v.add("%s.securityContext.runAsUser: must not be 0", path)
	}
	if sc.RunAsNonRoot != nil && !*sc.RunAsNonRoot {
		v.add("%s.securityContext.runAsNonRoot: must not be false", path)
	}
	if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
		v.add("%s.securityContext.capabilities.drop: must contain ALL", path)
	}
	if sc.Capabilities != nil && len(sc.Capabilities.Add) > 0 {
		v.add("%s.securityContext.capabilities.add: must be empty, has %v", path, sc.Capabilities.Add)
	}
	if sc.SeccompProfile != nil && sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		v.add("%s.securityContext.seccompProfile.type: must be RuntimeDefault", path)
	}
}

// projectsFiles reports whether a projected volume holds only configMap, secret and podCertificate
// sources (no service account token, no downward API).
func projectsFiles(p *corev1.ProjectedVolumeSource) bool {
	if p == nil {
		return false
	}
	for _, src := range p.Sources {
		if src.ConfigMap == nil && src.Secret == nil && src.PodCertificate == nil {
			return false
		}
	}
	return true
}
