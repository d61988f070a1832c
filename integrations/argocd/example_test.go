package argocd

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// TestExampleApplicationSyncWaves checks examples/argocd/application.yaml: the operator's Application syncs
// in an earlier wave than the MCP servers', CRDs earlier still, and each Application points at a path that
// exists in this repository.
func TestExampleApplicationSyncWaves(t *testing.T) {
	body, err := os.ReadFile(filepath.Join("..", "..", "examples", "argocd", "application.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	type app struct {
		Metadata struct {
			Name        string            `json:"name"`
			Annotations map[string]string `json:"annotations"`
		} `json:"metadata"`
		Spec struct {
			Source struct {
				Path string `json:"path"`
			} `json:"source"`
		} `json:"spec"`
	}
	waves := map[string]int{}
	for _, doc := range strings.Split(string(body), "\n---") {
		var a app
		if err := yaml.Unmarshal([]byte(doc), &a); err != nil {
			t.Fatal(err)
		}
		if a.Metadata.Name == "" {
			continue
		}
		w, err := strconv.Atoi(a.Metadata.Annotations["argocd.argoproj.io/sync-wave"])
		if err != nil {
			t.Fatalf("Application %s has no numeric sync wave: %v", a.Metadata.Name, err)
		}
		waves[a.Metadata.Name] = w
		if _, err := os.Stat(filepath.Join("..", "..", a.Spec.Source.Path)); err != nil {
			t.Errorf("Application %s: source path %q: %v", a.Metadata.Name, a.Spec.Source.Path, err)
		}
	}
	const crdWave = -2
	if !(crdWave < waves["mcp-warden"] && waves["mcp-warden"] < waves["mcp-servers"]) {
		t.Errorf("sync waves: CRDs %d, operator %d, servers %d; want increasing", crdWave, waves["mcp-warden"], waves["mcp-servers"])
	}
	for _, crd := range []string{"mcpservers.mcp.warden.dev.yaml", "mcpserverpolicies.mcp.warden.dev.yaml"} {
		b, err := os.ReadFile(filepath.Join("..", "..", "charts", "mcp-warden", "crds", crd))
		if err != nil {
			t.Fatal(err)
		}
		var obj struct {
			Metadata struct {
				Annotations map[string]string `json:"annotations"`
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal(b, &obj); err != nil {
			t.Fatal(err)
		}
		if got := obj.Metadata.Annotations["argocd.argoproj.io/sync-wave"]; got != strconv.Itoa(crdWave) {
			t.Errorf("chart CRD %s: sync wave %q, want %d", crd, got, crdWave)
		}
	}
}
