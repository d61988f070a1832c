// Command release builds the manager and gateway images without a container daemon, pushes them to a
// registry, signs them and attaches SLSA provenance and CycloneDX SBOM attestations with a cosign key,
// and writes release manifests that refer to them by digest (`make release REGISTRY=...`).
//
//	go run ./hack/release --registry ghcr.io/acme [--key cosign.key] [--platforms linux/amd64,linux/arm64]
//
// The key is a cosign private key file (--key or $COSIGN_KEY) or PEM in $COSIGN_PRIVATE_KEY; its
// password comes from $COSIGN_PASSWORD. Keyless instead: an OIDC identity token (--identity-token or
// $SIGSTORE_ID_TOKEN, e.g. a CI job's token with audience sigstore) gets an ephemeral key certified by
// Fulcio (--fulcio-url), and the signatures carry that certificate. With neither the images are pushed
// unsigned.
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
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"

	"github.com/mcp-warden/mcp-warden/supplychain/imagesign"
	"github.com/mcp-warden/mcp-warden/supplychain/release"
)

// options are the command's flags.
type options struct {
	registry, keyPath, platforms, version, revision, source, out string
	// identityToken is an OIDC identity token (or @file holding one) for keyless signing through Fulcio.
	identityToken, fulcioURL string
	timeout                  time.Duration
}

func main() {
	var o options
	flag.StringVar(&o.registry, "registry", os.Getenv("REGISTRY"), "registry and path prefix to push to, e.g. ghcr.io/acme (required)")
	flag.StringVar(&o.keyPath, "key", os.Getenv("COSIGN_KEY"), "cosign private key file; $COSIGN_PRIVATE_KEY may hold the PEM instead")
	flag.StringVar(&o.identityToken, "identity-token", os.Getenv("SIGSTORE_ID_TOKEN"), "OIDC identity token (audience sigstore), or @file, for keyless signing with a Fulcio certificate instead of a key")
	flag.StringVar(&o.fulcioURL, "fulcio-url", envOr("FULCIO_URL", imagesign.SigstorePublicFulcio), "Fulcio instance that certifies the keyless signing key")
	flag.StringVar(&o.platforms, "platforms", "linux/amd64,linux/arm64", "comma-separated os/arch list")
	flag.StringVar(&o.version, "version", "", "release version (image tag and label; default: the source revision)")
	flag.StringVar(&o.revision, "revision", "", "source revision (default: git rev-parse HEAD)")
	flag.StringVar(&o.source, "source", "https://github.com/mcp-warden/mcp-warden", "source repository URL")
	flag.StringVar(&o.out, "out", "dist/release", "directory for the release manifests")
	flag.DurationVar(&o.timeout, "timeout", 30*time.Minute, "deadline for the whole release")
	flag.Parse()
	if _, err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "release:", err)
		os.Exit(1)
	}
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func run(o options) (*release.Result, error) {
	if o.registry == "" {
		return nil, fmt.Errorf("--registry (or REGISTRY) is required, e.g. make release REGISTRY=ghcr.io/acme")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	root, err := os.Getwd()
	if err != nil {
		return nil, err
	}
	if o.revision == "" {
		if b, err := exec.CommandContext(ctx, "git", "rev-parse", "HEAD").Output(); err == nil {
			o.revision = strings.TrimSpace(string(b))
		}
	}
	if o.version == "" && len(o.revision) >= 12 {
		o.version = o.revision[:12]
	}
	signer, how, err := loadSigner(ctx, o)
	if err != nil {
		return nil, err
	}
	epoch := time.Unix(0, 0).UTC()
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		sec, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("SOURCE_DATE_EPOCH %q: %w", s, err)
		}
		epoch = time.Unix(sec, 0).UTC()
	}
	if how != "" {
		fmt.Printf("==> signing with %s\n", how)
	}
	res, err := release.Run(ctx, release.Config{
		Options: release.Options{Root: root, Platforms: strings.Split(o.platforms, ","), Version: o.version, Revision: o.revision, Source: o.source, Epoch: epoch,
			Log: func(f string, a ...any) { fmt.Printf("==> "+f+"\n", a...) }},
		Registry: o.registry, Signer: signer, OutDir: o.out,
		Remote: []remote.Option{remote.WithAuthFromKeychain(authn.DefaultKeychain)},
	})
	if err != nil {
		return nil, err
	}
	for n, ref := range res.Images {
		fmt.Printf("%s: %s\n", n, ref)
	}
	for _, f := range res.Manifests {
		fmt.Printf("wrote %s\n", f)
	}
	if signer == nil {
		fmt.Println("warning: no signing key (--key, COSIGN_KEY or COSIGN_PRIVATE_KEY) and no identity token (--identity-token, SIGSTORE_ID_TOKEN): the images are unsigned, and clusters that enforce the image policy will refuse them")
	}
	return res, nil
}

// loadSigner picks the signing method: a cosign key (file or $COSIGN_PRIVATE_KEY), or keyless with a
// Fulcio certificate for an OIDC identity token. It says which, for the log.
func loadSigner(ctx context.Context, o options) (signature.Signer, string, error) {
	pemKey := os.Getenv("COSIGN_PRIVATE_KEY")
	if o.identityToken != "" {
		if o.keyPath != "" || pemKey != "" {
			return nil, "", fmt.Errorf("both a signing key (--key, COSIGN_KEY or COSIGN_PRIVATE_KEY) and an identity token (--identity-token, SIGSTORE_ID_TOKEN) are set: keep one")
		}
		tok := o.identityToken
		if path, ok := strings.CutPrefix(tok, "@"); ok {
			b, err := os.ReadFile(path)
			if err != nil {
				return nil, "", fmt.Errorf("--identity-token: %w", err)
			}
			tok = string(b)
		}
		s, err := imagesign.FulcioSigner(ctx, o.fulcioURL, tok, 30*time.Second)
		if err != nil {
			return nil, "", err
		}
		return s, "a Fulcio certificate from " + o.fulcioURL + " (" + certIdentity(s.Cert) + ")", nil
	}
	password := []byte(os.Getenv("COSIGN_PASSWORD"))
	if o.keyPath != "" {
		s, err := imagesign.LoadKey(o.keyPath, password)
		return s, "the key " + o.keyPath, err
	}
	if pemKey != "" {
		sv, err := cosign.LoadPrivateKey([]byte(pemKey), password, nil)
		if err != nil {
			return nil, "", fmt.Errorf("COSIGN_PRIVATE_KEY: %w", err)
		}
		return sv, "the key in COSIGN_PRIVATE_KEY", nil
	}
	return nil, "", nil
}

// certIdentity names the subject a signing certificate was issued to.
func certIdentity(certPEM []byte) string {
	certs, err := cryptoutils.UnmarshalCertificatesFromPEM(certPEM)
	if err != nil || len(certs) == 0 {
		return "unreadable certificate"
	}
	if ids := cryptoutils.GetSubjectAlternateNames(certs[0]); len(ids) > 0 {
		return strings.Join(ids, ", ")
	}
	return certs[0].Subject.String()
}
