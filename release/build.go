// Package release builds the operator's own images without a container daemon and ships them the way
// the operator demands of MCP servers: static Go binaries on a minimal non-root base the build writes
// itself, reproducible (the same source gives the same digest), pushed and referenced by digest, signed,
// with an SLSA provenance and a CycloneDX SBOM attestation.
package release

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/buildinfo"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// UID is the non-root user (and group) the images run as.
const UID = 65532

// Component is one image the release builds from a Go main package.
type Component struct {
	// Name is the image's repository name under the registry, e.g. "mcp-warden-manager".
	Name string
	// Package is the Go main package, e.g. "./cmd/manager".
	Package string
	// Binary is the path of the executable in the image, e.g. "/manager".
	Binary string
}

// Components are the images a release ships.
var Components = []Component{
	{Name: "mcp-warden-manager", Package: "./cmd/manager", Binary: "/manager"},
	{Name: "mcp-warden-gateway", Package: "./cmd/gateway", Binary: "/gateway"},
}

// Build is one built image: per platform, the image and the binary it carries.
type Build struct {
	Component Component
	// Index is the multi-platform image index (what is pushed and signed).
	Index v1.ImageIndex
	// Binaries are the built executables by platform ("linux/amd64").
	Binaries map[string][]byte
}

// Options say what to build and how to label it.
type Options struct {
	// Root is the module root (the directory of go.mod).
	Root string
	// Platforms are os/arch pairs (default linux/amd64 and linux/arm64).
	Platforms []string
	// Version and Revision label the images (org.opencontainers.image.version and .revision).
	Version, Revision string
	// Source is the source repository URL (org.opencontainers.image.source).
	Source string
	// Epoch is the timestamp every file and the image config carry (default: Unix 0), e.g. from
	// SOURCE_DATE_EPOCH.
	Epoch time.Time
	// Log receives progress lines (nil: none).
	Log func(format string, args ...any)
}

func (o *Options) defaults() {
	if len(o.Platforms) == 0 {
		o.Platforms = []string{"linux/amd64", "linux/arm64"}
	}
	if o.Epoch.IsZero() {
		o.Epoch = time.Unix(0, 0).UTC()
	}
	if o.Log == nil {
		o.Log = func(string, ...any) {}
	}
}

// BuildBinary compiles a static, reproducible executable: no cgo, no paths of the build machine, no
// build ID, no VCS stamp.
func BuildBinary(ctx context.Context, root, pkg, platform string) ([]byte, error) {
	goos, goarch, ok := strings.Cut(platform, "/")
	if !ok {
		return nil, fmt.Errorf("platform %q: want os/arch, e.g. linux/amd64", platform)
	}
	dir, err := os.MkdirTemp("", "mcp-warden-build-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	out := filepath.Join(dir, "bin")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w -buildid=", "-o", out, pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+goos, "GOARCH="+goarch, "GOFLAGS=-mod=readonly")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("go build %s for %s: %w\n%s", pkg, platform, err, stderr.String())
	}
	return os.ReadFile(out)
}

// BuildComponent builds c for every platform into an image index.
func BuildComponent(ctx context.Context, c Component, o Options) (*Build, error) {
	o.defaults()
	b := &Build{Component: c, Binaries: map[string][]byte{}}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, platform := range o.Platforms {
		start := time.Now()
		bin, err := BuildBinary(ctx, o.Root, c.Package, platform)
		if err != nil {
			return nil, err
		}
		img, err := Image(c, bin, platform, o)
		if err != nil {
			return nil, err
		}
		d, _ := img.Digest()
		o.Log("built %s for %s (%d KiB) in %s: %s", c.Name, platform, len(bin)/1024, time.Since(start).Round(100*time.Millisecond), d)
		b.Binaries[platform] = bin
		goos, goarch, _ := strings.Cut(platform, "/")
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: goos, Architecture: goarch}}})
	}
	b.Index = idx
	return b, nil
}

// Image packs a binary into an OCI image: a base layer with /etc/passwd and /etc/group naming the
// non-root user and a sticky /tmp, and a layer with the binary; every timestamp is the epoch, so the
// digest depends on the binary alone.
func Image(c Component, binary []byte, platform string, o Options) (v1.Image, error) {
	o.defaults()
	goos, goarch, _ := strings.Cut(platform, "/")
	base, err := layer(o.Epoch, []file{
		{name: "etc/", mode: 0o755, dir: true},
		{name: "etc/passwd", mode: 0o644, data: []byte(fmt.Sprintf("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:%d:%d:nonroot:/home/nonroot:/sbin/nologin\n", UID, UID))},
		{name: "etc/group", mode: 0o644, data: []byte(fmt.Sprintf("root:x:0:\nnonroot:x:%d:\n", UID))},
		{name: "home/", mode: 0o755, dir: true},
		{name: "home/nonroot/", mode: 0o700, dir: true, uid: UID},
		{name: "tmp/", mode: 0o1777, dir: true},
	})
	if err != nil {
		return nil, err
	}
	app, err := layer(o.Epoch, []file{{name: strings.TrimPrefix(c.Binary, "/"), mode: 0o555, data: binary}})
	if err != nil {
		return nil, err
	}
	img, err := mutate.AppendLayers(mutate.MediaType(empty.Image, types.OCIManifestSchema1), base, app)
	if err != nil {
		return nil, err
	}
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = goos, goarch
	cf.Created = v1.Time{Time: o.Epoch}
	cf.Config.User = fmt.Sprintf("%d:%d", UID, UID)
	cf.Config.Entrypoint = []string{c.Binary}
	cf.Config.WorkingDir = "/"
	cf.Config.Env = []string{"PATH=/", "HOME=/home/nonroot"}
	cf.Config.Labels = map[string]string{
		"org.opencontainers.image.title":    c.Name,
		"org.opencontainers.image.source":   o.Source,
		"org.opencontainers.image.revision": o.Revision,
		"org.opencontainers.image.version":  o.Version,
	}
	cf.History = nil
	return mutate.ConfigFile(img, cf)
}

type file struct {
	name string
	mode int64
	data []byte
	dir  bool
	uid  int
}

// layer writes a tar layer with fixed owners and timestamps.
func layer(epoch time.Time, files []file) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		h := &tar.Header{Name: f.name, Mode: f.mode, ModTime: epoch, Uid: f.uid, Gid: f.uid, Format: tar.FormatPAX}
		if f.dir {
			h.Typeflag = tar.TypeDir
		} else {
			h.Typeflag, h.Size = tar.TypeReg, int64(len(f.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	data := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil },
		tarball.WithMediaType(types.OCILayer))
}

// Modules lists the modules linked into a binary (from its embedded build information).
func Modules(binary []byte) (*buildinfo.BuildInfo, error) {
	return buildinfo.Read(bytes.NewReader(binary))
}
