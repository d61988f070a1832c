package imageverify_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/sigstore/sigstore/pkg/cryptoutils"

	"github.com/mcp-warden/mcp-warden/supplychain/imageverify"
	"github.com/mcp-warden/mcp-warden/supplychain/imageverify/imagetest"
)

// TestCosignV3CLI: an image signed and attested by the cosign v3 CLI (COSIGN3, `make cosign3`) in its
// default format, offline, as a publisher following the README would, is admitted; on registries with
// and without the referrers API.
func TestCosignV3CLI(t *testing.T) {
	cli := os.Getenv("COSIGN3")
	if cli == "" {
		t.Skip("COSIGN3 is not set; run `make test` (or `make cosign3` and COSIGN3=bin/cosign3)")
	}
	dir := t.TempDir()
	cosign := func(args ...string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, cli, args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "COSIGN_PASSWORD=", "TUF_ROOT="+filepath.Join(dir, "tuf"), "COSIGN_YES=true")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("cosign %v: %v\n%s", args, err, out)
		}
	}
	cosign("generate-key-pair")
	pemKey, err := os.ReadFile(filepath.Join(dir, "cosign.pub"))
	must(t, err)
	pub, err := cryptoutils.UnmarshalPEMToPublicKey(pemKey)
	must(t, err)
	must(t, os.WriteFile(filepath.Join(dir, "p.json"), []byte(`{"buildDefinition":{"buildType":"https://example.com/ci"}}`), 0o600))
	offline := []string{"--key", "cosign.key", "--tlog-upload=false", "--use-signing-config=false", "--allow-insecure-registry", "-y"}

	for _, tc := range []struct {
		name  string
		start func() *imagetest.Registry
	}{{"referrers API", imagetest.StartRegistryWithReferrers}, {"fallback tag", imagetest.StartRegistry}} {
		t.Run(tc.name, func(t *testing.T) {
			reg := tc.start()
			t.Cleanup(reg.Close)
			img, err := reg.PushRandom("acme/files")
			must(t, err)
			cosign(append([]string{"sign"}, append(offline, img.String())...)...)
			cosign(append([]string{"attest", "--type", "slsaprovenance1", "--predicate", "p.json"}, append(offline, img.String())...)...)
			v := imageverify.New(imageverify.Options{})
			r, err := v.Verify(context.Background(), img.String(), []imageverify.Policy{{Name: "prod", Identity: "v3", Registries: []string{reg.Host},
				Authorities:  []imageverify.Authority{{Name: "release-key", PublicKey: pub}},
				Attestations: []imageverify.AttestationRequirement{{Name: "provenance", PredicateType: slsa}}}})
			if err != nil {
				t.Fatalf("an image signed and attested with cosign v3: %v", err)
			}
			if !slices.Contains(r.Attestations, slsa) || len(r.Signers) != 1 {
				t.Fatalf("result = %+v", r)
			}
			t.Logf("%d registry requests", v.RegistryRequests())
		})
	}
}
