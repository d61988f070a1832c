package webhooks_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
	"github.com/mcp-warden/mcp-warden/supplychain/imageverify"
	"github.com/mcp-warden/mcp-warden/supplychain/imageverify/imagetest"
	"github.com/mcp-warden/mcp-warden/webhooks"
)

const goodImage = "ghcr.io/acme/files@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// namespace creates a namespace with the labels and a policy selecting it.
func namespace(t *testing.T, labels map[string]string, spec mcpv1alpha1.MCPServerPolicySpec) string {
	t.Helper()
	needCluster(t)
	ctx := context.Background()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "wh-", Labels: labels}}
	if err := k8s.Create(ctx, ns); err != nil {
		t.Fatal(err)
	}
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(ns), ns); err != nil {
		t.Fatal(err)
	}
	spec.NamespaceSelector = metav1.LabelSelector{MatchLabels: map[string]string{corev1.LabelMetadataName: ns.Name}}
	p := &mcpv1alpha1.MCPServerPolicy{ObjectMeta: metav1.ObjectMeta{Name: "policy-" + ns.Name}, Spec: spec}
	if err := k8s.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), p) })
	return ns.Name
}

func server(ns, image string) *mcpv1alpha1.MCPServer {
	return &mcpv1alpha1.MCPServer{
		ObjectMeta: metav1.ObjectMeta{Name: "files", Namespace: ns},
		Spec: mcpv1alpha1.MCPServerSpec{Image: image, Gateway: mcpv1alpha1.GatewaySpec{
			Auth:   mcpv1alpha1.GatewayAuth{Issuer: "https://auth.example.com"},
			Scopes: []mcpv1alpha1.ScopeGrant{{Scope: "files:read", Tools: []string{"read_file"}}},
		}},
	}
}

// createEventually retries while the webhook's cache has not yet seen a just-created policy, and
// returns the last error.
func createEventually(t *testing.T, obj client.Object, wantErr string) {
	t.Helper()
	var err error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		err = k8s.Create(context.Background(), obj.DeepCopyObject().(client.Object))
		if wantErr == "" && err == nil {
			return
		}
		if wantErr != "" && err != nil && strings.Contains(err.Error(), wantErr) {
			return
		}
	}
	t.Fatalf("create %T: error = %v, want %q", obj, err, wantErr)
}

func TestValidServerIsAdmitted(t *testing.T) {
	needCluster(t)
	ns := namespace(t, nil, mcpv1alpha1.MCPServerPolicySpec{AllowedRegistries: []string{"ghcr.io/acme/"}})
	createEventually(t, server(ns, goodImage), "")
}

func TestRegistryNotAllowed(t *testing.T) {
	needCluster(t)
	ns := namespace(t, nil, mcpv1alpha1.MCPServerPolicySpec{AllowedRegistries: []string{"registry.internal.example/mcp/"}})
	createEventually(t, server(ns, goodImage), fmt.Sprintf(`spec.image: Forbidden: image %s is not from a registry MCPServerPolicy "policy-%s" allows (registry.internal.example/mcp/)`, goodImage, ns))
}

func TestEgressBeyondTheCeiling(t *testing.T) {
	needCluster(t)
	ns := namespace(t, nil, mcpv1alpha1.MCPServerPolicySpec{Egress: mcpv1alpha1.EgressCeiling{AllowedCIDRs: []string{"140.82.112.0/20"}}})
	s := server(ns, goodImage)
	s.Spec.Egress = []mcpv1alpha1.EgressRule{
		{CIDR: ptr.To("1.1.1.0/24"), Ports: []mcpv1alpha1.EgressPort{{Port: 443}}},
		{CIDR: ptr.To("10.0.0.0/8"), Ports: []mcpv1alpha1.EgressPort{{Port: 5432}}},
	}
	createEventually(t, s, "spec.egress[0].cidr: Forbidden: 1.1.1.0/24 is outside the networks MCPServerPolicy")
	createEventually(t, s, `spec.egress[1].cidr: Invalid value: "10.0.0.0/8": 10.0.0.0/8 lies inside the private (RFC 1918) range`)
}

// TestGatewayCeiling: authentication cannot be turned off where a policy governs the namespace unless
// the policy allows it, and tokens must come from an issuer the policy allows.
func TestGatewayCeiling(t *testing.T) {
	needCluster(t)
	ns := namespace(t, nil, mcpv1alpha1.MCPServerPolicySpec{Gateway: mcpv1alpha1.GatewayCeiling{AllowedIssuers: []string{"https://auth.example.com"}}})
	off := server(ns, goodImage)
	off.Spec.Gateway.Auth = mcpv1alpha1.GatewayAuth{Disabled: true}
	createEventually(t, off, fmt.Sprintf(`spec.gateway.auth.disabled: Forbidden: MCPServerPolicy "policy-%s" does not allow gateway authentication to be turned off`, ns))
	other := server(ns, goodImage)
	other.Spec.Gateway.Auth.Issuer = "https://auth.attacker.example"
	createEventually(t, other, `spec.gateway.auth.issuer: Forbidden: issuer "https://auth.attacker.example" is not an authorization server`)
	createEventually(t, server(ns, goodImage), "")

	open := namespace(t, nil, mcpv1alpha1.MCPServerPolicySpec{Gateway: mcpv1alpha1.GatewayCeiling{AllowAuthDisabled: true}})
	off.Namespace = open
	createEventually(t, off, "")
}

func TestSignedImagesRequiredFailClosed(t *testing.T) {
	needCluster(t)
	key, err := imagetest.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	ns := namespace(t, nil, mcpv1alpha1.MCPServerPolicySpec{Authorities: []mcpv1alpha1.Authority{{Name: "release-key", Key: &mcpv1alpha1.KeyAuthority{Data: string(key.PublicPEM())}}}})
	verifier.v = refusingVerifier{}
	t.Cleanup(func() { verifier.v = nil })
	createEventually(t, server(ns, goodImage), "spec.image: Forbidden: image "+goodImage+" has no signature from policy")
}

type refusingVerifier struct{}

func (refusingVerifier) VerifyImage(_ context.Context, req imageverify.ImageRequest) (*imageverify.ImageVerdict, error) {
	return nil, fmt.Errorf("image %s has no signature from policy %q authority %q (registry reachable, 0 signatures found)", req.Image, req.Policies[0].Name, req.Policies[0].Spec.Authorities[0].Name)
}

func TestRawWorkloadsInOptedInNamespace(t *testing.T) {
	needCluster(t)
	ctx := context.Background()
	optedIn := namespace(t, map[string]string{webhooks.LabelImagePolicy: "enforce"}, mcpv1alpha1.MCPServerPolicySpec{AllowedRegistries: []string{"ghcr.io/acme/"}})
	deploy := func(ns, image string) *appsv1.Deployment {
		labels := map[string]string{"app": "raw"}
		return &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Name: "raw", Namespace: ns},
			Spec: appsv1.DeploymentSpec{
				Selector: &metav1.LabelSelector{MatchLabels: labels},
				Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: labels},
					Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "server", Image: image}}},
				},
			},
		}
	}
	createEventually(t, deploy(optedIn, "ghcr.io/acme/files:1.2"),
		`Deployment.apps "raw" is invalid: spec.template.spec.containers[0].image: Invalid value: "ghcr.io/acme/files:1.2": image ghcr.io/acme/files:1.2 is not pinned by digest; use ghcr.io/acme/files@sha256:<digest>`)
	createEventually(t, deploy(optedIn, "docker.io/library/nginx@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"), "is not from a registry MCPServerPolicy")
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: optedIn}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}
	createEventually(t, pod, `Pod "p" is invalid: spec.containers[0].image`)
	createEventually(t, deploy(optedIn, goodImage), "")

	// A namespace that has not opted in is not checked.
	other := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "plain-"}}
	if err := k8s.Create(ctx, other); err != nil {
		t.Fatal(err)
	}
	if err := k8s.Create(ctx, deploy(other.Name, "busybox:latest")); err != nil {
		t.Fatalf("a namespace without %s was checked: %v", webhooks.LabelImagePolicy, err)
	}
}

// TestCosignThroughTheAPIServer registers the real cosign verifier and admits or denies MCPServers and
// raw Deployments whose images live in a loopback registry, signed and attested by the test.
func TestCosignThroughTheAPIServer(t *testing.T) {
	needCluster(t)
	reg := imagetest.StartRegistry()
	t.Cleanup(reg.Close)
	key, err := imagetest.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	signed, err := reg.PushSigned("acme/files", key, "https://slsa.dev/provenance/v1")
	if err != nil {
		t.Fatal(err)
	}
	unsigned, err := reg.PushRandom("acme/unsigned")
	if err != nil {
		t.Fatal(err)
	}
	verifier.v = &imageverify.CosignVerifier{Verifier: imageverify.New(imageverify.Options{}), Reader: k8s}
	t.Cleanup(func() { verifier.v = nil })

	ns := namespace(t, map[string]string{webhooks.LabelImagePolicy: "enforce"}, mcpv1alpha1.MCPServerPolicySpec{
		AllowedRegistries: []string{reg.Host + "/acme/"},
		Authorities:       []mcpv1alpha1.Authority{{Name: "release-key", Key: &mcpv1alpha1.KeyAuthority{Data: string(key.PublicPEM())}}},
		Attestations:      []mcpv1alpha1.AttestationRequirement{{Name: "provenance", PredicateType: "https://slsa.dev/provenance/v1"}},
	})
	createEventually(t, server(ns, signed.String()), "")
	bad := server(ns, unsigned.String())
	bad.Name = "unsigned"
	createEventually(t, bad, fmt.Sprintf(`spec.image: Forbidden: image %s has no signature from policy "policy-%s" authority "release-key" (registry reachable, 0 signatures found)`, unsigned, ns))

	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "raw-unsigned", Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "raw"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "raw"}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "server", Image: unsigned.String()}}},
			},
		},
	}
	createEventually(t, d, "spec.template.spec.containers[0].image: Forbidden: image "+unsigned.String()+" has no signature from policy")
}

// TestKeylessThroughTheAPIServer verifies a certificate-signed image offline against a policy's CA, with
// the transparency checks turned off as an air-gapped cluster would.
func TestKeylessThroughTheAPIServer(t *testing.T) {
	needCluster(t)
	reg := imagetest.StartRegistry()
	t.Cleanup(reg.Close)
	ca, err := imagetest.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ca.Issue("release@acme.example", "https://token.actions.example")
	if err != nil {
		t.Fatal(err)
	}
	img, err := reg.PushRandom("acme/files")
	if err != nil {
		t.Fatal(err)
	}
	if err := signer.Sign(img); err != nil {
		t.Fatal(err)
	}
	verifier.v = &imageverify.CosignVerifier{Verifier: imageverify.New(imageverify.Options{}), Reader: k8s}
	t.Cleanup(func() { verifier.v = nil })
	keyless := func(subject string) mcpv1alpha1.MCPServerPolicySpec {
		return mcpv1alpha1.MCPServerPolicySpec{AllowedRegistries: []string{reg.Host}, Authorities: []mcpv1alpha1.Authority{{Name: "ci", Keyless: &mcpv1alpha1.KeylessAuthority{
			Issuer: "https://token.actions.example", Subject: subject, Roots: string(ca.RootPEM),
			RequireSCT: ptr.To(false), RequireTlog: ptr.To(false),
		}}}}
	}
	createEventually(t, server(namespace(t, nil, keyless("release@acme.example")), img.String()), "")
	createEventually(t, server(namespace(t, nil, keyless("someone@acme.example")), img.String()), `has no signature that verifies with policy`)

	// Transparency checks on, but no log keys to check them offline: the policy is unusable, so deny.
	spec := keyless("release@acme.example")
	spec.Authorities[0].Keyless.RequireTlog = ptr.To(true)
	createEventually(t, server(namespace(t, nil, spec), img.String()), "keyless.rekorPublicKeys is required")
}

// TestPrivateRegistryCredentials: a registry that needs credentials is refused as unauthorized while the
// policy names none, and admitted once the policy names a docker-registry Secret holding them.
func TestPrivateRegistryCredentials(t *testing.T) {
	needCluster(t)
	ctx := context.Background()
	reg := imagetest.StartRegistry()
	t.Cleanup(reg.Close)
	key, err := imagetest.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	signed, err := reg.PushSigned("acme/private", key, "https://slsa.dev/provenance/v1")
	if err != nil {
		t.Fatal(err)
	}
	reg.RequireBasicAuth("reader", "s3cret")

	secrets := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "warden-"}}
	if err := k8s.Create(ctx, secrets); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`{"auths":{%q:{"username":"reader","password":"s3cret"}}}`, reg.Host)
	pull := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "registry-reader", Namespace: secrets.Name}, Type: corev1.SecretTypeDockerConfigJson,
		Data: map[string][]byte{corev1.DockerConfigJsonKey: []byte(cfg)}}
	if err := k8s.Create(ctx, pull); err != nil {
		t.Fatal(err)
	}
	verifier.v = &imageverify.CosignVerifier{Verifier: imageverify.New(imageverify.Options{}), Reader: k8s, SecretNamespace: secrets.Name}
	t.Cleanup(func() { verifier.v = nil })
	spec := mcpv1alpha1.MCPServerPolicySpec{
		AllowedRegistries: []string{reg.Host + "/acme/"},
		Authorities:       []mcpv1alpha1.Authority{{Name: "release-key", Key: &mcpv1alpha1.KeyAuthority{Data: string(key.PublicPEM())}}},
		Attestations:      []mcpv1alpha1.AttestationRequirement{{Name: "provenance", PredicateType: "https://slsa.dev/provenance/v1"}},
	}
	anonymous := namespace(t, nil, spec)
	createEventually(t, server(anonymous, signed.String()), "HTTP 401, unauthorized")

	spec.RegistryCredentials = []corev1.LocalObjectReference{{Name: "registry-reader"}}
	withCredentials := namespace(t, nil, spec)
	createEventually(t, server(withCredentials, signed.String()), "")

	// A Secret of the wrong type is named in the denial.
	wrongType := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "opaque", Namespace: secrets.Name}, StringData: map[string]string{"password": "s3cret"}}
	if err := k8s.Create(ctx, wrongType); err != nil {
		t.Fatal(err)
	}
	spec.RegistryCredentials = []corev1.LocalObjectReference{{Name: "opaque"}}
	opaque := namespace(t, nil, spec)
	createEventually(t, server(opaque, signed.String()), "create it with `kubectl create secret docker-registry`")
}

// TestGatewayConfigCheckedAtAdmission: a spec the CRD schema accepts but the gateway's own config check
// refuses used to stall the server after admission; it is refused at admission, naming the field.
func TestGatewayConfigCheckedAtAdmission(t *testing.T) {
	ns := namespace(t, nil, mcpv1alpha1.MCPServerPolicySpec{})
	s := server(ns, goodImage)
	s.Spec.Gateway.PinnedTools = map[string]string{"read_file": "not-a-hash"}
	createEventually(t, s, `spec.gateway.pinnedTools[read_file]: Invalid value: the gateway would refuse this configuration: pins.read_file: "not-a-hash" is not a tool hash`)
	s = server(ns, goodImage)
	s.Spec.Gateway.Scopes = nil
	createEventually(t, s, "no scope grants any tool")
}

// TestIssuerCeilingHolds: with a policy listing the allowed issuer, keeping that issuer but pointing
// jwksURL at the pod's own loopback (the tenant's container serving its own keys) is refused, and so is
// any jwksURL the issuer's metadata does not confirm.
func TestIssuerCeilingHolds(t *testing.T) {
	ns := namespace(t, nil, mcpv1alpha1.MCPServerPolicySpec{Gateway: mcpv1alpha1.GatewayCeiling{AllowedIssuers: []string{"https://login.acme.example"}}})
	s := server(ns, goodImage)
	s.Spec.Gateway.Auth = mcpv1alpha1.GatewayAuth{Issuer: "https://login.acme.example", JWKSURL: "http://127.0.0.1:9999/keys"}
	createEventually(t, s, "spec.gateway.auth.jwksURL: Forbidden: http://127.0.0.1:9999/keys is a loopback address")
	s.Spec.Gateway.Auth.JWKSURL = "https://keys.attacker.example/jwks"
	createEventually(t, s, "spec.gateway.auth.jwksURL: Forbidden: confirm spec.gateway.auth.jwksURL against issuer https://login.acme.example")
	s.Spec.Gateway.Auth.JWKSURL = ""
	createEventually(t, s, "")
}

// TestPlaintextGatewayNeedsPolicy: tls.mode Disabled (bearer tokens in the clear on the pod network) is
// refused, naming the field and the fix, in a namespace no policy governs and where a governing policy
// does not set allowPlaintext; it is admitted where the policy allows it (a mesh doing mTLS).
func TestPlaintextGatewayNeedsPolicy(t *testing.T) {
	needCluster(t)
	ctx := context.Background()
	bare := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "wh-"}}
	if err := k8s.Create(ctx, bare); err != nil {
		t.Fatal(err)
	}
	plain := server(bare.Name, goodImage)
	plain.Spec.Gateway.TLS.Mode = mcpv1alpha1.TLSDisabled
	createEventually(t, plain, "spec.gateway.tls.mode: Forbidden: plaintext HTTP puts bearer tokens on the pod network unencrypted, so it needs an MCPServerPolicy governing this namespace with gateway.allowPlaintext: true")

	strict := namespace(t, nil, mcpv1alpha1.MCPServerPolicySpec{})
	plain.Namespace = strict
	createEventually(t, plain, fmt.Sprintf(`spec.gateway.tls.mode: Forbidden: MCPServerPolicy "policy-%s" does not allow a plaintext gateway (gateway.allowPlaintext)`, strict))
	createEventually(t, server(strict, goodImage), "")

	mesh := namespace(t, nil, mcpv1alpha1.MCPServerPolicySpec{Gateway: mcpv1alpha1.GatewayCeiling{AllowPlaintext: true}})
	plain.Namespace = mesh
	createEventually(t, plain, "")
}
