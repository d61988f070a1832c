package imagetest

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
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
type BundleKey struct {
	kp *sign.EphemeralKeypair
	// provider, when set, certifies the key (keyless): the bundle carries the certificate.
	provider sign.CertificateProvider
}

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
	b, err := sign.Bundle(&sign.DSSEData{Data: stmt, PayloadType: "application/vnd.in-toto+json"}, k.kp, sign.BundleOptions{CertificateProvider: k.provider})
	if err != nil {
		return fmt.Errorf("sign bundle: %w", err)
	}
	raw, err := protojson.Marshal(b)
	if err != nil {
		return err
	}
	return ociremote.WriteAttestationNewBundleFormat(ref, raw, predicateType)
}

// BundleSigner returns a key whose bundles carry a certificate the CA issues for the identity, as
// keyless `cosign sign` of cosign v3 writes them.
func (ca *CA) BundleSigner(email, issuer string) (*BundleKey, error) {
	k, err := NewBundleKey()
	if err != nil {
		return nil, err
	}
	k.provider = caProvider{ca: ca, email: email, issuer: issuer}
	return k, nil
}

type caProvider struct {
	ca            *CA
	email, issuer string
}

func (p caProvider) GetCertificate(_ context.Context, kp sign.Keypair, _ *sign.CertificateProviderOptions) ([]byte, error) {
	certPEM, err := p.ca.certify(kp.GetPublicKey(), p.email, p.issuer)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(certPEM)
	return block.Bytes, nil
}

// Root returns the CA certificate.
func (ca *CA) Root() *x509.Certificate { return ca.cert }
