package gateway

import (
	"fmt"
	"testing"
)

// TestOnePrincipalCannotEvictOthersSessionIDs is the attacker's test (an MCP client of one principal):
// a replica keeps at most 10000 session handles, the least recently used dropped first, with no cap
// per principal. One principal that initializes 10000 sessions (each an ordinary initialize, within
// its rate limit over time) drops every other principal's handle: their next request is 404 and their
// session's state at the server (subscriptions, a stdio server's process state) is lost. A principal's
// own handles must be what its new sessions displace.
func TestOnePrincipalCannotEvictOthersSessionIDs(t *testing.T) {
	ids, err := newSessionIDs(SessionsConfig{}, sessionsPerPrincipal(&Config{}))
	if err != nil {
		t.Fatal(err)
	}
	victim, err := ids.issue("upstream-victim", "alice")
	if err != nil {
		t.Fatal(err)
	}
	_, handle, _ := parseSessionID(victim)
	for i := range maxSessionIDs {
		if _, err := ids.issue(fmt.Sprintf("upstream-%d", i), "mallory"); err != nil {
			t.Fatal(err)
		}
	}
	if ids.lookup(handle) == nil {
		t.Fatalf("principal mallory's %d initializes dropped principal alice's session handle", maxSessionIDs)
	}
	if n, limit := ids.owned["mallory"], maxSessionIDs/sessionsPerPrincipalShare; n != limit || len(ids.m) != limit+1 {
		t.Fatalf("mallory holds %d handles (table %d), want its cap %d and alice's one", n, len(ids.m), limit)
	}
}
