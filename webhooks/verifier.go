package webhooks

import (
	"fmt"

	"github.com/mcp-warden/mcp-warden/supplychain/imageverify"
)

// digestPinned returns a denial for an image not pinned by digest, telling how to pin it. The digest
// is parsed by imageverify.ParseDigest, as the verifier parses it.
func digestPinned(image string) error {
	if _, err := imageverify.ParseDigest(image); err != nil {
		return fmt.Errorf("image %s is not pinned by digest; %s (e.g. from `crane digest %s`)", image, imageverify.PinHint(image), image)
	}
	return nil
}
