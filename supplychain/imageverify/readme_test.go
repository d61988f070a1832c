package imageverify_test

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/mcp-warden/mcp-warden/supplychain/imageverify"
	"github.com/mcp-warden/mcp-warden/webhooks"
)

// TestREADMEDefaultsAreTrue: the defaults the README states are the code's.
func TestREADMEDefaultsAreTrue(t *testing.T) {
	if webhooks.DefaultVerifyTimeout != imageverify.DefaultTimeout {
		t.Errorf("the admission deadline (%s) and the verification deadline (%s) differ", webhooks.DefaultVerifyTimeout, imageverify.DefaultTimeout)
	}
	readme, err := os.ReadFile("../../README.md")
	must(t, err)
	for _, want := range []string{
		fmt.Sprintf("`--verify-timeout`, %d s", int(imageverify.DefaultTimeout.Seconds())),
		fmt.Sprintf("%d MiB per registry response, %d layers per signature or\nattestation manifest, %d MiB per verification, %d verifications",
			imageverify.DefaultMaxResponse>>20, imageverify.DefaultMaxEntries, imageverify.DefaultMaxBytes>>20, imageverify.DefaultMaxConcurrent),
		fmt.Sprintf("%d verifications a minute (bursts of %d)", imageverify.DefaultNamespacePerMin, imageverify.DefaultNamespaceBurst),
	} {
		if !strings.Contains(string(readme), want) {
			t.Errorf("README does not say %q", want)
		}
	}
}
