package imageverify

import (
	"context"
	"crypto"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/sigstore/cosign/v2/pkg/cosign"
	ociremote "github.com/sigstore/cosign/v2/pkg/oci/remote"
	protobundle "github.com/sigstore/protobuf-specs/gen/pb-go/bundle/v1"
	sgbundle "github.com/sigstore/sigstore-go/pkg/bundle"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/verify"
	"github.com/sigstore/sigstore/pkg/signature"
)

// Cosign v3 writes signatures and attestations as Sigstore bundles (v0.3, a DSSE envelope around an
// in-toto statement) attached to the image as OCI 1.1 referrers, or under the sha256-<digest> fallback
// tag when the registry has no referrers API. A signature is a statement of predicate type
// PredicateCosignSign; every other predicate type is an attestation. Both are verified here with the
// cosign library (GetBundles, VerifyNewBundle): the signature over the envelope against the authority,
// and the statement's subject against this digest (a bundle for another digest does not count).
// Bundles are fetched once per verification, and only when the legacy .sig/.att tags do not satisfy
// the policy, so images signed the old way cost no extra request.

// PredicateCosignSign is the statement cosign v3 signs for `cosign sign` in the bundle format.
const PredicateCosignSign = "https://sigstore.dev/cosign/sign/v1"

// bundleSet fetches an image's bundles once per verification.
type bundleSet struct {
	once    sync.Once
	done    atomic.Bool
	bundles []*sgbundle.Bundle
	err     error
}

// hasAttestations reports whether the bundles were already read and hold attestations.
func (bs *bundleSet) hasAttestations() bool {
	if !bs.done.Load() || bs.err != nil {
		return false
	}
	for _, b := range bs.bundles {
		if st, _ := bundleStatement(b); st.PredicateType != PredicateCosignSign {
			return true
		}
	}
	return false
}

func (bs *bundleSet) get(ctx context.Context, ro []remote.Option, ref name.Digest) ([]*sgbundle.Bundle, error) {
	bs.once.Do(func() {
		co := &cosign.CheckOpts{RegistryClientOpts: []ociremote.Option{ociremote.WithRemoteOptions(ro...)}}
		bs.bundles, _, bs.err = cosign.GetBundles(ctx, ref, co)
		var none *cosign.ErrNoMatchingAttestations
		if errors.As(bs.err, &none) {
			bs.bundles, bs.err = nil, nil
		}
		bs.done.Store(true)
	})
	return bs.bundles, bs.err
}

// bundleResult is what one authority's bundles say about this digest.
type bundleResult struct {
	// signed: a signature statement for this digest verified; identity names its certificate (keyless).
	signed   bool
	identity string
	// types are the predicate types of the attestations that verified for this digest.
	types []string
	// copied are the subjects of bundles that verified but name another digest.
	copied []string
	// signatures and attestations count the bundles present, verified or not.
	signatures, attestations int
}

// verifyBundles verifies the image's bundles with the authority. Keyless bundles are verified against
// the authority's CA certificates and identity, offline; a keyless authority that requires SCTs or
// transparency-log proofs is not satisfied by bundles yet.
func (v *Verifier) verifyBundles(ctx context.Context, ro []remote.Option, ref name.Digest, a Authority, bs *bundleSet) (bundleResult, error) {
	var out bundleResult
	bundles, err := bs.get(ctx, ro, ref)
	if err != nil || len(bundles) == 0 {
		return out, err
	}
	for _, b := range bundles {
		if st, _ := bundleStatement(b); st.PredicateType == PredicateCosignSign {
			out.signatures++
		} else {
			out.attestations++
		}
	}
	co, err := bundleCheckOpts(a)
	if err != nil || co == nil {
		return out, err
	}
	digest, err := hex.DecodeString(strings.TrimPrefix(ref.DigestStr(), "sha256:"))
	if err != nil {
		return out, err
	}
	for _, b := range bundles {
		st, ok := bundleStatement(b)
		if !ok {
			continue
		}
		vr, err := cosign.VerifyNewBundle(ctx, co, verify.WithArtifactDigest("sha256", digest), b)
		if err != nil {
			out.copied = append(out.copied, copiedSubjects(ctx, co, b, st, ref)...)
			continue
		}
		if st.PredicateType == PredicateCosignSign {
			out.signed = true
			if vr.Signature != nil && vr.Signature.Certificate != nil {
				out.identity = fmt.Sprintf(" (%s via %s)", vr.Signature.Certificate.SubjectAlternativeName, vr.Signature.Certificate.Issuer)
			}
		} else if st.PredicateType != "" {
			out.types = append(out.types, st.PredicateType)
		}
	}
	return out, nil
}

// copiedSubjects returns the statement's subjects other than this digest for which the bundle does
// verify: a trusted bundle made for another image.
func copiedSubjects(ctx context.Context, co *cosign.CheckOpts, b *sgbundle.Bundle, st inTotoStatement, ref name.Digest) []string {
	var out []string
	for _, s := range st.Subject {
		d, ok := s.Digest["sha256"]
		if !ok || "sha256:"+d == ref.DigestStr() {
			continue
		}
		raw, err := hex.DecodeString(d)
		if err != nil {
			continue
		}
		if _, err := cosign.VerifyNewBundle(ctx, co, verify.WithArtifactDigest("sha256", raw), b); err == nil {
			out = append(out, "sha256:"+d)
		}
	}
	return out
}

// bundleCheckOpts verifies a bundle with the authority, offline; nil when the authority cannot be
// checked in this format.
func bundleCheckOpts(a Authority) (*cosign.CheckOpts, error) {
	if k := a.Keyless; k != nil {
		if len(k.RootCerts) == 0 || k.RequireSCT || k.RequireTlog {
			return nil, nil
		}
		var cas []root.CertificateAuthority
		for _, r := range k.RootCerts {
			cas = append(cas, &root.FulcioCertificateAuthority{Root: r, Intermediates: k.IntermediateCerts, ValidityPeriodStart: r.NotBefore, ValidityPeriodEnd: r.NotAfter})
		}
		tr, err := root.NewTrustedRoot(root.TrustedRootMediaType01, cas, nil, nil, nil)
		if err != nil {
			return nil, err
		}
		// With neither log nor timestamp, the certificate is checked at the current time.
		return &cosign.CheckOpts{NewBundleFormat: true, TrustedMaterial: tr, Identities: []cosign.Identity{k.Identity},
			IgnoreTlog: true, IgnoreSCT: true, Offline: true}, nil
	}
	sv, err := signature.LoadVerifier(a.PublicKey, crypto.SHA256)
	if err != nil {
		return nil, err
	}
	key := root.NewExpiringKey(sv, time.Time{}, time.Time{})
	return &cosign.CheckOpts{
		NewBundleFormat: true,
		SigVerifier:     sv,
		TrustedMaterial: root.NewTrustedPublicKeyMaterial(func(string) (root.TimeConstrainedVerifier, error) { return key, nil }),
		IgnoreTlog:      true,
		IgnoreSCT:       true,
		Offline:         true,
	}, nil
}

// bundleStatement decodes the in-toto statement of a DSSE bundle.
func bundleStatement(b *sgbundle.Bundle) (inTotoStatement, bool) {
	var st inTotoStatement
	if b == nil || b.Bundle == nil {
		return st, false
	}
	env, ok := b.Content.(*protobundle.Bundle_DsseEnvelope)
	if !ok || env.DsseEnvelope == nil {
		return st, false
	}
	return st, json.Unmarshal(env.DsseEnvelope.Payload, &st) == nil
}
