package webhooks_test

import (
	"context"
	"strings"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
	"github.com/mcp-warden/mcp-warden/operator"
)

// tenant returns a client acting as a namespace user with what the admin ClusterRole grants a team in
// its namespace that matters here (NetworkPolicies; the aggregated admin role is filled in by a
// controller this suite does not run), and the right to create MCPServers.
func tenant(t *testing.T, ns string) client.Client {
	t.Helper()
	ctx := context.Background()
	user := "tenant-" + ns
	role := "mcp-tenant-" + ns
	cr := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: role}, Rules: []rbacv1.PolicyRule{
		{APIGroups: []string{mcpv1alpha1.GroupVersion.Group}, Resources: []string{"mcpservers"}, Verbs: []string{"*"}},
		{APIGroups: []string{"networking.k8s.io"}, Resources: []string{"networkpolicies"}, Verbs: []string{"*"}},
		{APIGroups: []string{"cilium.io"}, Resources: []string{"ciliumnetworkpolicies"}, Verbs: []string{"*"}},
	}}
	if err := k8s.Create(ctx, cr); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), cr) })
	rb := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: role, Namespace: ns},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}},
	}
	if err := k8s.Create(ctx, rb); err != nil {
		t.Fatal(err)
	}
	cfg := rest.CopyConfig(adminConfig)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: []string{"system:authenticated"}}
	c, err := client.New(cfg, client.Options{Scheme: operator.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func policy(name string, sel metav1.LabelSelector, ingress []networkingv1.NetworkPolicyIngressRule, egress []networkingv1.NetworkPolicyEgressRule) *networkingv1.NetworkPolicy {
	return &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: sel,
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress},
			Ingress:     ingress, Egress: egress,
		},
	}
}

// TestTenantCannotWidenTheFence: a namespace admin's own NetworkPolicy that selects MCP server pods and
// allows anything is refused; pure deny policies, and policies that keep server pods out, are admitted.
func TestTenantCannotWidenTheFence(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t, nil, mcpv1alpha1.MCPServerPolicySpec{})
	c := tenant(t, ns)
	openAll := []networkingv1.NetworkPolicyIngressRule{{}}
	egressAll := []networkingv1.NetworkPolicyEgressRule{{}}
	byServer := metav1.LabelSelector{MatchLabels: map[string]string{"mcp.warden.dev/server": "files"}}
	create := func(np *networkingv1.NetworkPolicy, wantErr string) {
		t.Helper()
		np = np.DeepCopy()
		np.Namespace = ns
		var err error
		// The webhook's cache may not have seen a just-created MCPServer yet.
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
			err = c.Create(ctx, np.DeepCopy())
			if (wantErr == "") == (err == nil) && (err == nil || strings.Contains(err.Error(), wantErr)) {
				return
			}
		}
		t.Fatalf("create NetworkPolicy %s: error = %v, want %q", np.Name, err, wantErr)
	}

	// Naming the servers' label is refused even before the namespace has a server.
	create(policy("by-label", byServer, openAll, egressAll), "selects MCP server pods (spec.podSelector) and allows ingress and egress")
	// A broad policy is admitted while there is no server (the controller reports it if one comes).
	create(policy("broad-before", metav1.LabelSelector{}, nil, egressAll), "")

	s := server(ns, goodImage)
	if err := c.Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	create(policy("broad", metav1.LabelSelector{}, openAll, nil), "NetworkPolicies add up")
	create(policy("exists", metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "pod-template-hash", Operator: metav1.LabelSelectorOpExists}}}, nil, egressAll), "allows egress")
	create(policy("deny-servers", byServer, nil, nil), "")
	create(policy("others", metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "mcp.warden.dev/server", Operator: metav1.LabelSelectorOpDoesNotExist}}}, openAll, egressAll), "")
	create(policy("web", metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}, openAll, egressAll), "")

	// Updating an admitted policy into a widening one is refused too.
	web := &networkingv1.NetworkPolicy{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "deny-servers"}, web); err != nil {
		t.Fatal(err)
	}
	web.Spec.Egress = egressAll
	if err := c.Update(ctx, web); err == nil || !strings.Contains(err.Error(), "NetworkPolicies add up") {
		t.Fatalf("update into a widening policy: error = %v", err)
	}

	// The platform (system:masters here) is exempt.
	admin := policy("platform", metav1.LabelSelector{}, openAll, nil)
	admin.Namespace = ns
	if err := k8s.Create(ctx, admin); err != nil {
		t.Fatalf("platform policy: %v", err)
	}
}

func ciliumPolicy(name string, spec map[string]any, specs ...map[string]any) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy", "metadata": map[string]any{"name": name}}}
	if spec != nil {
		u.Object["spec"] = spec
	}
	if len(specs) > 0 {
		l := make([]any, len(specs))
		for i, s := range specs {
			l[i] = s
		}
		u.Object["specs"] = l
	}
	return u
}

// TestTenantCannotWidenTheFenceWithCilium: the same rule for CiliumNetworkPolicies, which add up with the
// operator's policies as NetworkPolicies do: a tenant's policy whose endpointSelector can select MCP
// server pods (empty, by the server label with Cilium's k8s: source, by the service account Cilium
// derives) and that has ingress or egress allow rules is refused; egressDeny/ingressDeny only, or a
// selector that keeps server pods out, is admitted.
func TestTenantCannotWidenTheFenceWithCilium(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t, nil, mcpv1alpha1.MCPServerPolicySpec{})
	c := tenant(t, ns)
	sel := func(labels map[string]any) map[string]any { return map[string]any{"matchLabels": labels} }
	world := []any{map[string]any{"toEntities": []any{"world"}}}
	metadata := []any{map[string]any{"toCIDR": []any{"169.254.169.254/32"}}}
	fromAll := []any{map[string]any{"fromEntities": []any{"all"}}}
	create := func(u *unstructured.Unstructured, wantErr string) {
		t.Helper()
		u = u.DeepCopy()
		u.SetNamespace(ns)
		var err error
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
			err = c.Create(ctx, u.DeepCopy())
			if (wantErr == "") == (err == nil) && (err == nil || strings.Contains(err.Error(), wantErr)) {
				return
			}
		}
		t.Fatalf("create CiliumNetworkPolicy %s: error = %v, want %q", u.GetName(), err, wantErr)
	}

	// Naming the servers' label (with Cilium's source prefix) is refused before the namespace has a server.
	create(ciliumPolicy("by-label", map[string]any{"endpointSelector": sel(map[string]any{"k8s:mcp.warden.dev/server": "files"}), "egress": world}), "spec (egress)")

	if err := c.Create(ctx, server(ns, goodImage)); err != nil {
		t.Fatal(err)
	}
	create(ciliumPolicy("everything", map[string]any{"endpointSelector": map[string]any{}, "egress": metadata}), "Cilium policies add up")
	create(ciliumPolicy("by-account", map[string]any{"endpointSelector": sel(map[string]any{"k8s:io.cilium.k8s.policy.serviceaccount": "files"}), "ingress": fromAll}), "spec (ingress)")
	create(ciliumPolicy("second-rule", nil,
		map[string]any{"endpointSelector": sel(map[string]any{"app": "web"}), "egress": world},
		map[string]any{"endpointSelector": map[string]any{}, "egress": world}), "specs[1] (egress)")
	create(ciliumPolicy("deny-only", map[string]any{"endpointSelector": map[string]any{}, "egressDeny": metadata, "ingressDeny": fromAll}), "")
	create(ciliumPolicy("web", map[string]any{"endpointSelector": sel(map[string]any{"app": "web"}), "egress": world, "ingress": fromAll}), "")
	create(ciliumPolicy("others", map[string]any{"endpointSelector": map[string]any{"matchExpressions": []any{map[string]any{"key": "k8s:mcp.warden.dev/server", "operator": "DoesNotExist"}}}, "egress": world}), "")

	// Updating an admitted policy into a widening one is refused too.
	u := &unstructured.Unstructured{}
	u.SetAPIVersion("cilium.io/v2")
	u.SetKind("CiliumNetworkPolicy")
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "deny-only"}, u); err != nil {
		t.Fatal(err)
	}
	if err := unstructured.SetNestedSlice(u.Object, world, "spec", "egress"); err != nil {
		t.Fatal(err)
	}
	if err := c.Update(ctx, u); err == nil || !strings.Contains(err.Error(), "Cilium policies add up") {
		t.Fatalf("update into a widening policy: error = %v", err)
	}
}
