// Package certs_test runs the operator with self-managed webhook certificates against a real API server:
// the operator issues its CA and serving certificate, stores them in a Secret, injects the CA into the
// ValidatingWebhookConfiguration, and the API server then calls the webhook over TLS with that chain.
package certs_test

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
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
	// the policy webhook answers once the webhook server serves the new certificate
	waitFor(t, 30*time.Second, func() error { return client.IgnoreAlreadyExists(k8s.Create(ctx, policy.DeepCopy())) })
	s := &mcpv1alpha1.MCPServer{
		ObjectMeta: metav1.ObjectMeta{Name: "outside", Namespace: "default"},
		Spec:       mcpv1alpha1.MCPServerSpec{Image: "ghcr.io/acme/files@sha256:" + strings.Repeat("ab", 32), Gateway: mcpv1alpha1.GatewaySpec{Auth: mcpv1alpha1.GatewayAuth{Issuer: "https://auth.example.com"}}},
	}
	waitFor(t, 30*time.Second, func() error {
		err := k8s.Create(ctx, s.DeepCopy())
		if err == nil || !strings.Contains(err.Error(), `MCPServerPolicy "registries" allows`) {
			return fmt.Errorf("create: %v", err) //nolint:errorlint // err is nil when the create was wrongly admitted
		}
		return nil
	})

	rotateUnderLoad(ctx, t, k8s, s, port)
}

// rotateUnderLoad forces a new CA and serving certificate (the Secret's content is removed, as if it
// had been lost or had expired) while admissions flow every 50 ms, and checks that the webhook serves
// the new certificate, that the API server trusts it, and how long admissions failed in between.
func rotateUnderLoad(ctx context.Context, t *testing.T, k8s client.Client, s *mcpv1alpha1.MCPServer, port int) {
	before := servedSerial(t, port)
	type outcome struct {
		at      time.Time
		reached bool
		err     string
	}
	var mu sync.Mutex
	var outcomes []outcome
	load, stopLoad := context.WithCancel(ctx)
	loadDone := make(chan struct{})
	go func() {
		defer close(loadDone)
		for load.Err() == nil {
			err := k8s.Create(ctx, s.DeepCopy())
			reached := err != nil && strings.Contains(err.Error(), `MCPServerPolicy "registries" allows`)
			mu.Lock()
			outcomes = append(outcomes, outcome{time.Now(), reached, fmt.Sprint(err)})
			mu.Unlock()
			time.Sleep(50 * time.Millisecond)
		}
	}()
	time.Sleep(time.Second)
	rotated := time.Now()
	secret := &corev1.Secret{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: "mcp-warden-system", Name: "mcp-warden-webhook-server-cert"}, secret); err != nil {
		t.Fatal(err)
	}
	oldCA := string(secret.Data["ca.crt"])
	secret.Data = nil
	if err := k8s.Update(ctx, secret); err != nil {
		t.Fatal(err)
	}
	// The operator makes a new CA and certificate, injects the CA, and the server reloads its files.
	waitFor(t, 60*time.Second, func() error {
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: "mcp-warden-system", Name: "mcp-warden-webhook-server-cert"}, secret); err != nil {
			return err
		}
		if len(secret.Data["ca.crt"]) == 0 || string(secret.Data["ca.crt"]) == oldCA {
			return fmt.Errorf("no new CA yet")
		}
		if served := servedSerial(t, port); served == before {
			return fmt.Errorf("the webhook still serves the old certificate %s", served)
		}
		return nil
	})
	settled := time.Now()
	time.Sleep(3 * time.Second)
	stopLoad()
	<-loadDone

	var failed, reachedAfter, failedAfter int
	var firstFail, lastFail time.Time
	for _, o := range outcomes {
		switch {
		case !o.reached && o.at.After(settled.Add(time.Second)):
			failedAfter++
			t.Logf("admission failed after the rotation settled: %s", o.err)
		case o.at.After(settled.Add(time.Second)):
			reachedAfter++
		}
		if !o.reached {
			if failed == 0 {
				firstFail = o.at
			}
			failed++
			lastFail = o.at
		}
	}
	window := time.Duration(0)
	if failed > 0 {
		window = lastFail.Sub(firstFail)
	}
	t.Logf("rotation: new certificate served %s after the Secret was emptied; %d admissions, %d failed (over %s), %d reached the webhook after it settled",
		settled.Sub(rotated).Round(100*time.Millisecond), len(outcomes), failed, window.Round(100*time.Millisecond), reachedAfter)
	if failedAfter > 0 || reachedAfter == 0 {
		t.Errorf("after the rotation settled, %d admissions failed and %d reached the webhook", failedAfter, reachedAfter)
	}
	if window > 15*time.Second {
		t.Errorf("admissions failed for %s during the rotation", window)
	}
}

// servedSerial identifies the certificate the webhook server presents (a hash of it: the rotator gives
// every certificate serial number 1).
func servedSerial(t *testing.T, port int) string {
	t.Helper()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", fmt.Sprintf("127.0.0.1:%d", port), &tls.Config{InsecureSkipVerify: true, ServerName: "localhost"}) //nolint:gosec // only reads the presented certificate
	if err != nil {
		return "unreachable: " + err.Error()
	}
	defer conn.Close()
	sum := sha256.Sum256(conn.ConnectionState().PeerCertificates[0].Raw)
	return hex.EncodeToString(sum[:8])
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
