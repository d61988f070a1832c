// Command release builds the manager and gateway images without a container daemon, pushes them to a
// registry, signs them and attaches SLSA provenance and CycloneDX SBOM attestations with a cosign key,
// and writes release manifests that refer to them by digest (`make release REGISTRY=...`).
//
//	go run ./hack/release --registry ghcr.io/acme [--key cosign.key] [--platforms linux/amd64,linux/arm64]
//
// The key is a cosign private key file (--key or $COSIGN_KEY) or PEM in $COSIGN_PRIVATE_KEY; its
// password comes from $COSIGN_PASSWORD. Without a key the images are pushed unsigned.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/sigstore/cosign/v2/pkg/cosign"
	"github.com/sigstore/sigstore/pkg/signature"

	"github.com/mcp-warden/mcp-warden/imagesign"
	"github.com/mcp-warden/mcp-warden/release"
)

func main() {
	registry := flag.String("registry", os.Getenv("REGISTRY"), "registry and path prefix to push to, e.g. ghcr.io/acme (required)")
	key := flag.String("key", os.Getenv("COSIGN_KEY"), "cosign private key file; $COSIGN_PRIVATE_KEY may hold the PEM instead")
	platforms := flag.String("platforms", "linux/amd64,linux/arm64", "comma-separated os/arch list")
	version := flag.String("version", "", "release version (image tag and label; default: the source revision)")
	revision := flag.String("revision", "", "source revision (default: git rev-parse HEAD)")
	source := flag.String("source", "https://github.com/mcp-warden/mcp-warden", "source repository URL")
	out := flag.String("out", "dist/release", "directory for the release manifests")
	timeout := flag.Duration("timeout", 30*time.Minute, "deadline for the whole release")
	flag.Parse()
	if err := run(*registry, *key, *platforms, *version, *revision, *source, *out, *timeout); err != nil {
		fmt.Fprintln(os.Stderr, "release:", err)
		os.Exit(1)
	}
}

func run(registry, keyPath, platforms, version, revision, source, out string, timeout time.Duration) error {
	if registry == "" {
		return fmt.Errorf("--registry (or REGISTRY) is required, e.g. make release REGISTRY=ghcr.io/acme")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	root, err := os.Getwd()
	if err != nil {
		return err
	}
	if revision == "" {
		if b, err := exec.CommandContext(ctx, "git", "rev-parse", "HEAD").Output(); err == nil {
			revision = strings.TrimSpace(string(b))
		}
	}
	if version == "" && len(revision) >= 12 {
		version = revision[:12]
	}
	signer, err := loadSigner(keyPath)
	if err != nil {
		return err
	}
	epoch := time.Unix(0, 0).UTC()
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		sec, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return fmt.Errorf("SOURCE_DATE_EPOCH %q: %w", s, err)
		}
		epoch = time.Unix(sec, 0).UTC()
	}
	res, err := release.Run(ctx, release.Config{
		Options: release.Options{Root: root, Platforms: strings.Split(platforms, ","), Version: version, Revision: revision, Source: source, Epoch: epoch,
			Log: func(f string, a ...any) { fmt.Printf("==> "+f+"\n", a...) }},
		Registry: registry, Signer: signer, OutDir: out,
		Remote: []remote.Option{remote.WithAuthFromKeychain(authn.DefaultKeychain)},
	})
	if err != nil {
		return err
	}
	for n, ref := range res.Images {
		fmt.Printf("%s: %s\n", n, ref)
	}
	for _, f := range res.Manifests {
		fmt.Printf("wrote %s\n", f)
	}
	if signer == nil {
		fmt.Println("warning: no signing key (--key, COSIGN_KEY or COSIGN_PRIVATE_KEY): the images are unsigned, and clusters that enforce the image policy will refuse them")
	}
	return nil
}

func loadSigner(path string) (signature.Signer, error) {
	password := []byte(os.Getenv("COSIGN_PASSWORD"))
	if path != "" {
		return imagesign.LoadKey(path, password)
	}
	if pemKey := os.Getenv("COSIGN_PRIVATE_KEY"); pemKey != "" {
		sv, err := cosign.LoadPrivateKey([]byte(pemKey), password, nil)
		if err != nil {
			return nil, fmt.Errorf("COSIGN_PRIVATE_KEY: %w", err)
		}
		return sv, nil
	}
	return nil, nil
}
