// Package certs_test runs the operator with self-managed webhook certificates against a real API server:
// the operator issues its CA and serving certificate, stores them in a Secret, injects the CA into the
// ValidatingWebhookConfiguration, and the API server then calls the webhook over TLS with that chain.
package certs_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
	"github.com/mcp-warden/mcp-warden/internal/localcluster"
	"github.com/mcp-warden/mcp-warden/operator"
)

const configName = "mcp-warden-validating-webhook-configuration"

func TestSelfManagedCertificates(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ctrl.SetLogger(logr.Discard())
	root, err := localcluster.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	cluster, err := localcluster.Start(ctx, localcluster.Options{CRDDirs: []string{filepath.Join(root, "config", "crd", "bases")}})
	t.Cleanup(func() { _ = cluster.Stop() })
	if err != nil {
		t.Fatal(err)
	}
	k8s, err := client.New(cluster.Config, client.Options{Scheme: operator.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "mcp-warden-system"}}); err != nil {
		t.Fatal(err)
	}
	// config/webhook ships this Secret empty; the operator fills and rotates it.
	if err := k8s.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "mcp-warden-webhook-server-cert", Namespace: "mcp-warden-system"}}); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	// The generated configuration, pointed at the operator by URL (no Service in this cluster) and
	// with no CA bundle: the operator must provide it.
	body, err := os.ReadFile(filepath.Join(root, "config", "webhook", "manifests.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := &admissionregistrationv1.ValidatingWebhookConfiguration{}
	if err := yaml.Unmarshal(body, cfg); err != nil {
		t.Fatal(err)
	}
	cfg.Name = configName
	for i := range cfg.Webhooks {
		url := fmt.Sprintf("https://localhost:%d%s", port, *cfg.Webhooks[i].ClientConfig.Service.Path)
		cfg.Webhooks[i].ClientConfig = admissionregistrationv1.WebhookClientConfig{URL: &url}
	}
	if err := k8s.Create(ctx, cfg); err != nil {
		t.Fatal(err)
	}

	certDir := t.TempDir()
	mgr, err := operator.New(cluster.Config, operator.Options{
		MetricsAddr: "0", ProbeAddr: "0",
		Webhooks: true, WebhookHost: "127.0.0.1", WebhookPort: port, WebhookCertDir: certDir,
		CertRotation: true, CertSecret: types.NamespacedName{Namespace: "mcp-warden-system", Name: "mcp-warden-webhook-server-cert"},
		WebhookService: "mcp-warden-webhook-service", WebhookConfiguration: configName, WebhookExtraDNSNames: []string{"localhost"},
		Namespace: "mcp-warden-system",
	})
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = mgr.Start(ctx) }()
	// In a cluster the kubelet projects the Secret into the manager's certificate directory (see
	// config/manager); this cluster has no kubelet, so the test does that part.
	go projectSecret(ctx, k8s, certDir)

	waitFor(t, 30*time.Second, func() error {
		s := &corev1.Secret{}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: "mcp-warden-system", Name: "mcp-warden-webhook-server-cert"}, s); err != nil {
			return err
		}
		if len(s.Data["ca.crt"]) == 0 || len(s.Data["tls.crt"]) == 0 {
			return fmt.Errorf("secret has no certificate yet")
		}
		if err := k8s.Get(ctx, client.ObjectKey{Name: configName}, cfg); err != nil {
			return err
		}
		for _, w := range cfg.Webhooks {
			if string(w.ClientConfig.CABundle) != string(s.Data["ca.crt"]) {
				return fmt.Errorf("CA not injected into %s", w.Name)
			}
		}
		if _, err := os.Stat(filepath.Join(certDir, "tls.crt")); err != nil {
			return err
		}
		return nil
	})

	// The API server now reaches the webhook over TLS with the operator's own chain.
	policy := &mcpv1alpha1.MCPServerPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "registries"},
		Spec: mcpv1alpha1.MCPServerPolicySpec{
			NamespaceSelector: metav1.LabelSelector{},
			AllowedRegistries: []string{"registry.internal.example/"},
		},
	}
	if err := k8s.Create(ctx, policy); err != nil {
		t.Fatal(err)
	}
	s := &mcpv1alpha1.MCPServer{
		ObjectMeta: metav1.ObjectMeta{Name: "outside", Namespace: "default"},
		Spec:       mcpv1alpha1.MCPServerSpec{Image: "ghcr.io/acme/files@sha256:" + strings.Repeat("ab", 32), Gateway: mcpv1alpha1.GatewaySpec{Auth: mcpv1alpha1.GatewayAuth{Issuer: "https://auth.example.com"}}},
	}
	waitFor(t, 30*time.Second, func() error {
		err := k8s.Create(ctx, s.DeepCopy())
		if err == nil || !strings.Contains(err.Error(), `MCPServerPolicy "registries" allows`) {
			return fmt.Errorf("create: %v", err)
		}
		return nil
	})
}

func projectSecret(ctx context.Context, k8s client.Client, dir string) {
	for ctx.Err() == nil {
		s := &corev1.Secret{}
		if k8s.Get(ctx, client.ObjectKey{Namespace: "mcp-warden-system", Name: "mcp-warden-webhook-server-cert"}, s) == nil {
			for name, data := range s.Data {
				_ = os.WriteFile(filepath.Join(dir, name), data, 0o600)
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	p, _ := strconv.Atoi(strings.TrimPrefix(l.Addr().String(), "127.0.0.1:"))
	return p
}

func waitFor(t *testing.T, timeout time.Duration, cond func() error) {
	t.Helper()
	var err error
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if err = cond(); err == nil {
			return
		}
	}
	t.Fatal(err)
}
