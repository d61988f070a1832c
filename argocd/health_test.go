package argocd

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

func TestHealthFixtures(t *testing.T) {
	cases := []struct {
		file, status, message string
	}{
		{"ready.json", Healthy, "1 of 1 replicas available"},
		{"egress-unenforced.json", Healthy, "FQDN rules need Cilium"},
		{"progressing.json", Progressing, "Progressing: 0 of 1 replicas available"},
		{"apply-failed.json", Progressing, "ApplyFailed: apply Deployment"},
		{"not-ready.json", Progressing, "Progressing: 0 of 1 replicas available"},
		{"status-no-conditions.json", Progressing, "Waiting for the operator"},
		{"new-generation.json", Progressing, "observe generation 2"},
		{"stalled.json", Degraded, "InvalidSpec: spec.egress[1].cidr"},
		{"child-conflict.json", Degraded, "ChildConflict: Service mcp-tools/files exists"},
		{"unverified.json", Degraded, "Image not verified"},
		{"tool-changed.json", Degraded, "Tool definition changed: tool definitions changed after they were pinned: read_file"},
		{"suspended.json", Suspended, "zero replicas"},
	}
	for _, tc := range cases {
		t.Run(tc.file, func(t *testing.T) {
			body, err := os.ReadFile(filepath.Join("testdata", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			var obj map[string]any
			if err := json.Unmarshal(body, &obj); err != nil {
				t.Fatal(err)
			}
			status, message, err := Health(obj)
			if err != nil {
				t.Fatal(err)
			}
			if status != tc.status || !strings.Contains(message, tc.message) {
				t.Fatalf("health = %s %q, want %s containing %q", status, message, tc.status, tc.message)
			}
		})
	}
	// Every fixture is in the table, so a new one cannot go untested.
	files, err := filepath.Glob(filepath.Join("testdata", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != len(cases) {
		t.Errorf("testdata has %d fixtures, the table %d", len(files), len(cases))
	}
}

func TestNoStatusIsProgressing(t *testing.T) {
	status, _, err := Health(map[string]any{"metadata": map[string]any{"name": "x", "generation": float64(1)}})
	if err != nil || status != Progressing {
		t.Fatalf("status %s, err %v", status, err)
	}
}

// TestIntegerNumbers feeds numbers as int64, the way Argo CD's unstructured objects carry them.
func TestIntegerNumbers(t *testing.T) {
	obj := map[string]any{
		"metadata": map[string]any{"name": "x", "generation": int64(3)},
		"spec":     map[string]any{"replicas": int64(0)},
		"status":   map[string]any{"observedGeneration": int64(3)},
	}
	if status, _, err := Health(obj); err != nil || status != Suspended {
		t.Fatalf("status %s, err %v; want %s", status, err, Suspended)
	}
	obj["status"] = map[string]any{"observedGeneration": int64(2)}
	if status, msg, err := Health(obj); err != nil || status != Progressing || !strings.Contains(msg, "generation 3") {
		t.Fatalf("status %s %q, err %v; want %s", status, msg, err, Progressing)
	}
}

// TestCopiesMatchSource checks that the copies `make manifests` (hack/chartgen) writes into the chart and
// config/argocd are the embedded script, byte for byte.
func TestCopiesMatchSource(t *testing.T) {
	for _, path := range []string{
		filepath.Join("..", "config", "argocd", "mcpserver-health.lua"),
		filepath.Join("..", "charts", "mcp-warden", "files", "mcpserver-health.lua"),
	} {
		body, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if string(body) != HealthScript {
			t.Errorf("%s differs from argocd/mcpserver-health.lua; run `make manifests`", path)
		}
	}
	patch, err := os.ReadFile(filepath.Join("..", "config", "argocd", "argocd-cm-patch.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var cm struct {
		Data map[string]string `json:"data"`
	}
	if err := yaml.Unmarshal(patch, &cm); err != nil {
		t.Fatal(err)
	}
	if got := cm.Data["resource.customizations.health.mcp.warden.dev_MCPServer"]; got != HealthScript {
		t.Error("config/argocd/argocd-cm-patch.yaml does not carry argocd/mcpserver-health.lua; run `make manifests`")
	}
}
