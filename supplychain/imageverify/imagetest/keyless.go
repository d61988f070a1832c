package imagetest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"math/big"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/sigstore/cosign/v2/pkg/oci/static"
)

// oidIssuer is Fulcio's certificate extension naming the OIDC issuer that vouched for the subject.
var oidIssuer = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 57264, 1, 1}

// CA is a throwaway Fulcio-style certificate authority for keyless signatures.
type CA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	// RootPEM is the CA certificate, as a policy's keyless roots carry it.
	RootPEM []byte
}

// NewCA creates a root CA.
func NewCA() (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "mcp-warden test CA", Organization: []string{"mcp-warden"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{cert: cert, key: key, RootPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

// KeylessSigner holds a short-lived code-signing certificate for an identity, as Fulcio issues one.
type KeylessSigner struct {
	key     *ecdsa.PrivateKey
	certPEM []byte
	chain   []byte
}

// Issue returns a signer whose certificate names the email subject and OIDC issuer.
func (ca *CA) Issue(email, issuer string) (*KeylessSigner, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	certPEM, err := ca.certify(&key.PublicKey, email, issuer)
	if err != nil {
		return nil, err
	}
	return &KeylessSigner{key: key, certPEM: certPEM, chain: ca.RootPEM}, nil
}

// certify issues a short-lived code-signing certificate for pub naming the email subject and the OIDC
// issuer (Fulcio's issuer extension), as PEM.
func (ca *CA) certify(pub crypto.PublicKey, email, issuer string) ([]byte, error) {
	tmpl := &x509.Certificate{
		SerialNumber:    big.NewInt(time.Now().UnixNano()),
		NotBefore:       time.Now().Add(-time.Minute),
		NotAfter:        time.Now().Add(time.Hour),
		KeyUsage:        x509.KeyUsageDigitalSignature,
		ExtKeyUsage:     []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning},
		EmailAddresses:  []string{email},
		ExtraExtensions: []pkix.Extension{{Id: oidIssuer, Value: []byte(issuer)}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

// Sign attaches a keyless signature of ref (signature plus certificate chain) to ref.
func (s *KeylessSigner) Sign(ref name.Digest) error {
	k, err := signerFor(s.key)
	if err != nil {
		return err
	}
	return attachSignature(k, ref, ref, static.WithCertChain(s.certPEM, s.chain))
}
