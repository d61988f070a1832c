package webhooks_test

import (
	"context"
	"strings"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
