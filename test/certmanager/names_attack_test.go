package certmanager_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
	"github.com/mcp-warden/mcp-warden/controllers"
	"github.com/mcp-warden/mcp-warden/internal/localcluster"
	"github.com/mcp-warden/mcp-warden/internal/testenv"
	"github.com/mcp-warden/mcp-warden/operator"
)

// TestServerNameCannotClaimAnotherServersService is the attacker's test (a tenant with the right to
// create MCPServers in a namespace of its own, here "local"). A gateway's certificate carries
// <name>, <name>.<namespace>, <name>.<namespace>.svc and <name>.<namespace>.svc.<cluster domain>, and
// an MCPServer's name may contain dots: the server "files.<victim ns>.svc.cluster" in namespace "local"
// has <name>.<namespace> = "files.<victim ns>.svc.cluster.local", the victim server's Service name, the
// one its clients verify and the one every replica's peer port requires. With cert-manager issuing,
// the operator asked for that certificate in the tenant's namespace, whose Secret (key included) the
// tenant reads: a certificate from the issuer the victim's clients trust, for the victim's name. A
// server's name must be one a Service can have (an RFC 1035 label), so its names are its own.
func TestServerNameCannotClaimAnotherServersService(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	env, err := testenv.Start(ctx, localcluster.Options{CRDs: []*apiextensionsv1.CustomResourceDefinition{certificateCRD(), certificateRequestCRD()}},
		func(*localcluster.Cluster) operator.Options {
			return operator.Options{SeveralInProcess: true, GatewayCertIssuer: &controllers.CertIssuer{Kind: "ClusterIssuer", Name: "cluster-ca"}}
		})
	t.Cleanup(func() { cancel(); env.Stop() })
	if err != nil {
		t.Fatal(err)
	}
	k8s := env.Client
	victimNS := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "victim-"}}
	if err := k8s.Create(ctx, victimNS); err != nil {
		t.Fatal(err)
	}
	if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "local"}}); err != nil {
		t.Fatal(err)
	}
	victimFQDN := "files." + victimNS.Name + ".svc.cluster.local"
	name := "files." + victimNS.Name + ".svc.cluster"
	s := &mcpv1alpha1.MCPServer{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "local"},
		Spec: mcpv1alpha1.MCPServerSpec{
			Image:   "registry.example/acme/files@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
			Gateway: mcpv1alpha1.GatewaySpec{Auth: mcpv1alpha1.GatewayAuth{Disabled: true}},
		},
	}
	createErr := k8s.Create(ctx, s)
	if createErr != nil {
		t.Logf("the server %q is refused: %v", name, createErr)
	}
	// whether admitted or not, no Certificate in the tenant's namespace may name the victim's Service
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		certs := &unstructured.UnstructuredList{}
		certs.SetGroupVersionKind(controllers.CertificateGVK.GroupVersion().WithKind("CertificateList"))
		if err := k8s.List(ctx, certs, client.InNamespace("local")); err != nil {
			t.Fatal(err)
		}
		for _, c := range certs.Items {
			if dns, _, _ := unstructured.NestedStringSlice(c.Object, "spec", "dnsNames"); slices.Contains(dns, victimFQDN) {
				t.Fatalf("the operator asked cert-manager, in namespace local, for a certificate naming %s, the Service of another namespace's server (Certificate %s, dnsNames %v)", victimFQDN, c.GetName(), dns)
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
	if createErr == nil {
		got := &mcpv1alpha1.MCPServer{}
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(s), got); err != nil {
			t.Fatal(err)
		}
		t.Logf("admitted; conditions %v", fmt.Sprint(got.Status.Conditions))
	}
}
