// Package clusterfence_test runs the operator on control planes with and without the network-policy-api's
// ClusterNetworkPolicy CRD (installed from the sigs.k8s.io/network-policy-api Go module at the version
// go.mod pins). Where the kind is served, the operator keeps one Admin-tier policy denying every MCP
// server pod egress to every protected range; where it is not, it applies nothing and does not retry.
package clusterfence_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	policyv1beta1 "sigs.k8s.io/network-policy-api/apis/v1beta1"
	"sigs.k8s.io/yaml"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
	"github.com/mcp-warden/mcp-warden/controllers"
	"github.com/mcp-warden/mcp-warden/internal/localcluster"
	"github.com/mcp-warden/mcp-warden/internal/testenv"
	"github.com/mcp-warden/mcp-warden/operator"
	"github.com/mcp-warden/mcp-warden/policy/netpol"
)

// clusterNetworkPolicyCRD reads the standard-channel ClusterNetworkPolicy CRD the network-policy-api
// publishes in its Go module.
func clusterNetworkPolicyCRD(t *testing.T) *apiextensionsv1.CustomResourceDefinition {
	t.Helper()
	crd, err := testenv.ModuleCRD("sigs.k8s.io/network-policy-api", "config/crd/standard/policy.networking.k8s.io_clusternetworkpolicies.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return crd
}

func start(t *testing.T, o localcluster.Options) *testenv.Env {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	env, err := testenv.Start(ctx, o, func(*localcluster.Cluster) operator.Options { return operator.Options{SeveralInProcess: true} })
	t.Cleanup(func() { cancel(); env.Stop() })
	if err != nil {
		t.Fatal(err)
	}
	return env
}

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

// expectedSpec is the policy the test expects, written out from the protected-range list: Admin tier,
// priority 0, every pod with the server label, DNS passed on, then each class not opened denied.
func expectedSpec(opened ...netpol.Class) policyv1beta1.ClusterNetworkPolicySpec {
	dns := &policyv1beta1.Port{Number: 53}
	spec := policyv1beta1.ClusterNetworkPolicySpec{
		Tier: policyv1beta1.AdminTier, Priority: 0,
		Subject: policyv1beta1.ClusterNetworkPolicySubject{Pods: &policyv1beta1.NamespacedPod{
			PodSelector: metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "mcp.warden.dev/server", Operator: metav1.LabelSelectorOpExists}}},
		}},
		Egress: []policyv1beta1.ClusterNetworkPolicyEgressRule{{
			Name: "dns-to-namespace-policies", Action: policyv1beta1.ClusterNetworkPolicyRuleActionPass,
			To: []policyv1beta1.ClusterNetworkPolicyEgressPeer{{Pods: &policyv1beta1.NamespacedPod{
				NamespaceSelector: metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": "kube-system"}},
				PodSelector:       metav1.LabelSelector{MatchLabels: map[string]string{"k8s-app": "kube-dns"}},
			}}},
			Protocols: []policyv1beta1.ClusterNetworkPolicyProtocol{
				{UDP: &policyv1beta1.ClusterNetworkPolicyProtocolUDP{DestinationPort: dns}},
				{TCP: &policyv1beta1.ClusterNetworkPolicyProtocolTCP{DestinationPort: dns}},
			},
		}},
	}
	for _, class := range []netpol.Class{"private", "loopback", "link-local", "unspecified", "reserved"} {
		if slices.Contains(opened, class) {
			continue
		}
		var networks []policyv1beta1.CIDR
		for _, r := range netpol.Protected {
			if r.Class == class {
				networks = append(networks, policyv1beta1.CIDR(netpol.ExceptString(r.Prefix)))
			}
		}
		spec.Egress = append(spec.Egress, policyv1beta1.ClusterNetworkPolicyEgressRule{
			Name: "deny-" + string(class), Action: policyv1beta1.ClusterNetworkPolicyRuleActionDeny,
			To: []policyv1beta1.ClusterNetworkPolicyEgressPeer{{Networks: networks}},
		})
	}
	return spec
}

func networksOf(p *policyv1beta1.ClusterNetworkPolicy, rule string) []string {
	var out []string
	for _, r := range p.Spec.Egress {
		if r.Name == rule {
			for _, peer := range r.To {
				for _, n := range peer.Networks {
					out = append(out, string(n))
				}
			}
		}
	}
	return out
}

func waitForSpec(t *testing.T, k8s client.Client, want policyv1beta1.ClusterNetworkPolicySpec) *policyv1beta1.ClusterNetworkPolicy {
	t.Helper()
	got := &policyv1beta1.ClusterNetworkPolicy{}
	eventually(t, 30*time.Second, func() error {
		if err := k8s.Get(context.Background(), client.ObjectKey{Name: controllers.ClusterFenceName}, got); err != nil {
			return err
		}
		if d := cmp.Diff(want, got.Spec); d != "" {
			return fmt.Errorf("ClusterNetworkPolicy spec (-want +got):\n%s", d)
		}
		return nil
	})
	return got
}

// TestProtectedRangesDeniedClusterWide: the operator applies the Admin-tier policy, with the embedded
// IPv4 spellings of every range; a class a policy opens is left to the namespace policies; an edit by
// someone else is reverted.
func TestProtectedRangesDeniedClusterWide(t *testing.T) {
	ctx := context.Background()
	env := start(t, localcluster.Options{CRDs: []*apiextensionsv1.CustomResourceDefinition{clusterNetworkPolicyCRD(t)}})
	k8s := env.Client
	got := waitForSpec(t, k8s, expectedSpec())
	if got.Labels["app.kubernetes.io/managed-by"] != "mcp-warden" {
		t.Errorf("labels = %v, want app.kubernetes.io/managed-by=mcp-warden", got.Labels)
	}
	// The addresses the tenant fence is about, in the spellings that reach them.
	for rule, want := range map[string][]string{
		"deny-link-local":  {"169.254.0.0/16", "168.63.129.16/32", "64:ff9b::a9fe:0/112", "2002:a9fe::/32", "::a9fe:0/112", "fe80::/10"},
		"deny-private":     {"10.0.0.0/8", "64:ff9b::a00:0/104", "2002:a00::/24", "fc00::/7", "64:ff9b:1::/48"},
		"deny-loopback":    {"127.0.0.0/8", "::1/128", "64:ff9b::7f00:0/104"},
		"deny-unspecified": {"0.0.0.0/8", "::fffe:0:0/95"},
		"deny-reserved":    {"224.0.0.0/4", "240.0.0.0/4", "192.0.0.0/24", "198.18.0.0/15", "ff00::/8"},
	} {
		have := networksOf(got, rule)
		for _, n := range want {
			if !slices.Contains(have, n) {
				t.Errorf("%s lacks %s: %v", rule, n, have)
			}
		}
	}

	// A policy that lets allow-lists open private ranges leaves them to the namespace policies.
	p := &mcpv1alpha1.MCPServerPolicy{ObjectMeta: metav1.ObjectMeta{Name: "db-team"}, Spec: mcpv1alpha1.MCPServerPolicySpec{
		NamespaceSelector: metav1.LabelSelector{MatchLabels: map[string]string{"team": "db"}},
		Egress:            mcpv1alpha1.EgressCeiling{AllowedAddressClasses: []mcpv1alpha1.AddressClass{"private"}},
	}}
	if err := k8s.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	waitForSpec(t, k8s, expectedSpec("private"))
	if err := k8s.Delete(ctx, p); err != nil {
		t.Fatal(err)
	}
	got = waitForSpec(t, k8s, expectedSpec())

	// Someone with cluster rights weakens it: reverted.
	patch := client.MergeFrom(got.DeepCopy())
	got.Spec.Priority = 900
	got.Spec.Egress = got.Spec.Egress[:1]
	if err := k8s.Patch(ctx, got, patch); err != nil {
		t.Fatal(err)
	}
	waitForSpec(t, k8s, expectedSpec())
	// Deleted: recreated.
	if err := k8s.Delete(ctx, got); err != nil {
		t.Fatal(err)
	}
	waitForSpec(t, k8s, expectedSpec())
}

// reconcileErrors sums controller_runtime_reconcile_errors_total over every controller in the process.
func reconcileErrors(t *testing.T) float64 {
	t.Helper()
	families, err := ctrlmetrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, f := range families {
		if f.GetName() == "controller_runtime_reconcile_errors_total" {
			for _, m := range f.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

// TestWithoutClusterNetworkPolicies: on a cluster that does not serve the kind the operator starts, applies
// nothing (even once the CRD is installed later: it reads discovery at start) and records no reconcile
// errors. The manager's RBAC for the kind, installed as controller-gen renders it, lets the manager
// create and change its own policy by server-side apply and nothing else.
func TestWithoutClusterNetworkPolicies(t *testing.T) {
	ctx := context.Background()
	env := start(t, localcluster.Options{})
	k8s := env.Client
	// The operator is up: the policy controller reports on a policy.
	p := &mcpv1alpha1.MCPServerPolicy{ObjectMeta: metav1.ObjectMeta{Name: "any"}, Spec: mcpv1alpha1.MCPServerPolicySpec{NamespaceSelector: metav1.LabelSelector{}}}
	if err := k8s.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, func() error {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(p), p); err != nil {
			return err
		}
		if meta.FindStatusCondition(p.Status.Conditions, mcpv1alpha1.ConditionReady) == nil {
			return fmt.Errorf("policy not reported yet")
		}
		return nil
	})
	before := reconcileErrors(t)
	if _, err := envtest.InstallCRDs(env.Cluster.Config, envtest.CRDInstallOptions{CRDs: []*apiextensionsv1.CustomResourceDefinition{clusterNetworkPolicyCRD(t)}}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	list := &policyv1beta1.ClusterNetworkPolicyList{}
	if err := k8s.List(ctx, list); err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 0 {
		t.Fatalf("the operator applied %d ClusterNetworkPolicies on a cluster that did not serve the kind at its start", len(list.Items))
	}
	if after := reconcileErrors(t); after != before {
		t.Fatalf("reconcile errors went from %v to %v", before, after)
	}

	// The manager's rules for the kind, as generated, bound to a test identity.
	role := managerRules(t, env.Root, "clusternetworkpolicies")
	role.Name = "clusterfence-test"
	if err := k8s.Create(ctx, role); err != nil {
		t.Fatal(err)
	}
	if err := k8s.Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "clusterfence-test"},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: "fence-manager"}},
	}); err != nil {
		t.Fatal(err)
	}
	cfg := rest.CopyConfig(env.Cluster.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: "fence-manager"}
	as, err := client.New(cfg, client.Options{Scheme: operator.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	apply := func(name string) error {
		d := controllers.DesiredClusterFence(controllers.DefaultDNSPeer, nil)
		d.Name = name
		u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(d)
		if err != nil {
			t.Fatal(err)
		}
		delete(u, "status")
		return as.Apply(ctx, client.ApplyConfigurationFromUnstructured(&unstructured.Unstructured{Object: u}), client.FieldOwner(controllers.FieldOwner), client.ForceOwnership)
	}
	eventually(t, 10*time.Second, func() error { return apply(controllers.ClusterFenceName) })
	// Another policy's name: apply (a patch) is refused. (A plain create is not: RBAC cannot narrow
	// create by name; see the README's manager privileges.)
	if err := apply("someone-elses"); !apierrors.IsForbidden(err) {
		t.Fatalf("apply of another ClusterNetworkPolicy as the manager: %v, want Forbidden", err)
	}
	if err := as.Delete(ctx, &policyv1beta1.ClusterNetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: controllers.ClusterFenceName}}); !apierrors.IsForbidden(err) {
		t.Fatalf("delete as the manager: %v, want Forbidden", err)
	}
	// The cache's list and watch, narrowed to the one name, are allowed.
	if err := as.List(ctx, &policyv1beta1.ClusterNetworkPolicyList{}, client.MatchingFields{"metadata.name": controllers.ClusterFenceName}); err != nil {
		t.Fatalf("list by name as the manager: %v", err)
	}
}

// managerRules returns a ClusterRole with the manager's generated rules (config/rbac/role.yaml) for one
// resource.
func managerRules(t *testing.T, root, resource string) *rbacv1.ClusterRole {
	t.Helper()
	body, err := os.ReadFile(filepath.Join(root, "config", "rbac", "role.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	first, _, _ := strings.Cut(strings.TrimPrefix(string(body), "---\n"), "\n---")
	cr := &rbacv1.ClusterRole{}
	if err := yaml.Unmarshal([]byte(first), cr); err != nil {
		t.Fatal(err)
	}
	out := &rbacv1.ClusterRole{}
	for _, r := range cr.Rules {
		if slices.Contains(r.Resources, resource) {
			out.Rules = append(out.Rules, r)
		}
	}
	if len(out.Rules) == 0 {
		t.Fatalf("config/rbac/role.yaml has no rule for %s", resource)
	}
	return out
}
