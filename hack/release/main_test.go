package main

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/sigstore/cosign/v2/pkg/cosign"

	"github.com/mcp-warden/mcp-warden/imageverify/imagetest"
	"github.com/mcp-warden/mcp-warden/internal/localcluster"
)

// TestReleaseCommand runs the command as `make release` does, with a cosign key file and its password
// from COSIGN_PASSWORD, against a loopback registry.
func TestReleaseCommand(t *testing.T) {
	root, err := localcluster.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	keys, err := cosign.GenerateKeyPair(func(bool) ([]byte, error) { return []byte("pw"), nil })
	if err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(dir, "cosign.key")
	if err := os.WriteFile(key, keys.PrivateBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	reg := imagetest.StartRegistry()
	defer reg.Close()
	t.Chdir(root)
	out := filepath.Join(dir, "release")

	t.Setenv("COSIGN_PASSWORD", "wrong")
	if err := run(reg.Host+"/mcp", key, "linux/"+runtime.GOARCH, "v1.2.3", "", "https://example.com/src", out, 10*time.Minute); err == nil || !strings.Contains(err.Error(), "COSIGN_PASSWORD") {
		t.Fatalf("a wrong key password: %v", err)
	}
	t.Setenv("COSIGN_PASSWORD", "pw")
	if err := run(reg.Host+"/mcp", key, "linux/"+runtime.GOARCH, "v1.2.3", "", "https://example.com/src", out, 10*time.Minute); err != nil {
		t.Fatal(err)
	}
	manifest, err := os.ReadFile(filepath.Join(out, "mcp-warden.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(manifest), reg.Host+"/mcp/mcp-warden-manager@sha256:") || !strings.Contains(string(manifest), "--gateway-image="+reg.Host+"/mcp/mcp-warden-gateway@sha256:") {
		t.Fatalf("manifest does not pin the released images:\n%s", manifest)
	}
	if err := run("", key, "linux/"+runtime.GOARCH, "", "", "", out, time.Minute); err == nil || !strings.Contains(err.Error(), "REGISTRY") {
		t.Fatalf("no registry: %v", err)
	}
}
