package fence

import (
	"strings"
	"testing"
)

func TestCiliumWidening(t *testing.T) {
	sel := func(labels map[string]any) map[string]any { return map[string]any{"matchLabels": labels} }
	world := []any{map[string]any{"toEntities": []any{"world"}}}
	cases := []struct {
		name string
		obj  map[string]any
		want string // the widening rules' paths, comma separated
	}{
		{"empty selector with egress", map[string]any{"spec": map[string]any{"endpointSelector": map[string]any{}, "egress": world}}, "spec"},
		{"server label with the k8s: source", map[string]any{"spec": map[string]any{"endpointSelector": sel(map[string]any{"k8s:mcp.warden.dev/server": "files"}), "ingress": world}}, "spec"},
		{"server label with the any: source", map[string]any{"spec": map[string]any{"endpointSelector": sel(map[string]any{"any:app.kubernetes.io/name": "mcp-server"}), "egress": world}}, "spec"},
		{"namespace Cilium derives", map[string]any{"spec": map[string]any{"endpointSelector": sel(map[string]any{"k8s:io.kubernetes.pod.namespace": "team-a"}), "egress": world}}, "spec"},
		{"service account Cilium derives", map[string]any{"spec": map[string]any{"endpointSelector": sel(map[string]any{"io.cilium.k8s.policy.serviceaccount": "files"}), "egress": world}}, "spec"},
		{"second rule of specs", map[string]any{"specs": []any{
			map[string]any{"endpointSelector": sel(map[string]any{"app": "web"}), "egress": world},
			map[string]any{"endpointSelector": map[string]any{}, "ingress": world},
		}}, "specs[1]"},
		{"no endpointSelector counts as every pod", map[string]any{"spec": map[string]any{"egress": world}}, "spec"},
		{"invalid selector counts as selecting", map[string]any{"spec": map[string]any{"endpointSelector": sel(map[string]any{"reserved:host": ""}), "egress": world}}, "spec"},
		{"deny only", map[string]any{"spec": map[string]any{"endpointSelector": map[string]any{}, "egressDeny": world, "ingressDeny": world}}, ""},
		{"empty allow lists", map[string]any{"spec": map[string]any{"endpointSelector": map[string]any{}, "egress": []any{}}}, ""},
		{"another app", map[string]any{"spec": map[string]any{"endpointSelector": sel(map[string]any{"k8s:app": "web"}), "egress": world}}, ""},
		{"servers excluded", map[string]any{"spec": map[string]any{"endpointSelector": map[string]any{"matchExpressions": []any{map[string]any{"key": "k8s:mcp.warden.dev/server", "operator": "DoesNotExist"}}}, "egress": world}}, ""},
		{"node rule", map[string]any{"spec": map[string]any{"nodeSelector": map[string]any{}, "egress": world}}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var paths []string
			for _, r := range CiliumWidening(CiliumRules(tc.obj), "") {
				paths = append(paths, r.Path.String())
			}
			if got := strings.Join(paths, ","); got != tc.want {
				t.Fatalf("widening rules = %q, want %q", got, tc.want)
			}
		})
	}
	// For one server: another server's label is not this one's.
	other := map[string]any{"spec": map[string]any{"endpointSelector": sel(map[string]any{"k8s:mcp.warden.dev/server": "db"}), "egress": world}}
	if got := CiliumWidening(CiliumRules(other), "files"); len(got) != 0 {
		t.Fatalf("a policy for server db widens server files: %+v", got)
	}
}
