package main

import (
	"context"
	"crypto/x509"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/sigstore/cosign/v2/pkg/cosign"

	"github.com/mcp-warden/mcp-warden/internal/localcluster"
	"github.com/mcp-warden/mcp-warden/supplychain/imageverify"
	"github.com/mcp-warden/mcp-warden/supplychain/imageverify/imagetest"
	"github.com/mcp-warden/mcp-warden/supplychain/release"
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
	o := options{registry: reg.Host + "/mcp", keyPath: key, platforms: "linux/" + runtime.GOARCH, version: "v1.2.3", source: "https://example.com/src", out: out, timeout: 10 * time.Minute}
	if _, err := run(o); err == nil || !strings.Contains(err.Error(), "COSIGN_PASSWORD") {
		t.Fatalf("a wrong key password: %v", err)
	}
	t.Setenv("COSIGN_PASSWORD", "pw")
	if _, err := run(o); err != nil {
		t.Fatal(err)
	}
	manifest, err := os.ReadFile(filepath.Join(out, "mcp-warden.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(manifest), reg.Host+"/mcp/mcp-warden-manager@sha256:") || !strings.Contains(string(manifest), "--gateway-image="+reg.Host+"/mcp/mcp-warden-gateway@sha256:") {
		t.Fatalf("manifest does not pin the released images:\n%s", manifest)
	}
	if _, err := run(options{keyPath: key, platforms: "linux/" + runtime.GOARCH, out: out, timeout: time.Minute}); err == nil || !strings.Contains(err.Error(), "REGISTRY") {
		t.Fatalf("no registry: %v", err)
	}
}

// TestKeylessReleaseCommand signs a release without a key: the command trades a CI job's OIDC identity
// token for a Fulcio certificate (a Fulcio-API CA on loopback that checks the token and the proof of
// possession), and the signatures and both attestations carry it. The project's verifier accepts the
// images for that identity and refuses them for another; the cosign CLI verifies them too.
func TestKeylessReleaseCommand(t *testing.T) {
	root, err := localcluster.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	ca, err := imagetest.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	fulcio, err := imagetest.StartFulcio(ca)
	if err != nil {
		t.Fatal(err)
	}
	defer fulcio.Close()
	const email, issuer = "release@acme.example", "https://token.actions.example"
	token, err := fulcio.Token(email, issuer, 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	reg := imagetest.StartRegistry()
	defer reg.Close()
	t.Chdir(root)
	t.Setenv("COSIGN_PRIVATE_KEY", "")
	dir := t.TempDir()
	o := options{registry: reg.Host + "/mcp", platforms: "linux/" + runtime.GOARCH, version: "v1.2.3", source: "https://example.com/src",
		out: filepath.Join(dir, "release"), timeout: 10 * time.Minute, fulcioURL: fulcio.URL}

	expired, err := fulcio.Token(email, issuer, -time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, token, key, want string
	}{
		{"expired token", expired, "", "401"},
		{"not a JWT", "not-a-token", "", "identity token"},
		{"a key as well", token, "cosign.key", "keep one"},
	} {
		bad := o
		bad.identityToken, bad.keyPath = c.token, c.key
		if _, err := run(bad); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error containing %q", c.name, err, c.want)
		}
	}

	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	o.identityToken = "@" + tokenFile
	before := fulcio.Requests.Load()
	res, err := run(o)
	if err != nil {
		t.Fatal(err)
	}
	if n := fulcio.Requests.Load() - before; n != 1 {
		t.Errorf("%d certificate requests for one release, want 1 (one ephemeral key signs everything)", n)
	}

	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.RootPEM)
	policy := func(subject string) []imageverify.Policy {
		return []imageverify.Policy{{Name: "release", Identity: subject,
			Authorities:  []imageverify.Authority{{Name: "ci", Keyless: &imageverify.Keyless{Roots: roots, Identity: cosign.Identity{Issuer: issuer, Subject: subject}}}},
			Attestations: []imageverify.AttestationRequirement{{Name: "provenance", PredicateType: release.PredicateSLSAProvenance}, {Name: "sbom", PredicateType: release.PredicateCycloneDX}}}}
	}
	v := imageverify.New(imageverify.Options{})
	for n, ref := range res.Images {
		ps := policy(email)
		ps[0].Registries = []string{ref.Context().RegistryStr()} // a loopback registry must be named
		r, err := v.Verify(context.Background(), ref.String(), ps)
		if err != nil {
			t.Fatalf("%s: %v", n, err)
		}
		if len(r.Attestations) != 2 || len(r.Signers) != 1 || !strings.Contains(r.Signers[0], email+" via "+issuer) {
			t.Errorf("%s: %+v", n, r)
		}
		intruder := policy("intruder@acme.example")
		intruder[0].Registries = ps[0].Registries
		if _, err := v.Verify(context.Background(), ref.String(), intruder); !strings.Contains(fmt.Sprint(err), "no signature that verifies") {
			t.Errorf("%s: for an identity that did not sign it: %v", n, err)
		}
	}

	cli := os.Getenv("COSIGN")
	if cli == "" {
		t.Log("COSIGN is not set; skipping the cosign CLI check (`make test` sets it)")
		return
	}
	rootFile := filepath.Join(dir, "fulcio-root.pem")
	if err := os.WriteFile(rootFile, ca.RootPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	for n, ref := range res.Images {
		for _, args := range [][]string{{"verify"}, {"verify-attestation", "--type", "slsaprovenance1"}, {"verify-attestation", "--type", "cyclonedx"}} {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			cmd := exec.CommandContext(ctx, cli, append(args, "--certificate-identity", email, "--certificate-oidc-issuer", issuer,
				"--insecure-ignore-tlog=true", "--insecure-ignore-sct=true", "--allow-insecure-registry", "--allow-http-registry", ref.String())...)
			cmd.Env = append(os.Environ(), "SIGSTORE_ROOT_FILE="+rootFile, "TUF_ROOT="+filepath.Join(dir, "tuf"))
			out, err := cmd.CombinedOutput()
			cancel()
			if err != nil {
				t.Errorf("%s: cosign %s: %v\n%s", n, args[0], err, out)
			}
		}
	}
}
