// Package policy decides which tools a token may use (a scope -> tools map), which tools need human
// approval (destructive tools), and the per-session tool-chain rule: once a tool labelled as reading
// private data has run, tools labelled as writing externally need approval.
package policy

import (
	"slices"
	"sort"
	"strings"
	"sync"
)

// Tool labels for the tool-chain rule.
const (
	// ReadsPrivate marks a tool that reads private data.
	ReadsPrivate = "reads-private"
	// WritesExternal marks a tool that can send data outside.
	WritesExternal = "writes-external"
)

// AllTools is the tool name that, in the scope map, grants every tool.
const AllTools = "*"

// Policy is the compiled tool policy; it is read-only after New.
type Policy struct {
	// byTool maps a tool to the scopes that grant it; byTool[AllTools] lists scopes granting everything.
	byTool      map[string][]string
	destructive map[string]bool
	labels      map[string]map[string]bool
}

// New compiles a policy from the configuration maps.
func New(scopes map[string][]string, destructive []string, labels map[string][]string) *Policy {
	p := &Policy{byTool: map[string][]string{}, destructive: map[string]bool{}, labels: map[string]map[string]bool{}}
	for scope, tools := range scopes {
		for _, t := range tools {
			if !slices.Contains(p.byTool[t], scope) {
				p.byTool[t] = append(p.byTool[t], scope)
			}
		}
	}
	for _, s := range p.byTool {
		sort.Strings(s)
	}
	for _, t := range destructive {
		p.destructive[t] = true
	}
	for t, ls := range labels {
		p.labels[t] = map[string]bool{}
		for _, l := range ls {
			p.labels[t][l] = true
		}
	}
	return p
}

// Grant reports whether a token with the given scopes may use a tool, and the scope that grants it.
func (p *Policy) Grant(tool string, scopes []string) (string, bool) {
	for _, s := range p.byTool[tool] {
		if slices.Contains(scopes, s) {
			return s, true
		}
	}
	for _, s := range p.byTool[AllTools] {
		if slices.Contains(scopes, s) {
			return s, true
		}
	}
	return "", false
}

// ScopesFor lists the scopes that grant a tool, space-separated (for an insufficient_scope challenge);
// empty when no scope does.
func (p *Policy) ScopesFor(tool string) string {
	all := append(slices.Clone(p.byTool[tool]), p.byTool[AllTools]...)
	return strings.Join(all, " ")
}

// Destructive reports whether a tool needs human approval on every call.
func (p *Policy) Destructive(tool string) bool { return p.destructive[tool] }

// Has reports whether a tool carries a label.
func (p *Policy) Has(tool, label string) bool { return p.labels[tool][label] }

// Chain tracks the tool-chain rule for one principal (all its sessions). It is safe for concurrent use.
type Chain struct {
	mu          sync.Mutex
	readPrivate string
}

// NeedsApproval reports whether calling tool now needs approval under the chain rule, with the reason.
func (c *Chain) NeedsApproval(p *Policy, tool string) (string, bool) {
	if !p.Has(tool, WritesExternal) {
		return "", false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.readPrivate == "" {
		return "", false
	}
	return "tool " + tool + " writes externally after " + c.readPrivate + " read private data (this principal, any session)", true
}

// Ran records that a tool completed in this session.
func (c *Chain) Ran(p *Policy, tool string) {
	if !p.Has(tool, ReadsPrivate) {
		return
	}
	c.mu.Lock()
	if c.readPrivate == "" {
		c.readPrivate = tool
	}
	c.mu.Unlock()
}
