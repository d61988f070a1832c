package gatewayconfig

import (
	"strings"
	"testing"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
)

func server() *mcpv1alpha1.MCPServer {
	s := &mcpv1alpha1.MCPServer{Spec: mcpv1alpha1.MCPServerSpec{Image: "ghcr.io/acme/files@sha256:0123", Gateway: mcpv1alpha1.GatewaySpec{Auth: mcpv1alpha1.GatewayAuth{Issuer: "https://auth.example.com"}, Scopes: []mcpv1alpha1.ScopeGrant{{Scope: "files:read", Tools: []string{"read_file"}}}}}}
	s.Name, s.Namespace = "files", "tools"
	return s
}

// TestCheckRefusesWhatTheGatewayRefuses: a spec the CRD schema accepts but the gateway's own config
// check refuses must be refused at admission, with the field named.
func TestCheckRefusesWhatTheGatewayRefuses(t *testing.T) {
	if errs := Check(server()); len(errs) > 0 {
		t.Fatalf("a good spec: %v", errs)
	}
	cases := map[string]func(*mcpv1alpha1.MCPServer){
		`spec.gateway.pinnedTools[read_file]: Invalid value: the gateway would refuse this configuration: pins.read_file: "not-a-hash" is not a tool hash`: func(s *mcpv1alpha1.MCPServer) {
			s.Spec.Gateway.PinnedTools = map[string]string{"read_file": "not-a-hash"}
		},
		"spec.port: Invalid value: 8443: ports 8443, 8444 and 8445 are the gateway's own": func(s *mcpv1alpha1.MCPServer) { s.Spec.Port = 8443 },
		"spec.port: Invalid value: 8444": func(s *mcpv1alpha1.MCPServer) { s.Spec.Port = 8444 },
	}
	for want, mutate := range cases {
		s := server()
		mutate(s)
		errs := Check(s)
		if len(errs) == 0 || !strings.Contains(errs.ToAggregate().Error(), want) {
			t.Errorf("Check = %v, want %q", errs, want)
		}
	}
}

// TestConfigSizeBounded: a configuration past what a ConfigMap holds used to loop ApplyFailed; it is
// refused with the field named.
func TestConfigSizeBounded(t *testing.T) {
	s := server()
	tools := make([]string, 128)
	for i := range tools {
		tools[i] = strings.Repeat("t", 120) + string(rune('a'+i%26)) + strings.Repeat("x", i%7)
	}
	for i := 0; i < 64; i++ {
		s.Spec.Gateway.Scopes = append(s.Spec.Gateway.Scopes, mcpv1alpha1.ScopeGrant{Scope: strings.Repeat("s", 100) + string(rune('a'+i%26)) + strings.Repeat("y", i), Tools: tools})
	}
	errs := Check(s)
	if len(errs) == 0 || !strings.Contains(errs.ToAggregate().Error(), "spec.gateway: Too long: the gateway configuration would be") {
		t.Fatalf("Check = %v", errs)
	}
}
