package imageverify_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/mcp-warden/mcp-warden/supplychain/imageverify"
)

// copyAttached copies the signature or attestation tag (suffix "sig" or "att") of from onto to, as an
// attacker copying another image's attestations would (crane copy).
func copyAttached(t *testing.T, from, to name.Digest, suffix string) {
	t.Helper()
	tag := func(d name.Digest) name.Tag {
		return d.Context().Tag(strings.Replace(d.DigestStr(), ":", "-", 1) + "." + suffix)
	}
	img, err := remote.Image(tag(from))
	must(t, err)
	must(t, remote.Write(tag(to), img))
}

// TestRightReasons: an attestation copied from another image and a digest the registry does not have
// each get their own denial, with a fix that works.
func TestRightReasons(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	valid, err := f.reg.PushSigned("acme/files", f.release, slsa)
	must(t, err)
	copied := f.image(t, "acme/copied")
	must(t, f.release.Sign(copied))
	copyAttached(t, valid, copied, "att")
	v := imageverify.New(imageverify.Options{})

	_, err = v.Verify(ctx, copied.String(), []imageverify.Policy{f.policy()})
	denial(t, err, imageverify.CheckAttestationCopied, "names another image (subject "+valid.DigestStr()+")")
	if !strings.Contains(err.Error(), "cosign attest --key k.key") || !strings.Contains(err.Error(), copied.String()) {
		t.Fatalf("the denial does not say how to attest this digest: %v", err)
	}
	// The fix works: attest this digest.
	must(t, f.release.Attest(copied, slsa, map[string]any{}))
	fresh := imageverify.New(imageverify.Options{})
	if _, err := fresh.Verify(ctx, copied.String(), []imageverify.Policy{f.policy()}); err != nil {
		t.Fatalf("after attesting this digest: %v", err)
	}

	missing := valid.Context().Digest("sha256:" + strings.Repeat("ab", 32))
	_, err = v.Verify(ctx, missing.String(), []imageverify.Policy{f.policy()})
	denial(t, err, imageverify.CheckDigestNotFound, "HTTP 404 for sha256:abab")
	if !strings.Contains(err.Error(), "crane digest") {
		t.Fatalf("the denial does not say how to find the digest: %v", err)
	}
}

// TestOneDeadline: against a registry that never answers, the caller's deadline ends the wait with an
// actionable denial, for the first caller and for one that joins the shared verification with a shorter
// deadline.
func TestOneDeadline(t *testing.T) {
	f := newFixture(t)
	release := make(chan struct{})
	hang := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(hang.Close)
	t.Cleanup(func() { close(release) })
	host := hang.Listener.Addr().String()
	p := f.policy()
	p.Registries = []string{host}
	v := imageverify.New(imageverify.Options{})
	ref := host + "/acme/x" + zeroDigest

	var wg sync.WaitGroup
	for _, d := range []time.Duration{900 * time.Millisecond, 300 * time.Millisecond} {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), d)
			defer cancel()
			start := time.Now()
			_, err := v.Verify(ctx, ref, []imageverify.Policy{p})
			took := time.Since(start)
			denial(t, err, imageverify.CheckRegistryUnreachable, "timeout: no answer from the registry before the admission deadline")
			if took > d+200*time.Millisecond {
				t.Errorf("with a %s deadline the denial came after %s", d, took)
			}
		})
		time.Sleep(50 * time.Millisecond) // the second caller joins the first's verification
	}
	wg.Wait()
}

// TestNamespaceRateLimit: a namespace that starts more new verifications than its burst is refused
// with a clear denial; another namespace, and images already verified, are not affected.
func TestNamespaceRateLimit(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	valid, err := f.reg.PushSigned("acme/files", f.release, slsa)
	must(t, err)
	v := imageverify.New(imageverify.Options{NamespaceBurst: 3, NamespacePerMinute: 1})
	if _, err := v.VerifyIn(ctx, "tenant-a", valid.String(), []imageverify.Policy{f.policy()}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		_, err := v.VerifyIn(ctx, "tenant-a", f.image(t, "acme/probe").String(), []imageverify.Policy{f.policy()})
		denial(t, err, imageverify.CheckNoSignature, "0 signatures found")
	}
	before := v.RegistryRequests()
	_, err = v.VerifyIn(ctx, "tenant-a", f.image(t, "acme/probe").String(), []imageverify.Policy{f.policy()})
	denial(t, err, imageverify.CheckRateLimited, "namespace tenant-a started too many new image verifications")
	if v.RegistryRequests() != before {
		t.Fatal("a rate-limited verification still sent registry requests")
	}
	if _, err := v.VerifyIn(ctx, "tenant-a", valid.String(), []imageverify.Policy{f.policy()}); err != nil {
		t.Fatalf("a cached decision was rate limited: %v", err)
	}
	_, err = v.VerifyIn(ctx, "tenant-b", f.image(t, "acme/other").String(), []imageverify.Policy{f.policy()})
	denial(t, err, imageverify.CheckNoSignature, "0 signatures found")
}
