package localcluster

import (
	"context"
	"runtime"

	"github.com/mcp-warden/mcp-warden/release"
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
