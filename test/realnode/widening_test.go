package realnode

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
	"github.com/mcp-warden/mcp-warden/controllers"
	"github.com/mcp-warden/mcp-warden/internal/localcluster"
)

// TestForeignNetworkPolicyWideningObserved shows, with kube-router enforcing, why a NetworkPolicy the
// operator did not write must never select a server pod: NetworkPolicies add up, so one that allows
// all egress really opens cloud metadata to the server. The admission webhook refuses such a policy from
// a tenant (webhooks' TestTenantCannotWidenTheFence); one created anyway (here by an administrator, with
// no webhook in the way) is reported within seconds as EgressEnforced=False, naming it, and the fence
// closes again, observed by the kernel, once it is deleted.
func TestForeignNetworkPolicyWideningObserved(t *testing.T) {
	f := server(t)
	ctx := context.Background()
	metadata := localcluster.MetadataIP + ":80"
	if got := dialFrom(t, f.ns, f.pod.Name, "server", metadata); !blocked(got[metadata]) {
		t.Fatalf("before: the server reaches the metadata host: %s", got[metadata])
	}
	np := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "tenant-open", Namespace: f.ns},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{controllers.LabelServer: "probe"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress},
			Ingress:     []networkingv1.NetworkPolicyIngressRule{{}},
			Egress:      []networkingv1.NetworkPolicyEgressRule{{}},
		},
	}
	if err := k8s.Create(ctx, np); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), np) })
	egress := func(want metav1.ConditionStatus, reason string) (time.Duration, error) {
		start := time.Now()
		s := &mcpv1alpha1.MCPServer{}
		err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
			if err := k8s.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: "probe"}, s); err != nil {
				return false, nil
			}
			c := meta.FindStatusCondition(s.Status.Conditions, mcpv1alpha1.ConditionEgressEnforced)
			return c != nil && c.Status == want && c.Reason == reason && (reason != controllers.ReasonFenceWidened || strings.Contains(c.Message, "tenant-open")), nil
		})
		if err != nil {
			return 0, fmt.Errorf("EgressEnforced=%s (%s) not reported within 30s: %+v", want, reason, s.Status.Conditions)
		}
		return time.Since(start), nil
	}
	reported, err := egress(metav1.ConditionFalse, controllers.ReasonFenceWidened)
	if err != nil {
		t.Fatal(err)
	}
	var opened string
	_ = wait.PollUntilContextTimeout(ctx, 300*time.Millisecond, 15*time.Second, true, func(context.Context) (bool, error) {
		opened = dialFrom(t, f.ns, f.pod.Name, "server", metadata)[metadata]
		return opened == "connected", nil
	})
	if opened != "connected" {
		t.Fatalf("with the widening policy in place the enforcer should open the metadata host (that is the attack); it did not: %s", opened)
	}
	if err := k8s.Delete(ctx, np); err != nil {
		t.Fatal(err)
	}
	if _, err := egress(metav1.ConditionTrue, controllers.ReasonEnforced); err != nil {
		t.Fatal(err)
	}
	var closed string
	_ = wait.PollUntilContextTimeout(ctx, 300*time.Millisecond, 15*time.Second, true, func(context.Context) (bool, error) {
		closed = dialFrom(t, f.ns, f.pod.Name, "server", metadata)[metadata]
		return blocked(closed), nil
	})
	if !blocked(closed) {
		t.Fatalf("after deleting the widening policy the server still reaches the metadata host: %s", closed)
	}
	fmt.Printf("real node: a foreign NetworkPolicy opening all egress really opened the metadata host; reported as FenceWidened after %s; closed again after its deletion\n", reported.Round(10*time.Millisecond))
}
