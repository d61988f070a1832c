package desired

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
	"github.com/mcp-warden/mcp-warden/policy/netpol"
)

// TestEveryObjectIsControlledByItsServer: each object built for a server names that server (and no
// other) as its controller, with blockOwnerDeletion, so the garbage collector removes it with the server
// and the operator's apply, which refuses an object without it, accepts it. The CA bundle ConfigMap,
// shared by the namespace's servers, has no owner.
func TestEveryObjectIsControlledByItsServer(t *testing.T) {
	s := testServer()
	s.UID = types.UID("0b5e7a1c-6b1a-4f7e-9c53-2a1d3c4e5f60")
	o := testOptions
	o.CertIssuer = &CertIssuer{Kind: "ClusterIssuer", Name: "internal"}
	cm, hash, err := GatewayConfigMap(s, o)
	if err != nil {
		t.Fatal(err)
	}
	np, errs := NetworkPolicy(s, o, netpol.Ceiling{})
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	for _, obj := range []metav1.Object{
		ServiceAccount(s), Service(s, o), np, CiliumNetworkPolicy(s, o, netpol.Ceiling{}), cm, Deployment(s, o, hash), Certificate(s, o),
	} {
		refs := obj.GetOwnerReferences()
		ref := metav1.GetControllerOf(obj)
		if len(refs) != 1 || ref == nil || ref.UID != s.UID || ref.Name != s.Name || ref.Kind != "MCPServer" ||
			ref.APIVersion != mcpv1alpha1.GroupVersion.String() || ref.BlockOwnerDeletion == nil || !*ref.BlockOwnerDeletion {
			t.Errorf("%T %s: owner references %+v, want the one controller reference to MCPServer %s (uid %s)", obj, obj.GetName(), refs, s.Name, s.UID)
		}
	}
	if refs := CABundleConfigMap(s.Namespace, []byte("ca")).GetOwnerReferences(); len(refs) != 0 {
		t.Errorf("the namespace's CA bundle belongs to no one server: owner references %+v", refs)
	}
	if Certificate(s, testOptions) != nil {
		t.Error("without a cert-manager issuer there is no Certificate")
	}
}
