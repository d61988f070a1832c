// Package servingcert is the operator's certificate authority for the gateways' serving certificates:
// a CA kept in a Secret of the operator's namespace (created on first use, rotated at two thirds of its
// life with the old CA kept in the bundle until it expires), and short-lived leaf certificates for a
// server's Service names, renewed at two thirds of their life.
package servingcert

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Lifetimes. A leaf is renewed at two thirds of its life (day 20 of 30) and the CA rotated at two
// thirds of its (about day 243 of 365): the old CA then has four months left in the bundle, far more
// than a leaf it signed lives, so every client that refreshes its bundle within that time keeps
// verifying through the rotation.
const (
	CALifetime   = 365 * 24 * time.Hour
	LeafLifetime = 30 * 24 * time.Hour
	// backdate covers clock skew between the operator and clients.
	backdate = 5 * time.Minute
)

// Secret keys of the CA Secret.
const (
	CACertKey   = "ca.crt"
	CAKeyKey    = "ca.key"
	CABundleKey = "bundle.crt"
)

// CA is one generation of the operator's CA, and the bundle clients trust (this CA and the previous
// ones that have not expired).
type CA struct {
	Cert   *x509.Certificate
	Key    *ecdsa.PrivateKey
	Bundle []byte
}

// Authority loads, creates and rotates the CA in its Secret and issues leaf certificates. It is safe
// for concurrent use; several operator replicas agree through the Secret's resourceVersion.
type Authority struct {
	// Client writes the CA Secret; Reader reads it (around the cache).
	Client client.Client
	Reader client.Reader
	// Secret is where the CA lives, in the operator's namespace.
	Secret types.NamespacedName
	// Now is the clock (default time.Now).
	Now func() time.Time
	// CALifetime and LeafLifetime override the defaults (tests of rotation).
	CALifetime, LeafLifetime time.Duration

	mu sync.Mutex
	ca *CA
}

func (a *Authority) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now()
}

func (a *Authority) caLifetime() time.Duration {
	if a.CALifetime > 0 {
		return a.CALifetime
	}
	return CALifetime
}

// LeafLifetimeOrDefault is how long an issued leaf is valid.
func (a *Authority) LeafLifetimeOrDefault() time.Duration {
	if a.LeafLifetime > 0 {
		return a.LeafLifetime
	}
	return LeafLifetime
}

// RotateAt is when the CA is due for rotation (two thirds into its life).
func (c *CA) RotateAt() time.Time { return dueAt(c.Cert) }

// dueAt is two thirds into [notBefore, notAfter].
func dueAt(c *x509.Certificate) time.Time {
	return c.NotBefore.Add(c.NotAfter.Sub(c.NotBefore) * 2 / 3)
}

// Current returns the CA, loading it from its Secret, creating it when there is none, and rotating it
// when it is due.
func (a *Authority) Current(ctx context.Context) (*CA, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ca != nil && a.now().Before(dueAt(a.ca.Cert)) {
		return a.ca, nil
	}
	for attempt := 0; attempt < 3; attempt++ {
		ca, err := a.loadOrRotate(ctx)
		if apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) {
			continue // another replica wrote it first: read theirs
		}
		if err != nil {
			return nil, err
		}
		a.ca = ca
		return ca, nil
	}
	return nil, fmt.Errorf("CA Secret %s: kept changing under concurrent writes", a.Secret)
}

func (a *Authority) loadOrRotate(ctx context.Context) (*CA, error) {
	sec := &corev1.Secret{}
	err := a.Reader.Get(ctx, a.Secret, sec)
	if apierrors.IsNotFound(err) {
		ca, err := a.newCA(nil)
		if err != nil {
			return nil, err
		}
		sec = &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: a.Secret.Namespace, Name: a.Secret.Name,
			Labels: map[string]string{"app.kubernetes.io/managed-by": "mcp-warden", "app.kubernetes.io/component": "gateway-ca"}}}
		sec.Data = caData(ca)
		if err := a.Client.Create(ctx, sec); err != nil {
			return nil, fmt.Errorf("create the gateway CA Secret %s: %w", a.Secret, err)
		}
		return ca, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the gateway CA Secret %s: %w", a.Secret, err)
	}
	ca, err := parseCA(sec.Data)
	if err != nil {
		return nil, fmt.Errorf("gateway CA Secret %s: %w; delete it to have a new CA generated (every gateway certificate is then reissued)", a.Secret, err)
	}
	if a.now().Before(dueAt(ca.Cert)) {
		return ca, nil
	}
	next, err := a.newCA(ca.Bundle)
	if err != nil {
		return nil, err
	}
	sec.Data = caData(next)
	if err := a.Client.Update(ctx, sec); err != nil {
		return nil, fmt.Errorf("rotate the gateway CA in Secret %s: %w", a.Secret, err)
	}
	return next, nil
}

func caData(ca *CA) map[string][]byte {
	kder, _ := x509.MarshalECPrivateKey(ca.Key)
	return map[string][]byte{
		CACertKey:   pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw}),
		CAKeyKey:    pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}),
		CABundleKey: ca.Bundle,
	}
}

func parseCA(data map[string][]byte) (*CA, error) {
	pair, err := tls.X509KeyPair(data[CACertKey], data[CAKeyKey])
	if err != nil {
		return nil, fmt.Errorf("%s and %s: %w", CACertKey, CAKeyKey, err)
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, err
	}
	key, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
	if !ok || !cert.IsCA {
		return nil, errors.New("not an ECDSA CA certificate and key")
	}
	bundle := data[CABundleKey]
	if len(bundle) == 0 {
		bundle = data[CACertKey]
	}
	return &CA{Cert: cert, Key: key, Bundle: bundle}, nil
}

// newCA makes a CA; the bundle is it and the certificates of prev that are still valid.
func (a *Authority) newCA(prev []byte) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := a.now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: fmt.Sprintf("mcp-warden gateway CA %s", now.UTC().Format("2006-01-02T15:04Z")), Organization: []string{"mcp-warden"}},
		NotBefore: now.Add(-backdate), NotAfter: now.Add(a.caLifetime()),
		IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("create the gateway CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	bundle := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	for _, old := range parseBundle(prev) {
		if now.Before(old.NotAfter) {
			bundle = append(bundle, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: old.Raw})...)
		}
	}
	return &CA{Cert: cert, Key: key, Bundle: bundle}, nil
}

func parseBundle(b []byte) []*x509.Certificate {
	var out []*x509.Certificate
	for len(b) > 0 {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if c, err := x509.ParseCertificate(blk.Bytes); err == nil {
			out = append(out, c)
		}
	}
	return out
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}

// Issue makes a serving certificate for names, signed by the current CA: PEM certificate and key.
func (a *Authority) Issue(ca *CA, names []string) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	now := a.now()
	notAfter := now.Add(a.LeafLifetimeOrDefault())
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: names[0]}, DNSNames: slices.Clone(names),
		NotBefore: now.Add(-backdate), NotAfter: notAfter,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("issue a serving certificate for %s: %w", names[0], err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), nil
}

// IssueFor makes a certificate for names, for server and client authentication, and a public key
// someone else holds the private key of (the kubelet's, for a pod certificate), signed by the current CA and valid for lifetime from now
// (capped at the CA's own end). notBefore is a minute back, on a whole second, so that it survives the
// round trip through an API timestamp unchanged.
func (a *Authority) IssueFor(ca *CA, names []string, pub crypto.PublicKey, lifetime time.Duration) (certPEM []byte, leaf *x509.Certificate, err error) {
	if len(names) == 0 {
		return nil, nil, errors.New("issue a serving certificate: no DNS names")
	}
	notBefore := a.now().Add(-time.Minute).Truncate(time.Second)
	notAfter := notBefore.Add(lifetime)
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: names[0]}, DNSNames: slices.Clone(names),
		NotBefore: notBefore, NotAfter: notAfter,
		// a gateway serves with it, and presents it as a client to the other replicas of its server
		// (the peer relay is authenticated by mutual TLS)
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("issue a serving certificate for %s: %w", names[0], err)
	}
	if leaf, err = x509.ParseCertificate(der); err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), leaf, nil
}

// Renewal says why the pair must be (re)issued, or "" when it is good: it holds a certificate and its
// key, for exactly names, signed by the current CA, not yet two thirds through its life.
func (a *Authority) Renewal(ca *CA, certPEM, keyPEM []byte, names []string) string {
	if len(certPEM) == 0 {
		return "no certificate yet"
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return "the certificate and key do not load: " + err.Error()
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return "the certificate does not parse: " + err.Error()
	}
	switch {
	case !slices.Equal(leaf.DNSNames, names):
		return "the certificate is for other names"
	case !signedByBundle(leaf, ca):
		return "the certificate is not signed by a CA of the bundle"
	case !a.now().Before(dueAt(leaf)):
		return "the certificate is due for renewal"
	}
	return ""
}

// signedByBundle reports whether leaf was signed by a CA of the bundle that outlives it: after a CA
// rotation, certificates of the previous CA are renewed at their usual time, not all at once, while
// clients pick up the new bundle.
func signedByBundle(leaf *x509.Certificate, ca *CA) bool {
	for _, c := range append([]*x509.Certificate{ca.Cert}, parseBundle(ca.Bundle)...) {
		if c.IsCA && bytes.Equal(leaf.RawIssuer, c.RawSubject) && leaf.CheckSignatureFrom(c) == nil && !leaf.NotAfter.After(c.NotAfter) {
			return true
		}
	}
	return false
}

// RenewAt is when the PEM certificate is due for renewal (zero if it does not parse).
func RenewAt(certPEM []byte) time.Time {
	blk, _ := pem.Decode(certPEM)
	if blk == nil {
		return time.Time{}
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return time.Time{}
	}
	return dueAt(c)
}
