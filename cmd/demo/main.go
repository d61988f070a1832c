// Command demo starts a local Kubernetes control plane (etcd, kube-apiserver with Pod Security Admission,
// kube-controller-manager, kube-scheduler) with a real node where it can (Linux, root: containerd, runc,
// the kubelet, kube-router), else a simulated KWOK node, runs the mcp-warden operator against it, applies
// config/samples and reports what happened: each MCPServer's status and its sandbox. On the real node it
// reports what the kernel and the network did: each container's processes as /proc shows them, TCP
// connects from the server's pod and from client pods to the fence's test hosts and the gateway, and a
// go-sdk MCP client in a client pod talking to the pod's gateway through its Service. On the simulated
// node the network policy is a table evaluated by an independent NetworkPolicy engine and the gateway
// runs in this process with the configuration the operator rendered. It also shows the API refusing
// unsafe specs. It exits non-zero if any expectation fails.
//
//	go run ./cmd/demo [--keep]
package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/go-logr/logr"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/mattfenwick/cyclonus/pkg/matcher"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
	"github.com/mcp-warden/mcp-warden/controllers"
	"github.com/mcp-warden/mcp-warden/internal/localcluster"
	"github.com/mcp-warden/mcp-warden/operator"
	"github.com/mcp-warden/mcp-warden/policy/sandbox"
	"github.com/mcp-warden/mcp-warden/supplychain/imageverify/imagetest"
	"github.com/mcp-warden/mcp-warden/supplychain/release"
	"github.com/mcp-warden/mcp-warden/trust/issuerkeys"
)

func main() {
	keep := flag.Bool("keep", false, "leave the control plane and operator running, with a kubeconfig for kubectl, until interrupted")
	timeout := flag.Duration("timeout", 3*time.Minute, "how long to wait for the samples to become Ready")
	flag.Parse()
	ctrl.SetLogger(logr.Discard())
	d := &demo{}
	err := d.run(*keep, *timeout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
	if d.failed > 0 {
		fmt.Printf("\n%d expectation(s) FAILED\n", d.failed)
		os.Exit(1)
	}
	fmt.Printf("\nall %d expectations met\n", d.passed)
}

type demo struct {
	c              client.Client
	passed, failed int
	// realNode: the pods run on a real node (containerd, runc, the kubelet, kube-router).
	realNode bool
	cluster  *localcluster.Cluster
	// gatewayImage is the gateway sidecar's image on the real node; probes observe the node.
	gatewayImage string
	// dnsImage is the real node's cluster DNS, started once the operator's webhooks serve (the demo
	// registers them with the cluster, for every pod).
	dnsImage string
	probes   nodeProbes
}

func step(format string, args ...any) { fmt.Printf("==> "+format+"\n", args...) }

// expect records and prints one checked expectation.
func (d *demo) expect(ok bool, format string, args ...any) {
	mark := "ok  "
	if ok {
		d.passed++
	} else {
		d.failed++
		mark = "FAIL"
	}
	fmt.Printf("  [%s] %s\n", mark, fmt.Sprintf(format, args...))
}

func (d *demo) run(keep bool, timeout time.Duration) error {
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	root, err := localcluster.ModuleRoot()
	if err != nil {
		return err
	}
	nodeErr := localcluster.RealNodePrerequisites()
	d.realNode = nodeErr == nil
	banner(nodeErr)

	step("building the demo MCP server image (cmd/mcp-files, no container daemon) into a loopback OCI registry: signed + attested, and an unsigned rebuild")
	images, err := buildImages(ctx, root)
	if err != nil {
		return err
	}
	defer images.reg.Close()
	defer os.RemoveAll(filepath.Dir(images.serverBinary))
	fmt.Printf("    registry %s:\n      signed, with SLSA provenance and CycloneDX SBOM: %s\n      unsigned rebuild: %s\n      tag only: %s\n",
		images.reg.Host, images.signed, images.unsigned, images.tag)
	opts := localcluster.Options{
		CRDDirs:        []string{filepath.Join(root, "config", "crd", "bases")},
		WebhookInstall: envtest.WebhookInstallOptions{Paths: []string{filepath.Join(root, "config", "webhook", "manifests.yaml")}},
		Controllers:    true,
		Out:            func(f string, a ...any) { fmt.Printf("    "+f+"\n", a...) },
	}
	if d.realNode {
		if err := d.pushNodeImages(ctx, root, images.reg.Host, &opts); err != nil {
			return err
		}
	}

	step("starting a local control plane")
	start := time.Now()
	if keep {
		opts.LogDir = filepath.Join(root, "demo-cluster")
		if err := os.MkdirAll(opts.LogDir, 0o755); err != nil {
			return err
		}
	}
	cluster, err := localcluster.Start(ctx, opts)
	defer func() {
		if cluster != nil {
			step("stopping the control plane")
			_ = cluster.Stop()
		}
	}()
	if err != nil {
		return err
	}
	d.cluster = cluster
	fmt.Printf("    control plane up in %s (kube-apiserver %s)\n", time.Since(start).Round(100*time.Millisecond), cluster.Config.Host)
	if d.realNode {
		if err := d.startTestHosts(); err != nil {
			return err
		}
		defer d.stopTestHosts()
	}

	is, err := startIssuer()
	if err != nil {
		return err
	}
	defer is.srv.Close()
	step("starting the mcp-warden operator and its admission webhooks")
	wh := cluster.Env.WebhookInstallOptions
	var scraper controllers.Peer
	if d.realNode {
		// The platform's Prometheus (--gateway-metrics-scraper-*): the gateways' metrics port opens to it.
		scraper = controllers.Peer{Namespace: scraperNamespace, PodLabels: scraperLabels}
	}
	mgr, err := operator.New(cluster.Config, operator.Options{
		MetricsScraper: scraper,
		// The demo's issuer is its own plain-HTTP server on loopback, which the operator's guarded
		// client would refuse; it fetches the keys the gateways get from there.
		IssuerKeys:  &issuerkeys.Fetcher{Client: &http.Client{Timeout: 5 * time.Second}},
		MetricsAddr: "0", ProbeAddr: "0",
		Webhooks: true, WebhookHost: wh.LocalServingHost, WebhookPort: wh.LocalServingPort, WebhookCertDir: wh.LocalServingCertDir,
		GatewayImage: d.gatewayImage,
	})
	if err != nil {
		return err
	}
	mgrErr := make(chan error, 1)
	go func() { mgrErr <- mgr.Start(ctx) }()
	if d.c, err = client.New(cluster.Config, client.Options{Scheme: operator.Scheme()}); err != nil {
		return err
	}
	if d.realNode {
		fmt.Printf("    starting the cluster DNS (kube-system/kube-dns, %s): public.test -> %s\n", localcluster.ClusterDNSIP, localcluster.PublicHostIP)
		if err := d.startClusterDNS(ctx); err != nil {
			return err
		}
	}

	step("applying the platform's MCPServerPolicy (registries, signer, provenance, egress ceiling, token issuer)")
	if err := d.applyPolicy(ctx, images, is.srv.URL); err != nil {
		return err
	}
	d.policyChecks(ctx)

	step("applying config/samples (image: the demo's signed image; token issuer: the demo's issuer %s)", is.srv.URL)
	applied, err := d.applySamples(ctx, filepath.Join(root, "config", "samples"), images.signed.String(), is.srv.URL)
	if err != nil {
		return err
	}
	d.refusals(ctx, images, is.srv.URL)
	if d.realNode && len(applied) > 0 {
		d.startClientPods(ctx, applied[0].Namespace)
		d.startScraperPod(ctx)
	}

	step("waiting for the samples to become Ready")
	for _, s := range applied {
		d.waitReady(ctx, s, timeout)
	}
	for _, s := range applied {
		d.checkSample(ctx, s, is, images.serverBinary)
	}

	select {
	case err := <-mgrErr:
		return fmt.Errorf("operator stopped: %w", err)
	default:
	}
	if keep {
		keepRunning(ctx, root, cluster.Kubeconfig, applied)
	}
	return nil
}

// pushNodeImages builds the pod sandbox, gateway, cluster DNS and probe images for the real node into
// the demo's registry and points opts at the real node.
func (d *demo) pushNodeImages(ctx context.Context, root, host string, opts *localcluster.Options) error {
	step("building the pod sandbox, gateway, cluster DNS and probe images for the real node")
	var err error
	if opts.SandboxImage, err = localcluster.PushSandboxImage(ctx, root, host); err != nil {
		return err
	}
	if d.gatewayImage, err = localcluster.PushImage(ctx, root, host, release.Components[1]); err != nil {
		return err
	}
	if d.dnsImage, err = localcluster.PushClusterDNSImage(ctx, root, host); err != nil {
		return err
	}
	if d.probes.probeImage, err = localcluster.PushImage(ctx, root, host, localcluster.ProbeComponent); err != nil {
		return err
	}
	opts.RealNode, opts.Registries = true, []string{host}
	fmt.Printf("    sandbox %s\n    gateway %s\n    cluster DNS %s\n    probe %s\n", opts.SandboxImage, d.gatewayImage, d.dnsImage, d.probes.probeImage)
	return nil
}

// checkSample reports one Ready sample and runs its gateway checks: in its pod on the real node, else
// the rendered gateway configuration on loopback.
func (d *demo) checkSample(ctx context.Context, s client.ObjectKey, is *issuer, serverBinary string) {
	d.report(ctx, s)
	if !d.realNode {
		d.gatewayChecks(ctx, s, is, serverBinary)
		return
	}
	d.podGatewayChecks(ctx, s, is)
	if d.streamable(ctx, s) {
		d.telemetryChecks(ctx, s, is)
		d.sessionChecks(ctx, s, is)
	}
}

// keepRunning says how to use the cluster the demo leaves running and waits for Ctrl-C.
func keepRunning(ctx context.Context, root, kubeconfig string, applied []client.ObjectKey) {
	kubectl := kubectlPath(root)
	fmt.Printf("\nThe cluster keeps running. Use it from another terminal:\n  %s --kubeconfig %s get mcpservers,pods -A\n", kubectl, kubeconfig)
	if len(applied) > 0 {
		fmt.Printf("  %s --kubeconfig %s logs -n %s deploy/%s -c server\n", kubectl, kubeconfig, applied[0].Namespace, applied[0].Name)
	}
	fmt.Println("Press Ctrl-C to stop.")
	<-ctx.Done()
}

// kubectlPath is the kubectl `make control-plane` builds with the control plane and links into bin/
// (a fresh machine has none), else the one in the control plane's cache, else kubectl on PATH.
func kubectlPath(root string) string {
	if p := filepath.Join(root, "bin", "kubectl"); fileExists(p) {
		return p
	}
	if assets, err := localcluster.AssetsDir(); err == nil && fileExists(filepath.Join(assets, "kubectl")) {
		return filepath.Join(assets, "kubectl")
	}
	return "kubectl"
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// banner says, before anything else, whether the pods run on a real node or are simulated; simulated,
// what the demo reports about the sandbox and the fence is the operator's spec and an engine's reading
// of it, not what a kernel did.
func banner(nodeErr error) {
	line := strings.Repeat("*", 100)
	if nodeErr == nil {
		fmt.Printf("%s\n*  PODS RUN ON A REAL NODE (containerd, runc, kubelet, kube-router in network namespace mcp-warden-node):\n*  the sandbox facts below are read from the kernel (/proc of each container's processes), the fence is\n*  dialled from the pods, and tokens are checked by the gateway in each server's pod.\n%s\n", line, line)
		return
	}
	fmt.Printf("%s\n*  PODS ARE SIMULATED (KWOK): a real node cannot run here: %v.\n*  The sandbox and NetworkPolicy below are the operator's spec, checked by evaluators. On Linux as root,\n*  make demo runs them on a real node; go test ./test/realnode (part of make test) observes them there.\n%s\n", line, nodeErr, line)
}

// applySamples renders config/samples with kustomize and applies every object; it returns the
// MCPServers.
func (d *demo) applySamples(ctx context.Context, dir, image, issuer string) ([]client.ObjectKey, error) {
	m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	var servers []client.ObjectKey
	for _, r := range m.Resources() {
		obj, err := r.Map()
		if err != nil {
			return nil, err
		}
		u := &unstructured.Unstructured{Object: obj}
		if u.GetKind() == "MCPServer" {
			// The sample's image points at a registry this machine cannot reach; run the demo's signed
			// image instead.
			if err := unstructured.SetNestedField(u.Object, image, "spec", "image"); err != nil {
				return nil, err
			}
			// Tokens come from the demo's own authorization server on loopback.
			if err := unstructured.SetNestedField(u.Object, issuer, "spec", "gateway", "auth", "issuer"); err != nil {
				return nil, err
			}
			if err := d.realNodeArgs(u); err != nil {
				return nil, err
			}
		}
		if err := createRetryingApply(ctx, d.c, u); err != nil {
			d.expect(false, "apply %s %s: %v", u.GetKind(), u.GetName(), err)
			continue
		}
		fmt.Printf("    applied %s %s\n", u.GetKind(), client.ObjectKeyFromObject(u))
		if u.GetKind() == "MCPServer" {
			servers = append(servers, client.ObjectKeyFromObject(u))
		}
	}
	return servers, nil
}

// realNodeArgs adapts a sample to the real node. Its egress allow-list (GitHub's API range on 443)
// becomes the node's allow-listed test host on 443, so the fence's allowed port and its blocked one are
// dialled for real and nothing outside the harness's namespaces is ever a target. A streamable-HTTP
// sample also gets the demo server's own arguments: the sample's args (--root) are for the sample's
// image, and the demo server (cmd/mcp-files) refuses them and exits; it also listens on loopback by
// default, which the kubelet's readiness probe (on the pod IP) cannot reach.
func (d *demo) realNodeArgs(u *unstructured.Unstructured) error {
	if !d.realNode {
		return nil
	}
	egress := []any{map[string]any{"cidr": localcluster.PublicHostIP + "/32", "ports": []any{map[string]any{"port": int64(443)}}}}
	fmt.Printf("    %s: egress allow-list replaced with %s/32 port 443 (the node's allow-listed test host)\n", u.GetName(), localcluster.PublicHostIP)
	if err := unstructured.SetNestedSlice(u.Object, egress, "spec", "egress"); err != nil {
		return err
	}
	transport, _, _ := unstructured.NestedString(u.Object, "spec", "transport")
	if transport == string(mcpv1alpha1.TransportStdio) {
		return nil
	}
	port, found, _ := unstructured.NestedInt64(u.Object, "spec", "port")
	if !found {
		port = 8080
	}
	old, _, _ := unstructured.NestedStringSlice(u.Object, "spec", "args")
	args := []string{"--listen", fmt.Sprintf(":%d", port)}
	fmt.Printf("    %s: args %v replaced with %v for the demo server on the real node (it has no --root and listens on loopback by default)\n", u.GetName(), old, args)
	return unstructured.SetNestedStringSlice(u.Object, args, "spec", "args")
}

// demoImages are the images the demo builds: the demo MCP server (cmd/mcp-files) signed and attested with
// a generated key, the same server rebuilt with another label and left unsigned, and a tag reference.
type demoImages struct {
	reg              *imagetest.Registry
	key              *imagetest.Key
	signed, unsigned name.Digest
	tag              string
	// serverBinary is the demo server's executable from the signed image, for the stdio checks.
	serverBinary string
}

func buildImages(ctx context.Context, root string) (*demoImages, error) {
	im := &demoImages{reg: imagetest.StartRegistry()}
	var err error
	if im.key, err = imagetest.NewKey(); err != nil {
		return nil, err
	}
	server := release.Component{Name: "mcp-files", Package: "./cmd/mcp-files", Binary: "/mcp-files"}
	opts := release.Options{Root: root, Platforms: []string{"linux/" + runtime.GOARCH}, Version: "0.1.0", Source: "https://github.com/mcp-warden/mcp-warden",
		Log: func(f string, a ...any) { fmt.Printf("    "+f+"\n", a...) }}
	b, err := release.BuildComponent(ctx, server, opts)
	if err != nil {
		return nil, err
	}
	if im.signed, err = release.Push(ctx, im.reg.Host+"/acme", b, opts.Version); err != nil {
		return nil, err
	}
	sbom, err := release.SBOM(server, b.Binaries[opts.Platforms[0]], opts)
	if err != nil {
		return nil, err
	}
	if err := release.SignAndAttest(ctx, im.key.Signer(), im.signed, b, sbom, opts); err != nil {
		return nil, err
	}
	im.tag = im.signed.Context().Tag(opts.Version).String()
	dir, err := os.MkdirTemp("", "mcp-warden-demo-")
	if err != nil {
		return nil, err
	}
	im.serverBinary = filepath.Join(dir, "mcp-files")
	if err := os.WriteFile(im.serverBinary, b.Binaries[opts.Platforms[0]], 0o755); err != nil {
		return nil, err
	}
	opts.Version = "0.1.0-rebuilt"
	rebuilt, err := release.BuildComponent(ctx, server, opts)
	if err != nil {
		return nil, err
	}
	if im.unsigned, err = release.Push(ctx, im.reg.Host+"/acme", rebuilt, opts.Version); err != nil {
		return nil, err
	}
	return im, nil
}

// applyPolicy installs the demo's guardrail for namespace mcp-tools: images only from the demo registry,
// signed by the demo key, with SLSA provenance and an SBOM; at most 8 egress entries; gateway
// authentication on, with tokens from the demo's issuer only.
func (d *demo) applyPolicy(ctx context.Context, im *demoImages, issuer string) error {
	p := &mcpv1alpha1.MCPServerPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "demo-platform"},
		Spec: mcpv1alpha1.MCPServerPolicySpec{
			NamespaceSelector: metav1.LabelSelector{MatchLabels: map[string]string{corev1.LabelMetadataName: "mcp-tools"}},
			AllowedRegistries: []string{im.reg.Host + "/acme/"},
			Authorities:       []mcpv1alpha1.Authority{{Name: "release-key", Key: &mcpv1alpha1.KeyAuthority{Data: string(im.key.PublicPEM())}}},
			Attestations: []mcpv1alpha1.AttestationRequirement{
				{Name: "provenance", PredicateType: release.PredicateSLSAProvenance},
				{Name: "sbom", PredicateType: release.PredicateCycloneDX},
			},
			Egress:  mcpv1alpha1.EgressCeiling{MaxEntries: ptr.To[int32](8)},
			Gateway: mcpv1alpha1.GatewayCeiling{AllowedIssuers: []string{issuer}},
		},
	}
	if err := d.c.Create(ctx, p); err != nil {
		return fmt.Errorf("create MCPServerPolicy: %w", err)
	}
	fmt.Printf("    applied MCPServerPolicy %s: registries %v, authority release-key, attestations %s, at most %d egress entries, tokens only from %s\n",
		p.Name, p.Spec.AllowedRegistries, release.PredicateSLSAProvenance+" and "+release.PredicateCycloneDX, *p.Spec.Egress.MaxEntries, issuer)
	return nil
}

// policyChecks shows the operator reporting whether policies can be enforced: a policy whose inline key
// is not a public key is refused by the webhook, the demo's policy is Ready, and a policy whose key
// Secret is missing is Ready=False with the reason.
func (d *demo) policyChecks(ctx context.Context) {
	broken := &mcpv1alpha1.MCPServerPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "demo-broken-key"},
		Spec: mcpv1alpha1.MCPServerPolicySpec{
			NamespaceSelector: metav1.LabelSelector{MatchLabels: map[string]string{corev1.LabelMetadataName: "nowhere"}},
			Authorities:       []mcpv1alpha1.Authority{{Name: "pasted-private-key", Key: &mcpv1alpha1.KeyAuthority{Data: "-----BEGIN PUBLIC KEY-----\nbm90IGEga2V5\n-----END PUBLIC KEY-----"}}},
		},
	}
	// The policy webhook refuses an inline key that is not a public key, naming the field ...
	err := d.c.Create(ctx, broken)
	d.expect(err != nil && strings.Contains(err.Error(), "spec.authorities[0].key.data"), "a policy with a broken inline key is refused at the door: %v", err)
	// ... and a key in a Secret that does not exist is reported by the policy's status.
	broken.Spec.Authorities[0].Key = &mcpv1alpha1.KeyAuthority{SecretRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "demo-missing-key"}, Key: "cosign.pub"}}
	if err := d.c.Create(ctx, broken); err != nil {
		d.expect(false, "create a policy with a missing key Secret: %v", err)
		return
	}
	defer func() { _ = d.c.Delete(context.WithoutCancel(ctx), broken) }()
	for _, want := range []struct {
		name   string
		status metav1.ConditionStatus
	}{{"demo-platform", metav1.ConditionTrue}, {broken.Name, metav1.ConditionFalse}} {
		var c *metav1.Condition
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
			p := &mcpv1alpha1.MCPServerPolicy{}
			if err := d.c.Get(ctx, client.ObjectKey{Name: want.name}, p); err == nil {
				if c = meta.FindStatusCondition(p.Status.Conditions, mcpv1alpha1.ConditionReady); c != nil && c.ObservedGeneration == p.Generation {
					break
				}
			}
		}
		d.expect(c != nil && c.Status == want.status, "MCPServerPolicy %s Ready=%s: %s", want.name, condStatus(c), condMessage(c))
	}
}

func condStatus(c *metav1.Condition) string {
	if c == nil {
		return "unknown"
	}
	return string(c.Status)
}

func condMessage(c *metav1.Condition) string {
	if c == nil {
		return "not reported"
	}
	if len(c.Message) > 160 {
		return c.Message[:160] + "..."
	}
	return c.Message
}

// refusals shows the API and the operator refusing unsafe specs, each with its reason.
func (d *demo) refusals(ctx context.Context, im *demoImages, issuer string) {
	step("unsafe MCPServers are refused")
	base := func(name string) *mcpv1alpha1.MCPServer {
		return &mcpv1alpha1.MCPServer{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "mcp-tools"},
			Spec: mcpv1alpha1.MCPServerSpec{Image: im.signed.String(), Gateway: mcpv1alpha1.GatewaySpec{
				Auth:   mcpv1alpha1.GatewayAuth{Issuer: issuer},
				Scopes: []mcpv1alpha1.ScopeGrant{{Scope: "files:read", Tools: []string{"read_file"}}},
			}},
		}
	}
	tag := base("tagged")
	tag.Spec.Image = im.tag
	err := d.c.Create(ctx, tag)
	d.expect(err != nil && strings.Contains(err.Error(), "pinned by digest"), "tag-only image refused at admission: %s", firstLine(err))

	secret := base("leaky")
	secret.Spec.Env = []mcpv1alpha1.EnvVar{{Name: "GITHUB_TOKEN", Value: ptr.To("ghp_0123456789abcdefghijklmnopqrstuvwxyzAB")}}
	err = d.c.Create(ctx, secret)
	d.expect(err != nil && strings.Contains(err.Error(), "secretKeyRef"), "literal credential in env refused at admission: %s", firstLine(err))

	unsigned := base("unsigned")
	unsigned.Spec.Image = im.unsigned.String()
	err = d.c.Create(ctx, unsigned)
	d.expect(err != nil && strings.Contains(err.Error(), "has no signature from policy"), "unsigned image refused by the webhook (cosign): %s", firstLine(err))

	foreign := base("foreign")
	foreign.Spec.Image = "docker.io/someone/mcp-files@sha256:" + strings.Repeat("ab", 32)
	err = createRetrying(ctx, d.c, foreign, "MCPServerPolicy")
	d.expect(err != nil && strings.Contains(err.Error(), `MCPServerPolicy "demo-platform"`), "image from a registry the policy does not allow refused by the webhook: %s", firstLine(err))

	private := base("internal-db")
	private.Spec.Egress = []mcpv1alpha1.EgressRule{{CIDR: ptr.To("10.0.0.0/8"), Ports: []mcpv1alpha1.EgressPort{{Port: 5432}}}}
	err = d.c.Create(ctx, private)
	d.expect(err != nil && strings.Contains(err.Error(), "private (RFC 1918)"), "egress to a private range refused by the webhook: %s", firstLine(err))

	open := base("open-door")
	open.Spec.Gateway.Auth = mcpv1alpha1.GatewayAuth{Disabled: true}
	err = d.c.Create(ctx, open)
	d.expect(err != nil && strings.Contains(err.Error(), "does not allow gateway authentication to be turned off"), "gateway authentication turned off refused by the webhook: %s", firstLine(err))

	rogue := base("own-idp")
	rogue.Spec.Gateway.Auth.Issuer = "https://idp.attacker.example"
	err = d.c.Create(ctx, rogue)
	d.expect(err != nil && strings.Contains(err.Error(), "is not an authorization server"), "tokens from an issuer the policy does not allow refused by the webhook: %s", firstLine(err))
}

// createRetrying creates obj, retrying briefly while the webhook's cache has not yet seen a policy just
// created (the denial must mention want).
func createRetrying(ctx context.Context, c client.Client, obj client.Object, want string) error {
	var err error
	for i := 0; i < 50; i++ {
		err = c.Create(ctx, obj.DeepCopyObject().(client.Object))
		if err == nil || strings.Contains(err.Error(), want) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
	return err
}

func firstLine(err error) string {
	if err == nil {
		return "(accepted)"
	}
	s := err.Error()
	if i := strings.Index(s, "spec."); i >= 0 {
		s = s[i:]
	}
	if len(s) > 160 {
		s = s[:160] + "..."
	}
	return s
}

func containerNames(cs []corev1.Container) string {
	var names []string
	for _, c := range cs {
		names = append(names, fmt.Sprintf("%s (%s)", c.Name, c.Image))
	}
	return strings.Join(names, ", ")
}

func verifiedSummary(s *mcpv1alpha1.MCPServer) string {
	if s.Status.Image == nil {
		return "(no status.image)"
	}
	return fmt.Sprintf("digest %s, signers %v, attestations %v", s.Status.Image.Digest[:19]+"...", s.Status.Image.Signers, s.Status.Image.Attestations)
}

// createRetryingApply applies obj, retrying briefly while the webhook's cache catches up with the policy.
func createRetryingApply(ctx context.Context, c client.Client, u *unstructured.Unstructured) error {
	body, err := u.MarshalJSON()
	if err != nil {
		return err
	}
	for i := 0; i < 50; i++ {
		obj := &unstructured.Unstructured{}
		if err := obj.UnmarshalJSON(body); err != nil {
			return err
		}
		if err = c.Apply(ctx, client.ApplyConfigurationFromUnstructured(obj), client.FieldOwner("demo"), client.ForceOwnership); err == nil {
			u.Object = obj.Object
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return err
}

func poll(ctx context.Context, timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if cond() {
			return true
		}
		time.Sleep(200 * time.Millisecond)
	}
	return false
}

func (d *demo) waitReady(ctx context.Context, key client.ObjectKey, timeout time.Duration) {
	s := &mcpv1alpha1.MCPServer{}
	var ready *metav1.Condition
	ok := poll(ctx, timeout, func() bool {
		if d.c.Get(ctx, key, s) != nil {
			return false
		}
		ready = meta.FindStatusCondition(s.Status.Conditions, mcpv1alpha1.ConditionReady)
		return ready != nil && ready.Status == metav1.ConditionTrue && s.Status.ObservedGeneration == s.Generation
	})
	after := "never"
	if ok {
		after = ready.LastTransitionTime.Sub(s.CreationTimestamp.Time).String()
	}
	d.expect(ok, "MCPServer %s Ready %s after creation (second resolution)", key, after)
}

// report prints the MCPServer's status, its running pod's sandbox and its network policy.
func (d *demo) report(ctx context.Context, key client.ObjectKey) {
	s := &mcpv1alpha1.MCPServer{}
	if err := d.c.Get(ctx, key, s); err != nil {
		d.expect(false, "get %s: %v", key, err)
		return
	}
	step("MCPServer %s", key)
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "    CONDITION\tSTATUS\tREASON\tMESSAGE\n")
	for _, c := range s.Status.Conditions {
		fmt.Fprintf(tw, "    %s\t%s\t%s\t%s\n", c.Type, c.Status, c.Reason, c.Message)
	}
	_ = tw.Flush()
	fmt.Printf("    endpoint: %s\n", s.Status.Endpoint)
	v := meta.FindStatusCondition(s.Status.Conditions, mcpv1alpha1.ConditionVerified)
	d.expect(v != nil && v.Status == metav1.ConditionTrue && s.Status.Image != nil,
		"image verified: %s", verifiedSummary(s))

	pods := &corev1.PodList{}
	_ = d.c.List(ctx, pods, client.InNamespace(key.Namespace), client.MatchingLabels{controllers.LabelServer: key.Name})
	running := 0
	for _, p := range pods.Items {
		if p.Status.Phase == corev1.PodRunning {
			running++
		}
	}
	ns := &corev1.Namespace{}
	_ = d.c.Get(ctx, client.ObjectKey{Name: key.Namespace}, ns)
	d.expect(running > 0 && ns.Labels["pod-security.kubernetes.io/enforce"] == "restricted",
		"%d pod(s) running, admitted by Pod Security Admission at level %q", running, ns.Labels["pod-security.kubernetes.io/enforce"])
	if d.realNode && running == 0 {
		return
	}
	if len(pods.Items) > 0 {
		p := pods.Items[0]
		for _, q := range pods.Items {
			if q.Status.Phase == corev1.PodRunning && q.DeletionTimestamp == nil {
				p = q
			}
		}
		server := p.Spec.Containers[len(p.Spec.Containers)-1]
		psc, csc := p.Spec.SecurityContext, server.SecurityContext
		if len(p.Spec.InitContainers) > 0 {
			fmt.Printf("    init containers: %s\n", containerNames(p.Spec.InitContainers))
			fmt.Printf("    server command: %s\n", strings.Join(server.Command, " "))
		}
		fmt.Printf("    containers: %s\n", containerNames(p.Spec.Containers))
		fmt.Printf("    sandbox of pod %s:\n", p.Name)
		fmt.Printf("      runAsNonRoot=%v uid=%d allowPrivilegeEscalation=%v readOnlyRootFilesystem=%v\n",
			ptr.Deref(psc.RunAsNonRoot, false), ptr.Deref(psc.RunAsUser, -1), ptr.Deref(csc.AllowPrivilegeEscalation, true), ptr.Deref(csc.ReadOnlyRootFilesystem, false))
		fmt.Printf("      capabilities.drop=%v seccomp=%s automountServiceAccountToken=%v enableServiceLinks=%v\n",
			csc.Capabilities.Drop, psc.SeccompProfile.Type, ptr.Deref(p.Spec.AutomountServiceAccountToken, true), ptr.Deref(p.Spec.EnableServiceLinks, true))
		fmt.Printf("      limits: cpu=%s memory=%s; writable: %s, %s (emptyDir)\n",
			server.Resources.Limits.Cpu(), server.Resources.Limits.Memory(), sandbox.TmpDir, sandbox.HomeDir)
		v := sandbox.Violations(&p.Spec)
		d.expect(len(v) == 0, "pod spec has no sandbox violations %v", v)
		if d.realNode {
			d.observed(&p)
			d.observedConnectivity(ctx, s, &p)
			return
		}
	}

	np := &networkingv1.NetworkPolicy{}
	if err := d.c.Get(ctx, key, np); err != nil {
		d.expect(false, "NetworkPolicy %s: %v", key, err)
		return
	}
	d.connectivity(s, np)
}

// observed reports what the kernel says about each container's processes on the real node, read from
// this machine's /proc: not the spec, the running processes.
func (d *demo) observed(p *corev1.Pod) {
	fmt.Printf("    observed on the real node (the kernel's view of each process, from /proc):\n")
	want := map[string]string{"Uid": "65532 65532 65532 65532", "CapEff": "0000000000000000", "CapBnd": "0000000000000000", "CapPrm": "0000000000000000", "NoNewPrivs": "1", "Seccomp": "2"}
	for _, cs := range p.Status.ContainerStatuses {
		procs, err := d.cluster.ContainerProcessStatus(cs.ContainerID)
		if err != nil {
			d.expect(false, "container %s: %v", cs.Name, err)
			continue
		}
		for _, st := range procs {
			ok := strings.HasPrefix(st["RootMountOptions"], "ro")
			for k, v := range want {
				ok = ok && st[k] == v
			}
			d.expect(ok, "container %s, pid %s (%s): Uid %s, CapEff %s, CapBnd %s, NoNewPrivs %s, Seccomp %s, root mounted %s",
				cs.Name, st["Pid"], st["Name"], st["Uid"], st["CapEff"], st["CapBnd"], st["NoNewPrivs"], st["Seccomp"], st["RootMountOptions"])
		}
	}
}

// connectivity evaluates the NetworkPolicy with the cyclonus engine and prints a truth table.
func (d *demo) connectivity(s *mcpv1alpha1.MCPServer, np *networkingv1.NetworkPolicy) {
	policy := matcher.BuildNetworkPolicies(false, []*networkingv1.NetworkPolicy{np})
	server := &matcher.TrafficPeer{IP: "10.244.0.10", Internal: &matcher.InternalPeer{
		Namespace: s.Namespace, NamespaceLabels: map[string]string{corev1.LabelMetadataName: s.Namespace}, PodLabels: np.Spec.PodSelector.MatchLabels,
	}}
	ext := func(ip string) *matcher.TrafficPeer { return &matcher.TrafficPeer{IP: ip} }
	pod := func(ns string, l map[string]string) *matcher.TrafficPeer {
		return &matcher.TrafficPeer{IP: "10.244.1.1", Internal: &matcher.InternalPeer{Namespace: ns, NamespaceLabels: map[string]string{corev1.LabelMetadataName: ns}, PodLabels: l}}
	}
	rows := []struct {
		what     string
		from, to *matcher.TrafficPeer
		port     int
		portName string
		proto    corev1.Protocol
		want     bool
	}{
		{"server -> cloud metadata 169.254.169.254:80", server, ext("169.254.169.254"), 80, "", corev1.ProtocolTCP, false},
		{"server -> private 10.0.0.5:443", server, ext("10.0.0.5"), 443, "", corev1.ProtocolTCP, false},
		{"server -> cluster DNS :53/UDP", server, pod("kube-system", map[string]string{"k8s-app": "kube-dns"}), 53, "", corev1.ProtocolUDP, true},
		{"server -> allow-listed 140.82.113.4:443", server, ext("140.82.113.4"), 443, "", corev1.ProtocolTCP, true},
		{"server -> allow-listed 140.82.113.4:22", server, ext("140.82.113.4"), 22, "", corev1.ProtocolTCP, false},
		{"server -> internet 1.1.1.1:443", server, ext("1.1.1.1"), 443, "", corev1.ProtocolTCP, false},
		{"agent pod (same ns) -> gateway :8443", pod(s.Namespace, map[string]string{"app": "agent"}), server, controllers.GatewayPort, "", corev1.ProtocolTCP, true},
		{"other pod (same ns) -> gateway :8443", pod(s.Namespace, map[string]string{"app": "other"}), server, controllers.GatewayPort, "", corev1.ProtocolTCP, false},
		{"pod in namespace default -> gateway :8443", pod("default", map[string]string{"app": "agent"}), server, controllers.GatewayPort, "", corev1.ProtocolTCP, false},
	}
	fmt.Printf("    connectivity (NetworkPolicy %s evaluated by an independent engine):\n", np.Name)
	for _, r := range rows {
		got := policy.IsTrafficAllowed(&matcher.Traffic{Source: r.from, Destination: r.to, ResolvedPort: r.port, ResolvedPortName: r.portName, Protocol: r.proto}).IsAllowed()
		verdict := map[bool]string{true: "allowed", false: "denied"}[got]
		d.expect(got == r.want, "%-44s %s", r.what, verdict)
	}
}
