package argocd

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestHealthFixtures(t *testing.T) {
	cases := map[string]struct{ status, message string }{
		"ready.json":          {Healthy, "1 of 1 replicas available"},
		"progressing.json":    {Progressing, "Progressing: 0 of 1 replicas available"},
		"stalled.json":        {Degraded, "InvalidSpec: spec.egress[1].cidr"},
		"new-generation.json": {Progressing, "observe generation 2"},
		"suspended.json":      {Suspended, "zero replicas"},
		"unverified.json":     {Degraded, "Image not verified"},
	}
	for file, want := range cases {
		t.Run(file, func(t *testing.T) {
			body, err := os.ReadFile(filepath.Join("testdata", file))
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
			if status != want.status || !strings.Contains(message, want.message) {
				t.Fatalf("health = %s %q, want %s containing %q", status, message, want.status, want.message)
			}
		})
	}
}

func TestNoStatusIsProgressing(t *testing.T) {
	status, _, err := Health(map[string]any{"metadata": map[string]any{"name": "x", "generation": float64(1)}})
	if err != nil || status != Progressing {
		t.Fatalf("status %s, err %v", status, err)
	}
}
