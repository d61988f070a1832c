package release_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/sigstore/cosign/v2/pkg/cosign"
	"github.com/sigstore/sigstore/pkg/cryptoutils"

	"github.com/mcp-warden/mcp-warden/internal/localcluster"
	"github.com/mcp-warden/mcp-warden/supplychain/imagesign"
	"github.com/mcp-warden/mcp-warden/supplychain/imageverify"
	"github.com/mcp-warden/mcp-warden/supplychain/imageverify/imagetest"
	"github.com/mcp-warden/mcp-warden/supplychain/release"
)

// released is one release run against a loopback registry, shared by the tests of this package.
type released struct {
	reg     *imagetest.Registry
	res     *release.Result
	opts    release.Options
	pubPEM  []byte
	keyPath string
	dir     string
}

var rel *released

// doRelease builds and releases once (host platform only, to keep the test short) with a cosign key
// written in cosign's encrypted format, as `cosign generate-key-pair` does.
func doRelease(t *testing.T) *released {
	t.Helper()
	if rel != nil {
		return rel
	}
	root, err := localcluster.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "mcp-warden-release-")
	if err != nil {
		t.Fatal(err)
	}
	keys, err := cosign.GenerateKeyPair(func(bool) ([]byte, error) { return []byte("release-password"), nil })
	if err != nil {
		t.Fatal(err)
	}
	keyPath := filepath.Join(dir, "cosign.key")
	if err := os.WriteFile(keyPath, keys.PrivateBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "cosign.pub"), keys.PublicBytes, 0o644); err != nil {
		t.Fatal(err)
	}
	signer, err := imagesign.LoadKey(keyPath, []byte("release-password"))
	if err != nil {
		t.Fatal(err)
	}
	reg := imagetest.StartRegistry()
	opts := release.Options{Root: root, Platforms: []string{"linux/" + runtime.GOARCH}, Version: "v0.0.0-test", Revision: "0123456789abcdef0123456789abcdef01234567",
		Source: "https://github.com/mcp-warden/mcp-warden", Log: t.Logf}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	start := time.Now()
	res, err := release.Run(ctx, release.Config{Options: opts, Registry: reg.Host + "/mcp", Signer: signer, OutDir: filepath.Join(dir, "out")})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("release (build, push, sign, attest, manifests) took %s", time.Since(start).Round(100*time.Millisecond))
	rel = &released{reg: reg, res: res, opts: opts, pubPEM: keys.PublicBytes, keyPath: keyPath, dir: dir}
	return rel
}

func TestMain(m *testing.M) {
	code := m.Run()
	if rel != nil {
		rel.reg.Close()
		os.RemoveAll(rel.dir)
	}
	os.Exit(code)
}

// TestBuildsAreReproducible: building the same source again gives the same image digests.
func TestBuildsAreReproducible(t *testing.T) {
	r := doRelease(t)
	for _, c := range release.Components {
		b, err := release.BuildComponent(context.Background(), c, r.opts)
		if err != nil {
			t.Fatal(err)
		}
		d, err := b.Index.Digest()
		if err != nil {
			t.Fatal(err)
		}
		if got, want := d.String(), r.res.Images[c.Name].DigestStr(); got != want {
			t.Errorf("%s: rebuilt digest %s, released %s", c.Name, got, want)
		}
	}
}

var imageLine = regexp.MustCompile(`(?m)(?:image: |--gateway-image=|repository: )(\S+)`)

// TestManifestsPinDigests: the release manifests name the pushed images by digest and carry no tags.
func TestManifestsPinDigests(t *testing.T) {
	r := doRelease(t)
	manifest, err := os.ReadFile(r.res.Manifests[0])
	if err != nil {
		t.Fatal(err)
	}
	refs := imageLine.FindAllStringSubmatch(string(manifest), -1)
	if len(refs) != 2 {
		t.Fatalf("want the manager image and --gateway-image in %s, found %v", r.res.Manifests[0], refs)
	}
	for _, m := range refs {
		d, err := name.NewDigest(m[1], name.StrictValidation)
		if err != nil {
			t.Errorf("%q is not a digest reference: %v", m[1], err)
			continue
		}
		if strings.Contains(strings.TrimPrefix(d.Context().RepositoryStr(), ""), ":") || strings.Contains(m[1], ":latest") || strings.Contains(m[1], ":v0.0.0") {
			t.Errorf("%q carries a tag", m[1])
		}
	}
	if !strings.Contains(string(manifest), "image: "+r.res.Images["mcp-warden-manager"].String()) ||
		!strings.Contains(string(manifest), "--gateway-image="+r.res.Images["mcp-warden-gateway"].String()) {
		t.Errorf("manifest does not refer to the pushed digests %v", r.res.Images)
	}
	values, err := os.ReadFile(r.res.Manifests[1])
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"mcp-warden-manager", "mcp-warden-gateway"} {
		if !strings.Contains(string(values), "digest: "+r.res.Images[n].DigestStr()) {
			t.Errorf("values.yaml lacks the digest of %s:\n%s", n, values)
		}
	}
	if strings.Contains(string(values), "tag:") {
		t.Errorf("values.yaml sets a tag:\n%s", values)
	}
}

// TestProjectVerifierAcceptsReleasedImages: the admission verifier accepts the released images with the
// release key and both attestations, and refuses a rebuilt image nobody signed.
func TestProjectVerifierAcceptsReleasedImages(t *testing.T) {
	r := doRelease(t)
	pub, err := cryptoutils.UnmarshalPEMToPublicKey(r.pubPEM)
	if err != nil {
		t.Fatal(err)
	}
	policy := imageverify.Policy{Name: "release", Identity: "release", Authorities: []imageverify.Authority{{Name: "release-key", PublicKey: pub}},
		Attestations: []imageverify.AttestationRequirement{{Name: "provenance", PredicateType: release.PredicateSLSAProvenance}, {Name: "sbom", PredicateType: release.PredicateCycloneDX}}}
	v := imageverify.New(imageverify.Options{})
	for n, ref := range r.res.Images {
		policy.Registries = []string{ref.Context().RegistryStr()} // a loopback registry must be named
		res, err := v.Verify(context.Background(), ref.String(), []imageverify.Policy{policy})
		if err != nil {
			t.Fatalf("%s: %v", n, err)
		}
		if len(res.Attestations) != 2 || len(res.Signers) != 1 {
			t.Errorf("%s: %+v", n, res)
		}
	}
	unsigned := rebuildUnsigned(t, r)
	if _, err := v.Verify(context.Background(), unsigned.String(), []imageverify.Policy{policy}); err == nil || !strings.Contains(err.Error(), "no signature") {
		t.Fatalf("unsigned rebuild: %v", err)
	}
}

// rebuildUnsigned builds the gateway again with another version label and pushes it without signing.
func rebuildUnsigned(t *testing.T, r *released) name.Digest {
	t.Helper()
	o := r.opts
	o.Version = "v0.0.0-rebuilt"
	b, err := release.BuildComponent(context.Background(), release.Components[1], o)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := release.Push(context.Background(), r.reg.Host+"/mcp", b, o.Version)
	if err != nil {
		t.Fatal(err)
	}
	return ref
}

// TestCosignCLIVerifiesReleasedImages runs the cosign CLI (built from the module proxy by `make test`,
// path in $COSIGN) against the released images: signature, provenance and SBOM attestations.
func TestCosignCLIVerifiesReleasedImages(t *testing.T) {
	cli := os.Getenv("COSIGN")
	if cli == "" {
		t.Skip("COSIGN is not set; `make test` builds the pinned cosign CLI into bin/ and sets it")
	}
	r := doRelease(t)
	pub := filepath.Join(r.dir, "cosign.pub")
	for n, ref := range r.res.Images {
		for _, args := range [][]string{
			{"verify", "--key", pub},
			{"verify-attestation", "--key", pub, "--type", "slsaprovenance1"},
			{"verify-attestation", "--key", pub, "--type", "cyclonedx"},
		} {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			cmd := exec.CommandContext(ctx, cli, append(args, "--allow-insecure-registry", "--allow-http-registry", "--insecure-ignore-tlog=true", ref.String())...)
			cmd.Env = append(os.Environ(), "COSIGN_EXPERIMENTAL=0", "TUF_ROOT="+filepath.Join(r.dir, "tuf"))
			out, err := cmd.CombinedOutput()
			cancel()
			if err != nil {
				t.Errorf("%s: cosign %s: %v\n%s", n, args[0], err, out)
			}
		}
	}
}

// TestSBOMListsTheBinaryModules: the SBOM is CycloneDX and lists the modules linked into the binary at
// the versions this module builds with.
func TestSBOMListsTheBinaryModules(t *testing.T) {
	r := doRelease(t)
	var bom struct {
		BOMFormat   string `json:"bomFormat"`
		SpecVersion string `json:"specVersion"`
		Metadata    struct {
			Component struct{ Name string } `json:"component"`
		} `json:"metadata"`
		Components []struct {
			Name, Version, Purl string
		} `json:"components"`
	}
	if err := json.Unmarshal(r.res.SBOMs["mcp-warden-manager"], &bom); err != nil {
		t.Fatal(err)
	}
	if bom.BOMFormat != "CycloneDX" || bom.SpecVersion != "1.6" || bom.Metadata.Component.Name != "mcp-warden-manager" {
		t.Fatalf("bom header: %+v", bom)
	}
	have := map[string]string{}
	for _, c := range bom.Components {
		have[c.Name] = c.Version
		if c.Purl != fmt.Sprintf("pkg:golang/%s@%s", c.Name, c.Version) {
			t.Errorf("purl %q for %s@%s", c.Purl, c.Name, c.Version)
		}
	}
	for _, m := range []string{"sigs.k8s.io/controller-runtime", "github.com/google/go-containerregistry", "github.com/sigstore/cosign/v2", "k8s.io/client-go"} {
		// The version this module builds with, as the go command resolves it.
		out, err := exec.Command("go", "list", "-m", "-f", "{{.Version}}", m).Output()
		if err != nil {
			t.Fatalf("go list -m %s: %v", m, err)
		}
		if want := strings.TrimSpace(string(out)); have[m] == "" || have[m] != want {
			t.Errorf("SBOM lists %s at %q, the build uses %q", m, have[m], want)
		}
	}
	if _, ok := have["github.com/mattfenwick/cyclonus"]; ok {
		t.Error("the SBOM lists a test-only module: it must come from the binary, not go.mod")
	}
	gw := map[string]bool{}
	var gwBOM struct{ Components []struct{ Name string } }
	_ = json.Unmarshal(r.res.SBOMs["mcp-warden-gateway"], &gwBOM)
	for _, c := range gwBOM.Components {
		gw[c.Name] = true
	}
	if !gw["github.com/modelcontextprotocol/go-sdk"] || gw["sigs.k8s.io/controller-runtime"] {
		t.Errorf("the gateway's SBOM should list the MCP SDK and not controller-runtime: %v", gw)
	}
}
