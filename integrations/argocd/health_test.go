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
// config/argocd are the embedded scripts, byte for byte.
func TestCopiesMatchSource(t *testing.T) {
	patch, err := os.ReadFile(filepath.Join("..", "..", "config", "argocd", "argocd-cm-patch.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var cm struct {
		Data map[string]string `json:"data"`
	}
	if err := yaml.Unmarshal(patch, &cm); err != nil {
		t.Fatal(err)
	}
	for _, s := range Scripts {
		for _, path := range []string{
			filepath.Join("..", "..", "config", "argocd", s.File),
			filepath.Join("..", "..", "charts", "mcp-warden", "files", s.File),
		} {
			body, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if string(body) != s.Script {
				t.Errorf("%s differs from argocd/%s; run `make manifests`", path, s.File)
			}
		}
		if got := cm.Data["resource.customizations.health.mcp.warden.dev_"+s.Kind]; got != s.Script {
			t.Errorf("config/argocd/argocd-cm-patch.yaml does not carry argocd/%s; run `make manifests`", s.File)
		}
	}
}

// TestPolicyHealth: a policy the operator can enforce is Healthy, one it cannot is Degraded with the
// reason, one not checked yet (or not for its generation) is Progressing.
func TestPolicyHealth(t *testing.T) {
	policy := func(generation, observed float64, conditions ...any) map[string]any {
		obj := map[string]any{"metadata": map[string]any{"name": "p", "generation": generation}}
		if conditions != nil {
			obj["status"] = map[string]any{"observedGeneration": observed, "conditions": conditions}
		}
		return obj
	}
	ready := func(status, reason, msg string) any {
		return map[string]any{"type": "Ready", "status": status, "reason": reason, "message": msg}
	}
	cases := []struct {
		name          string
		obj           map[string]any
		status, words string
	}{
		{"valid", policy(2, 2, ready("True", "Valid", "the policy can be enforced")), Healthy, "can be enforced"},
		{"invalid", policy(2, 2, ready("False", "Invalid", `authority "release-key": not a PEM public key`)), Degraded, "Invalid: authority"},
		{"not checked", policy(1, 0), Progressing, "Waiting for the operator"},
		{"old generation", policy(3, 2, ready("True", "Valid", "ok")), Progressing, "generation 3"},
		{"other conditions only", policy(1, 1, map[string]any{"type": "Other", "status": "True"}), Progressing, "Waiting"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, msg, err := PolicyHealth(tc.obj)
			if err != nil || status != tc.status || !strings.Contains(msg, tc.words) {
				t.Fatalf("health = %s %q (%v), want %s containing %q", status, msg, err, tc.status, tc.words)
			}
		})
	}
}
