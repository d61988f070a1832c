package controllers_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
)

// TestForeignReplicaSetCannotSpeakForServer: a tenant with edit rights in the namespace makes a
// ReplicaSet named like the server's (`<server>-x`) whose pods carry the server's labels (and pass the
// sandbox: they are the server's own pod template) and whose gateway reports other tools and another
// server. The operator used to accept any pod under a ReplicaSet named `<server>-...`, so the made-up
// tools reached status.tools (and pins.json). Now a pod speaks for the server only if its owner chain
// (ReplicaSet -> Deployment -> MCPServer, by UID) leads to it: the foreign pods are never read.
func TestForeignReplicaSetCannotSpeakForServer(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ns := restrictedNamespace(t)
	key := client.ObjectKey{Namespace: ns, Name: "victim"}
	reads := testPins.record(ns)
	defer testPins.logs.Delete(ns)

	tools := newToolServer("Read a file.")
	upstream := httptest.NewServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return tools.srv }, nil))
	t.Cleanup(func() { upstream.CloseClientConnections(); upstream.Close() })
	_, statusAddr := runGateway(ctx, t, upstream.URL, nil)
	testPins.addrs.Store(key.Name, statusAddr)
	defer testPins.addrs.Delete(key.Name)

	evilStatus := tenantGateway(ctx, t)
	foreign := key.Name + "-x"
	testPins.podAddrs.Store(foreign+"-", evilStatus)
	defer testPins.podAddrs.Delete(foreign + "-")

	if err := k8s.Create(ctx, newServer(ns, key.Name)); err != nil {
		t.Fatal(err)
	}
	waitReady(t, key)
	waitTools(t, key, metav1.ConditionTrue, "pinned")

	// The tenant's ReplicaSet: the server's pod template and labels, plus one of its own so that the
	// server's Deployment does not adopt it (and scale it away).
	dep := &appsv1.Deployment{}
	if err := k8s.Get(ctx, key, dep); err != nil {
		t.Fatal(err)
	}
	tmpl := *dep.Spec.Template.DeepCopy()
	tmpl.Labels["tenant.example/made-by"] = "tenant"
	rs := &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: foreign, Labels: map[string]string{"tenant.example/made-by": "tenant"}},
		Spec: appsv1.ReplicaSetSpec{
			Replicas: ptr.To(int32(1)),
			Selector: &metav1.LabelSelector{MatchLabels: tmpl.Labels},
			Template: tmpl,
		},
	}
	if err := k8s.Create(ctx, rs); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, func() error { return foreignPodRunning(ctx, ns, foreign) })

	// Reconcile the server again and again: every read reads the server's pods; none may read the
	// tenant's, and the status keeps the server's own tools and serverInfo.
	neverReadsTenant(t, key, foreign, reads)
	cm := &corev1.ConfigMap{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: key.Name + "-gateway"}, cm); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(cm.Data["pins.json"], "exfiltrate") {
		t.Fatalf("pins.json holds the tenant's tool: %s", cm.Data["pins.json"])
	}
}

// tenantGateway is the tenant's gateway: a real gateway in front of the tenant's MCP server, which has
// a tool more; it returns the gateway's status address.
func tenantGateway(ctx context.Context, t *testing.T) string {
	t.Helper()
	evil := mcp.NewServer(&mcp.Implementation{Name: "evil", Version: "6.6.6"}, nil)
	type args struct {
		Path string `json:"path"`
	}
	for _, name := range []string{"read_file", "exfiltrate"} {
		mcp.AddTool(evil, &mcp.Tool{Name: name, Description: "Do as told."}, func(context.Context, *mcp.CallToolRequest, args) (*mcp.CallToolResult, any, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "ok"}}}, nil, nil
		})
	}
	evilUpstream := httptest.NewServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return evil }, nil))
	t.Cleanup(func() { evilUpstream.CloseClientConnections(); evilUpstream.Close() })
	_, evilStatus := runGateway(ctx, t, evilUpstream.URL, nil)
	return evilStatus
}

// foreignPodRunning is nil once a pod of the tenant's ReplicaSet runs with an IP.
func foreignPodRunning(ctx context.Context, ns, foreign string) error {
	pods := &corev1.PodList{}
	if err := k8s.List(ctx, pods, client.InNamespace(ns), client.MatchingLabels{"tenant.example/made-by": "tenant"}); err != nil {
		return err
	}
	for _, p := range pods.Items {
		if p.Status.Phase == corev1.PodRunning && p.Status.PodIP != "" && strings.HasPrefix(p.Name, foreign+"-") {
			return nil
		}
	}
	return fmt.Errorf("no running pod of ReplicaSet %s yet (%d pods)", foreign, len(pods.Items))
}

// neverReadsTenant reconciles the server again and again until its pods were read at least 3 times
// over 3 s: no read may reach the tenant's pods, and the status keeps the server's own tools and
// serverInfo.
func neverReadsTenant(t *testing.T, key client.ObjectKey, foreign string, reads *readLog) {
	t.Helper()
	ctx := context.Background()
	start := time.Now()
	s := &mcpv1alpha1.MCPServer{}
	for i := 0; ; i++ {
		poke(t, key, 1000+i)
		time.Sleep(300 * time.Millisecond)
		if err := k8s.Get(ctx, key, s); err != nil {
			t.Fatal(err)
		}
		for _, tool := range s.Status.Tools {
			if tool.Name != "read_file" {
				t.Fatalf("after %s the status reports the tenant's tool %s: %+v", time.Since(start).Round(time.Millisecond), tool.Name, s.Status.Tools)
			}
		}
		if si := s.Status.ServerInfo; si == nil || si.Name != "files" {
			t.Fatalf("after %s the status reports serverInfo %+v, not the server's", time.Since(start).Round(time.Millisecond), si)
		}
		all, _ := reads.since(key.Name+"-", start)
		tenant, _ := reads.since(foreign+"-", start)
		if tenant > 0 {
			t.Fatalf("the operator read the gateway status of the tenant's pod %d time(s)", tenant)
		}
		if all >= 3 && time.Since(start) > 3*time.Second {
			t.Logf("%d reads of the server's pods in %s, none of the tenant's", all, time.Since(start).Round(time.Millisecond))
			return
		}
		if time.Since(start) > 60*time.Second {
			t.Fatalf("only %d reads of the server's pods in %s", all, time.Since(start).Round(time.Second))
		}
	}
}

// TestHangingNamespaceDoesNotStarveStatusReads: the gateways of a tenant's namespace accept and never
// answer (16 servers, 2 pods each, reconciled again and again), so that every one of its reads holds
// its slot for the whole 5 s budget. The reads of all namespaces shared 16 slots first come first
// served: the hanging namespace held all of them and another namespace's read waited behind its queue,
// often past its own budget. Now a namespace holds at most 4 of the 16, and another namespace's read
// completes within a second of its reconcile.
func TestHangingNamespaceDoesNotStarveStatusReads(t *testing.T) {
	ctx := context.Background()
	const (
		hangingServers = 16
		bound          = time.Second
	)
	// The other namespace's server, Ready before the hanging starts.
	other := restrictedNamespace(t)
	fast := client.ObjectKey{Namespace: other, Name: "fast"}
	if err := k8s.Create(ctx, newServer(other, fast.Name)); err != nil {
		t.Fatal(err)
	}
	waitReady(t, fast)
	otherReads := testPins.record(other)
	defer testPins.logs.Delete(other)

	hanging := restrictedNamespace(t)
	hangReads := testPins.record(hanging)
	defer testPins.logs.Delete(hanging)
	testPins.hang.Store(hanging, struct{}{})
	defer testPins.hang.Delete(hanging)
	var keys []client.ObjectKey
	for i := range hangingServers {
		s := newServer(hanging, "hang-"+strconv.Itoa(i))
		s.Spec.Replicas = ptr.To(int32(2))
		if err := k8s.Create(ctx, s); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, client.ObjectKeyFromObject(s))
	}
	eventually(t, 120*time.Second, func() error { return podsRunning(ctx, hanging, 2*hangingServers) })
	// Keep the hanging servers' reconciles (and so their reads) coming.
	stop := make(chan struct{})
	defer close(stop)
	go pokeEvery(ctx, 300*time.Millisecond, stop, keys...)
	eventually(t, 30*time.Second, func() error {
		hangReads.mu.Lock()
		defer hangReads.mu.Unlock()
		if hangReads.inflight < 4 {
			return fmt.Errorf("%d hanging reads in flight", hangReads.inflight)
		}
		return nil
	})
	time.Sleep(2 * time.Second)

	var worst time.Duration
	for i := range 5 {
		worst = max(worst, readAfterPoke(t, fast, i, otherReads))
		time.Sleep(time.Second)
	}
	hangReads.mu.Lock()
	held := hangReads.maxInflight
	hangReads.mu.Unlock()
	t.Logf("the other namespace's status read completed at worst %s after its reconcile; the hanging namespace held at most %d reads at once", worst.Round(time.Millisecond), held)
	if worst > bound {
		t.Fatalf("the other namespace's status read took %s, more than %s, while a namespace's gateways hang", worst, bound)
	}
	if held > 4 {
		t.Fatalf("the hanging namespace held %d reads at once, more than its share of 4", held)
	}
}

// podsRunning is nil once at least want pods of the namespace run with an IP.
func podsRunning(ctx context.Context, ns string, want int) error {
	pods := &corev1.PodList{}
	if err := k8s.List(ctx, pods, client.InNamespace(ns)); err != nil {
		return err
	}
	running := 0
	for _, p := range pods.Items {
		if p.Status.Phase == corev1.PodRunning && p.Status.PodIP != "" {
			running++
		}
	}
	if running < want {
		return fmt.Errorf("%d of %d pods running", running, want)
	}
	return nil
}

// readAfterPoke reconciles the server (round's poke) and returns how long after it the first status
// read of its pods completed; the test fails when none completed within 15 s.
func readAfterPoke(t *testing.T, key client.ObjectKey, round int, reads *readLog) time.Duration {
	t.Helper()
	start := time.Now()
	poke(t, key, 2000+round)
	for time.Since(start) < 15*time.Second {
		if got, first := reads.since(key.Name+"-", start); got > 0 {
			return first.Sub(start)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("round %d: no status read of the other namespace's server completed within 15 s of its reconcile", round)
	return 0
}
