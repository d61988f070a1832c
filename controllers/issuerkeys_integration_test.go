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
	"sigs.k8s.io/controller-runtime/pkg/client"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
	"github.com/mcp-warden/mcp-warden/controllers"
	"github.com/mcp-warden/mcp-warden/internal/testenv"
)

// TestIssuerKeysDeliveredAndRotated: the operator fetches the issuer's keys and delivers them in the
// gateway's ConfigMap (jwks.json), the gateway configuration points at that file, and a key the issuer
// rotates in replaces the old one in the ConfigMap within the refresh interval, without rolling the pods.
func TestIssuerKeysDeliveredAndRotated(t *testing.T) {
	ctx := context.Background()
	ns := restrictedNamespace(t)
	s := newServer(ns, "keys")
	if err := k8s.Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	key := client.ObjectKeyFromObject(s)
	got := waitReady(t, key)
	c := condition(got, mcpv1alpha1.ConditionIssuerKeysDelivered)
	if c == nil || c.Status != metav1.ConditionTrue || !strings.Contains(c.Message, "https://auth.example.com/.well-known/jwks.json") {
		t.Fatalf("IssuerKeysDelivered: %+v", c)
	}
	cmKey := client.ObjectKey{Namespace: ns, Name: "keys-gateway"}
	jwksHas := func(kid string) func() error {
		return func() error {
			cm := &corev1.ConfigMap{}
			if err := k8s.Get(ctx, cmKey, cm); err != nil {
				return err
			}
			if !strings.Contains(cm.Data["jwks.json"], `"kid":"`+kid+`"`) {
				return fmt.Errorf("jwks.json has no key %s: %s", kid, cm.Data["jwks.json"])
			}
			if !strings.Contains(cm.Data["gateway.json"], `"jwksFile": "/etc/mcp-warden/jwks.json"`) {
				return fmt.Errorf("gateway.json does not read the delivered keys: %s", cm.Data["gateway.json"])
			}
			return nil
		}
	}
	old := issuer.KeyID()
	eventually(t, 10*time.Second, jwksHas(old))
	dep := &appsv1.Deployment{}
	if err := k8s.Get(ctx, key, dep); err != nil {
		t.Fatal(err)
	}
	hash := dep.Spec.Template.Annotations[controllers.AnnotationGatewayConfig]
	issuer.Rotate()
	start := time.Now()
	eventually(t, 15*time.Second, jwksHas(issuer.KeyID()))
	t.Logf("rotated key delivered to the ConfigMap %s after the rotation (refresh 1s)", time.Since(start).Round(10*time.Millisecond))
	if err := k8s.Get(ctx, key, dep); err != nil {
		t.Fatal(err)
	}
	if h := dep.Spec.Template.Annotations[controllers.AnnotationGatewayConfig]; h != hash {
		t.Errorf("a key rotation rolled the pods: config hash %s -> %s", hash, h)
	}
	cm := &corev1.ConfigMap{}
	if err := k8s.Get(ctx, cmKey, cm); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(cm.Data["jwks.json"], old) {
		t.Errorf("the rotated-out key %s is still delivered: %s", old, cm.Data["jwks.json"])
	}
}

// TestUnfetchableIssuerKeysKeepServerUnready: while the issuer's keys cannot be fetched, the gateway
// would refuse every token, so the server is not Ready and the condition says why; the ConfigMap holds
// an empty key set (never keys from anywhere else).
func TestUnfetchableIssuerKeysKeepServerUnready(t *testing.T) {
	ctx := context.Background()
	ns := restrictedNamespace(t)
	s := newServer(ns, "nokeys")
	s.Spec.Gateway.Auth.Issuer = "https://auth.example.com/no-such-tenant"
	if err := k8s.Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	dumpOnFailure(t, ns)
	eventually(t, 30*time.Second, func() error {
		got := &mcpv1alpha1.MCPServer{}
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(s), got); err != nil {
			return err
		}
		c := condition(got, mcpv1alpha1.ConditionIssuerKeysDelivered)
		r := condition(got, mcpv1alpha1.ConditionReady)
		if c == nil || c.Status != metav1.ConditionFalse || c.Reason != controllers.ReasonIssuerKeysUnavailable || !strings.Contains(c.Message, "HTTP 404") {
			return fmt.Errorf("IssuerKeysDelivered: %+v", c)
		}
		if r == nil || r.Status != metav1.ConditionFalse || r.Reason != controllers.ReasonIssuerKeysUnavailable {
			return fmt.Errorf("Ready: %+v", r)
		}
		if got.Status.ReadyReplicas == 0 {
			return fmt.Errorf("waiting for the pod (to show that Ready waits for the keys, not the pod)")
		}
		return nil
	})
	cm := &corev1.ConfigMap{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "nokeys-gateway"}, cm); err != nil {
		t.Fatal(err)
	}
	if cm.Data["jwks.json"] != `{"keys":[]}` {
		t.Errorf("jwks.json without fetched keys: %s", cm.Data["jwks.json"])
	}
}

// TestHostileKeySetIsNotReflected: a tenant aims jwksURL at an answer full of unusable keys whose ids
// and members are long and carry a marker (a malicious issuer, or an internal JSON service the tenant
// wants to read through the operator). The condition says why the keys are refused without quoting any
// of the answer, and stays bounded: the answer's key ids used to be copied into the message, which
// then exceeded the 32768 bytes the API server allows a condition message, so the status patch was
// refused on every reconcile and the server never said why it was not Ready.
func TestHostileKeySetIsNotReflected(t *testing.T) {
	ctx := context.Background()
	ns := restrictedNamespace(t)
	s := newServer(ns, "hostile")
	s.Spec.Gateway.Auth.JWKSURL = "https://auth.example.com" + testenv.HostileKeysPath
	if err := k8s.Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	dumpOnFailure(t, ns)
	var c *metav1.Condition
	eventually(t, 30*time.Second, func() error {
		got := &mcpv1alpha1.MCPServer{}
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(s), got); err != nil {
			return err
		}
		c = condition(got, mcpv1alpha1.ConditionIssuerKeysDelivered)
		if c == nil || c.Status != metav1.ConditionFalse || c.Reason != controllers.ReasonIssuerKeysUnavailable || !strings.Contains(c.Message, "cannot fetch") {
			return fmt.Errorf("IssuerKeysDelivered: %+v", c)
		}
		return nil
	})
	if strings.Contains(c.Message, testenv.HostileMarker) {
		t.Errorf("the condition quotes the issuer's answer (%d bytes): %.300s", len(c.Message), c.Message)
	}
	if len(c.Message) > 4096 {
		t.Errorf("the condition message is %d bytes", len(c.Message))
	}
	if !strings.Contains(c.Message, "no usable public signing key") || !strings.Contains(c.Message, "key 0") {
		t.Errorf("the condition does not say which keys were refused and why: %s", c.Message)
	}
	cm := &corev1.ConfigMap{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "hostile-gateway"}, cm); err != nil {
		t.Fatal(err)
	}
	for k, v := range cm.Data {
		if strings.Contains(v, testenv.HostileMarker) {
			t.Errorf("ConfigMap %s carries the issuer's answer", k)
		}
	}
	t.Logf("condition (%d bytes): %s", len(c.Message), c.Message)
}
