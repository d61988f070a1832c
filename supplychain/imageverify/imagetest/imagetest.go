// Package imagetest builds what image-verification tests and the demo need, for real: an OCI registry on
// loopback (go-containerregistry's in-process registry), images pushed to it, keys, and cosign signatures
// and in-toto attestations written with the cosign library.
package imagetest

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/sigstore/cosign/v2/pkg/oci/static"
	"github.com/sigstore/sigstore/pkg/signature"

	"github.com/mcp-warden/mcp-warden/supplychain/imagesign"
)

// Registry is an OCI registry served on 127.0.0.1.
type Registry struct {
	// Host is host:port, e.g. 127.0.0.1:41234.
	Host string
	srv  *httptest.Server
	auth atomic.Pointer[[2]string]
}

// StartRegistry starts a registry on loopback.
func StartRegistry() *Registry {
	r := &Registry{}
	h := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if want := r.auth.Load(); want != nil {
			if u, p, ok := req.BasicAuth(); !ok || u != want[0] || p != want[1] {
				w.Header().Set("WWW-Authenticate", `Basic realm="imagetest"`)
				http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`, http.StatusUnauthorized)
				return
			}
		}
		h.ServeHTTP(w, req)
	}))
	r.Host = strings.TrimPrefix(r.srv.URL, "http://")
	return r
}

// RequireBasicAuth makes the registry private from now on: every request needs these credentials
// (push first, then lock).
func (r *Registry) RequireBasicAuth(user, password string) { r.auth.Store(&[2]string{user, password}) }

// Close stops the registry: later requests fail as an unreachable registry does.
func (r *Registry) Close() { r.srv.Close() }

// PushRandom pushes a small random image to repo (e.g. "acme/files") and returns its digest reference.
func (r *Registry) PushRandom(repo string) (name.Digest, error) {
	img, err := random.Image(256, 1)
	if err != nil {
		return name.Digest{}, err
	}
	return r.Push(repo, img)
}

// Push pushes an image to repo and returns its digest reference.
func (r *Registry) Push(repo string, img v1.Image) (name.Digest, error) {
	tag, err := name.NewTag(r.Host + "/" + repo + ":latest")
	if err != nil {
		return name.Digest{}, err
	}
	if err := remote.Write(tag, img); err != nil {
		return name.Digest{}, fmt.Errorf("push %s: %w", tag, err)
	}
	d, err := img.Digest()
	if err != nil {
		return name.Digest{}, err
	}
	return tag.Context().Digest(d.String()), nil
}

// Key is an ECDSA P-256 signing key.
type Key struct {
	Private *ecdsa.PrivateKey
	signer  signature.SignerVerifier
}

// NewKey generates a key.
func NewKey() (*Key, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	sv, err := signerFor(priv)
	if err != nil {
		return nil, err
	}
	return &Key{Private: priv, signer: sv}, nil
}

func signerFor(priv *ecdsa.PrivateKey) (signature.SignerVerifier, error) {
	return signature.LoadECDSASignerVerifier(priv, crypto.SHA256)
}

// Public returns the public key.
func (k *Key) Public() crypto.PublicKey { return &k.Private.PublicKey }

// PublicPEM returns the PEM-encoded public key, as a policy carries it.
func (k *Key) PublicPEM() []byte {
	der, _ := x509.MarshalPKIXPublicKey(&k.Private.PublicKey)
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// Sign attaches a cosign signature of ref to ref, as `cosign sign` does.
func (k *Key) Sign(ref name.Digest) error { return k.SignClaiming(ref, ref) }

// SignClaiming attaches to ref a signature whose payload claims the image claimed: with claimed != ref
// it builds the "signature copied from another image" attack.
func (k *Key) SignClaiming(ref, claimed name.Digest) error {
	return attachSignature(k.signer, ref, claimed)
}

// attachSignature signs the simple-signing payload claiming the image claimed and attaches it to ref,
// with the certificate chain when given (keyless).
func attachSignature(signer signature.Signer, ref, claimed name.Digest, opts ...static.Option) error {
	return imagesign.SignClaiming(context.Background(), signer, ref, claimed, opts)
}

// Attest attaches an in-toto attestation with the predicate type to ref, signed with the key in a DSSE
// envelope, as `cosign attest` does.
func (k *Key) Attest(ref name.Digest, predicateType string, predicate any) error {
	return imagesign.Attest(context.Background(), k.signer, ref, predicateType, predicate)
}

// Signer returns the key as a signer.
func (k *Key) Signer() signature.SignerVerifier { return k.signer }

// PushSigned pushes a random image to repo, signs it with key and attests it once per predicate type.
func (r *Registry) PushSigned(repo string, key *Key, predicateTypes ...string) (name.Digest, error) {
	d, err := r.PushRandom(repo)
	if err != nil {
		return d, err
	}
	if err := key.Sign(d); err != nil {
		return d, fmt.Errorf("sign %s: %w", d, err)
	}
	for _, pt := range predicateTypes {
		if err := key.Attest(d, pt, map[string]any{"buildDefinition": map[string]string{"buildType": "test"}}); err != nil {
			return d, fmt.Errorf("attest %s: %w", d, err)
		}
	}
	return d, nil
}
