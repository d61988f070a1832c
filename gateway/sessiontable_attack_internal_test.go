package gateway

import (
	"fmt"
	"testing"
)

// TestOnePrincipalCannotEvictOthersSessions is the attacker's test (an MCP client of one principal):
// the session table kept 10000 sessions, the least recently used dropped first, with no cap per
// principal, so one principal's 10000 initializes dropped every other principal's session. The
// victim's session, dropped, was made again on its next request without what the client declared at
// initialize, so its approvals were refused as from a client that cannot ask a person, and its pending
// calls were forgotten. Now a principal at its cap (a tenth of the table) displaces its own sessions.
func TestOnePrincipalCannotEvictOthersSessions(t *testing.T) {
	table := newSessionTable(maxSessions, sessionsPerPrincipal(&Config{}))
	table.put(&session{id: "victim", owner: "alice", elicit: true})
	for i := range maxSessions {
		table.put(&session{id: fmt.Sprintf("s%d", i), owner: "mallory"})
	}
	s, ok := table.get("victim", "alice")
	if !ok || !s.elicit {
		t.Fatalf("principal mallory's %d sessions dropped principal alice's (found %v, elicitation kept %v)", maxSessions, ok, ok && s.elicit)
	}
	// mallory's newest sessions are kept, its own oldest displaced; the table stays bounded
	if _, ok := table.m[fmt.Sprintf("s%d", maxSessions-1)]; !ok || len(table.m) > maxSessions || table.owned["mallory"] != maxSessions/sessionsPerPrincipalShare {
		t.Fatalf("mallory's newest session kept %v, %d sessions, %d of mallory's", ok, len(table.m), table.owned["mallory"])
	}
	if _, ok := table.m["s0"]; ok {
		t.Fatal("mallory's oldest session was kept past its cap")
	}
	table.remove("victim")
	if _, ok := table.owned["alice"]; ok || len(table.m) != maxSessions/sessionsPerPrincipalShare {
		t.Fatalf("removing alice's session left %d sessions, alice counted %v", len(table.m), ok)
	}
}

// TestPrincipalsAtTheirCapsCannotEvictOthers is the attacker's test (ten principals of one party, each
// at its cap of a tenth of the table, which fills it): the table dropped its least recently used entry,
// another principal's session as likely as theirs. Now a full table makes room at the cost of the
// principal that holds the most, so the ten displace one another, never a principal with a few.
func TestPrincipalsAtTheirCapsCannotEvictOthers(t *testing.T) {
	perCap := maxSessions / sessionsPerPrincipalShare
	table := newSessionTable(maxSessions, sessionsPerPrincipal(&Config{}))
	ids, err := newSessionIDs(SessionsConfig{}, sessionsPerPrincipal(&Config{}))
	if err != nil {
		t.Fatal(err)
	}
	table.put(&session{id: "victim", owner: "alice"})
	victimID, err := ids.issue("upstream-victim", "alice")
	if err != nil {
		t.Fatal(err)
	}
	_, victimHandle, _ := parseSessionID(victimID)
	for p := range sessionsPerPrincipalShare + 1 {
		for i := range perCap {
			owner := fmt.Sprintf("mallory-%d", p)
			table.put(&session{id: fmt.Sprintf("%s-%d", owner, i), owner: owner})
			if _, err := ids.issue(fmt.Sprintf("up-%s-%d", owner, i), owner); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, ok := table.m["victim"]; !ok {
		t.Fatalf("%d principals at their caps dropped principal alice's one session", sessionsPerPrincipalShare+1)
	}
	if ids.lookup(victimHandle) == nil {
		t.Fatalf("%d principals at their caps dropped principal alice's one session handle", sessionsPerPrincipalShare+1)
	}
	if len(table.m) > maxSessions || len(ids.m) > maxSessionIDs {
		t.Fatalf("the tables grew past their bounds: %d sessions, %d handles", len(table.m), len(ids.m))
	}
}
