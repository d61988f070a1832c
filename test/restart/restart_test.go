// Package restart_test restarts the operator under a stalled MCPServer: the last good children must stay
// enforced by the new manager, which has nothing in memory (status.lastGood carries the good spec).
package restart_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
	"github.com/mcp-warden/mcp-warden/internal/localcluster"
	"github.com/mcp-warden/mcp-warden/internal/testenv"
	"github.com/mcp-warden/mcp-warden/operator"
)

func eventually(t *testing.T, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = cond(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("after %s: %v", timeout, err)
}

// startManager starts an operator on the cluster; the returned function stops it and waits until it
// has.
func startManager(t *testing.T, c *localcluster.Cluster) func() {
	t.Helper()
	is := testenv.StartIssuer()
	t.Cleanup(is.Close)
	mgr, err := operator.New(c.Config, operator.Options{MetricsAddr: "0", ProbeAddr: "0", SeveralInProcess: true, IssuerKeys: is.Fetcher(0)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	return func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("manager: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("manager did not stop within 30s")
		}
	}
}

// TestStalledServerSurvivesRestart: a server reconciles (its spec recorded as status.lastGood), a spec
// the gateway refuses stalls it, the operator restarts, and then its gateway ConfigMap and Deployment
// are weakened: the new manager, with nothing in memory, reverts both to the last good children.
func TestStalledServerSurvivesRestart(t *testing.T) {
	ctx := context.Background()
	root, err := localcluster.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	c, err := localcluster.Start(ctx, localcluster.Options{CRDDirs: []string{filepath.Join(root, "config", "crd", "bases")}})
	t.Cleanup(func() {
		if c != nil {
			_ = c.Stop()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	k8s, err := client.New(c.Config, client.Options{Scheme: operator.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	stop := startManager(t, c)
	s := &mcpv1alpha1.MCPServer{
		ObjectMeta: metav1.ObjectMeta{Name: "held", Namespace: "default"},
		Spec: mcpv1alpha1.MCPServerSpec{
			Image:   "ghcr.io/acme/files@sha256:" + strings.Repeat("ab", 32),
			Gateway: mcpv1alpha1.GatewaySpec{Auth: mcpv1alpha1.GatewayAuth{Issuer: "https://auth.example.com"}, Scopes: []mcpv1alpha1.ScopeGrant{{Scope: "files:read", Tools: []string{"read_file"}}}},
		},
	}
	if err := k8s.Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	key := client.ObjectKeyFromObject(s)
	eventually(t, 30*time.Second, func() error {
		if err := k8s.Get(ctx, key, s); err != nil {
			return err
		}
		if s.Status.LastGood == nil || s.Status.LastGood.Generation != 1 {
			return fmt.Errorf("status.lastGood = %+v, want generation 1", s.Status.LastGood)
		}
		return nil
	})
	cmKey := client.ObjectKey{Namespace: s.Namespace, Name: "held-gateway"}
	cm := &corev1.ConfigMap{}
	if err := k8s.Get(ctx, cmKey, cm); err != nil {
		t.Fatal(err)
	}
	goodConfig := cm.Data["gateway.json"]
	d := &appsv1.Deployment{}
	if err := k8s.Get(ctx, key, d); err != nil {
		t.Fatal(err)
	}
	goodImage := serverImage(d.Spec.Template.Spec.Containers)

	// The CRD accepts a spec without scopes; the gateway refuses it (this cluster runs no webhook).
	// The operator writes the status meanwhile: retry on a conflict with a fresh read.
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := k8s.Get(ctx, key, s); err != nil {
			return err
		}
		s.Spec.Gateway.Scopes = nil
		return k8s.Update(ctx, s)
	}); err != nil {
		t.Fatal(err)
	}
	waitStalled(ctx, t, k8s, s, "the children of generation 1 stay enforced")
	stop()

	// A new manager: nothing in memory.
	t.Cleanup(startManager(t, c))
	weakenChildren(ctx, t, k8s, cmKey, key)
	eventually(t, 30*time.Second, func() error { return revertedTo(ctx, k8s, cmKey, key, goodConfig, goodImage) })
	waitStalled(ctx, t, k8s, s, "the children of generation 1 stay enforced")
}

// waitStalled waits until the server is Stalled with text in the condition's message (s is read
// into).
func waitStalled(ctx context.Context, t *testing.T, k8s client.Client, s *mcpv1alpha1.MCPServer, text string) {
	t.Helper()
	key := client.ObjectKeyFromObject(s)
	eventually(t, 30*time.Second, func() error {
		if err := k8s.Get(ctx, key, s); err != nil {
			return err
		}
		c := meta.FindStatusCondition(s.Status.Conditions, mcpv1alpha1.ConditionStalled)
		if c == nil || c.Status != metav1.ConditionTrue || !strings.Contains(c.Message, text) {
			return fmt.Errorf("want Stalled with %q; conditions: %+v", text, s.Status.Conditions)
		}
		return nil
	})
}

// weakenChildren is another writer that turns off the gateway's auth in its configuration and runs
// the server's Deployment as busybox on the host network.
func weakenChildren(ctx context.Context, t *testing.T, k8s client.Client, cmKey, key client.ObjectKey) {
	t.Helper()
	// Retried: the operator may be writing the ConfigMap's delivered keys at the same time.
	cm := &corev1.ConfigMap{}
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := k8s.Get(ctx, cmKey, cm); err != nil {
			return err
		}
		cm.Data["gateway.json"] = `{"auth": {"disabled": true}}`
		return k8s.Update(ctx, cm, client.FieldOwner("someone"))
	}); err != nil {
		t.Fatal(err)
	}
	d := &appsv1.Deployment{}
	if err := k8s.Get(ctx, key, d); err != nil {
		t.Fatal(err)
	}
	d.Spec.Template.Spec.Containers[0].Image = "busybox:latest"
	d.Spec.Template.Spec.HostNetwork = true
	if err := k8s.Update(ctx, d, client.FieldOwner("someone")); err != nil {
		t.Fatal(err)
	}
}

// revertedTo is nil once the gateway configuration and the Deployment are the last good ones again,
// still serving (one replica), not fenced off and scaled down.
func revertedTo(ctx context.Context, k8s client.Client, cmKey, key client.ObjectKey, goodConfig, goodImage string) error {
	cm := &corev1.ConfigMap{}
	if err := k8s.Get(ctx, cmKey, cm); err != nil {
		return err
	}
	if cm.Data["gateway.json"] != goodConfig {
		return fmt.Errorf("gateway config still edited: %s", cm.Data["gateway.json"])
	}
	d := &appsv1.Deployment{}
	if err := k8s.Get(ctx, key, d); err != nil {
		return err
	}
	p := d.Spec.Template.Spec
	if p.HostNetwork || serverImage(p.Containers) != goodImage {
		return fmt.Errorf("Deployment still weakened: hostNetwork=%v image=%s", p.HostNetwork, serverImage(p.Containers))
	}
	// Kept serving the last good configuration, not fenced off and scaled down.
	if r := ptr.Deref(d.Spec.Replicas, 1); r != 1 {
		return fmt.Errorf("replicas = %d, want 1", r)
	}
	return nil
}

// serverImage is the image of the server container.
func serverImage(containers []corev1.Container) string {
	for _, c := range containers {
		if c.Name == "server" {
			return c.Image
		}
	}
	return ""
}
