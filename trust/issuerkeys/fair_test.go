package issuerkeys

import (
	"context"
	"fmt"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// TestSlowIssuersDoNotStarveOthers: a tenant creates many MCPServers whose issuers hang until the fetch
// deadline. The fetch loop used to hand their fetches out one free slot at a time, blocked until the
// whole batch had started, so another tenant's new server waited (slow issuers / 8) deadlines for its
// keys, and every refresh of everyone's keys with it. A free slot now goes first to the namespace with
// the fewest fetches under way, and the loop never blocks: the other tenant waits at most about one
// deadline, however many slow issuers there are.
func TestSlowIssuersDoNotStarveOthers(t *testing.T) {
	is := newIssuer(t)
	_, k1 := ecKey(t, "k1")
	is.set(k1)
	const deadline = 500 * time.Millisecond
	victim := types.NamespacedName{Namespace: "victim", Name: "files"}
	got := make(chan time.Time, 1)
	f := &Fetcher{Client: is.srv.Client(), Timeout: deadline, Refresh: time.Minute, Notify: func(n types.NamespacedName) {
		if n == victim {
			select {
			case got <- time.Now():
			default:
			}
		}
	}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = f.Start(ctx) }()
	const slow = 96
	for i := range slow {
		f.Get(Source{Issuer: is.srv.URL, JWKSURL: fmt.Sprintf("%s/hang?n=%d", is.srv.URL, i)}, types.NamespacedName{Namespace: "attacker", Name: fmt.Sprintf("s%d", i)})
	}
	time.Sleep(100 * time.Millisecond)
	start := time.Now()
	f.Get(Source{Issuer: is.srv.URL, JWKSURL: is.srv.URL + "/keys"}, victim)
	select {
	case at := <-got:
		d := at.Sub(start)
		t.Logf("the other tenant's keys arrived after %s behind %d issuers hanging for %s each", d.Round(time.Millisecond), slow, deadline)
		if d > 3*deadline {
			t.Fatalf("the other tenant waited %s for its keys behind %d slow issuers (deadline %s)", d.Round(time.Millisecond), slow, deadline)
		}
	case <-time.After(slow / maxFetches * deadline * 2):
		t.Fatalf("the other tenant's keys never arrived behind %d slow issuers", slow)
	}
}
