package imageverify_test

import (
	"context"
	"crypto/x509"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/sigstore/cosign/v2/pkg/cosign"

	"github.com/mcp-warden/mcp-warden/supplychain/imageverify"
	"github.com/mcp-warden/mcp-warden/supplychain/imageverify/imagetest"
)

// TestSigstoreBundles: images signed and attested in cosign v3's default format (Sigstore bundles as
// OCI 1.1 referrers, or under the fallback tag when the registry has no referrers API) are verified,
// with the same denials as the legacy format.
func TestSigstoreBundles(t *testing.T) {
	for _, tc := range []struct {
		name  string
		start func() *imagetest.Registry
	}{
		{"referrers API", imagetest.StartRegistryWithReferrers},
		{"fallback tag", imagetest.StartRegistry},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := tc.start()
			t.Cleanup(reg.Close)
			key, err := imagetest.NewBundleKey()
			must(t, err)
			other, err := imagetest.NewBundleKey()
			must(t, err)
			push := func(repo string) name.Digest {
				d, err := reg.PushRandom(repo)
				must(t, err)
				return d
			}
			policy := func(predicateType string) []imageverify.Policy {
				return []imageverify.Policy{{Name: "prod", Identity: predicateType, Registries: []string{reg.Host},
					Authorities:  []imageverify.Authority{{Name: "release-key", PublicKey: key.Public()}},
					Attestations: []imageverify.AttestationRequirement{{Name: "provenance", PredicateType: predicateType}}}}
			}
			ctx := context.Background()

			valid := push("acme/files")
			must(t, key.Sign(valid))
			must(t, key.Attest(valid, slsa, map[string]any{"builder": map[string]string{"id": "ci"}}))
			v := imageverify.New(imageverify.Options{})
			r, err := v.Verify(ctx, valid.String(), policy(slsa))
			if err != nil {
				t.Fatal(err)
			}
			if len(r.Signers) != 1 || r.Signers[0] != "prod/release-key" || len(r.Attestations) != 1 || r.Attestations[0] != slsa {
				t.Fatalf("result = %+v", r)
			}
			t.Logf("cold verification of a bundle-signed image: %d registry requests", v.RegistryRequests())

			signedOnly := push("acme/signed-only")
			must(t, key.Sign(signedOnly))
			_, err = v.Verify(ctx, signedOnly.String(), policy(slsa))
			denial(t, err, imageverify.CheckAttestationMissing, "0 attestations found")
			// The signing statement is not an attestation, whatever a policy asks for.
			_, err = v.Verify(ctx, signedOnly.String(), policy(imagetest.PredicateCosignSign))
			denial(t, err, imageverify.CheckAttestationMissing, "0 attestations found")

			otherKey := push("acme/other-key")
			must(t, other.Sign(otherKey))
			_, err = v.Verify(ctx, otherKey.String(), policy(slsa))
			denial(t, err, imageverify.CheckSignatureMismatch, "1 Sigstore bundle signatures found, none verifies")

			untrusted := push("acme/untrusted-att")
			must(t, key.Sign(untrusted))
			must(t, other.Attest(untrusted, slsa, map[string]any{}))
			_, err = v.Verify(ctx, untrusted.String(), policy(slsa))
			denial(t, err, imageverify.CheckAttestationUntrusted, "none verifies with a trusted authority")

			copied := push("acme/copied")
			must(t, key.Sign(copied))
			must(t, key.AttestClaiming(copied, valid, slsa, map[string]any{}))
			_, err = v.Verify(ctx, copied.String(), policy(slsa))
			denial(t, err, imageverify.CheckAttestationCopied, "names another image (subject "+valid.DigestStr()+")")

			// A signature bundle made for another image does not sign this one.
			copiedSig := push("acme/copied-sig")
			must(t, key.AttestClaiming(copiedSig, valid, imagetest.PredicateCosignSign, map[string]any{}))
			_, err = v.Verify(ctx, copiedSig.String(), policy(slsa))
			denial(t, err, imageverify.CheckSignatureMismatch, "none verifies with this authority for this digest")
		})
	}
}

// TestKeylessBundles: a bundle carrying a certificate from the policy's CA for the policy's identity
// verifies; another identity, or a certificate from another CA, does not.
func TestKeylessBundles(t *testing.T) {
	reg := imagetest.StartRegistryWithReferrers()
	t.Cleanup(reg.Close)
	ca, err := imagetest.NewCA()
	must(t, err)
	rogueCA, err := imagetest.NewCA()
	must(t, err)
	signer, err := ca.BundleSigner("release@acme.example", "https://token.actions.example")
	must(t, err)
	rogue, err := rogueCA.BundleSigner("release@acme.example", "https://token.actions.example")
	must(t, err)
	img, err := reg.PushRandom("acme/files")
	must(t, err)
	must(t, signer.Sign(img))
	img2, err := reg.PushRandom("acme/rogue")
	must(t, err)
	must(t, rogue.Sign(img2))
	policy := func(subject string) []imageverify.Policy {
		return []imageverify.Policy{{Name: "keyless", Identity: subject, Registries: []string{reg.Host}, Authorities: []imageverify.Authority{{
			Name: "ci", Keyless: &imageverify.Keyless{Roots: pool(ca), RootCerts: []*x509.Certificate{ca.Root()},
				Identity: cosign.Identity{Issuer: "https://token.actions.example", Subject: subject}},
		}}}}
	}
	v := imageverify.New(imageverify.Options{})
	ctx := context.Background()
	r, err := v.Verify(ctx, img.String(), policy("release@acme.example"))
	if err != nil {
		t.Fatalf("a keyless bundle from the policy's CA and identity: %v", err)
	}
	if len(r.Signers) != 1 || r.Signers[0] != "keyless/ci (release@acme.example via https://token.actions.example)" {
		t.Fatalf("signers = %v", r.Signers)
	}
	_, err = v.Verify(ctx, img.String(), policy("intruder@acme.example"))
	denial(t, err, imageverify.CheckSignatureMismatch, "none verifies")
	_, err = v.Verify(ctx, img2.String(), policy("release@acme.example"))
	denial(t, err, imageverify.CheckSignatureMismatch, "none verifies")
}

func pool(ca *imagetest.CA) *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Root())
	return p
}
