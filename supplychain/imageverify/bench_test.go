package imageverify_test

import (
	"context"
	"crypto"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/mcp-warden/mcp-warden/supplychain/imageverify"
	"github.com/mcp-warden/mcp-warden/supplychain/imageverify/imagetest"
)

// BenchmarkVerify measures admission-time verification of a signed and attested image in a loopback
// registry, per signature format (legacy .sig/.att tags; Sigstore bundles as OCI 1.1 referrers; bundles
// under the fallback tag): cold (a new verifier, so a full cosign verification every time) and warm
// (cached decision). It reports p50/p99 latency and registry requests per verification.
func BenchmarkVerify(b *testing.B) {
	for _, format := range []string{"legacy", "bundle-referrers", "bundle-fallback"} {
		b.Run(format, func(b *testing.B) {
			img, pub, _, host, closeReg := benchImage(b, format)
			defer closeReg()
			policy := []imageverify.Policy{{
				Name: "prod", Identity: "uid/1", Registries: []string{host},
				Authorities:  []imageverify.Authority{{Name: "release-key", PublicKey: pub}},
				Attestations: []imageverify.AttestationRequirement{{Name: "provenance", PredicateType: slsa}},
			}}
			b.Run("cold", func(b *testing.B) { benchVerify(b, img, policy, true) })
			b.Run("warm", func(b *testing.B) { benchVerify(b, img, policy, false) })
		})
	}
}

// benchImage pushes a signed and attested image in the format.
func benchImage(b *testing.B, format string) (string, crypto.PublicKey, []byte, string, func()) {
	reg := imagetest.StartRegistry()
	if format == "bundle-referrers" {
		reg.Close()
		reg = imagetest.StartRegistryWithReferrers()
	}
	if format == "legacy" {
		key, err := imagetest.NewKey()
		if err != nil {
			b.Fatal(err)
		}
		img, err := reg.PushSigned("acme/files", key, slsa)
		if err != nil {
			b.Fatal(err)
		}
		return img.String(), key.Public(), key.PublicPEM(), reg.Host, reg.Close
	}
	key, err := imagetest.NewBundleKey()
	if err != nil {
		b.Fatal(err)
	}
	img, err := reg.PushRandom("acme/files")
	if err == nil {
		err = key.Sign(img)
	}
	if err == nil {
		err = key.Attest(img, slsa, map[string]any{})
	}
	if err != nil {
		b.Fatal(err)
	}
	return img.String(), key.Public(), key.PublicPEM(), reg.Host, reg.Close
}

func benchVerify(b *testing.B, img string, policy []imageverify.Policy, fresh bool) {
	ctx := context.Background()
	v := imageverify.New(imageverify.Options{})
	var durations []time.Duration
	var requests int64
	for b.Loop() {
		if fresh {
			v = imageverify.New(imageverify.Options{})
		}
		before := v.RegistryRequests()
		start := time.Now()
		if _, err := v.Verify(ctx, img, policy); err != nil {
			b.Fatal(err)
		}
		durations = append(durations, time.Since(start))
		requests += v.RegistryRequests() - before
	}
	slices.Sort(durations)
	pct := func(p float64) float64 { return float64(durations[int(p*float64(len(durations)-1))].Microseconds()) }
	b.ReportMetric(pct(0.50), "p50-µs")
	b.ReportMetric(pct(0.99), "p99-µs")
	b.ReportMetric(float64(requests)/float64(len(durations)), "registry-requests/op")
}

// BenchmarkCosignCLI is the baseline: the cosign CLI (COSIGN, installed by `make cosign` at the same
// cosign version) verifying the same signature and attestation of the same image, one process pair per
// admission, as an admission controller shelling out to cosign would.
func BenchmarkCosignCLI(b *testing.B) {
	cli := os.Getenv("COSIGN")
	if cli == "" {
		b.Skip("COSIGN is not set; run `make bench`")
	}
	reg := imagetest.StartRegistry()
	defer reg.Close()
	key, err := imagetest.NewKey()
	if err != nil {
		b.Fatal(err)
	}
	img, err := reg.PushSigned("acme/files", key, slsa)
	if err != nil {
		b.Fatal(err)
	}
	pub := filepath.Join(b.TempDir(), "key.pub")
	if err := os.WriteFile(pub, key.PublicPEM(), 0o600); err != nil {
		b.Fatal(err)
	}
	run := func(args ...string) {
		cmd := exec.Command(cli, args...)
		cmd.Env = append(os.Environ(), "COSIGN_EXPERIMENTAL=0", "TUF_ROOT="+b.TempDir())
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("cosign %v: %v\n%s", args, err, out)
		}
	}
	var durations []time.Duration
	for b.Loop() {
		start := time.Now()
		run("verify", "--key", pub, "--insecure-ignore-tlog=true", "--allow-insecure-registry", "--offline=true", img.String())
		run("verify-attestation", "--key", pub, "--type", slsa, "--insecure-ignore-tlog=true", "--allow-insecure-registry", "--offline=true", img.String())
		durations = append(durations, time.Since(start))
	}
	slices.Sort(durations)
	b.ReportMetric(float64(durations[len(durations)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(durations[int(0.99*float64(len(durations)-1))].Microseconds()), "p99-µs")
}

// BenchmarkCosignV3CLI is the baseline for the bundle format: the cosign v3 CLI (COSIGN3, `make
// cosign3`) verifying the signature and attestation bundles of the same kind of image, offline, one
// process pair per admission.
func BenchmarkCosignV3CLI(b *testing.B) {
	cli := os.Getenv("COSIGN3")
	if cli == "" {
		b.Skip("COSIGN3 is not set; run `make bench`")
	}
	img, _, pubPEM, _, closeReg := benchImage(b, "bundle-referrers")
	defer closeReg()
	pub := filepath.Join(b.TempDir(), "key.pub")
	if err := os.WriteFile(pub, pubPEM, 0o600); err != nil {
		b.Fatal(err)
	}
	tuf := b.TempDir()
	run := func(args ...string) {
		cmd := exec.Command(cli, args...)
		cmd.Env = append(os.Environ(), "TUF_ROOT="+tuf)
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("cosign %v: %v\n%s", args, err, out)
		}
	}
	var durations []time.Duration
	for b.Loop() {
		start := time.Now()
		run("verify", "--key", pub, "--insecure-ignore-tlog=true", "--allow-insecure-registry", "--offline=true", "--use-signed-timestamps=false", img)
		run("verify-attestation", "--key", pub, "--type", slsa, "--insecure-ignore-tlog=true", "--allow-insecure-registry", "--offline=true", "--use-signed-timestamps=false", img)
		durations = append(durations, time.Since(start))
	}
	slices.Sort(durations)
	b.ReportMetric(float64(durations[len(durations)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(durations[int(0.99*float64(len(durations)-1))].Microseconds()), "p99-µs")
}
