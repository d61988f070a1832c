package webhooks_test

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/mcp-warden/mcp-warden/internal/localcluster"
	"github.com/mcp-warden/mcp-warden/internal/testenv"
	"github.com/mcp-warden/mcp-warden/operator"
	"github.com/mcp-warden/mcp-warden/supplychain/imageverify"
)

// The suite registers the webhooks from config/webhook in a real kube-apiserver, which calls the
// operator's webhook server over TLS; every object is created through the API.
var (
	k8s client.Client
	// adminConfig is the suite's admin (system:masters) configuration, for impersonating tenants.
	adminConfig *rest.Config
	verifier    = &switchableVerifier{}
)

// switchableVerifier lets a test install the verifier the webhooks call.
type switchableVerifier struct{ v imageverify.ImageVerifier }

func (s *switchableVerifier) VerifyImage(ctx context.Context, req imageverify.ImageRequest) (*imageverify.ImageVerdict, error) {
	if s.v == nil {
		return nil, fmt.Errorf("no verifier installed for this test")
	}
	return s.v.VerifyImage(ctx, req)
}

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(run(m))
}

// needCluster skips an integration test when the control plane is not available (unit tests in this
// package run without it; `make test` always provides it).
func needCluster(t *testing.T) {
	t.Helper()
	if k8s == nil {
		t.Skip("KUBEBUILDER_ASSETS is not set: integration test skipped")
	}
}

func run(m *testing.M) int {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		fmt.Fprintln(os.Stderr, "KUBEBUILDER_ASSETS is not set: running the unit tests only")
		return m.Run()
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	root, err := localcluster.ModuleRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// Cilium's CRD is served, so the fence webhook sees CiliumNetworkPolicies too.
	cilium, err := testenv.CiliumPolicyCRD()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	env, err := testenv.Start(ctx,
		localcluster.Options{CRDs: []*apiextensionsv1.CustomResourceDefinition{cilium}, WebhookInstall: envtest.WebhookInstallOptions{Paths: []string{filepath.Join(root, "config", "webhook", "manifests.yaml")}}},
		func(c *localcluster.Cluster) operator.Options {
			o := testenv.WebhookOptions(c)
			o.Verifier = verifier
			return o
		})
	defer env.Stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	k8s = env.Client
	adminConfig = env.Cluster.Config
	return m.Run()
}
