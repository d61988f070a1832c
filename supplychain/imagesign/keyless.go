package imagesign

import (
	"context"
	"crypto"
	"encoding/pem"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"

	"github.com/sigstore/cosign/v2/pkg/oci/static"
	"github.com/sigstore/sigstore-go/pkg/sign"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
)

// SigstorePublicFulcio is the public-good Fulcio instance.
const SigstorePublicFulcio = "https://fulcio.sigstore.dev"

// CertifiedSigner signs with an ephemeral key that a certificate authority (Fulcio) certified for an OIDC
// identity. The signatures and attestations it makes carry the certificate, so verifiers check who signed
// (issuer and subject) instead of a public key: cosign's "keyless" signing.
type CertifiedSigner struct {
	keypair *sign.EphemeralKeypair
	// Cert is the PEM signing certificate.
	Cert []byte
}

var _ signature.Signer = (*CertifiedSigner)(nil)

// FulcioSigner creates an ephemeral ECDSA P-256 key and has the Fulcio instance at fulcioURL certify it
// for the identity in idToken, an OIDC identity token whose audience is "sigstore" (Fulcio's v2 API,
// through sigstore-go). The request runs under timeout; the key lives only in memory.
func FulcioSigner(ctx context.Context, fulcioURL, idToken string, timeout time.Duration) (*CertifiedSigner, error) {
	u, err := url.Parse(fulcioURL)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return nil, fmt.Errorf("fulcio URL %q: want an absolute URL such as %s", fulcioURL, SigstorePublicFulcio)
	}
	idToken = strings.TrimSpace(idToken)
	if strings.Count(idToken, ".") != 2 {
		return nil, fmt.Errorf("identity token: not a JWT (want the OIDC ID token of the CI job, audience sigstore)")
	}
	kp, err := sign.NewEphemeralKeypair(nil)
	if err != nil {
		return nil, err
	}
	f := sign.NewFulcio(&sign.FulcioOptions{BaseURL: strings.TrimSuffix(fulcioURL, "/"), Timeout: timeout, Retries: 1})
	der, err := f.GetCertificate(ctx, kp, &sign.CertificateProviderOptions{IDToken: idToken})
	if err != nil {
		return nil, fmt.Errorf("fulcio %s: signing certificate: %w", fulcioURL, err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	certs, err := cryptoutils.UnmarshalCertificatesFromPEM(certPEM)
	if err != nil || len(certs) == 0 {
		return nil, fmt.Errorf("fulcio %s returned an unreadable certificate: %w", fulcioURL, err)
	}
	if err := cryptoutils.EqualKeys(certs[0].PublicKey, kp.GetPublicKey()); err != nil {
		return nil, fmt.Errorf("fulcio %s certified another key than the one sent: %w", fulcioURL, err)
	}
	return &CertifiedSigner{keypair: kp, Cert: certPEM}, nil
}

// PublicKey returns the certified public key.
func (s *CertifiedSigner) PublicKey(...signature.PublicKeyOption) (crypto.PublicKey, error) {
	return s.keypair.GetPublicKey(), nil
}

// SignMessage signs the message (ECDSA P-256 over its SHA-256 digest, as cosign does).
func (s *CertifiedSigner) SignMessage(message io.Reader, _ ...signature.SignOption) ([]byte, error) {
	data, err := io.ReadAll(message)
	if err != nil {
		return nil, err
	}
	sig, _, err := s.keypair.SignData(context.Background(), data)
	return sig, err
}

// certOptions carries a certified signer's certificate into a signature or attestation layer.
func certOptions(signer signature.Signer) []static.Option {
	if c, ok := signer.(*CertifiedSigner); ok {
		return []static.Option{static.WithCertChain(c.Cert, nil)}
	}
	return nil
}
