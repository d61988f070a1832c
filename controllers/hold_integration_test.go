package controllers_test

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
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
	"github.com/mcp-warden/mcp-warden/controllers"
)

func stalled(t *testing.T, key client.ObjectKey, reason, text string) {
	t.Helper()
	eventually(t, 30*time.Second, func() error {
		s := &mcpv1alpha1.MCPServer{}
		if err := k8s.Get(context.Background(), key, s); err != nil {
			return err
		}
		c := condition(s, mcpv1alpha1.ConditionStalled)
		if c == nil || c.Reason != reason || !strings.Contains(c.Message, text) || s.Status.ObservedGeneration != s.Generation {
			return fmt.Errorf("want Stalled %s with %q; conditions: %+v", reason, text, s.Status.Conditions)
		}
		return kstatusIs(s, status.FailedStatus)
	})
}

// TestStallKeepsEnforcing: a spec the gateway refuses (this suite runs without the webhook that now
// refuses it at admission) stalls the server, and the children of the last good generation stay
// enforced: an edited ConfigMap and a weakened Deployment are still reverted.
func TestStallKeepsEnforcing(t *testing.T) {
	ctx := context.Background()
	ns := restrictedNamespace(t)
	s := newServer(ns, "held")
	if err := k8s.Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	key := client.ObjectKeyFromObject(s)
	waitReady(t, key)
	cmKey := client.ObjectKey{Namespace: ns, Name: "held-gateway"}
	cm := &corev1.ConfigMap{}
	if err := k8s.Get(ctx, cmKey, cm); err != nil {
		t.Fatal(err)
	}
	goodConfig := cm.Data["gateway.json"]

	if err := k8s.Get(ctx, key, s); err != nil {
		t.Fatal(err)
	}
	// The CRD accepts a spec without scopes; the gateway refuses it (every tool would be hidden).
	s.Spec.Gateway.Scopes = nil
	if err := k8s.Update(ctx, s); err != nil {
		t.Fatal(err)
	}
	stalled(t, key, controllers.ReasonInvalidSpec, "stay enforced")

	cm.Data["gateway.json"] = `{"auth": {"disabled": true}}`
	if err := k8s.Update(ctx, cm, client.FieldOwner("someone")); err != nil {
		t.Fatal(err)
	}
	d := &appsv1.Deployment{}
	if err := k8s.Get(ctx, key, d); err != nil {
		t.Fatal(err)
	}
	want := d.Spec.Template.Spec.Containers[0].Image
	wantVolumes := len(d.Spec.Template.Spec.Volumes)
	d.Spec.Template.Spec.Containers[0].Image = "busybox:latest"
	sc := d.Spec.Template.Spec.Containers[0].SecurityContext
	sc.Privileged, sc.AllowPrivilegeEscalation, sc.RunAsUser, sc.RunAsNonRoot = ptr.To(true), ptr.To(true), ptr.To(int64(0)), ptr.To(false)
	d.Spec.Template.Spec.HostNetwork = true
	d.Spec.Template.Spec.Volumes = append(d.Spec.Template.Spec.Volumes, corev1.Volume{Name: "host", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/"}}})
	if err := k8s.Update(ctx, d, client.FieldOwner("someone")); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, func() error {
		if err := k8s.Get(ctx, cmKey, cm); err != nil {
			return err
		}
		if cm.Data["gateway.json"] != goodConfig {
			return fmt.Errorf("gateway config still edited: %s", cm.Data["gateway.json"])
		}
		if err := k8s.Get(ctx, key, d); err != nil {
			return err
		}
		p := d.Spec.Template.Spec
		if p.HostNetwork || p.Containers[0].Image != want || *p.Containers[0].SecurityContext.Privileged || *p.Containers[0].SecurityContext.RunAsUser == 0 || len(p.Volumes) != wantVolumes {
			return fmt.Errorf("Deployment still weakened: hostNetwork=%v image=%s privileged=%v volumes=%d", p.HostNetwork, p.Containers[0].Image, *p.Containers[0].SecurityContext.Privileged, len(p.Volumes))
		}
		return nil
	})
}

// TestTighteningScalesToZero: a server running with authentication off is governed by a policy that
// forbids it; it is scaled to zero, with a condition and an event naming the rule. With violationAction
// Report it keeps running and is only reported.
func TestTighteningScalesToZero(t *testing.T) {
	ctx := context.Background()
	ns := restrictedNamespace(t)
	s := newServer(ns, "open")
	s.Spec.Gateway.Auth = mcpv1alpha1.GatewayAuth{Disabled: true}
	if err := k8s.Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	key := client.ObjectKeyFromObject(s)
	waitReady(t, key)

	policy := &mcpv1alpha1.MCPServerPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "auth-on-" + ns},
		Spec: mcpv1alpha1.MCPServerPolicySpec{
			NamespaceSelector: metav1.LabelSelector{MatchLabels: map[string]string{corev1.LabelMetadataName: ns}},
			ViolationAction:   mcpv1alpha1.ViolationReport,
		},
	}
	if err := k8s.Create(ctx, policy); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), policy) })
	stalled(t, key, controllers.ReasonPolicyViolation, "spec.gateway.auth.disabled: Forbidden")
	replicas := func(want int32) {
		t.Helper()
		eventually(t, 15*time.Second, func() error {
			d := &appsv1.Deployment{}
			if err := k8s.Get(ctx, key, d); err != nil {
				return err
			}
			if got := ptr.Deref(d.Spec.Replicas, 1); got != want {
				return fmt.Errorf("replicas = %d, want %d", got, want)
			}
			return nil
		})
	}
	time.Sleep(2 * time.Second)
	replicas(1)

	updatePolicy(t, policy, func(p *mcpv1alpha1.MCPServerPolicySpec) { p.ViolationAction = mcpv1alpha1.ViolationScaleToZero })
	replicas(0)
	stalled(t, key, controllers.ReasonPolicyViolation, "scaled to zero replicas until the spec complies")
	eventually(t, 15*time.Second, func() error {
		events, err := clients.EventsV1().Events(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		for _, e := range events.Items {
			if e.Reason == controllers.ReasonScaledToZero && strings.Contains(e.Note, "spec.gateway.auth.disabled") {
				return nil
			}
		}
		return fmt.Errorf("no %s event naming the rule", controllers.ReasonScaledToZero)
	})

	// Fixing the spec brings it back.
	if err := k8s.Get(ctx, key, s); err != nil {
		t.Fatal(err)
	}
	s.Spec.Gateway.Auth = mcpv1alpha1.GatewayAuth{Issuer: "https://auth.example.com"}
	if err := k8s.Update(ctx, s); err != nil {
		t.Fatal(err)
	}
	waitReady(t, key)
	replicas(1)
}
