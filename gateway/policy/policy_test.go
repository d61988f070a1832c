package policy

import "testing"

func TestGrantAndChain(t *testing.T) {
	p := New(map[string][]string{"files:read": {"read_file"}, "all": {AllTools}, "mail": {"send_email"}}, []string{"delete_file"},
		map[string][]string{"read_file": {ReadsPrivate}, "send_email": {WritesExternal}})
	if s, ok := p.Grant("read_file", []string{"files:read"}); !ok || s != "files:read" {
		t.Fatal("files:read should grant read_file")
	}
	if _, ok := p.Grant("send_email", []string{"files:read"}); ok {
		t.Fatal("files:read granted send_email")
	}
	if _, ok := p.Grant("anything", []string{"all"}); !ok {
		t.Fatal("* did not grant")
	}
	if got := p.ScopesFor("send_email"); got != "mail all" {
		t.Fatalf("ScopesFor = %q", got)
	}
	if !p.Destructive("delete_file") || p.Destructive("read_file") {
		t.Fatal("destructive")
	}
	var c Chain
	if _, need := c.NeedsApproval(p, "send_email"); need {
		t.Fatal("approval before any private read")
	}
	c.Ran(p, "read_file")
	if why, need := c.NeedsApproval(p, "send_email"); !need || why == "" {
		t.Fatal("no approval after a private read")
	}
	if _, need := c.NeedsApproval(p, "read_file"); need {
		t.Fatal("reads need no approval")
	}
}
