package v1alpha1

import (
	"testing"

	"k8s.io/apimachinery/pkg/runtime"
)

func TestSchemeKnowsKinds(t *testing.T) {
	s := runtime.NewScheme()
	if err := AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"MCPServer", "MCPServerList", "MCPServerPolicy", "MCPServerPolicyList", "ListOptions", "DeleteOptions"} {
		if !s.Recognizes(GroupVersion.WithKind(k)) {
			t.Errorf("scheme does not know %s", k)
		}
	}
}
