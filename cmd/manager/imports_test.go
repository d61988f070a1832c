package main

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// deps lists the packages pkg imports, directly or not, as `go list -deps` prints them.
func deps(t *testing.T, pkg string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "list", "-deps", pkg).Output()
	if err != nil {
		t.Fatalf("go list -deps %s: %v", pkg, err)
	}
	return strings.Fields(string(out))
}

// TestManagerDoesNotLinkTheGateway: the manager links the gateway's configuration contract
// (gateway/config) and none of its runtime: not the proxy (package gateway), not its token verifier or
// sanitizer, not the MCP SDK.
func TestManagerDoesNotLinkTheGateway(t *testing.T) {
	const mod = "github.com/mcp-warden/mcp-warden/"
	forbidden := map[string]bool{
		mod + "gateway": true, mod + "gateway/auth": true, mod + "gateway/audit": true,
		mod + "gateway/sanitize": true, mod + "gateway/strictjson": true, mod + "gateway/stdio": true,
	}
	contract := false
	for _, p := range deps(t, ".") {
		if forbidden[p] || strings.HasPrefix(p, "github.com/modelcontextprotocol/go-sdk") {
			t.Errorf("the manager links %s; the operator should import only the gateway's contract, %sgateway/config", p, mod)
		}
		contract = contract || p == mod+"gateway/config"
	}
	if !contract {
		t.Errorf("the manager does not link %sgateway/config: the test no longer sees the operator's import graph", mod)
	}
}

// TestControllersAndWebhooksAreSiblings: the control loop and the admission share the domain packages
// (imageverify, guardrails, gatewayconfig) and import neither each other nor the gateway's runtime.
func TestControllersAndWebhooksAreSiblings(t *testing.T) {
	const mod = "github.com/mcp-warden/mcp-warden/"
	for pkg, forbidden := range map[string][]string{
		mod + "controllers": {mod + "webhooks", mod + "gateway"},
		mod + "webhooks":    {mod + "controllers", mod + "gateway"},
	} {
		for _, p := range deps(t, pkg) {
			for _, f := range forbidden {
				if p == f {
					t.Errorf("%s imports %s", pkg, f)
				}
			}
		}
	}
}
