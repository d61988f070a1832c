package gateway_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync/atomic"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
	"github.com/mcp-warden/mcp-warden/gateway"
	"github.com/mcp-warden/mcp-warden/policy/gatewayconfig"
)

// hostAddr is a non-loopback IPv4 address of this machine (an address on the pod network, as far as
// the peer check can tell).
func hostAddr(t *testing.T) string {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() && !n.IP.IsLinkLocalUnicast() {
			return n.IP.String()
		}
	}
	t.Fatal("this machine has no non-loopback IPv4 address to listen on as the attacker")
	return ""
}

// TestRenderedReplicasDialOnlyPeers is the attacker's test (an MCP client of any principal, or none):
// the operator renders sessions.peerListen but no sessions.peerCIDRs, and without them a replica
// relays a session id to any address that is not loopback, link-local, unspecified or multicast. A
// forged id naming an address that is no replica of the server (here this machine's own address; in a
// cluster any pod, node or Service IP, or the Internet) makes the gateway dial it at the peer port and
// start a TLS handshake, presenting its certificate: a connect-scan of port 8445 across the cluster
// whose answers differ (404 at once, or after the 2 s dial timeout), checked only by the NetworkPolicy
// where the CNI enforces it. README ("What is refused, never dialled") says an id is dialled only
// inside sessions.peerCIDRs.
func TestRenderedReplicasDialOnlyPeers(t *testing.T) {
	s := &mcpv1alpha1.MCPServer{ObjectMeta: metav1.ObjectMeta{Name: "github", Namespace: "tools"},
		Spec: mcpv1alpha1.MCPServerSpec{Image: "ghcr.io/example/github@sha256:" + fmt.Sprintf("%064d", 0), Transport: mcpv1alpha1.TransportStreamableHTTP,
			Port: 8080}}
	rendered := gatewayconfig.Render(s, "cluster.local").Sessions
	if rendered.PeerListen == "" {
		t.Fatal("the rendered configuration has no peer port; this test is about the one TLS (the default) renders")
	}
	if rendered.PeersDNS == "" {
		t.Fatal("the rendered configuration names no live replica set (sessions.peersDNS)")
	}
	// the replicas resolve the rendered name as its headless Service answers: the two replicas
	var rs *replicaSet
	lookup := func(_ context.Context, host string) ([]netip.Addr, error) {
		if host != rendered.PeersDNS {
			return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
		}
		return []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2")}, nil
	}
	rs, _ = newReplicaSetResolving(t, 2, func(c *gateway.Config) {
		c.Sessions.PeerCIDRs, c.Sessions.PeersDNS = rendered.PeerCIDRs, rendered.PeersDNS
	}, lookup)
	attacker, err := net.Listen("tcp", net.JoinHostPort(hostAddr(t), fmt.Sprint(rs.port)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { attacker.Close() })
	var dialled atomic.Int32
	go func() {
		for {
			c, err := attacker.Accept()
			if err != nil {
				return
			}
			dialled.Add(1)
			c.Close()
		}
	}()
	token := rs.is.token(t, "files:read")
	for i := range 2 {
		if resp := postMCP(t, rs.front.URL+"/mcp", idFor(attacker.Addr().String()), token, nil); resp.StatusCode != http.StatusNotFound {
			t.Fatalf("try %d: status %d, want 404", i, resp.StatusCode)
		}
	}
	if n := dialled.Load(); n != 0 {
		t.Fatalf("a forged session id made the rendered gateways dial %s, no replica of the server, %d times (rendered sessions.peerCIDRs: %q)", attacker.Addr(), n, rendered.PeerCIDRs)
	}
}
