package gateway_test

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcp-warden/mcp-warden/gateway"
)

// peersDNS is the headless Service name the replicas resolve for the live replica set.
const peersDNS = "github-peers.tools.svc.cluster.local"

// peerDNS answers sessions.peersDNS as a headless Service's DNS does: the addresses of the replicas
// listed (all of them until set), NXDOMAIN for any other name, or err when set.
type peerDNS struct {
	rs      *replicaSet
	listed  atomic.Pointer[[]int]
	fail    atomic.Bool
	lookups atomic.Int32
}

func (d *peerDNS) lookup(_ context.Context, host string) ([]netip.Addr, error) {
	d.lookups.Add(1)
	if host != peersDNS {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	if d.fail.Load() {
		return nil, &net.DNSError{Err: "i/o timeout", Name: host, IsTimeout: true}
	}
	var out []netip.Addr
	idx := []int{0, 1, 2}
	if l := d.listed.Load(); l != nil {
		idx = *l
	}
	for _, i := range idx {
		out = append(out, netip.MustParseAddrPort(d.rs.replicas[i].addr).Addr())
	}
	return out, nil
}

// homedReplicas is three replicas that resolve peersDNS with a peerDNS.
func homedReplicas(t *testing.T, mutate func(*gateway.Config)) (*replicaSet, *peerDNS) {
	t.Helper()
	d := &peerDNS{}
	rs, _ := newReplicaSetResolving(t, 3, func(c *gateway.Config) {
		c.Sessions.PeersDNS = peersDNS
		if mutate != nil {
			mutate(c)
		}
	}, d.lookup)
	d.rs = rs
	return rs, d
}

// connectAt initializes a session at one replica's own MCP endpoint (as the Service may send it there);
// every later request of the session goes to that replica too.
func connectAt(t testing.TB, rp *replica, token string) *mcp.ClientSession {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := mcp.NewClient(&mcp.Implementation{Name: "test-client", Version: "1"}, nil)
	cs, err := c.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: rp.srv.URL + "/mcp", HTTPClient: httpClient(token), MaxRetries: -1}, nil)
	if err != nil {
		t.Fatalf("connect at %s: %v", rp.addr, err)
	}
	t.Cleanup(func() { _ = cs.Close() })
	return cs
}

// TestPrincipalSessionsOnItsHome: one principal initializes a session at each of three replicas. Each
// replica relays the initialize to the principal's home (rendezvous hashing over the live replicas),
// so all three ids name one replica and that replica's server holds all three sessions. Before, each
// session was owned by the replica it was initialized at.
func TestPrincipalSessionsOnItsHome(t *testing.T) {
	rs, _ := homedReplicas(t, nil)
	token := rs.is.token(t, "files:read")
	owners := map[string]int{}
	for _, rp := range rs.replicas {
		cs := connectAt(t, rp, token)
		owners[ownerOf(t, nil, cs.ID())]++
		if _, err := call(t, cs, "read_file", map[string]any{"path": "a"}); err != nil {
			t.Fatalf("read_file in the session initialized at %s: %v", rp.addr, err)
		}
	}
	if len(owners) != 1 {
		t.Fatalf("one principal's sessions initialized at three replicas are owned by %v; want one replica", owners)
	}
	home := rs.owner(t) // the only replica whose server ran a call
	if _, ok := owners[home.addr]; !ok || home.up.calls.Load() != 3 {
		t.Fatalf("the ids name %v but the calls ran on %s (%d of 3)", owners, home.addr, home.up.calls.Load())
	}
	// another principal's home is decided alike: its sessions too are all on one replica
	other := rs.is.claims("files:read")
	other.Subject = "bob"
	tok := rs.is.mint(t, other)
	theirs := map[string]bool{}
	for _, rp := range rs.replicas {
		theirs[ownerOf(t, nil, connectAt(t, rp, tok).ID())] = true
	}
	if len(theirs) != 1 {
		t.Fatalf("bob's sessions are owned by %v; want one replica", theirs)
	}
}

// TestRateLimitHoldsAcrossReplicas is the attacker's test of the rate limit: a principal spreads its
// requests over sessions initialized at all three replicas and sends each request to another replica.
// Its bucket is on its home only, so it gets at most burst requests through (requestsPerSecond x1);
// before, every replica that owned one of its sessions had a bucket of its own (x3).
func TestRateLimitHoldsAcrossReplicas(t *testing.T) {
	const burst = 30
	rs, _ := homedReplicas(t, func(c *gateway.Config) {
		c.Limits.RequestsPerSecond, c.Limits.Burst = 0.001, burst
	})
	token := rs.is.token(t, "files:read")
	var ids []string
	for _, rp := range rs.replicas {
		ids = append(ids, connectAt(t, rp, token).ID())
	}
	ok, limited := 0, 0
	for j := range 2 * burst {
		rp := rs.replicas[(j/3)%3]
		resp := postMCP(t, rp.srv.URL+"/mcp", ids[j%3], token, nil)
		switch resp.StatusCode {
		case http.StatusOK:
			ok++
		case http.StatusTooManyRequests:
			limited++
		default:
			t.Fatalf("request %d at %s: status %d", j, rp.addr, resp.StatusCode)
		}
	}
	t.Logf("%d of %d requests over 3 sessions at 3 replicas passed, %d got 429 (burst %d)", ok, 2*burst, limited, burst)
	if ok == 0 || ok > burst-3 || limited < burst {
		t.Fatalf("%d requests passed and %d were limited; the principal's bucket (burst %d, the initializes taken from it) must hold across the replicas", ok, limited, burst)
	}
}

// TestChainRuleAcrossSessionsAtOtherReplicas is the attacker's test of the tool-chain rule: a principal
// reads private data in a session initialized at one replica, then tries to write externally in new
// sessions initialized at the other two. All are on its home, whose chain state saw the read, so the
// write needs a person's approval (which this client cannot give: refused). Before, each new session
// was on a replica with a clean chain and the write ran.
func TestChainRuleAcrossSessionsAtOtherReplicas(t *testing.T) {
	rs, _ := homedReplicas(t, nil)
	token := rs.is.token(t, "files:read mail:send")
	first := connectAt(t, rs.replicas[0], token)
	if res, err := call(t, first, "read_file", map[string]any{"path": "secret"}); err != nil || res.IsError {
		t.Fatalf("read_file: %v %+v", err, res)
	}
	for _, rp := range rs.replicas[1:] {
		cs := connectAt(t, rp, token)
		_, err := call(t, cs, "send_email", map[string]any{"to": "a@example.com", "body": "x"})
		if err == nil || !strings.Contains(err.Error(), "needs a person's approval") {
			t.Fatalf("send_email in a new session initialized at %s after read_file in another: %v, want a refusal naming the approval", rp.addr, err)
		}
	}
	total := int32(0)
	for _, rp := range rs.replicas {
		total += rp.up.calls.Load()
	}
	if total != 1 {
		t.Fatalf("the servers ran %d calls; only read_file may have run", total)
	}
}

// TestHomeUnresolvedOrGoneServesLocally: when the peers' name does not resolve, a replica serves a new
// session itself (the set is looked up at most once per cache period, not per request); when the
// resolved home does not answer (a lost pod still in the answer), the initialize is served by the
// replica it reached, never answered 404. When the set changes, an existing session stays with its
// owner and new sessions are issued by a live replica.
func TestHomeUnresolvedOrGoneServesLocally(t *testing.T) {
	rs, d := homedReplicas(t, nil)
	token := rs.is.token(t, "files:read")
	d.fail.Store(true)
	for _, rp := range rs.replicas {
		cs := connectAt(t, rp, token)
		if o := ownerOf(t, nil, cs.ID()); o != rp.addr {
			t.Fatalf("with the peers' name unresolved, a session initialized at %s is owned by %s", rp.addr, o)
		}
	}
	if n := d.lookups.Load(); n > 6 {
		t.Fatalf("%d lookups for 3 initializes: the answer is not cached", n)
	}
	d.fail.Store(false)
	time.Sleep(2100 * time.Millisecond) // the cached error expires
	cs := connectAt(t, rs.replicas[0], token)
	homeAddr := ownerOf(t, nil, cs.ID())
	var home *replica
	var others []*replica
	for _, rp := range rs.replicas {
		if rp.addr == homeAddr {
			home = rp
		} else {
			others = append(others, rp)
		}
	}
	if home == nil {
		t.Fatalf("the session id names %s, not a replica", homeAddr)
	}
	rs.kill(home) // still listed: the name's answer lags the pod's loss
	t0 := time.Now()
	cs2 := connectAt(t, others[0], token)
	if o := ownerOf(t, nil, cs2.ID()); o != others[0].addr {
		t.Fatalf("with the home gone, a session initialized at %s is owned by %s", others[0].addr, o)
	}
	t.Logf("an initialize whose home is gone was served locally in %s", time.Since(t0).Round(time.Millisecond))
	// the set without the lost replica: a survivor's session keeps working on its owner while the new
	// home of the principal issues the new sessions
	listed := []int{}
	for i, rp := range rs.replicas {
		if rp != home {
			listed = append(listed, i)
		}
	}
	d.listed.Store(&listed)
	time.Sleep(2100 * time.Millisecond)
	cs3 := connectAt(t, others[1], token)
	if o := ownerOf(t, nil, cs3.ID()); o == home.addr {
		t.Fatalf("a new session is owned by the lost replica %s", o)
	}
	if res, err := call(t, cs2, "read_file", map[string]any{"path": "b"}); err != nil || res.IsError {
		t.Fatalf("an existing session after the set changed: %v %+v", err, res)
	}
}
