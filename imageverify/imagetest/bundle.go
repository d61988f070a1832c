package imagetest

import (
	"crypto"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http/httptest"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	ociremote "github.com/sigstore/cosign/v2/pkg/oci/remote"
	"github.com/sigstore/sigstore-go/pkg/sign"
	"google.golang.org/protobuf/encoding/protojson"
)

// PredicateCosignSign is the predicate type of the statement cosign v3 signs for `cosign sign` in the
// Sigstore bundle format: a signature, not an attestation.
const PredicateCosignSign = "https://sigstore.dev/cosign/sign/v1"

// StartRegistryWithReferrers starts a registry on loopback that serves the OCI 1.1 referrers API (the
// default registry does not, so bundles land under the sha256-<digest> fallback tag).
func StartRegistryWithReferrers() *Registry {
	r := &Registry{}
	h := registry.New(registry.Logger(log.New(io.Discard, "", 0)), registry.WithReferrersSupport(true))
	r.srv = httptest.NewServer(h)
	r.Host = strings.TrimPrefix(r.srv.URL, "http://")
	return r
}

// BundleKey signs Sigstore bundles (v0.3, DSSE) with a key, as `cosign sign --key` and `cosign attest
// --key` of cosign v3 do.
type BundleKey struct{ kp *sign.EphemeralKeypair }

// NewBundleKey generates a key.
func NewBundleKey() (*BundleKey, error) {
	kp, err := sign.NewEphemeralKeypair(nil)
	if err != nil {
		return nil, err
	}
	return &BundleKey{kp: kp}, nil
}

// Public returns the public key.
func (k *BundleKey) Public() crypto.PublicKey { return k.kp.GetPublicKey() }

// PublicPEM returns the PEM-encoded public key.
func (k *BundleKey) PublicPEM() []byte {
	p, _ := k.kp.GetPublicKeyPem()
	return []byte(p)
}

// Sign attaches a signature bundle for ref (a statement of predicate type PredicateCosignSign).
func (k *BundleKey) Sign(ref name.Digest) error {
	return k.AttestClaiming(ref, ref, PredicateCosignSign, map[string]any{})
}

// Attest attaches an attestation bundle for ref.
func (k *BundleKey) Attest(ref name.Digest, predicateType string, predicate any) error {
	return k.AttestClaiming(ref, ref, predicateType, predicate)
}

// AttestClaiming attaches to ref a bundle whose statement's subject is claimed (claimed != ref builds a
// copied attestation).
func (k *BundleKey) AttestClaiming(ref, claimed name.Digest, predicateType string, predicate any) error {
	hex := strings.TrimPrefix(claimed.DigestStr(), "sha256:")
	stmt, err := json.Marshal(map[string]any{
		"_type":         "https://in-toto.io/Statement/v1",
		"subject":       []map[string]any{{"name": claimed.Context().String(), "digest": map[string]string{"sha256": hex}}},
		"predicateType": predicateType,
		"predicate":     predicate,
	})
	if err != nil {
		return err
	}
	b, err := sign.Bundle(&sign.DSSEData{Data: stmt, PayloadType: "application/vnd.in-toto+json"}, k.kp, sign.BundleOptions{})
	if err != nil {
		return fmt.Errorf("sign bundle: %w", err)
	}
	raw, err := protojson.Marshal(b)
	if err != nil {
		return err
	}
	return ociremote.WriteAttestationNewBundleFormat(ref, raw, predicateType)
}
