package realnode

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
	"github.com/mcp-warden/mcp-warden/controllers"
	"github.com/mcp-warden/mcp-warden/internal/localcluster"
)

// sessionReport mirrors the probe's SessionReport.
type sessionReport struct {
	Warmups     int
	WarmupError string
	Sessions    []sessionRun
	Gone        string
	GoneAfterMs int64
	Error       string
}

// sessionRun mirrors the probe's SessionRun.
type sessionRun struct {
	Owner, IssuedAt    string
	Targets            map[string]int
	Phase1OK, Phase2OK int
	Failures           []string
	Reinitialized      int
	NotFoundMs         float64
	NotFoundURL        string
	NewOwner           string
	IDs                int
}

// waitReadyPods waits for n pods of the MCPServer to be Running and ready, and returns them.
func waitReadyPods(t *testing.T, s *mcpv1alpha1.MCPServer, n int) []corev1.Pod {
	t.Helper()
	var ready []corev1.Pod
	err := wait.PollUntilContextTimeout(context.Background(), 200*time.Millisecond, 120*time.Second, true, func(ctx context.Context) (bool, error) {
		pods := &corev1.PodList{}
		if err := k8s.List(ctx, pods, client.InNamespace(s.Namespace), client.MatchingLabels{controllers.LabelServer: s.Name}); err != nil {
			return false, nil
		}
		ready = ready[:0]
		for _, p := range pods.Items {
			ok := p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil && len(p.Status.ContainerStatuses) > 0
			for _, c := range p.Status.ContainerStatuses {
				ok = ok && c.Ready
			}
			if ok {
				ready = append(ready, p)
			}
		}
		return len(ready) == n, nil
	})
	if err != nil {
		t.Fatalf("MCPServer %s: %d of %d pods Running and ready after 120s\nevents:\n%s", s.Name, len(ready), n, events(s.Namespace))
	}
	return ready
}

// TestSessionsAcrossReplicas: an MCPServer with 3 replicas (streamable HTTP, TLS). A go-sdk client in
// the agent pod keeps one session per replica (initialized there), and every request of each session
// goes to the next replica's pod IP in turn, verifying the certificate for the Service name: every call
// succeeds. Then the pod that holds the first session is deleted mid-session: the next request of that
// session gets 404 from a surviving replica, the client initializes again once and continues; the
// sessions held by the other two replicas go on without a re-initialize.
func TestSessionsAcrossReplicas(t *testing.T) {
	f := server(t)
	ctx := context.Background()
	s := &mcpv1alpha1.MCPServer{
		ObjectMeta: metav1.ObjectMeta{Name: "replicas", Namespace: f.ns},
		Spec: mcpv1alpha1.MCPServerSpec{
			Image:    probeImage,
			Command:  []string{"/probe", "serve", "--port", "8080"},
			Port:     8080,
			Replicas: ptrTo(int32(3)),
			Clients:  []mcpv1alpha1.ClientSelector{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "agent"}}}},
			Gateway: mcpv1alpha1.GatewaySpec{
				Auth:   mcpv1alpha1.GatewayAuth{Issuer: issuerURL},
				Scopes: []mcpv1alpha1.ScopeGrant{{Scope: "files:read", Tools: []string{"read_file", "list_directory"}}},
				// The probe's rounds are bursts of one principal's requests, all counted at its home
				// replica: above the default 10/s (burst 20), which this test is not about.
				RatePerSecond: ptrTo(int32(500)),
			},
		},
	}
	created := time.Now()
	if err := k8s.Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), s) })
	pods := waitReadyPods(t, s, 3)
	t.Logf("3 replicas Running and ready %s after create", time.Since(created).Round(10*time.Millisecond))
	var urls []string
	var trust []string
	for i := range pods {
		var u string
		u, trust = gatewayURL(t, f.ns, s.Name, &pods[i])
		urls = append(urls, u)
	}
	tok := tokenFor(t, f.ns, s.Name, "files:read")
	// All of one principal's sessions are held by its home replica (whichever replica an initialize
	// reaches): the test puts the home first, so that the pod deleted mid-session holds every session.
	waitPeersResolve(t, f.ns, s)
	home := homeOfPrincipal(t, f.ns, f.agent.Name, trust, urls[0], tok)
	for i := range pods {
		if home == fmt.Sprintf("%s:%d", pods[i].Status.PodIP, controllers.PeerPort) {
			pods[0], pods[i] = pods[i], pods[0]
			urls[0], urls[i] = urls[i], urls[0]
		}
	}
	if home != fmt.Sprintf("%s:%d", pods[0].Status.PodIP, controllers.PeerPort) {
		t.Fatalf("the principal's home %s is none of the ready pods", home)
	}

	type result struct {
		out []byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		ectx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
		defer cancel()
		args := append(append([]string{"/probe", "session"}, trust...), append([]string{"--server-name", s.Name + "." + f.ns + ".svc", "--rounds", "3", "--ready", "127.0.0.1:7070", tok}, urls...)...)
		out, err := localcluster.Exec(ectx, env.Cluster.Config, f.ns, f.agent.Name, "probe", args...)
		done <- result{out, err}
	}()
	// The cue: the probe listens on 127.0.0.1:7070 of the agent pod once phase 1 is done.
	var res result
	cue := time.Now().Add(3 * time.Minute)
	for cued := false; !cued; {
		select {
		case res = <-done:
			t.Fatalf("probe session ended before its cue (%v): %s", res.err, res.out)
		case <-time.After(500 * time.Millisecond):
		}
		cued = dialFrom(t, f.ns, f.agent.Name, "probe", "127.0.0.1:7070")["127.0.0.1:7070"] == "connected"
		if !cued && time.Now().After(cue) {
			t.Fatal("probe session did not finish phase 1 in 3 minutes")
		}
	}
	owner := pods[0]
	deleted := time.Now()
	if err := k8s.Delete(ctx, &owner, client.GracePeriodSeconds(0)); err != nil {
		t.Fatal(err)
	}
	// The owner is gone once its peer port, where the other replicas relay its sessions, stops
	// accepting connections (its gateway serves there while the pod terminates); seen from a surviving
	// replica's pod, which the NetworkPolicy lets reach it. Then the second cue.
	// Its MCP port too, seen from the client pod: the gateway closes its listeners one after the
	// other, and the client checks the MCP port after the cue.
	peer := fmt.Sprintf("%s:%d", owner.Status.PodIP, controllers.PeerPort)
	mcpPort := fmt.Sprintf("%s:%d", owner.Status.PodIP, controllers.GatewayPort)
	var peerState, mcpState string
	for peerState, mcpState = "connected", "connected"; peerState == "connected" || mcpState == "connected"; {
		if time.Since(deleted) > 90*time.Second {
			t.Fatalf("the deleted owner's peer port %s (%s) or MCP port %s (%s) still accepts connections after 90s", peer, peerState, mcpPort, mcpState)
		}
		time.Sleep(200 * time.Millisecond)
		peerState = dialFrom(t, f.ns, pods[1].Name, "server", peer)[peer]
		mcpState = dialFrom(t, f.ns, f.agent.Name, "probe", mcpPort)[mcpPort]
	}
	peerGone := time.Since(deleted)
	if got := dialFrom(t, f.ns, f.agent.Name, "probe", "127.0.0.1:7070"); got["127.0.0.1:7070"] != "connected" {
		t.Fatalf("the second cue: %v", got)
	}
	res = <-done
	if res.err != nil {
		t.Fatalf("probe session: %v: %s", res.err, res.out)
	}
	var rep sessionReport
	if err := json.Unmarshal(res.out, &rep); err != nil {
		t.Fatalf("probe session: %v: %s", err, res.out)
	}
	t.Logf("probe session (pod %s deleted at the cue; its peer port %s %s %s after the delete call): %s",
		owner.Name, peer, peerState, peerGone.Round(time.Millisecond), res.out)
	if rep.Error != "" {
		t.Fatalf("probe session: %s", rep.Error)
	}
	if len(rep.Sessions) != 3 || rep.Gone != urls[0] {
		t.Fatalf("want 3 sessions and %s gone: %+v", urls[0], rep)
	}
	for i, sr := range rep.Sessions {
		checkSessionRun(t, i, sr, urls, rep.Gone)
	}
	s0 := rep.Sessions[0]
	t.Logf("replica loss: 404 in %.1f ms from %s; re-initialized %d time(s) at %s; sessions 1 and 2 (the same home) re-initialized %d and %d times; warm-up rounds retried %d (%s)",
		s0.NotFoundMs, s0.NotFoundURL, s0.Reinitialized, s0.NewOwner, rep.Sessions[1].Reinitialized, rep.Sessions[2].Reinitialized, rep.Warmups, rep.WarmupError)
	fmt.Printf("real node: sessions across 3 replicas: %d calls, 404 %.1f ms after the owner's loss, %d re-initialize(s) for session 0 and %d for sessions 1 and 2 (one principal: one home)\n",
		(s0.Phase1OK+s0.Phase2OK)*3, s0.NotFoundMs, s0.Reinitialized, rep.Sessions[1].Reinitialized+rep.Sessions[2].Reinitialized)
	// With the replicas' headless Service resolving, a principal's sessions have one home.
	assertPrincipalHome(t, f.ns, f.agent.Name, s, trust, tok)
}

// checkSessionRun: session i (initialized at urls[i], held by the principal's home, urls[0]) had its id
// through the replica it was initialized at, no failed call, 9 calls before the deletion and 6 after,
// its requests alternating across the replicas; deleting the home (gone) cost it one 404 and one new
// initialize, at a replica left.
func checkSessionRun(t *testing.T, i int, sr sessionRun, urls []string, gone string) {
	t.Helper()
	if !strings.HasPrefix(sr.Owner, sr.IssuedAt+"/") {
		t.Errorf("session %d: initialized at %s but its id came from %s", i, sr.Owner, sr.IssuedAt)
	}
	if len(sr.Failures) != 0 {
		t.Errorf("session %d (held by %s): failed calls %v", i, sr.Owner, sr.Failures)
	}
	// Phase 1: 3 rounds on each of 3 replicas; phase 2: on each of the 2 left.
	if sr.Phase1OK != 9 || sr.Phase2OK != 6 {
		t.Errorf("session %d: %d calls succeeded before the deletion (want 9) and %d after (want 6)", i, sr.Phase1OK, sr.Phase2OK)
	}
	for _, u := range urls {
		if sr.Targets[strings.TrimSuffix(u, "/mcp")] < 3 {
			t.Errorf("session %d: its requests must alternate across the replicas; by replica: %v", i, sr.Targets)
		}
	}
	// every session of the one principal is held by its home, the deleted replica
	want := 1
	if sr.Reinitialized != want {
		t.Errorf("session %d (held by %s): re-initialized %d times, want %d", i, sr.Owner, sr.Reinitialized, want)
	}
	if want == 1 && (sr.NotFoundMs == 0 || strings.Contains(sr.NotFoundURL, "status") || sr.IDs != 2 || strings.HasPrefix(gone, sr.NewOwner+"/")) {
		t.Errorf("session %d: the request after the deletion must get 404 and the client one new id: %+v", i, sr)
	}
}
