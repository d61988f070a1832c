package controllers_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
	"github.com/mcp-warden/mcp-warden/controllers"
	"github.com/mcp-warden/mcp-warden/integrations/argocd"
	"github.com/mcp-warden/mcp-warden/supplychain/imageverify/imagetest"
)

// TestPolicyReadyReportsWhetherItCanBeEnforced: a policy whose key does not parse, or whose attestation
// names an authority it does not have, is Ready=False with the field and the reason; fixed, it becomes
// Ready=True, and then nothing is written while nothing changes.
func TestPolicyReadyReportsWhetherItCanBeEnforced(t *testing.T) {
	ctx := context.Background()
	key, err := imagetest.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	p := &mcpv1alpha1.MCPServerPolicy{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "ready-"},
		Spec: mcpv1alpha1.MCPServerPolicySpec{
			NamespaceSelector: metav1.LabelSelector{MatchLabels: map[string]string{"policy-test": "none"}},
			Authorities:       []mcpv1alpha1.Authority{{Name: "release-key", Key: &mcpv1alpha1.KeyAuthority{Data: "-----BEGIN PUBLIC KEY-----\nAA==\n-----END PUBLIC KEY-----"}}},
		},
	}
	if err := k8s.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), p) })
	readyIs := func(status metav1.ConditionStatus, want string) func() error {
		return func() error {
			if err := k8s.Get(ctx, client.ObjectKeyFromObject(p), p); err != nil {
				return err
			}
			c := meta.FindStatusCondition(p.Status.Conditions, mcpv1alpha1.ConditionReady)
			if c == nil || c.Status != status || c.ObservedGeneration != p.Generation || p.Status.ObservedGeneration != p.Generation || !strings.Contains(c.Message, want) {
				return fmt.Errorf("Ready = %+v, want %s with %q", c, status, want)
			}
			return nil
		}
	}
	// The policy webhook would refuse this key; the controller names the field too.
	eventually(t, 20*time.Second, readyIs(metav1.ConditionFalse, `spec.authorities[0].key.data: Invalid value: "(key)": not a PEM public key`))
	if c := meta.FindStatusCondition(p.Status.Conditions, mcpv1alpha1.ConditionReady); c.Reason != controllers.ReasonPolicyInvalid {
		t.Fatalf("reason %s", c.Reason)
	}
	assertPolicyArgoHealth(t, p, argocd.Degraded)

	updatePolicy(t, p, func(s *mcpv1alpha1.MCPServerPolicySpec) {
		s.Authorities[0].Key.Data = string(key.PublicPEM())
		s.Attestations = []mcpv1alpha1.AttestationRequirement{{Name: "provenance", PredicateType: "https://slsa.dev/provenance/v1", Authorities: []string{"ci"}}}
	})
	eventually(t, 20*time.Second, readyIs(metav1.ConditionFalse, `spec.attestations[0].authorities[0]: Not found: "ci"`))

	updatePolicy(t, p, func(s *mcpv1alpha1.MCPServerPolicySpec) { s.Attestations[0].Authorities = []string{"release-key"} })
	eventually(t, 20*time.Second, readyIs(metav1.ConditionTrue, "can be enforced"))
	assertPolicyArgoHealth(t, p, argocd.Healthy)
	rv := p.ResourceVersion
	time.Sleep(2 * time.Second)
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(p), p); err != nil {
		t.Fatal(err)
	}
	if p.ResourceVersion != rv {
		t.Errorf("the policy was written while nothing changed (resourceVersion %s -> %s)", rv, p.ResourceVersion)
	}
}

// assertPolicyArgoHealth runs the Argo CD health check on the live policy.
func assertPolicyArgoHealth(t *testing.T, p *mcpv1alpha1.MCPServerPolicy, want string) {
	t.Helper()
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(p)
	if err != nil {
		t.Fatal(err)
	}
	status, msg, err := argocd.PolicyHealth(obj)
	if err != nil || status != want {
		t.Fatalf("Argo CD health = %s %q (%v), want %s", status, msg, err, want)
	}
}

// updatePolicy changes the policy's spec, reading it afresh on a conflict (the operator writes its status).
func updatePolicy(t *testing.T, p *mcpv1alpha1.MCPServerPolicy, mutate func(*mcpv1alpha1.MCPServerPolicySpec)) {
	t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(p), p); err != nil {
			return err
		}
		mutate(&p.Spec)
		return k8s.Update(context.Background(), p)
	})
	if err != nil {
		t.Fatal(err)
	}
}
