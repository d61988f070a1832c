package release_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
	"github.com/mcp-warden/mcp-warden/internal/localcluster"
	"github.com/mcp-warden/mcp-warden/internal/testenv"
	"github.com/mcp-warden/mcp-warden/operator"
	"github.com/mcp-warden/mcp-warden/supplychain/imageverify"
	"github.com/mcp-warden/mcp-warden/supplychain/release"
	"github.com/mcp-warden/mcp-warden/webhooks"
)

// TestWebhookAdmitsTheReleasedImages dogfoods the product: a policy that trusts the release key and
// requires the provenance and SBOM attestations covers the operator's namespace (opted in with the
// image-policy label), and the real webhook, through a real API server, admits a Deployment of the
// released manager and gateway images and denies one of a rebuilt, unsigned gateway.
func TestWebhookAdmitsTheReleasedImages(t *testing.T) {
	r := doRelease(t)
	unsigned := rebuildUnsigned(t, r)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	root, err := localcluster.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	env, err := testenv.Start(ctx,
		localcluster.Options{WebhookInstall: envtest.WebhookInstallOptions{Paths: []string{filepath.Join(root, "config", "webhook", "manifests.yaml")}}},
		func(c *localcluster.Cluster) operator.Options {
			o := testenv.WebhookOptions(c)
			o.Verifier = &imageverify.CosignVerifier{Verifier: imageverify.New(imageverify.Options{})}
			return o
		})
	defer env.Stop()
	if err != nil {
		t.Fatal(err)
	}
	k8s := env.Client
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "mcp-warden-system", Labels: map[string]string{webhooks.LabelImagePolicy: "enforce"}}}
	if err := k8s.Create(ctx, ns); err != nil {
		t.Fatal(err)
	}
	policy := &mcpv1alpha1.MCPServerPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "mcp-warden-release"},
		Spec: mcpv1alpha1.MCPServerPolicySpec{
			NamespaceSelector: metav1.LabelSelector{MatchLabels: map[string]string{corev1.LabelMetadataName: ns.Name}},
			AllowedRegistries: []string{r.reg.Host + "/mcp/"},
			Authorities:       []mcpv1alpha1.Authority{{Name: "release-key", Key: &mcpv1alpha1.KeyAuthority{Data: string(r.pubPEM)}}},
			Attestations: []mcpv1alpha1.AttestationRequirement{
				{Name: "provenance", PredicateType: release.PredicateSLSAProvenance},
				{Name: "sbom", PredicateType: release.PredicateCycloneDX},
			},
		},
	}
	if err := k8s.Create(ctx, policy); err != nil {
		t.Fatal(err)
	}
	deployment := func(name string, images ...string) *appsv1.Deployment {
		d := &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns.Name},
			Spec: appsv1.DeploymentSpec{
				Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
				Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": name}}},
			},
		}
		for i, img := range images {
			d.Spec.Template.Spec.Containers = append(d.Spec.Template.Spec.Containers, corev1.Container{Name: []string{"manager", "gateway"}[i], Image: img})
		}
		return d
	}
	// The webhook's policy cache may lag the policy's creation by a moment.
	create := func(d *appsv1.Deployment, wantErr string) error {
		var err error
		for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
			err = k8s.Create(ctx, d.DeepCopy())
			if (wantErr == "" && err == nil) || (wantErr != "" && err != nil && strings.Contains(err.Error(), wantErr)) {
				return nil
			}
		}
		return err
	}
	released := deployment("released", r.res.Images["mcp-warden-manager"].String(), r.res.Images["mcp-warden-gateway"].String())
	if err := create(released, ""); err != nil {
		t.Fatalf("released images refused: %v", err)
	}
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(released), &appsv1.Deployment{}); err != nil {
		t.Fatal(err)
	}
	rebuilt := deployment("rebuilt", unsigned.String())
	if err := create(rebuilt, "has no signature from policy \"mcp-warden-release\""); err != nil {
		t.Fatalf("unsigned rebuild: %v", err)
	}
}
