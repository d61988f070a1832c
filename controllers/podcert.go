package controllers

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"slices"
	"strings"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
	"github.com/mcp-warden/mcp-warden/controllers/desired"
	"github.com/mcp-warden/mcp-warden/policy/gatewayconfig"
	"github.com/mcp-warden/mcp-warden/trust/servingcert"
)

// Reasons of a PodCertificateRequest the gateway signer denies or fails.
const (
	// ReasonNotAGatewayPod: the pod is not a gateway pod of an MCPServer (its owner chain, service
	// account or pod layout is not the operator's).
	ReasonNotAGatewayPod = "NotAGatewayPod"
	// ReasonSignerUnavailable: the operator has no CA to sign with (a Failed condition; the kubelet asks
	// again).
	ReasonSignerUnavailable = "SignerUnavailable"
)

// PodCertSigner is the signer gatewayconfig.GatewaySigner: it issues the gateways' serving
// certificates to the PodCertificateRequests the kubelet makes for a gateway pod's podCertificate
// volume. The kubelet generates the private key on the node and proves possession of it to the API
// server; the signer checks that the pod is a gateway pod of an MCPServer (pod -> ReplicaSet ->
// Deployment -> MCPServer, each the controller of the next and of the same UID the request names; the
// server's service account; the gateway container, image and arguments the operator renders; the
// volume mounted by the gateway container alone) and issues a certificate from the operator's CA for
// the server's Service names, or denies the request naming what did not match.
type PodCertSigner struct {
	// Client reads MCPServers from the cache and writes request statuses.
	Client client.Client
	// APIReader reads pods, ReplicaSets and Deployments around the cache (an impostor pod carries no
	// label the cache selects, and a request must not be denied for the cache not having seen a new
	// ReplicaSet yet).
	APIReader client.Reader
	// CA issues the certificates.
	CA *servingcert.Authority
	// GatewayImage is the gateway image the operator renders.
	GatewayImage string
	// ClusterDomain is the cluster's DNS domain (default cluster.local).
	ClusterDomain string
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// +kubebuilder:rbac:groups=certificates.k8s.io,resources=podcertificaterequests,verbs=get;list;watch
// +kubebuilder:rbac:groups=certificates.k8s.io,resources=podcertificaterequests/status,verbs=update
// +kubebuilder:rbac:groups=certificates.k8s.io,resources=signers,verbs=sign,resourceNames=mcp.warden.dev/gateway-serving

// SetupWithManager watches the PodCertificateRequests for the gateway signer.
func (r *PodCertSigner) SetupWithManager(mgr ctrl.Manager) error {
	if r.APIReader == nil {
		r.APIReader = mgr.GetAPIReader()
	}
	if r.ClusterDomain == "" {
		r.ClusterDomain = "cluster.local"
	}
	if r.GatewayImage == "" {
		r.GatewayImage = DefaultGatewayImage
	}
	ours := predicate.NewPredicateFuncs(func(o client.Object) bool {
		pcr, ok := o.(*certificatesv1.PodCertificateRequest)
		return ok && pcr.Spec.SignerName == gatewayconfig.GatewaySigner
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("gateway-signer").
		For(&certificatesv1.PodCertificateRequest{}, builder.WithPredicates(ours)).
		Complete(r)
}

// Reconcile issues, denies or fails one request; a request already concluded is left alone.
func (r *PodCertSigner) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	pcr := &certificatesv1.PodCertificateRequest{}
	if err := r.Client.Get(ctx, req.NamespacedName, pcr); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if pcr.Spec.SignerName != gatewayconfig.GatewaySigner || concluded(pcr) {
		return ctrl.Result{}, nil
	}
	logger := log.FromContext(ctx).WithValues("pod", pcr.Spec.PodName)
	s, denial, err := r.gatewayServer(ctx, pcr)
	if err != nil {
		return ctrl.Result{}, err
	}
	if denial != "" {
		logger.Info("denied a pod certificate request", "why", denial)
		return ctrl.Result{}, r.conclude(ctx, pcr, certificatesv1.PodCertificateRequestConditionTypeDenied, ReasonNotAGatewayPod, denial)
	}
	pub, reason, why := requestKey(pcr)
	if why != "" {
		return ctrl.Result{}, r.conclude(ctx, pcr, certificatesv1.PodCertificateRequestConditionTypeDenied, reason, why)
	}
	if r.CA == nil {
		return ctrl.Result{}, r.conclude(ctx, pcr, certificatesv1.PodCertificateRequestConditionTypeFailed, ReasonSignerUnavailable,
			"the operator runs without a gateway CA (it leaves issuance to cert-manager), so it signs no gateway pod certificates")
	}
	if err := r.issue(ctx, pcr, s, pub); err != nil {
		return ctrl.Result{}, err
	}
	logger.Info("issued a gateway pod certificate", "server", s.Name)
	return ctrl.Result{}, nil
}

func concluded(pcr *certificatesv1.PodCertificateRequest) bool {
	for _, t := range []string{certificatesv1.PodCertificateRequestConditionTypeIssued, certificatesv1.PodCertificateRequestConditionTypeDenied, certificatesv1.PodCertificateRequestConditionTypeFailed} {
		if meta.IsStatusConditionTrue(pcr.Status.Conditions, t) {
			return true
		}
	}
	return false
}

// gatewayServer finds the MCPServer whose gateway pod made the request; a non-empty denial says, for
// the pod's owner, why the pod is not one.
func (r *PodCertSigner) gatewayServer(ctx context.Context, pcr *certificatesv1.PodCertificateRequest) (*mcpv1alpha1.MCPServer, string, error) {
	ns := pcr.Namespace
	pod := &corev1.Pod{}
	err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: ns, Name: pcr.Spec.PodName}, pod)
	if apierrors.IsNotFound(err) || (err == nil && pod.UID != pcr.Spec.PodUID) {
		return nil, fmt.Sprintf("pod %s/%s (uid %s) does not exist", ns, pcr.Spec.PodName, pcr.Spec.PodUID), nil
	}
	if err != nil {
		return nil, "", fmt.Errorf("get pod %s/%s: %w", ns, pcr.Spec.PodName, err)
	}
	notOurs := func(format string, a ...any) string {
		return fmt.Sprintf("pod %s/%s is not a gateway pod of an MCPServer: %s; signer %s issues certificates only to the gateway pods the operator runs for an MCPServer; remove the podCertificate volume of this signer from the pod",
			ns, pod.Name, fmt.Sprintf(format, a...), gatewayconfig.GatewaySigner)
	}
	chain := ownerChain{replicaSets: r.APIReader, deployments: r.APIReader, servers: r.Client}
	s, why, err := chain.serverOf(ctx, pod)
	if why != "" || err != nil {
		return nil, notOurs("%s", why), err
	}
	if !gatewayconfig.TLSEnabled(s) {
		return nil, notOurs("MCPServer %s has spec.gateway.tls.mode Disabled", s.Name), nil
	}
	if err := gatewayconfig.CheckName(s); err != nil {
		return nil, notOurs("%s", err.Error()), nil
	}
	if why := r.checkPod(s, pod, pcr); why != "" {
		return nil, notOurs("%s", why), nil
	}
	return s, "", nil
}

// checkPod compares the pod with the layout the operator renders for the server: its service account
// (and the request's), the gateway container's image, command and arguments, and no container but
// the gateway mounting a volume of the signer's.
func (r *PodCertSigner) checkPod(s *mcpv1alpha1.MCPServer, pod *corev1.Pod, pcr *certificatesv1.PodCertificateRequest) string {
	want := desired.Deployment(s, desired.Options{GatewayImage: r.GatewayImage}, "").Spec.Template.Spec
	if pod.Spec.ServiceAccountName != want.ServiceAccountName || pcr.Spec.ServiceAccountName != want.ServiceAccountName {
		return fmt.Sprintf("it runs as service account %q (request: %q), not the server's %q", pod.Spec.ServiceAccountName, pcr.Spec.ServiceAccountName, want.ServiceAccountName)
	}
	if string(pcr.Spec.NodeName) != pod.Spec.NodeName {
		return fmt.Sprintf("the request names node %q, the pod runs on %q", pcr.Spec.NodeName, pod.Spec.NodeName)
	}
	// The key's isolation rests on the users and the PID namespace: a pod whose server runs as the
	// gateway's user, or shares the gateway's processes, could read the key from the gateway's files.
	if ptr.Deref(pod.Spec.ShareProcessNamespace, false) != ptr.Deref(want.ShareProcessNamespace, false) || pod.Spec.HostPID != want.HostPID {
		return "it shares a PID namespace the operator does not render (shareProcessNamespace or hostPID)"
	}
	if why := sameUsers("pod", pod.Spec.SecurityContext, want.SecurityContext); why != "" {
		return why
	}
	if why := sameContainers("init container", pod.Spec.InitContainers, want.InitContainers); why != "" {
		return why
	}
	if why := sameContainers("container", pod.Spec.Containers, want.Containers); why != "" {
		return why
	}
	if why := samePrivileges(pod, want); why != "" {
		return why
	}
	gw, live := want.InitContainers[0], pod.Spec.InitContainers[0]
	if why := noTenantCommands(live, gw); why != "" {
		return why
	}
	if why := sameGatewayVolumes(pod, want, live, gw); why != "" {
		return why
	}
	return keyOnlyInGateway(pod, gw.Name)
}

// sameGatewayVolumes compares the gateway container's mounts, and the volumes behind them, with the
// rendered ones.
func sameGatewayVolumes(pod *corev1.Pod, want corev1.PodSpec, live, gw corev1.Container) string {
	if !equality.Semantic.DeepEqual(live.VolumeMounts, gw.VolumeMounts) {
		return fmt.Sprintf("its gateway container mounts %s, not the volumes the operator renders", mountNames(live.VolumeMounts))
	}
	for _, m := range gw.VolumeMounts {
		if v := volumeNamed(want.Volumes, m.Name); !equality.Semantic.DeepEqual(volumeNamed(pod.Spec.Volumes, m.Name).VolumeSource, v.VolumeSource) {
			return fmt.Sprintf("its volume %s, which the gateway container mounts, is not the one the operator renders", m.Name)
		}
	}
	return ""
}

// keyOnlyInGateway refuses a pod where a container but the gateway (named gateway) mounts a volume of
// the signer's, or an ephemeral container shares the gateway container's processes.
func keyOnlyInGateway(pod *corev1.Pod, gateway string) string {
	var ours []string
	for _, v := range pod.Spec.Volumes {
		if v.Projected == nil {
			continue
		}
		for _, src := range v.Projected.Sources {
			if src.PodCertificate != nil && src.PodCertificate.SignerName == gatewayconfig.GatewaySigner {
				ours = append(ours, v.Name)
			}
		}
	}
	var others []corev1.Container
	others = append(others, pod.Spec.InitContainers[1:]...)
	others = append(others, pod.Spec.Containers...)
	for _, e := range pod.Spec.EphemeralContainers {
		if e.TargetContainerName == gateway {
			return fmt.Sprintf("its ephemeral container %s shares the gateway container's processes (targetContainerName %s), and through them the gateway's key", e.Name, gateway)
		}
		others = append(others, corev1.Container{Name: e.Name, VolumeMounts: e.VolumeMounts})
	}
	for _, c := range others {
		for _, m := range c.VolumeMounts {
			if slices.Contains(ours, m.Name) {
				return fmt.Sprintf("container %s mounts the gateway's key (volume %s); only the gateway container may", c.Name, m.Name)
			}
		}
	}
	return ""
}

// samePrivileges compares what a pod and its containers may do beyond their users with the rendered
// pod: the node's network, IPC and user namespaces, and every container's security context (privileged,
// capabilities, privilege escalation, seccomp, the root filesystem). A privileged or more capable
// container, or root on the node, reads the gateway's key from the kubelet's pod directory.
func samePrivileges(pod *corev1.Pod, want corev1.PodSpec) string {
	if pod.Spec.HostNetwork != want.HostNetwork || pod.Spec.HostIPC != want.HostIPC || !equality.Semantic.DeepEqual(pod.Spec.HostUsers, want.HostUsers) {
		return "it uses the node's network, IPC or user namespace, which the operator does not render (hostNetwork, hostIPC or hostUsers)"
	}
	if !equality.Semantic.DeepEqual(pod.Spec.SecurityContext, want.SecurityContext) {
		return "its pod security context is not the one the operator renders"
	}
	for _, set := range [][2][]corev1.Container{{pod.Spec.InitContainers, want.InitContainers}, {pod.Spec.Containers, want.Containers}} {
		for i, w := range set[1] {
			if l := set[0][i]; !equality.Semantic.DeepEqual(l.SecurityContext, w.SecurityContext) {
				return fmt.Sprintf("the security context of its container %s (privileged, capabilities, privilege escalation, seccomp or root filesystem) is not the one the operator renders", l.Name)
			}
		}
	}
	return ""
}

// noTenantCommands refuses what would run a command of the pod's writer in the gateway container, as
// the gateway's user and beside its key (an exec probe or lifecycle hook), or change the gateway
// process's environment.
func noTenantCommands(live, want corev1.Container) string {
	for name, p := range map[string]*corev1.Probe{"startupProbe": live.StartupProbe, "readinessProbe": live.ReadinessProbe, "livenessProbe": live.LivenessProbe} {
		if p != nil && p.Exec != nil {
			return fmt.Sprintf("its gateway container has an exec %s, which would run a command beside the gateway's key; the operator renders none", name)
		}
	}
	if !equality.Semantic.DeepEqual(live.Lifecycle, want.Lifecycle) {
		return "its gateway container has lifecycle hooks the operator does not render, which would run beside the gateway's key"
	}
	if !equality.Semantic.DeepEqual(live.Env, want.Env) || !equality.Semantic.DeepEqual(live.EnvFrom, want.EnvFrom) {
		return "its gateway container's environment is not the one the operator renders"
	}
	return ""
}

// sameUsers compares the user, group, fsGroup and supplemental groups of a security context with the
// rendered one's (nil: none set).
func sameUsers(what string, live, want *corev1.PodSecurityContext) string {
	if live == nil {
		live = &corev1.PodSecurityContext{}
	}
	if want == nil {
		want = &corev1.PodSecurityContext{}
	}
	if !equality.Semantic.DeepEqual(live.RunAsUser, want.RunAsUser) || !equality.Semantic.DeepEqual(live.RunAsGroup, want.RunAsGroup) ||
		!equality.Semantic.DeepEqual(live.FSGroup, want.FSGroup) || !slices.Equal(live.SupplementalGroups, want.SupplementalGroups) {
		return fmt.Sprintf("its %s runs as user %v, group %v, fsGroup %v, groups %v; the operator renders user %v, group %v, fsGroup %v, groups %v",
			what, ptr.Deref(live.RunAsUser, -1), ptr.Deref(live.RunAsGroup, -1), ptr.Deref(live.FSGroup, -1), live.SupplementalGroups,
			ptr.Deref(want.RunAsUser, -1), ptr.Deref(want.RunAsGroup, -1), ptr.Deref(want.FSGroup, -1), want.SupplementalGroups)
	}
	return ""
}

// sameContainers compares the containers' names, images, commands and arguments with the rendered ones.
func sameContainers(what string, live, want []corev1.Container) string {
	if len(live) != len(want) {
		return fmt.Sprintf("it has %d %ss, the operator renders %d", len(live), what, len(want))
	}
	for i, w := range want {
		l := live[i]
		if l.Name != w.Name || l.Image != w.Image || !slices.Equal(l.Command, w.Command) || !slices.Equal(l.Args, w.Args) {
			return fmt.Sprintf("its %s %d (%s, image %s, command %q, args %q) is not the one the operator renders (%s, image %s, command %q, args %q)",
				what, i, l.Name, l.Image, l.Command, l.Args, w.Name, w.Image, w.Command, w.Args)
		}
		var lsc, wsc *corev1.PodSecurityContext
		if l.SecurityContext != nil {
			lsc = &corev1.PodSecurityContext{RunAsUser: l.SecurityContext.RunAsUser, RunAsGroup: l.SecurityContext.RunAsGroup}
		}
		if w.SecurityContext != nil {
			wsc = &corev1.PodSecurityContext{RunAsUser: w.SecurityContext.RunAsUser, RunAsGroup: w.SecurityContext.RunAsGroup}
		}
		if why := sameUsers(what+" "+l.Name, lsc, wsc); why != "" {
			return why
		}
	}
	return ""
}

func mountNames(ms []corev1.VolumeMount) []string {
	names := make([]string, len(ms))
	for i, m := range ms {
		names[i] = m.Name + ":" + m.MountPath
	}
	return names
}

func volumeNamed(vols []corev1.Volume, name string) corev1.Volume {
	for _, v := range vols {
		if v.Name == name {
			return v
		}
	}
	return corev1.Volume{}
}

// requestKey is the request's public key (the API server has verified the stub CSR's signature: the
// kubelet holds the private key); the signer takes ECDSA P-256 only.
func requestKey(pcr *certificatesv1.PodCertificateRequest) (any, string, string) {
	if len(pcr.Spec.UnverifiedUserAnnotations) > 0 {
		return nil, certificatesv1.PodCertificateRequestConditionInvalidUserConfig,
			fmt.Sprintf("signer %s takes no userAnnotations; remove them from the podCertificate volume", gatewayconfig.GatewaySigner)
	}
	csr, err := x509.ParseCertificateRequest(pcr.Spec.StubPKCS10Request)
	if err != nil {
		return nil, ReasonNotAGatewayPod, fmt.Sprintf("spec.stubPKCS10Request does not parse: %v", err)
	}
	if k, ok := csr.PublicKey.(*ecdsa.PublicKey); ok && k.Curve == elliptic.P256() {
		return k, "", ""
	}
	return nil, certificatesv1.PodCertificateRequestConditionUnsupportedKeyType,
		fmt.Sprintf("signer %s issues for keyType %s only; set keyType: %s in the podCertificate volume", gatewayconfig.GatewaySigner, gatewayconfig.GatewayKeyType, gatewayconfig.GatewayKeyType)
}

// issue signs the key for the server's Service names, for the request's maximum lifetime (the
// operator's leaf lifetime at most), the kubelet to refresh it at two thirds of its life.
func (r *PodCertSigner) issue(ctx context.Context, pcr *certificatesv1.PodCertificateRequest, s *mcpv1alpha1.MCPServer, pub any) error {
	ca, err := r.CA.Current(ctx)
	if err != nil {
		return err
	}
	if err := r.bundlePublished(ctx, s.Namespace, ca); err != nil {
		return err
	}
	life := min(time.Duration(ptr.Deref(pcr.Spec.MaxExpirationSeconds, gatewayconfig.GatewayCertSeconds))*time.Second, r.CA.LeafLifetimeOrDefault())
	chain, leaf, err := r.CA.IssueFor(ca, gatewayconfig.DNSNames(s, r.ClusterDomain), pub, life)
	if err != nil {
		return err
	}
	if leaf.NotAfter.Sub(leaf.NotBefore) < time.Hour {
		return r.conclude(ctx, pcr, certificatesv1.PodCertificateRequestConditionTypeFailed, ReasonSignerUnavailable,
			fmt.Sprintf("the operator's CA expires at %s, too soon for a certificate of an hour; it is rotated at two thirds of its life: check the operator's logs", ca.Cert.NotAfter.Format(time.RFC3339)))
	}
	pcr.Status.CertificateChain = string(chain)
	pcr.Status.NotBefore = &metav1.Time{Time: leaf.NotBefore}
	pcr.Status.NotAfter = &metav1.Time{Time: leaf.NotAfter}
	pcr.Status.BeginRefreshAt = &metav1.Time{Time: leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) * 2 / 3).Truncate(time.Second)}
	return r.conclude(ctx, pcr, certificatesv1.PodCertificateRequestConditionTypeIssued, "Issued",
		fmt.Sprintf("issued for the Service names of MCPServer %s by the operator's CA", s.Name))
}

// bundlePublished checks that the namespace's CA bundle holds the CA about to sign, so that no gateway
// serves a certificate its clients cannot verify yet (right after a CA rotation the MCPServer
// controller publishes the new bundle; the request is retried until then).
func (r *PodCertSigner) bundlePublished(ctx context.Context, namespace string, ca *servingcert.CA) error {
	cm := &corev1.ConfigMap{}
	if err := r.Client.Get(ctx, types.NamespacedName{Namespace: namespace, Name: gatewayconfig.CABundleConfigMap}, cm); err != nil {
		return fmt.Errorf("the CA bundle ConfigMap %s/%s, which must hold the signing CA before a gateway serves its certificate: %w", namespace, gatewayconfig.CABundleConfigMap, err)
	}
	want := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw}))
	if !strings.Contains(cm.Data[gatewayconfig.CABundleKey], want) {
		return fmt.Errorf("the CA bundle ConfigMap %s/%s does not hold the current gateway CA yet; retrying once the MCPServer controller has published it", namespace, gatewayconfig.CABundleConfigMap)
	}
	return nil
}

func (r *PodCertSigner) conclude(ctx context.Context, pcr *certificatesv1.PodCertificateRequest, typ, reason, msg string) error {
	meta.SetStatusCondition(&pcr.Status.Conditions, metav1.Condition{Type: typ, Status: metav1.ConditionTrue, Reason: reason, Message: msg, ObservedGeneration: pcr.Generation})
	if err := r.Client.Status().Update(ctx, pcr); err != nil {
		if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
			return nil // concluded by another replica, or gone: the next event says
		}
		return fmt.Errorf("update PodCertificateRequest %s/%s: %w", pcr.Namespace, pcr.Name, err)
	}
	return nil
}
