// Package cilium_test runs the operator on a control plane that serves Cilium's CiliumNetworkPolicy CRD
// (installed from Cilium's own Go module), so DNS-name egress is enforced with toFQDNs rules. The
// controllers suite covers the same MCPServers on a cluster without Cilium.
package cilium_test

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	ciliumv2 "github.com/cilium/cilium/pkg/k8s/apis/cilium.io/v2"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
	"github.com/mcp-warden/mcp-warden/controllers"
	"github.com/mcp-warden/mcp-warden/internal/localcluster"
	"github.com/mcp-warden/mcp-warden/internal/testenv"
)

var k8s client.Client

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(run(m))
}

func run(m *testing.M) int {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	crd, err := testenv.CiliumPolicyCRD()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	env, err := testenv.Start(ctx, localcluster.Options{CRDs: []*apiextensionsv1.CustomResourceDefinition{crd}}, nil)
	defer env.Stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	k8s = env.Client
	return m.Run()
}

func TestFQDNEgressBecomesCiliumPolicy(t *testing.T) {
	ctx := context.Background()
	s := &mcpv1alpha1.MCPServer{
		ObjectMeta: metav1.ObjectMeta{Name: "gh", Namespace: "default"},
		Spec: mcpv1alpha1.MCPServerSpec{
			Image:   "ghcr.io/acme/gh@sha256:" + strings.Repeat("cd", 32),
			Gateway: mcpv1alpha1.GatewaySpec{Auth: mcpv1alpha1.GatewayAuth{Issuer: "https://auth.example.com"}, Scopes: []mcpv1alpha1.ScopeGrant{{Scope: "files:read", Tools: []string{"read_file"}}}},
			Egress: []mcpv1alpha1.EgressRule{
				{FQDN: ptr.To("api.github.com"), Ports: []mcpv1alpha1.EgressPort{{Port: 443}}},
				{CIDR: ptr.To("140.82.112.0/20"), Ports: []mcpv1alpha1.EgressPort{{Port: 443}}},
			},
		},
	}
	if err := k8s.Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	key := client.ObjectKeyFromObject(s)
	cnp := &ciliumv2.CiliumNetworkPolicy{}
	waitFor(t, func() error {
		if err := k8s.Get(ctx, key, s); err != nil {
			return err
		}
		c := meta.FindStatusCondition(s.Status.Conditions, mcpv1alpha1.ConditionEgressEnforced)
		if c == nil || c.Status != metav1.ConditionTrue || c.Reason != controllers.ReasonCilium {
			return fmt.Errorf("EgressEnforced = %+v", c)
		}
		return k8s.Get(ctx, key, cnp)
	})
	if !metav1.IsControlledBy(cnp, s) {
		t.Errorf("CiliumNetworkPolicy not controlled by the MCPServer: %+v", cnp.OwnerReferences)
	}
	body, _ := json.Marshal(cnp.Spec)
	for _, want := range []string{`"matchName":"api.github.com"`, `"dns":[{"matchPattern":"*"}]`, `"cidr":"169.254.0.0/16"`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("stored policy lacks %s: %s", want, body)
		}
	}

	// Dropping the name removes the Cilium policy; the NetworkPolicy keeps the CIDR entry.
	// The controller writes the server's status meanwhile: edit the latest version.
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(s), s); err != nil {
			return err
		}
		s.Spec.Egress = s.Spec.Egress[1:]
		return k8s.Update(ctx, s)
	}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() error {
		if err := k8s.Get(ctx, key, &ciliumv2.CiliumNetworkPolicy{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("CiliumNetworkPolicy still there (%v)", err) //nolint:errorlint // err is nil when the policy exists
		}
		return nil
	})
}

func waitFor(t *testing.T, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var err error
	for time.Now().Before(deadline) {
		if err = cond(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal(err)
}

// TestForeignCiliumPolicyIsReported: CiliumNetworkPolicies add up with the operator's policies, so one the
// operator did not write whose rules select the server's pods and allow traffic reopens the fence (the
// webhook refuses it; this suite runs without webhooks, as when one is created while the webhook is
// down). The server says EgressEnforced=False naming it; a pure deny policy is not named; rules another
// writer adds under the operator's own policy are reported too.
func TestForeignCiliumPolicyIsReported(t *testing.T) {
	ctx := context.Background()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "cnp-tenant"}}
	if err := k8s.Create(ctx, ns); err != nil {
		t.Fatal(err)
	}
	s := &mcpv1alpha1.MCPServer{
		ObjectMeta: metav1.ObjectMeta{Name: "gh", Namespace: ns.Name},
		Spec: mcpv1alpha1.MCPServerSpec{
			Image:   "ghcr.io/acme/gh@sha256:" + strings.Repeat("cd", 32),
			Gateway: mcpv1alpha1.GatewaySpec{Auth: mcpv1alpha1.GatewayAuth{Issuer: "https://auth.example.com"}, Scopes: []mcpv1alpha1.ScopeGrant{{Scope: "files:read", Tools: []string{"read_file"}}}},
			Egress:  []mcpv1alpha1.EgressRule{{FQDN: ptr.To("api.github.com"), Ports: []mcpv1alpha1.EgressPort{{Port: 443}}}},
		},
	}
	if err := k8s.Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	key := client.ObjectKeyFromObject(s)
	egress := func(want metav1.ConditionStatus, msg string) *metav1.Condition {
		t.Helper()
		var c *metav1.Condition
		waitFor(t, func() error {
			if err := k8s.Get(ctx, key, s); err != nil {
				return err
			}
			c = meta.FindStatusCondition(s.Status.Conditions, mcpv1alpha1.ConditionEgressEnforced)
			if c == nil || c.Status != want || !strings.Contains(c.Message, msg) {
				return fmt.Errorf("EgressEnforced = %+v, want %s with %q", c, want, msg)
			}
			return nil
		})
		return c
	}
	egress(metav1.ConditionTrue, "")
	world := []any{map[string]any{"toEntities": []any{"world"}}}
	open := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
		"metadata": map[string]any{"name": "tenant-open", "namespace": ns.Name},
		"spec":     map[string]any{"endpointSelector": map[string]any{}, "egress": world}}}
	deny := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
		"metadata": map[string]any{"name": "tenant-deny", "namespace": ns.Name},
		"spec":     map[string]any{"endpointSelector": map[string]any{"matchLabels": map[string]any{"k8s:mcp.warden.dev/server": "gh"}}, "egressDeny": world}}}
	for _, u := range []*unstructured.Unstructured{open, deny} {
		if err := k8s.Create(ctx, u); err != nil {
			t.Fatal(err)
		}
	}
	c := egress(metav1.ConditionFalse, "CiliumNetworkPolicy "+ns.Name+"/tenant-open was not written by the operator and has rules that select MCP server pods and allow traffic: spec (egress)")
	if c.Reason != controllers.ReasonFenceWidened || strings.Contains(c.Message, "tenant-deny") || strings.Contains(c.Message, ns.Name+"/gh ") {
		t.Errorf("EgressEnforced = %+v: want reason %s naming only tenant-open", c, controllers.ReasonFenceWidened)
	}
	if err := k8s.Delete(ctx, open); err != nil {
		t.Fatal(err)
	}
	egress(metav1.ConditionTrue, "")

	// Another writer adds an allow-everything rule to the operator's own policy.
	own := &unstructured.Unstructured{}
	own.SetAPIVersion("cilium.io/v2")
	own.SetKind("CiliumNetworkPolicy")
	if err := k8s.Get(ctx, key, own); err != nil {
		t.Fatal(err)
	}
	if err := unstructured.SetNestedSlice(own.Object, []any{map[string]any{"endpointSelector": map[string]any{}, "egress": world}}, "specs"); err != nil {
		t.Fatal(err)
	}
	if err := k8s.Update(ctx, own); err != nil {
		t.Fatal(err)
	}
	egress(metav1.ConditionFalse, "CiliumNetworkPolicy "+ns.Name+"/gh was not written by the operator and has rules that select MCP server pods and allow traffic: specs[0] (egress)")
}
