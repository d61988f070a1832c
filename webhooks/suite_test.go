package webhooks_test

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/go-logr/logr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/mcp-warden/mcp-warden/internal/localcluster"
	"github.com/mcp-warden/mcp-warden/operator"
	"github.com/mcp-warden/mcp-warden/webhooks"
)

// The suite registers the webhooks from config/webhook in a real kube-apiserver, which calls the
// operator's webhook server over TLS; every object is created through the API.
var (
	k8s      client.Client
	verifier = &switchableVerifier{}
)

// switchableVerifier lets a test install the verifier the webhooks call.
type switchableVerifier struct{ v webhooks.ImageVerifier }

func (s *switchableVerifier) VerifyImage(ctx context.Context, req webhooks.ImageRequest) (*webhooks.ImageVerdict, error) {
	if s.v == nil {
		return nil, fmt.Errorf("no verifier installed for this test")
	}
	return s.v.VerifyImage(ctx, req)
}

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(run(m))
}

func run(m *testing.M) int {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ctrl.SetLogger(logr.Discard())
	root, err := localcluster.ModuleRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	cluster, err := localcluster.Start(ctx, localcluster.Options{
		CRDDirs:        []string{filepath.Join(root, "config", "crd", "bases")},
		WebhookInstall: envtest.WebhookInstallOptions{Paths: []string{filepath.Join(root, "config", "webhook", "manifests.yaml")}},
	})
	defer func() {
		if cluster != nil {
			_ = cluster.Stop()
		}
	}()
	if err != nil {
		fmt.Fprintln(os.Stderr, "start control plane:", err)
		return 1
	}
	wh := cluster.Env.WebhookInstallOptions
	mgr, err := operator.New(cluster.Config, operator.Options{
		MetricsAddr: "0", ProbeAddr: "0",
		Webhooks: true, WebhookHost: wh.LocalServingHost, WebhookPort: wh.LocalServingPort, WebhookCertDir: wh.LocalServingCertDir,
		Verifier: verifier,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	go func() { _ = mgr.Start(ctx) }()
	if k8s, err = client.New(cluster.Config, client.Options{Scheme: operator.Scheme()}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}
