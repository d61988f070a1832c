package release

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/sigstore/sigstore/pkg/signature"
	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// Config is one release run.
type Config struct {
	Options
	// Registry is where the images go, e.g. ghcr.io/acme or 127.0.0.1:5000/mcp (loopback registries are
	// spoken to over plain HTTP).
	Registry string
	// Signer signs the images and their attestations (nil: left unsigned).
	Signer signature.Signer
	// OutDir receives the release manifests (default dist/release under Root).
	OutDir string
	// Remote are extra registry options (e.g. credentials).
	Remote []remote.Option
}

// Result is what a release pushed, by component name.
type Result struct {
	Images map[string]name.Digest
	// SBOMs are the CycloneDX documents, by component name.
	SBOMs map[string][]byte
	// Manifests are the files written: the rendered kustomize overlay and the chart values.
	Manifests []string
}

// Run builds every component, pushes it by digest, signs it and attaches the SLSA provenance and the
// CycloneDX SBOM, then writes release manifests that reference the images by digest.
func Run(ctx context.Context, c Config) (*Result, error) {
	c.defaults()
	if c.OutDir == "" {
		c.OutDir = filepath.Join(c.Root, "dist", "release")
	}
	res := &Result{Images: map[string]name.Digest{}, SBOMs: map[string][]byte{}}
	for _, comp := range Components {
		b, err := BuildComponent(ctx, comp, c.Options)
		if err != nil {
			return nil, err
		}
		ref, err := Push(ctx, c.Registry, b, c.Version, c.Remote...)
		if err != nil {
			return nil, err
		}
		c.Log("pushed %s", ref)
		sbom, err := SBOM(comp, b.Binaries[c.Platforms[0]], c.Options)
		if err != nil {
			return nil, err
		}
		res.Images[comp.Name], res.SBOMs[comp.Name] = ref, sbom
		if c.Signer == nil {
			continue
		}
		if err := SignAndAttest(ctx, c.Signer, ref, b, sbom, c.Options, c.Remote...); err != nil {
			return nil, err
		}
		c.Log("signed %s; attested %s and %s", ref, PredicateSLSAProvenance, PredicateCycloneDX)
	}
	files, err := WriteManifests(c.Root, c.OutDir, res.Images["mcp-warden-manager"], res.Images["mcp-warden-gateway"])
	if err != nil {
		return nil, err
	}
	res.Manifests = files
	return res, nil
}

// Push writes the image index to registry/<component> (tagged with version, when given, for people; the
// release refers to it by digest) and returns its digest reference.
func Push(ctx context.Context, registry string, b *Build, version string, ro ...remote.Option) (name.Digest, error) {
	tag := version
	if tag == "" {
		tag = "latest"
	}
	t, err := name.NewTag(strings.TrimSuffix(registry, "/")+"/"+b.Component.Name+":"+tag, nameOptions(registry)...)
	if err != nil {
		return name.Digest{}, fmt.Errorf("registry %q: %w", registry, err)
	}
	if err := remote.WriteIndex(t, b.Index, append([]remote.Option{remote.WithContext(ctx)}, ro...)...); err != nil {
		return name.Digest{}, fmt.Errorf("push %s: %w", t, err)
	}
	d, err := b.Index.Digest()
	if err != nil {
		return name.Digest{}, err
	}
	return t.Context().Digest(d.String()), nil
}

// nameOptions lets loopback registries be spoken to over plain HTTP.
func nameOptions(registry string) []name.Option {
	host, _, _ := strings.Cut(registry, "/")
	if strings.HasPrefix(host, "127.0.0.1") || strings.HasPrefix(host, "localhost") || strings.HasPrefix(host, "[::1]") {
		return []name.Option{name.Insecure}
	}
	return nil
}

// SignAndAttest signs the index digest and attaches the provenance and SBOM attestations to it.
func SignAndAttest(ctx context.Context, signer signature.Signer, ref name.Digest, b *Build, sbom []byte, o Options, ro ...remote.Option) error {
	if err := signImage(ctx, signer, ref, ro); err != nil {
		return err
	}
	prov, err := Provenance(b, o)
	if err != nil {
		return err
	}
	if err := attest(ctx, signer, ref, PredicateSLSAProvenance, prov, ro); err != nil {
		return err
	}
	return attest(ctx, signer, ref, PredicateCycloneDX, sbom, ro)
}

// WriteManifests renders config/default with the released images and writes it, and the chart values
// that select them, into outDir. Both refer to the images by digest only.
func WriteManifests(root, outDir string, manager, gateway name.Digest) ([]string, error) {
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return nil, err
	}
	m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), filepath.Join(root, "config", "default"))
	if err != nil {
		return nil, fmt.Errorf("kustomize build config/default: %w", err)
	}
	var docs []string
	for _, r := range m.Resources() {
		if r.GetKind() == "Deployment" && r.GetName() == "mcp-warden-controller-manager" {
			obj, err := r.Map()
			if err != nil {
				return nil, err
			}
			out, err := pinnedManagerYAML(obj, manager, gateway)
			if err != nil {
				return nil, err
			}
			docs = append(docs, out)
			continue
		}
		out, err := r.AsYAML()
		if err != nil {
			return nil, err
		}
		docs = append(docs, string(out))
	}
	manifest := filepath.Join(outDir, "mcp-warden.yaml")
	if err := os.WriteFile(manifest, []byte(strings.Join(docs, "---\n")), 0o644); err != nil {
		return nil, err
	}
	valuesPath, err := writeValues(outDir, manager, gateway)
	if err != nil {
		return nil, err
	}
	return []string{manifest, valuesPath}, nil
}

// pinnedManagerYAML returns the manager Deployment obj as YAML with the released images: the manager
// container runs manager and passes gateway as its only --gateway-image.
func pinnedManagerYAML(obj map[string]any, manager, gateway name.Digest) (string, error) {
	d := &appsv1.Deployment{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj, d); err != nil {
		return "", err
	}
	for i := range d.Spec.Template.Spec.Containers {
		ct := &d.Spec.Template.Spec.Containers[i]
		if ct.Name != "manager" {
			continue
		}
		ct.Image = manager.String()
		var args []string
		for _, a := range ct.Args {
			if !strings.HasPrefix(a, "--gateway-image=") {
				args = append(args, a)
			}
		}
		ct.Args = append(args, "--gateway-image="+gateway.String())
	}
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(d)
	if err != nil {
		return "", err
	}
	delete(u, "status")
	if md, ok := u["metadata"].(map[string]any); ok {
		delete(md, "creationTimestamp")
	}
	out, err := yaml.Marshal(u)
	if err != nil {
		return "", err
	}
	return string(out), nil
}

// writeValues writes the chart values that select the released images into outDir and returns the
// file's path.
func writeValues(outDir string, manager, gateway name.Digest) (string, error) {
	values := fmt.Sprintf(`# Helm values for the released images, pinned by digest:
#   helm install mcp-warden charts/mcp-warden -n mcp-warden-system --create-namespace -f %s
image:
  repository: %s
  digest: %s
gatewayImage:
  repository: %s
  digest: %s
`, "values.yaml", manager.Context().Name(), manager.DigestStr(), gateway.Context().Name(), gateway.DigestStr())
	valuesPath := filepath.Join(outDir, "values.yaml")
	if err := os.WriteFile(valuesPath, []byte(values), 0o644); err != nil {
		return "", err
	}
	return valuesPath, nil
}
