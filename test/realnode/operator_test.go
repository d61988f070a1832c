package realnode

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
	"github.com/mcp-warden/mcp-warden/internal/localcluster"
	"github.com/mcp-warden/mcp-warden/operator"
	"github.com/mcp-warden/mcp-warden/supplychain/release"
	"github.com/mcp-warden/mcp-warden/trust/servingcert"
	"github.com/mcp-warden/mcp-warden/webhooks"
)

var runtimeConverter = k8sruntime.DefaultUnstructuredConverter

// operatorNamespace is the namespace config/default installs the operator into.
const operatorNamespace = "mcp-warden-system"

// TestOperatorPodOnRealNode installs the operator the way a cluster administrator does (config/default,
// rendered by the release with the images pinned by digest) with its own image, built daemonlessly,
// signed and attested with a key, pulled by the node's containerd from the registry. The manager then
// runs as a pod on the real node (sandboxed, seen from the host), behind its own NetworkPolicy, talking
// to the API server through the kubernetes Service with its service-account token, and its webhooks
// serve the API server: in a namespace opted in to image verification, with a policy that trusts the
// key, a Deployment and an MCPServer of the signed image are admitted and the same of an unsigned image
// in the same registry are refused, each decision made by the manager in the pod (it fetches the
// signatures from the registry itself; no other webhook runs on the real node).
//
// The manager in the tests' process keeps running: the pod's is given the same gateway image and tool
// pin setting, so both want the same objects.
func TestOperatorPodOnRealNode(t *testing.T) {
	needNode(t)
	ctx := context.Background()
	root, err := localcluster.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	nodeReg, err := env.Cluster.ServeRegistryToPods(registryHost)
	if err != nil {
		t.Fatalf("the registry is not reachable from pods: %v", err)
	}

	// The operator's image, built, pushed, signed and attested as `make release` does.
	start := time.Now()
	pushed, pubPEM, built := buildSignedOperator(ctx, t, root, start)
	// An unsigned image in the same repository path: the probe's, copied.
	src := copyUnsigned(t)
	managerImage := nodeReg + "/mcp/mcp-warden-manager@" + pushed.DigestStr()
	unsignedImage := nodeReg + "/mcp/unsigned@" + src.DigestStr()
	t.Logf("operator image built in %s, pushed, signed and attested in %s: %s", built.Round(100*time.Millisecond), time.Since(start).Round(100*time.Millisecond), managerImage)

	// config/default, rendered as the release does, with the pod's gateway image the tests' manager's.
	objs := renderOperator(t, root, pushed, gatewayImage)
	pinManager(t, objs, managerImage)
	objs = append(objs, toUnstructured(t, &corev1.ConfigMap{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: metav1.ObjectMeta{Name: "issuer-ca", Namespace: operatorNamespace},
		Data:       map[string]string{"ca.crt": string(issuer.CAPEM())},
	}))
	// The tests' manager's CA for the gateways' certificates, as a second replica of one operator shares
	// it: both sign the pods' certificate requests, and a pod signed by another CA than the one its
	// namespace's bundle holds would be refused by every client.
	caKey := client.ObjectKey{Namespace: "default", Name: operator.DefaultGatewayCASecret}
	// Made now if no server has needed it yet (the tests' manager then loads this one).
	_, _ = (&servingcert.Authority{Client: k8s, Reader: k8s, Secret: caKey}).Current(context.Background())
	ca := &corev1.Secret{}
	if err := k8s.Get(context.Background(), caKey, ca); err != nil {
		t.Fatalf("the tests' manager's gateway CA: %v", err)
	}
	objs = append(objs, toUnstructured(t, &corev1.Secret{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{Name: ca.Name, Namespace: operatorNamespace, Labels: ca.Labels, Annotations: ca.Annotations},
		Type:       ca.Type, Data: ca.Data,
	}))
	t.Cleanup(func() { uninstallOperator(objs) })
	created := time.Now()
	createNamespaceFirst(ctx, t, objs)
	pod := waitOperatorPod(t, created)
	running := time.Since(created)
	// The CA the manager generated is injected into every webhook of its configuration.
	webhookCount := waitCAInjected(t, pod)
	t.Logf("operator Deployment created -> manager pod %s Running and ready: %s (pod IP %s); CA injected into %d webhooks", pod.Name, running.Round(10*time.Millisecond), pod.Status.PodIP, webhookCount)

	// Seen from the host: the manager process is sandboxed.
	managerSandboxed(t, pod)

	// A namespace opted in to image verification, and a policy that trusts the key for it. The policy
	// itself goes through the pod's webhook (vmcpserverpolicy).
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "rn-enforced-", Labels: map[string]string{
		webhooks.LabelImagePolicy: "enforce", "pod-security.kubernetes.io/enforce": "restricted",
	}}}
	if err := k8s.Create(ctx, ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), ns) })
	policy := &mcpv1alpha1.MCPServerPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "realnode-signed"},
		Spec: mcpv1alpha1.MCPServerPolicySpec{
			NamespaceSelector: metav1.LabelSelector{MatchLabels: map[string]string{corev1.LabelMetadataName: ns.Name}},
			AllowedRegistries: []string{nodeReg + "/mcp/"},
			Authorities:       []mcpv1alpha1.Authority{{Name: "release-key", Key: &mcpv1alpha1.KeyAuthority{Data: string(pubPEM)}}},
			Attestations: []mcpv1alpha1.AttestationRequirement{
				{Name: "provenance", PredicateType: release.PredicateSLSAProvenance},
				{Name: "sbom", PredicateType: release.PredicateCycloneDX},
			},
		},
	}
	// The webhook Service's endpoint reaches kube-proxy a moment after the pod is ready.
	var served time.Duration
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		err := k8s.Create(ctx, policy)
		if err != nil && strings.Contains(err.Error(), "failed calling webhook") {
			t.Logf("the pod's webhook not reachable yet: %v", err)
			return false, nil
		}
		served = time.Since(created)
		return true, err
	})
	if err != nil {
		t.Fatalf("create the MCPServerPolicy through the pod's webhook: %v\nendpoint slices:\n%s\nthe node's iptables:\n%s", err, endpointSlices(operatorNamespace), nodeIptables())
	}
	t.Logf("operator Deployment created -> its webhook serving the API server (MCPServerPolicy admitted): %s", served.Round(10*time.Millisecond))
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), policy) })

	deployment := func(name, image string) *appsv1.Deployment {
		labels := map[string]string{"app": name}
		return &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns.Name},
			Spec: appsv1.DeploymentSpec{
				Replicas: ptrTo(int32(0)),
				Selector: &metav1.LabelSelector{MatchLabels: labels},
				Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
					Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: image}}}},
			},
		}
	}
	mcpServer := func(name, image string) *mcpv1alpha1.MCPServer {
		return &mcpv1alpha1.MCPServer{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns.Name},
			Spec: mcpv1alpha1.MCPServerSpec{Image: image, Port: 8080,
				Gateway: mcpv1alpha1.GatewaySpec{Auth: mcpv1alpha1.GatewayAuth{Issuer: issuerURL},
					Scopes: []mcpv1alpha1.ScopeGrant{{Scope: "files:read", Tools: []string{"read_file"}}}}},
		}
	}
	// The signed image is admitted once the pod's webhook has the policy in its cache.
	var admitted time.Duration
	err = wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		t0 := time.Now()
		err := k8s.Create(ctx, deployment("signed", managerImage), client.DryRunAll)
		admitted = time.Since(t0)
		if err != nil {
			t.Logf("the signed Deployment, not yet admitted: %v", err)
		}
		return err == nil, nil
	})
	if err != nil {
		t.Fatalf("a Deployment of the signed operator image in the opted-in namespace is not admitted\nmanager log:\n%s", podLogs(operatorNamespace, pod.Name, "manager"))
	}
	t0 := time.Now()
	err = k8s.Create(ctx, deployment("unsigned", unsignedImage), client.DryRunAll)
	refused := time.Since(t0)
	if err == nil || !strings.Contains(err.Error(), `admission webhook "vworkloads.mcp.warden.dev" denied the request`) || !strings.Contains(err.Error(), unsignedImage) || !strings.Contains(err.Error(), "has no signature") {
		t.Errorf("a Deployment of an unsigned image in the opted-in namespace: %v; want a denial by the pod's vworkloads webhook naming the image", err)
	}
	t.Logf("Deployment of the signed image admitted in %s; of the unsigned image refused in %s: %v", admitted.Round(time.Millisecond), refused.Round(time.Millisecond), err)
	if err := k8s.Create(ctx, mcpServer("signed", managerImage), client.DryRunAll); err != nil {
		t.Errorf("an MCPServer of the signed image in the governed namespace: %v; want admitted", err)
	}
	err = k8s.Create(ctx, mcpServer("unsigned", unsignedImage), client.DryRunAll)
	if err == nil || !strings.Contains(err.Error(), `admission webhook "vmcpserver.mcp.warden.dev" denied the request`) || !strings.Contains(err.Error(), "has no signature") {
		t.Errorf("an MCPServer of an unsigned image in the governed namespace: %v; want a denial by the pod's vmcpserver webhook: no signature", err)
	}
	t.Logf("MCPServer of the unsigned image refused: %v", err)
}

// buildSignedOperator builds the operator's image as `make release` does, pushes it to the tests'
// registry, and signs and attests it with a new key; it returns the image, the key's public half
// (PEM), and how long the build took from start.
func buildSignedOperator(ctx context.Context, t *testing.T, root string, start time.Time) (name.Digest, []byte, time.Duration) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := signature.LoadECDSASignerVerifier(key, crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM, err := cryptoutils.MarshalPublicKeyToPEM(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	opts := release.Options{Root: root, Platforms: []string{"linux/" + runtime.GOARCH}, Version: "v0.0.0-realnode", Source: "https://github.com/mcp-warden/mcp-warden"}
	b, err := release.BuildComponent(ctx, release.Components[0], opts)
	if err != nil {
		t.Fatal(err)
	}
	built := time.Since(start)
	pushed, err := release.Push(ctx, registryHost+"/mcp", b, "")
	if err != nil {
		t.Fatal(err)
	}
	sbom, err := release.SBOM(b.Component, b.Binaries[opts.Platforms[0]], opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := release.SignAndAttest(ctx, signer, pushed, b, sbom, opts); err != nil {
		t.Fatal(err)
	}
	return pushed, pubPEM, built
}

// copyUnsigned copies the probe's image, unsigned, into the operator's repository path as
// mcp/unsigned:latest; it returns the probe's image.
func copyUnsigned(t *testing.T) name.Digest {
	t.Helper()
	src, err := name.NewDigest(probeImage, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := remote.Index(src)
	if err != nil {
		t.Fatal(err)
	}
	dst, err := name.NewTag(registryHost+"/mcp/unsigned:latest", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(dst, idx); err != nil {
		t.Fatal(err)
	}
	return src
}

// pinManager points the rendered manager Deployment at managerImage, one replica, with the tests'
// manager's flags (no tool pin reads, the issuer's CA, the telemetry peers) and the issuer's CA mounted.
func pinManager(t *testing.T, objs []*unstructured.Unstructured, managerImage string) {
	t.Helper()
	for _, o := range objs {
		switch o.GetKind() {
		case "CustomResourceDefinition":
			continue // installed with the control plane
		case "Deployment":
			d := &appsv1.Deployment{}
			toTyped(t, o, d)
			d.Spec.Replicas = ptrTo(int32(1))
			c := &d.Spec.Template.Spec.Containers[0]
			c.Image = managerImage
			c.Args = append(c.Args, "--read-tool-pins=false", "--issuer-ca-file=/etc/issuer-ca/ca.crt",
				// The tests' manager's telemetry (see telemetry_test.go), so both want the same Services,
				// NetworkPolicies and gateway configurations.
				"--gateway-metrics-scraper-namespace="+scraperNamespace, "--gateway-metrics-scraper-pod-labels="+labels.SelectorFromSet(scraperLabels).String(),
				"--otlp-endpoint="+collectorEndpoint, "--otlp-collector-namespace="+collectorNamespace, "--otlp-collector-pod-labels="+labels.SelectorFromSet(collectorLabels).String())
			// The tests' issuer has a private CA, as an in-cluster issuer would: the pod's manager
			// trusts it, so it delivers the same keys as the tests' manager.
			d.Spec.Template.Spec.Volumes = append(d.Spec.Template.Spec.Volumes, corev1.Volume{Name: "issuer-ca", VolumeSource: corev1.VolumeSource{
				ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "issuer-ca"}},
			}})
			c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: "issuer-ca", MountPath: "/etc/issuer-ca", ReadOnly: true})
			*o = *toUnstructured(t, d)
		}
	}
}

// createNamespaceFirst creates the objects (not the CRDs, which the control plane installed): the
// namespace first, the rest in the rendered order.
func createNamespaceFirst(ctx context.Context, t *testing.T, objs []*unstructured.Unstructured) {
	t.Helper()
	for _, first := range []bool{true, false} {
		for _, o := range objs {
			if o.GetKind() == "CustomResourceDefinition" || (o.GetKind() == "Namespace") != first {
				continue
			}
			if err := k8s.Create(ctx, o); err != nil && !apierrors.IsAlreadyExists(err) {
				t.Fatalf("create %s %s: %v", o.GetKind(), o.GetName(), err)
			}
		}
	}
}

// waitCAInjected waits until the manager pod has injected its CA into every webhook of its
// configuration, and returns their number.
func waitCAInjected(t *testing.T, pod *corev1.Pod) int {
	t.Helper()
	ctx := context.Background()
	var vwc admissionregistrationv1.ValidatingWebhookConfiguration
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		if err := k8s.Get(ctx, client.ObjectKey{Name: "mcp-warden-validating-webhook-configuration"}, &vwc); err != nil {
			return false, nil
		}
		for _, w := range vwc.Webhooks {
			if len(w.ClientConfig.CABundle) == 0 {
				return false, nil
			}
		}
		return len(vwc.Webhooks) > 0, nil
	})
	if err != nil {
		t.Fatalf("the manager pod did not inject its CA into the webhook configuration: %v\nmanager log:\n%s", err, podLogs(operatorNamespace, pod.Name, "manager"))
	}
	return len(vwc.Webhooks)
}

// managerSandboxed: seen from the host, the manager process runs as 65532 without capabilities, with
// no_new_privs and seccomp, on a read-only root.
func managerSandboxed(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	procs, err := env.Cluster.ContainerProcessStatus(pod.Status.ContainerStatuses[0].ContainerID)
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range procs {
		for k, v := range map[string]string{"Name": "manager", "Uid": "65532 65532 65532 65532", "CapEff": "0000000000000000", "CapBnd": "0000000000000000", "NoNewPrivs": "1", "Seccomp": "2"} {
			if st[k] != v {
				t.Errorf("manager pod, process %s seen from the host: %s = %q, want %q", st["Pid"], k, st[k], v)
			}
		}
		if !strings.HasPrefix(st["RootMountOptions"], "ro") {
			t.Errorf("manager pod: root mount %q, want read-only", st["RootMountOptions"])
		}
	}
}

// renderOperator renders config/default as `make release` does (release.WriteManifests) with the given
// images, and returns its objects.
func renderOperator(t *testing.T, root string, manager name.Digest, gateway string) []*unstructured.Unstructured {
	t.Helper()
	gw, err := name.NewDigest(gateway, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	files, err := release.WriteManifests(root, dir, manager, gw)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.Open(files[0])
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	dec := utilyaml.NewYAMLOrJSONDecoder(raw, 4096)
	var objs []*unstructured.Unstructured
	for {
		u := &unstructured.Unstructured{}
		if err := dec.Decode(&u.Object); err != nil {
			break
		}
		if len(u.Object) > 0 {
			objs = append(objs, u)
		}
	}
	if len(objs) < 10 {
		t.Fatalf("%s: only %d objects", filepath.Base(files[0]), len(objs))
	}
	return objs
}

// uninstallOperator removes what the test installed, the webhook configuration first (its webhooks
// fail closed once the manager is gone).
func uninstallOperator(objs []*unstructured.Unstructured) {
	ctx := context.Background()
	for _, kind := range []string{"ValidatingWebhookConfiguration", ""} {
		for _, o := range objs {
			if o.GetKind() == "CustomResourceDefinition" || (kind != "" && o.GetKind() != kind) || (kind == "" && o.GetKind() == "ValidatingWebhookConfiguration") {
				continue
			}
			_ = k8s.Delete(ctx, o)
		}
	}
	// The namespace goes last; wait for it so a later run starts clean.
	_ = wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		err := k8s.Get(ctx, client.ObjectKey{Name: operatorNamespace}, &corev1.Namespace{})
		return apierrors.IsNotFound(err), nil
	})
}

// waitOperatorPod waits for the manager's pod to be Running and ready.
func waitOperatorPod(t *testing.T, since time.Time) *corev1.Pod {
	t.Helper()
	var pod *corev1.Pod
	var last string
	err := wait.PollUntilContextTimeout(context.Background(), 200*time.Millisecond, 120*time.Second, true, func(ctx context.Context) (bool, error) {
		pods := &corev1.PodList{}
		if err := k8s.List(ctx, pods, client.InNamespace(operatorNamespace), client.MatchingLabels{"app.kubernetes.io/component": "manager"}); err != nil || len(pods.Items) == 0 {
			return false, nil
		}
		p := &pods.Items[0]
		last = fmt.Sprintf("pod %s: phase %s, containers %+v", p.Name, p.Status.Phase, p.Status.ContainerStatuses)
		if p.Status.Phase != corev1.PodRunning || len(p.Status.ContainerStatuses) == 0 || !p.Status.ContainerStatuses[0].Ready {
			return false, nil
		}
		pod = p
		return true, nil
	})
	if err != nil {
		logs := ""
		pods := &corev1.PodList{}
		if k8s.List(context.Background(), pods, client.InNamespace(operatorNamespace)) == nil && len(pods.Items) > 0 {
			logs = podLogs(operatorNamespace, pods.Items[0].Name, "manager")
		}
		t.Fatalf("the manager pod is not Running and ready %s after the Deployment was created: %s\nevents:\n%s\nmanager log:\n%s", time.Since(since).Round(time.Second), last, events(operatorNamespace), logs)
	}
	return pod
}

func toTyped(t *testing.T, u *unstructured.Unstructured, obj any) {
	t.Helper()
	if err := runtimeConverter.FromUnstructured(u.Object, obj); err != nil {
		t.Fatal(err)
	}
}

func toUnstructured(t *testing.T, obj any) *unstructured.Unstructured {
	t.Helper()
	m, err := runtimeConverter.ToUnstructured(obj)
	if err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{Object: m}
	delete(u.Object, "status")
	return u
}

// endpointSlices lists a namespace's EndpointSlices (for a failure message).
func endpointSlices(ns string) string {
	l := &discoveryv1.EndpointSliceList{}
	if err := k8s.List(context.Background(), l, client.InNamespace(ns)); err != nil {
		return err.Error()
	}
	var b strings.Builder
	for _, s := range l.Items {
		fmt.Fprintf(&b, "  %s: ports %v endpoints %v\n", s.Name, s.Ports, s.Endpoints)
	}
	return b.String()
}

// nodeIptables is the node namespace's NAT and filter rules (for a failure message).
func nodeIptables() string {
	out, err := exec.Command("nsenter", "--net="+env.Cluster.Node().Path(), "--", "iptables-save").CombinedOutput()
	if err != nil {
		return err.Error()
	}
	var keep []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, "mcp-warden-system") || strings.HasPrefix(l, "*") || strings.Contains(l, "-A OUTPUT") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}
