package release

import (
	"context"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/sigstore/sigstore/pkg/signature"

	"github.com/mcp-warden/mcp-warden/supplychain/imagesign"
)

func signImage(ctx context.Context, signer signature.Signer, ref name.Digest, ro []remote.Option) error {
	return imagesign.Sign(ctx, signer, ref, ro...)
}

// attest attaches a JSON predicate (kept as raw JSON inside the statement).
func attest(ctx context.Context, signer signature.Signer, ref name.Digest, predicateType string, predicate []byte, ro []remote.Option) error {
	return imagesign.Attest(ctx, signer, ref, predicateType, rawJSON(predicate), ro...)
}

type rawJSON []byte

func (r rawJSON) MarshalJSON() ([]byte, error) { return r, nil }
