// Package release builds the operator's own images without a container daemon and ships them the way
// the operator demands of MCP servers: static Go binaries on a minimal non-root base the build writes
// itself, reproducible (the same source gives the same digest), pushed and referenced by digest, signed,
// with an SLSA provenance and a CycloneDX SBOM attestation.
package release

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"debug/buildinfo"
	"fmt"
	"io"
	"io/fs"
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
	app, err := layer(o.Epoch, []file{{name: strings.TrimPrefix(c.Binary, "/"), mode: 0o555, data: binary}})
	if err != nil {
		return nil, err
	}
	return ImageWithLayers(c.Name, []string{c.Binary}, platform, o, app)
}

// ImageWithLayers is Image with the given layers on the base layer instead of one binary: for an image
// whose program is not a Go binary (e.g. a directory tree packed by DirLayer). entrypoint is the
// image's entrypoint; the user, the environment and the labels are Image's.
func ImageWithLayers(title string, entrypoint []string, platform string, o Options, layers ...v1.Layer) (v1.Image, error) {
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
	img, err := mutate.AppendLayers(mutate.MediaType(empty.Image, types.OCIManifestSchema1), append([]v1.Layer{base}, layers...)...)
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
	cf.Config.Entrypoint = entrypoint
	cf.Config.WorkingDir = "/"
	cf.Config.Env = []string{"PATH=/", "HOME=/home/nonroot"}
	cf.Config.Labels = map[string]string{
		"org.opencontainers.image.title":    title,
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

// DirLayer packs the directory tree at dir into a gzip-compressed layer written to out (a file the
// caller owns and removes once the layer is pushed: the layer reads it again on every use), with the
// tree's paths from the root of the image. Directories get mode 0755, files 0755 or 0644 (whether any
// execute bit is set), owner root, and the epoch as timestamp, so the digest depends on the tree's
// content alone. Symbolic links are kept; any other file type is refused.
func DirLayer(dir, out string, epoch time.Time) (v1.Layer, error) {
	f, err := os.Create(out)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	zw, err := gzip.NewWriterLevel(f, gzip.BestSpeed)
	if err != nil {
		return nil, err
	}
	tw := tar.NewWriter(zw)
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil || rel == "." {
			return err
		}
		return packEntry(tw, p, rel, d, epoch)
	})
	if err != nil {
		return nil, fmt.Errorf("pack %s into a layer: %w", dir, err)
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	return tarball.LayerFromFile(out, tarball.WithMediaType(types.OCILayer))
}

// packEntry writes the entry at path p (rel in the layer) to tw: its header and, for a regular file,
// its content.
func packEntry(tw *tar.Writer, p, rel string, d fs.DirEntry, epoch time.Time) error {
	h, err := entryHeader(p, rel, d, epoch)
	if err != nil {
		return err
	}
	if err := tw.WriteHeader(h); err != nil {
		return err
	}
	if h.Typeflag != tar.TypeReg {
		return nil
	}
	src, err := os.Open(p) //nolint:gosec // G122: the tree is the project's own cache directory, built by hack/, not a tenant's
	if err != nil {
		return err
	}
	defer src.Close()
	n, err := io.Copy(tw, src)
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	if n != h.Size {
		return fmt.Errorf("%s: copied %d of %d bytes (changed while packing?)", p, n, h.Size)
	}
	return nil
}

// entryHeader is the reproducible tar header of a directory, regular file or symbolic link: fixed
// time and modes (0755 for directories and executables, 0644 for other files); other kinds of file
// are refused.
func entryHeader(p, rel string, d fs.DirEntry, epoch time.Time) (*tar.Header, error) {
	info, err := d.Info()
	if err != nil {
		return nil, err
	}
	h := &tar.Header{Name: filepath.ToSlash(rel), ModTime: epoch, Format: tar.FormatPAX}
	switch {
	case d.IsDir():
		h.Typeflag, h.Name, h.Mode = tar.TypeDir, h.Name+"/", 0o755
	case info.Mode().IsRegular():
		h.Typeflag, h.Size, h.Mode = tar.TypeReg, info.Size(), 0o644
		if info.Mode().Perm()&0o111 != 0 {
			h.Mode = 0o755
		}
	case info.Mode()&fs.ModeSymlink != 0:
		if h.Linkname, err = os.Readlink(p); err != nil {
			return nil, err
		}
		h.Typeflag, h.Mode = tar.TypeSymlink, 0o777
	default:
		return nil, fmt.Errorf("%s: a %s cannot go into an image layer (only directories, regular files and symbolic links)", p, info.Mode().Type())
	}
	return h, nil
}
