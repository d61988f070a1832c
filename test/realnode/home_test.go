package realnode

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
	"github.com/mcp-warden/mcp-warden/controllers"
)

// assertPrincipalHome: the operator's headless Service <name>-peers lists the server's ready pods.
// Answered by the cluster DNS as kube-dns answers a headless Service, it is the gateways' live replica
// set: two clients of one principal, each opening
// two sessions through the Service (kube-proxy spreads them over the pods), get four session ids that
// all name one replica, the principal's home.
func assertPrincipalHome(t *testing.T, ns, agent string, s *mcpv1alpha1.MCPServer, trust []string, tok string) {
	t.Helper()
	ctx := context.Background()
	podIPs := waitPeersResolve(t, ns, s)
	svc := &corev1.Service{}
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(s), svc); err != nil {
		t.Fatal(err)
	}
	url := fmt.Sprintf("https://%s:%d/mcp", svc.Spec.ClusterIP, svc.Spec.Ports[0].Port)
	owners := sessionOwners(t, ns, agent, trust, url, tok)
	t.Logf("4 sessions of one principal initialized through the Service: owners %v", owners)
	if len(owners) != 1 {
		t.Fatalf("one principal's sessions initialized through the Service are owned by %v; want its home replica alone", owners)
	}
	for o := range owners {
		ip, _, _ := strings.Cut(o, ":")
		if !slices.Contains(podIPs, ip) || !strings.HasSuffix(o, fmt.Sprintf(":%d", controllers.PeerPort)) {
			t.Fatalf("the home %s is not a ready pod's peer address (%v)", o, podIPs)
		}
	}
}

// sessionOwners opens two clients' sessions (each an initialize and the session it uses) through url
// from the agent pod and counts the replicas their ids name.
func sessionOwners(t *testing.T, ns, agent string, trust []string, url, tok string) map[string]int {
	t.Helper()
	owners := map[string]int{}
	for range 2 {
		out := execIn(t, ns, agent, "probe", probeMCP(trust, url, tok)...)
		var res struct {
			ConnectError             string
			SessionID, InitSessionID string
		}
		if err := json.Unmarshal(out, &res); err != nil || res.ConnectError != "" || res.SessionID == "" || res.InitSessionID == "" {
			t.Fatalf("probe mcp through the Service %s: %v: %s", url, err, out)
		}
		for _, id := range []string{res.SessionID, res.InitSessionID} {
			parts := strings.Split(id, ".")
			owner, err := base64.RawURLEncoding.DecodeString(parts[min(1, len(parts)-1)])
			if len(parts) != 3 || err != nil {
				t.Fatalf("session id %q is not in the gateway's format", id)
			}
			owners[string(owner)]++
		}
	}
	return owners
}

// waitPeersResolve waits until the headless Service <name>-peers lists the server's 3 ready pods and the
// cluster DNS answers it so from a server pod, and the gateways' cached answers have expired; it returns
// the pods' IPs, sorted.
func waitPeersResolve(t *testing.T, ns string, s *mcpv1alpha1.MCPServer) []string {
	t.Helper()
	ctx := context.Background()
	pods := waitReadyPods(t, s, 3)
	var podIPs []string
	for _, p := range pods {
		podIPs = append(podIPs, p.Status.PodIP)
	}
	slices.Sort(podIPs)
	name := s.Name + "-peers"
	var ips []string
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		list := &discoveryv1.EndpointSliceList{}
		if err := k8s.List(ctx, list, client.InNamespace(ns), client.MatchingLabels{discoveryv1.LabelServiceName: name}); err != nil {
			return false, nil
		}
		ips = ips[:0]
		for _, sl := range list.Items {
			for _, ep := range sl.Endpoints {
				if ep.Conditions.Ready != nil && *ep.Conditions.Ready {
					ips = append(ips, ep.Addresses...)
				}
			}
		}
		slices.Sort(ips)
		return slices.Equal(ips, podIPs), nil
	})
	if err != nil {
		t.Fatalf("the headless Service %s lists %v, want the ready pods %v", name, ips, podIPs)
	}
	fqdn := name + "." + ns + ".svc.cluster.local"
	// the server container shares the gateway's network and fence: it resolves what the gateway does
	err = wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 60*time.Second, true, func(context.Context) (bool, error) {
		var res []struct{ Addrs []string }
		out := execIn(t, ns, pods[0].Name, "server", "/probe", "resolve", fqdn+".")
		return json.Unmarshal(out, &res) == nil && len(res) == 1 && len(res[0].Addrs) == 3, nil
	})
	if err != nil {
		t.Fatalf("%s does not resolve to the 3 pods from a server pod", fqdn)
	}
	time.Sleep(2500 * time.Millisecond) // the gateways' cached answer (2 s) expires
	return podIPs
}

// homeOfPrincipal is the peer address (ip:port) of the replica that holds a session of tok's principal
// initialized at url: its home, once the replica set resolves.
func homeOfPrincipal(t *testing.T, ns, agent string, trust []string, url, tok string) string {
	t.Helper()
	out := execIn(t, ns, agent, "probe", probeMCP(trust, url, tok)...)
	var res struct{ ConnectError, SessionID string }
	if err := json.Unmarshal(out, &res); err != nil || res.ConnectError != "" || res.SessionID == "" {
		t.Fatalf("probe mcp at %s: %v: %s", url, err, out)
	}
	parts := strings.Split(res.SessionID, ".")
	owner, err := base64.RawURLEncoding.DecodeString(parts[min(1, len(parts)-1)])
	if len(parts) != 3 || err != nil {
		t.Fatalf("session id %q is not in the gateway's format", res.SessionID)
	}
	return string(owner)
}
