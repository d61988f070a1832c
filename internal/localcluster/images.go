package localcluster

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/mcp-warden/mcp-warden/supplychain/release"
)

// PushSandboxImage builds the pod sandbox image (a static binary that waits for SIGTERM, see ./pause)
// with the project's daemonless image builder and pushes it to registry (a loopback host:port), for
// Options.SandboxImage.
func PushSandboxImage(ctx context.Context, root, registry string) (string, error) {
	return PushImage(ctx, root, registry, release.Component{Name: "pause", Package: "./internal/localcluster/pause", Binary: "/pause"})
}

// PushClusterDNSImage builds the cluster DNS image (./clusterdns) and pushes it to registry, for
// Options.DNSImage.
func PushClusterDNSImage(ctx context.Context, root, registry string) (string, error) {
	return PushImage(ctx, root, registry, release.Component{Name: "clusterdns", Package: "./internal/localcluster/clusterdns", Binary: "/clusterdns"})
}

// PushImage builds a Go main package into an image for this machine's platform with the project's
// daemonless builder, pushes it to registry/mcp-warden-node and returns its digest reference.
func PushImage(ctx context.Context, root, registry string, c release.Component) (string, error) {
	b, err := release.BuildComponent(ctx, c, release.Options{Root: root, Platforms: []string{"linux/" + runtime.GOARCH}})
	if err != nil {
		return "", err
	}
	ref, err := release.Push(ctx, registry+"/mcp-warden-node", b, "")
	if err != nil {
		return "", err
	}
	return ref.String(), nil
}

// PushTreeImage packs the directory tree at dir (a root filesystem, e.g. hack/everything.sh's) as one
// layer on the project's base layer, with the given entrypoint, into an image for this machine's
// platform, pushes it to registry/mcp-warden-node/<name> and returns its digest reference.
func PushTreeImage(ctx context.Context, registry, name, dir string, entrypoint []string) (string, error) {
	tmp, err := os.MkdirTemp("", "mcp-warden-layer-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	o := release.Options{}
	l, err := release.DirLayer(dir, filepath.Join(tmp, "layer.tar.gz"), time.Unix(0, 0).UTC())
	if err != nil {
		return "", err
	}
	platform := "linux/" + runtime.GOARCH
	img, err := release.ImageWithLayers(name, entrypoint, platform, o, l)
	if err != nil {
		return "", err
	}
	idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex),
		mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: runtime.GOARCH}}})
	ref, err := release.Push(ctx, registry+"/mcp-warden-node", &release.Build{Component: release.Component{Name: name}, Index: idx}, "")
	if err != nil {
		return "", err
	}
	return ref.String(), nil
}
