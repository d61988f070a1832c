package controllers_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
	"github.com/mcp-warden/mcp-warden/controllers"
)

// createAndWaitReady creates n MCPServers in a fresh restricted namespace at once and returns how long
// it took until every one was Ready with its pod running.
func createAndWaitReady(tb testing.TB, n int, timeout time.Duration) time.Duration {
	took, _ := createFleet(tb, n, timeout)
	return took
}

// createFleet is createAndWaitReady that also returns the namespace.
func createFleet(tb testing.TB, n int, timeout time.Duration) (time.Duration, string) {
	ctx := context.Background()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "burst-", Labels: map[string]string{"pod-security.kubernetes.io/enforce": "restricted"}}}
	if err := k8s.Create(ctx, ns); err != nil {
		tb.Fatal(err)
	}
	start := time.Now()
	for i := range n {
		if err := k8s.Create(ctx, newServer(ns.Name, fmt.Sprintf("s%04d", i))); err != nil {
			tb.Fatal(err)
		}
	}
	deadline := time.Now().Add(timeout)
	for {
		list := &mcpv1alpha1.MCPServerList{}
		if err := k8s.List(ctx, list, client.InNamespace(ns.Name)); err != nil {
			tb.Fatal(err)
		}
		ready := 0
		for i := range list.Items {
			if c := condition(&list.Items[i], mcpv1alpha1.ConditionReady); c != nil && c.Status == metav1.ConditionTrue {
				ready++
			}
		}
		if ready == n {
			return time.Since(start), ns.Name
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%d of %d MCPServers Ready after %s", ready, n, timeout)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// TestBurstOfCreates: 200 MCPServers created at once are all reconciled to Ready; nothing is lost.
func TestBurstOfCreates(t *testing.T) {
	took := createAndWaitReady(t, 200, 4*time.Minute)
	t.Logf("200 MCPServers Ready in %s", took.Round(100*time.Millisecond))
}

// BenchmarkReconcileToReady measures the time for N MCPServers created at once to become Ready (pods
// scheduled and running on the simulated node) on the local control plane.
func BenchmarkReconcileToReady(b *testing.B) {
	for _, n := range benchSizes() {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			var total time.Duration
			var writes float64
			for b.Loop() {
				took, ns := createFleet(b, n, 10*time.Minute)
				total += took
				writes += steadyStateWrites(b, ns, n)
			}
			b.ReportMetric(total.Seconds()/float64(b.N), "s-to-all-ready")
			b.ReportMetric(writes/float64(b.N), "writes/reconcile")
		})
	}
}

// benchSizes are the fleet sizes BenchmarkReconcileToReady measures (MCP_WARDEN_BENCH_SIZES, e.g.
// "100,500,1000"; default 100 and 500).
func benchSizes() []int {
	v := os.Getenv("MCP_WARDEN_BENCH_SIZES")
	if v == "" {
		return []int{100, 500}
	}
	var out []int
	for _, f := range strings.Split(v, ",") {
		if n, err := strconv.Atoi(strings.TrimSpace(f)); err == nil && n > 0 {
			out = append(out, n)
		}
	}
	return out
}

// steadyStateWrites makes the operator reconcile every server of a Ready fleet once more (a label change,
// which does not change the spec) and returns the API writes it made per reconcile: changed
// resourceVersions of the children and changed MCPServer statuses. The target is zero.
func steadyStateWrites(tb testing.TB, ns string, n int) float64 {
	ctx := context.Background()
	snapshot := func() (map[string]string, map[string]string) {
		rvs, statuses := map[string]string{}, map[string]string{}
		for kind, list := range map[string]client.ObjectList{"Deployment": &appsv1.DeploymentList{}, "Service": &corev1.ServiceList{}, "ServiceAccount": &corev1.ServiceAccountList{},
			"NetworkPolicy": &networkingv1.NetworkPolicyList{}, "ConfigMap": &corev1.ConfigMapList{}} {
			if err := k8s.List(ctx, list, client.InNamespace(ns), client.MatchingLabels{controllers.LabelManagedBy: "mcp-warden"}); err != nil {
				tb.Fatal(err)
			}
			_ = meta.EachListItem(list, func(o runtime.Object) error {
				m := o.(client.Object)
				rvs[kind+"/"+m.GetName()] = m.GetResourceVersion()
				return nil
			})
		}
		servers := &mcpv1alpha1.MCPServerList{}
		if err := k8s.List(ctx, servers, client.InNamespace(ns)); err != nil {
			tb.Fatal(err)
		}
		for _, s := range servers.Items {
			b, _ := json.Marshal(s.Status)
			statuses[s.Name] = string(b)
		}
		return rvs, statuses
	}
	rvs, statuses := snapshot()
	servers := &mcpv1alpha1.MCPServerList{}
	if err := k8s.List(ctx, servers, client.InNamespace(ns)); err != nil {
		tb.Fatal(err)
	}
	for i := range servers.Items {
		s := &servers.Items[i]
		patch := client.MergeFrom(s.DeepCopy())
		s.Labels = map[string]string{"bench.mcp.warden.dev/resync": "1"}
		if err := k8s.Patch(ctx, s, patch); err != nil {
			tb.Fatal(err)
		}
	}
	// Give the operator time to reconcile each one (its queue drains at well over 10 per second).
	time.Sleep(5*time.Second + time.Duration(n)*10*time.Millisecond)
	rvs2, statuses2 := snapshot()
	writes := 0
	for k, v := range rvs {
		if rvs2[k] != v {
			writes++
		}
	}
	for k, v := range statuses {
		if statuses2[k] != v {
			writes++
		}
	}
	return float64(writes) / float64(n)
}
