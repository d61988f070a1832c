package controllers_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
)

// createAndWaitReady creates n MCPServers in a fresh restricted namespace at once and returns how long
// it took until every one was Ready with its pod running.
func createAndWaitReady(tb testing.TB, n int, timeout time.Duration) time.Duration {
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
			return time.Since(start)
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
			for b.Loop() {
				total += createAndWaitReady(b, n, 10*time.Minute)
			}
			b.ReportMetric(total.Seconds()/float64(b.N), "s-to-all-ready")
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
