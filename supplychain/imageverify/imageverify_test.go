package imageverify_test

import (
	"context"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/sigstore/cosign/v2/pkg/cosign"

	"github.com/mcp-warden/mcp-warden/supplychain/imageverify"
	"github.com/mcp-warden/mcp-warden/supplychain/imageverify/imagetest"
)

const (
	slsa = "https://slsa.dev/provenance/v1"
	spdx = "https://spdx.dev/Document"
)

type fixture struct {
	reg          *imagetest.Registry
	release, old *imagetest.Key
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{reg: imagetest.StartRegistry()}
	t.Cleanup(f.reg.Close)
	var err error
	if f.release, err = imagetest.NewKey(); err != nil {
		t.Fatal(err)
	}
	if f.old, err = imagetest.NewKey(); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) image(t *testing.T, repo string) name.Digest {
	t.Helper()
	d, err := f.reg.PushRandom(repo)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) policy() imageverify.Policy {
	return imageverify.Policy{
		Name: "prod-signers", Identity: "uid-1/1",
		Registries:   []string{f.reg.Host + "/acme"},
		Authorities:  []imageverify.Authority{{Name: "release-key", PublicKey: f.release.Public()}},
		Attestations: []imageverify.AttestationRequirement{{Name: "provenance", PredicateType: slsa}},
	}
}

// denial asserts err is a Denial with the check and that its message contains want.
func denial(t *testing.T, err error, check imageverify.Check, want string) {
	t.Helper()
	var d *imageverify.Denial
	if !errors.As(err, &d) || d.Check != check {
		t.Fatalf("error = %v, want a %s denial", err, check)
	}
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("denial %q lacks %q", err, want)
	}
}

func TestVerificationMatrix(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()

	valid := f.image(t, "acme/files")
	must(t, f.release.Sign(valid))
	must(t, f.release.Attest(valid, slsa, map[string]any{"builder": map[string]string{"id": "ci"}}))

	unsigned := f.image(t, "acme/unsigned")

	wrongKey := f.image(t, "acme/wrongkey")
	must(t, f.old.Sign(wrongKey))

	copied := f.image(t, "acme/copied")
	must(t, f.release.SignClaiming(copied, valid)) // a valid signature, but of another image

	noAtt := f.image(t, "acme/noatt")
	must(t, f.release.Sign(noAtt))

	wrongType := f.image(t, "acme/wrongtype")
	must(t, f.release.Sign(wrongType))
	must(t, f.release.Attest(wrongType, spdx, map[string]any{}))

	untrustedAtt := f.image(t, "acme/untrustedatt")
	must(t, f.release.Sign(untrustedAtt))
	must(t, f.old.Attest(untrustedAtt, slsa, map[string]any{}))

	cases := []struct {
		name  string
		image string
		check imageverify.Check
		want  string
	}{
		{"tag only", f.reg.Host + "/acme/files:1.2", imageverify.CheckNotDigest, "is not pinned by digest (use " + f.reg.Host + "/acme/files@sha256:<digest>)"},
		{"unsigned", unsigned.String(), imageverify.CheckNoSignature, `has no signature from policy "prod-signers" authority "release-key" (registry reachable, 0 signatures found)`},
		{"wrong key", wrongKey.String(), imageverify.CheckSignatureMismatch, `no signature that verifies with policy "prod-signers" authority "release-key"`},
		{"signature copied from another image", copied.String(), imageverify.CheckSignatureMismatch, "none verifies"},
		{"attestation missing", noAtt.String(), imageverify.CheckAttestationMissing, `has no provenance attestation required by policy "prod-signers"`},
		{"attestation of the wrong type", wrongType.String(), imageverify.CheckAttestationWrongType, "want predicate type " + slsa + ", found " + spdx},
		{"attestation signed by an untrusted key", untrustedAtt.String(), imageverify.CheckAttestationUntrusted, "none verifies with a trusted authority"},
	}
	v := imageverify.New(imageverify.Options{})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := v.Verify(ctx, tc.image, []imageverify.Policy{f.policy()})
			denial(t, err, tc.check, tc.want)
		})
	}
	t.Run("valid", func(t *testing.T) {
		r, err := v.Verify(ctx, valid.String(), []imageverify.Policy{f.policy()})
		if err != nil {
			t.Fatal(err)
		}
		if r.Digest != valid.DigestStr() || len(r.Signers) != 1 || r.Signers[0] != "prod-signers/release-key" || len(r.Attestations) != 1 || r.Attestations[0] != slsa {
			t.Fatalf("result = %+v", r)
		}
	})
	t.Run("tag and digest: the digest wins", func(t *testing.T) {
		ref := f.reg.Host + "/acme/files:moved@" + valid.DigestStr()
		if _, err := v.Verify(ctx, ref, []imageverify.Policy{f.policy()}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("every policy must pass", func(t *testing.T) {
		other := imageverify.Policy{Name: "second", Identity: "uid-2/1", Registries: []string{f.reg.Host}, Authorities: []imageverify.Authority{{Name: "old-key", PublicKey: f.old.Public()}}}
		_, err := v.Verify(ctx, valid.String(), []imageverify.Policy{f.policy(), other})
		denial(t, err, imageverify.CheckSignatureMismatch, `policy "second" authority "old-key"`)
	})
}

func TestRegistryDownFailsClosed(t *testing.T) {
	f := newFixture(t)
	img := f.image(t, "acme/files")
	must(t, f.release.Sign(img))
	f.reg.Close()
	v := imageverify.New(imageverify.Options{Timeout: 2 * time.Second})
	_, err := v.Verify(context.Background(), img.String(), []imageverify.Policy{f.policy()})
	denial(t, err, imageverify.CheckRegistryUnreachable, "registry unreachable, denied (fail closed)")
}

func TestCacheAndSingleflight(t *testing.T) {
	f := newFixture(t)
	img := f.image(t, "acme/files")
	must(t, f.release.Sign(img))
	must(t, f.release.Attest(img, slsa, map[string]any{}))
	v := imageverify.New(imageverify.Options{})
	ctx := context.Background()

	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := v.Verify(ctx, img.String(), []imageverify.Policy{f.policy()})
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	cold := v.RegistryRequests()
	// One verification costs a handful of requests; twenty un-deduplicated ones would cost 20 times as many.
	if cold == 0 || cold > 15 {
		t.Fatalf("20 concurrent admissions sent %d registry requests, want one verification's worth", cold)
	}
	if _, err := v.Verify(ctx, img.String(), []imageverify.Policy{f.policy()}); err != nil {
		t.Fatal(err)
	}
	if warm := v.RegistryRequests(); warm != cold {
		t.Fatalf("a cached decision sent %d more registry requests", warm-cold)
	}
	// A changed policy (new identity) is verified afresh.
	p := f.policy()
	p.Identity = "uid-1/2"
	if _, err := v.Verify(ctx, img.String(), []imageverify.Policy{p}); err != nil {
		t.Fatal(err)
	}
	if v.RegistryRequests() == cold {
		t.Fatal("a new policy generation reused the old decision")
	}
}

func TestNegativeCacheExpires(t *testing.T) {
	f := newFixture(t)
	img := f.image(t, "acme/files")
	v := imageverify.New(imageverify.Options{NegativeTTL: 300 * time.Millisecond})
	p := f.policy()
	p.Attestations = nil
	ctx := context.Background()
	_, err := v.Verify(ctx, img.String(), []imageverify.Policy{p})
	denial(t, err, imageverify.CheckNoSignature, "0 signatures found")
	must(t, f.release.Sign(img))
	if _, err := v.Verify(ctx, img.String(), []imageverify.Policy{p}); err == nil {
		t.Fatal("the denial was not cached")
	}
	time.Sleep(400 * time.Millisecond)
	if _, err := v.Verify(ctx, img.String(), []imageverify.Policy{p}); err != nil {
		t.Fatalf("after the negative TTL the now-signed image is still denied: %v", err)
	}
}

func FuzzParseDigest(f *testing.F) {
	for _, seed := range []string{
		"ghcr.io/acme/files@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
		"ghcr.io/acme/files:1.2", "files", "", "@", "a@sha256:", "127.0.0.1:5000/x@sha256:00",
		"ghcr.io/acme/files:tag@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := imageverify.ParseDigest(s)
		if err != nil {
			var denial *imageverify.Denial
			if !errors.As(err, &denial) || denial.Check != imageverify.CheckNotDigest {
				t.Fatalf("ParseDigest(%q) error %v is not a NotDigest denial", s, err)
			}
			return
		}
		if !strings.HasPrefix(d.DigestStr(), "sha256:") || len(d.DigestStr()) != 71 {
			t.Fatalf("ParseDigest(%q) accepted digest %q", s, d.DigestStr())
		}
	})
}

func TestKeyless(t *testing.T) {
	reg := imagetest.StartRegistry()
	t.Cleanup(reg.Close)
	ca, err := imagetest.NewCA()
	must(t, err)
	signer, err := ca.Issue("release@acme.example", "https://token.actions.example")
	must(t, err)
	img, err := reg.PushRandom("acme/files")
	must(t, err)
	must(t, signer.Sign(img))
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.RootPEM)
	policy := func(id cosign.Identity) []imageverify.Policy {
		return []imageverify.Policy{{Name: "keyless", Identity: id.Subject + id.SubjectRegExp + id.Issuer, Registries: []string{reg.Host}, Authorities: []imageverify.Authority{{
			Name: "ci", Keyless: &imageverify.Keyless{Roots: roots, Identity: id},
		}}}}
	}
	v := imageverify.New(imageverify.Options{})
	ctx := context.Background()
	r, err := v.Verify(ctx, img.String(), policy(cosign.Identity{Issuer: "https://token.actions.example", Subject: "release@acme.example"}))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(r.Signers[0], "release@acme.example via https://token.actions.example") {
		t.Fatalf("signers = %v", r.Signers)
	}
	if _, err := v.Verify(ctx, img.String(), policy(cosign.Identity{Issuer: "https://token.actions.example", SubjectRegExp: `^.*@acme\.example$`})); err != nil {
		t.Fatalf("subject regexp: %v", err)
	}
	_, err = v.Verify(ctx, img.String(), policy(cosign.Identity{Issuer: "https://token.actions.example", Subject: "intruder@acme.example"}))
	denial(t, err, imageverify.CheckSignatureMismatch, `policy "keyless" authority "ci"`)
	_, err = v.Verify(ctx, img.String(), policy(cosign.Identity{Issuer: "https://other-issuer.example", Subject: "release@acme.example"}))
	denial(t, err, imageverify.CheckSignatureMismatch, "none verifies")

	// A certificate from another CA does not chain to the policy's roots.
	other, err := imagetest.NewCA()
	must(t, err)
	rogue, err := other.Issue("release@acme.example", "https://token.actions.example")
	must(t, err)
	img2, err := reg.PushRandom("acme/rogue")
	must(t, err)
	must(t, rogue.Sign(img2))
	_, err = v.Verify(ctx, img2.String(), policy(cosign.Identity{Issuer: "https://token.actions.example", Subject: "release@acme.example"}))
	denial(t, err, imageverify.CheckSignatureMismatch, "none verifies")
}

// TestRegistryDownThenBack: while the registry is down admissions are denied with that reason; once it is
// back they recover without a restart (after the short negative TTL).
func TestRegistryDownThenBack(t *testing.T) {
	f := newFixture(t)
	img, err := f.reg.PushSigned("acme/files", f.release, slsa)
	must(t, err)
	// A switchable TCP front for the real registry: when down it refuses connections.
	front, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	var down atomic.Bool
	go func() {
		for {
			c, err := front.Accept()
			if err != nil {
				return
			}
			if down.Load() {
				c.Close()
				continue
			}
			go func() {
				defer c.Close()
				up, err := net.Dial("tcp", f.reg.Host)
				if err != nil {
					return
				}
				defer up.Close()
				go func() { _, _ = io.Copy(up, c) }()
				_, _ = io.Copy(c, up)
			}()
		}
	}()
	t.Cleanup(func() { front.Close() })
	ref := front.Addr().String() + "/acme/files@" + img.DigestStr()
	v := imageverify.New(imageverify.Options{NegativeTTL: 200 * time.Millisecond, Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}})
	ctx := context.Background()
	p := f.policy()
	p.Registries = []string{front.Addr().String()}
	down.Store(true)
	_, err = v.Verify(ctx, ref, []imageverify.Policy{p})
	denial(t, err, imageverify.CheckRegistryUnreachable, "registry unreachable, denied (fail closed)")
	down.Store(false)
	time.Sleep(300 * time.Millisecond)
	if _, err := v.Verify(ctx, ref, []imageverify.Policy{p}); err != nil {
		t.Fatalf("after the registry came back: %v", err)
	}
}

// TestParseDigestOnlySha256: a reference is pinned only by one sha256 digest of a named repository: a
// sha512 digest (which the CRD, the admission and the gateway image pins do not accept), a second "@",
// or no repository is a NotDigest denial with the hint; a tag beside the digest is ignored.
func TestParseDigestOnlySha256(t *testing.T) {
	hex := strings.Repeat("0123456789abcdef", 4)
	for image, hint := range map[string]string{
		"ghcr.io/acme/files@sha512:" + hex + hex:              "use ghcr.io/acme/files@sha256:<digest>",
		"ghcr.io/acme/files@sha256:" + hex + "@sha256:" + hex: "",
		"@sha256:" + hex:                     "",
		"ghcr.io/acme/files:1.2":             "use ghcr.io/acme/files@sha256:<digest>",
		"127.0.0.1:5000/acme/files:1.2@sha1": "",
	} {
		_, err := imageverify.ParseDigest(image)
		var d *imageverify.Denial
		if !errors.As(err, &d) || d.Check != imageverify.CheckNotDigest {
			t.Errorf("ParseDigest(%q) = %v, want a NotDigest denial", image, err)
			continue
		}
		if !strings.Contains(d.Error(), hint) {
			t.Errorf("ParseDigest(%q) = %q, want the hint %q", image, d.Error(), hint)
		}
	}
	d, err := imageverify.ParseDigest("ghcr.io/acme/files:1.2@sha256:" + hex)
	if err != nil || d.DigestStr() != "sha256:"+hex || d.Context().String() != "ghcr.io/acme/files" {
		t.Fatalf("tag and digest: %v %v, want the digest of ghcr.io/acme/files", d, err)
	}
	if got := imageverify.PinHint("127.0.0.1:5000/acme/files:1.2@sha256:abc"); got != "use 127.0.0.1:5000/acme/files@sha256:<digest>" {
		t.Errorf("PinHint = %q", got)
	}
}
