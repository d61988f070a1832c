// Package imagesign signs container images and attaches in-toto attestations the way `cosign sign` and
// `cosign attest` do, with the cosign library: a simple-signing payload that names the digest, and
// DSSE-enveloped in-toto statements whose subject is the digest, stored in the registry beside the image.
package imagesign

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/sigstore/cosign/v2/pkg/cosign"
	"github.com/sigstore/cosign/v2/pkg/oci"
	"github.com/sigstore/cosign/v2/pkg/oci/mutate"
	ociremote "github.com/sigstore/cosign/v2/pkg/oci/remote"
	"github.com/sigstore/cosign/v2/pkg/oci/static"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/sigstore/sigstore/pkg/signature/dsse"
	sigpayload "github.com/sigstore/sigstore/pkg/signature/payload"
)

// InTotoStatement is the in-toto statement type attestations carry.
const InTotoStatement = "https://in-toto.io/Statement/v1"

// LoadKey reads a cosign private key (the encrypted "ENCRYPTED SIGSTORE PRIVATE KEY" PEM that
// `cosign generate-key-pair` writes), decrypting it with password.
func LoadKey(path string, password []byte) (signature.SignerVerifier, error) {
	pemBytes, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read signing key: %w", err)
	}
	sv, err := cosign.LoadPrivateKey(pemBytes, password, nil)
	if err != nil {
		return nil, fmt.Errorf("load signing key %s (a cosign key; the password comes from COSIGN_PASSWORD): %w", path, err)
	}
	return sv, nil
}

// Sign attaches a signature of ref to ref (with its certificate when signer is a CertifiedSigner).
func Sign(ctx context.Context, signer signature.Signer, ref name.Digest, ro ...remote.Option) error {
	return SignClaiming(ctx, signer, ref, ref, nil, ro...)
}

// SignClaiming attaches to ref a signature whose payload claims the image claimed (tests use claimed !=
// ref to build the "signature copied from another image" attack), with the certificate chain in
// certOpts for keyless signatures.
func SignClaiming(ctx context.Context, signer signature.Signer, ref, claimed name.Digest, certOpts []static.Option, ro ...remote.Option) error {
	payload, err := json.Marshal(sigpayload.Cosign{Image: claimed, ClaimedIdentity: claimed.String()})
	if err != nil {
		return err
	}
	sig, err := signer.SignMessage(bytes.NewReader(payload))
	if err != nil {
		return err
	}
	ociSig, err := static.NewSignature(payload, base64.StdEncoding.EncodeToString(sig), append(certOpts, certOptions(signer)...)...)
	if err != nil {
		return err
	}
	return attach(ctx, ref, ro, "signature",
		func(se oci.SignedEntity) (oci.SignedEntity, error) { return mutate.AttachSignatureToEntity(se, ociSig) },
		ociremote.WriteSignatures)
}

// Attest attaches an in-toto statement about ref with the predicate, signed in a DSSE envelope.
func Attest(ctx context.Context, signer signature.Signer, ref name.Digest, predicateType string, predicate any, ro ...remote.Option) error {
	stmt, err := json.Marshal(map[string]any{
		"_type":         InTotoStatement,
		"subject":       []map[string]any{{"name": ref.Context().String(), "digest": map[string]string{"sha256": digestHex(ref)}}},
		"predicateType": predicateType,
		"predicate":     predicate,
	})
	if err != nil {
		return err
	}
	envelope, err := dsse.WrapSigner(signer, "application/vnd.in-toto+json").SignMessage(bytes.NewReader(stmt))
	if err != nil {
		return err
	}
	att, err := static.NewAttestation(envelope, certOptions(signer)...)
	if err != nil {
		return err
	}
	return attach(ctx, ref, ro, "attestation",
		func(se oci.SignedEntity) (oci.SignedEntity, error) { return mutate.AttachAttestationToEntity(se, att) },
		ociremote.WriteAttestations)
}

// attach reads ref's signed entity, adds to it and writes what was added back to the registry.
func attach(ctx context.Context, ref name.Digest, ro []remote.Option, what string,
	add func(oci.SignedEntity) (oci.SignedEntity, error),
	write func(name.Repository, oci.SignedEntity, ...ociremote.Option) error) error {
	opts := ociremote.WithRemoteOptions(append([]remote.Option{remote.WithContext(ctx)}, ro...)...)
	se, err := ociremote.SignedEntity(ref, opts)
	if err != nil {
		return fmt.Errorf("read %s: %w", ref, err)
	}
	if se, err = add(se); err != nil {
		return err
	}
	if err := write(ref.Context(), se, opts); err != nil {
		return fmt.Errorf("write %s of %s: %w", what, ref, err)
	}
	return nil
}

func digestHex(ref name.Digest) string {
	d := ref.DigestStr()
	if len(d) > len("sha256:") {
		return d[len("sha256:"):]
	}
	return d
}
