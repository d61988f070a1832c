package controllers_test

import (
	"context"
	"path/filepath"
	"testing"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"github.com/mcp-warden/mcp-warden/internal/localcluster"
)

// TestManagerHasLeastPrivilege installs the manager's RBAC as config/default renders it and asks the
// API server (SubjectAccessReviews) what its ServiceAccount can and cannot do. The manager parses
// registry content an attacker chooses, so its credentials must not reach other namespaces' Secrets
// (a Secret of type service-account-token in kube-system mints a privileged token) or other webhook
// configurations.
func TestManagerHasLeastPrivilege(t *testing.T) {
	ctx := context.Background()
	root, err := localcluster.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), filepath.Join(root, "config", "default"))
	if err != nil {
		t.Fatal(err)
	}
	const ns = "mcp-warden-system"
	if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); client.IgnoreAlreadyExists(err) != nil {
		t.Fatal(err)
	}
	for _, r := range m.Resources() {
		switch r.GetKind() {
		case "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding":
		default:
			continue
		}
		obj, err := r.Map()
		if err != nil {
			t.Fatal(err)
		}
		u := &unstructured.Unstructured{Object: obj}
		if err := k8s.Create(ctx, u); client.IgnoreAlreadyExists(err) != nil {
			t.Fatalf("create %s %s: %v", r.GetKind(), r.GetName(), err)
		}
	}
	user := "system:serviceaccount:" + ns + ":mcp-warden-controller-manager"
	groups := []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"}
	can := func(verb, group, resource, namespace, name string) bool {
		t.Helper()
		sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User: user, Groups: groups,
			ResourceAttributes: &authorizationv1.ResourceAttributes{Verb: verb, Group: group, Resource: resource, Namespace: namespace, Name: name},
		}}
		if err := k8s.Create(ctx, sar); err != nil {
			t.Fatal(err)
		}
		return sar.Status.Allowed
	}
	for _, c := range []struct {
		verb, group, resource, namespace, name string
		want                                   bool
	}{
		// What the manager needs.
		{"get", "", "secrets", ns, "mcp-warden-webhook-server-cert", true},
		{"create", "", "secrets", ns, "", true},
		{"patch", "admissionregistration.k8s.io", "validatingwebhookconfigurations", "", "mcp-warden-validating-webhook-configuration", true},
		{"list", "networking.k8s.io", "networkpolicies", "", "", true},
		{"create", "apps", "deployments", "team-a", "", true},
		{"patch", "policy.networking.k8s.io", "clusternetworkpolicies", "", "mcp-warden-protected-ranges", true},
		// The gateways' serving certificates are pod certificates the manager signs: it reads the
		// requests and sets their status for its own signer only, and for no other signer.
		{"list", "certificates.k8s.io", "podcertificaterequests", "", "", true},
		{"update", "certificates.k8s.io", "podcertificaterequests/status", "team-a", "", true},
		{"sign", "certificates.k8s.io", "signers", "", "mcp.warden.dev/gateway-serving", true},
		{"sign", "certificates.k8s.io", "signers", "", "mcp.warden.dev/other", false},
		{"sign", "certificates.k8s.io", "signers", "", "kubernetes.io/kube-apiserver-client-pod", false},
		{"sign", "certificates.k8s.io", "signers", "", "kubernetes.io/kube-apiserver-client", false},
		{"approve", "certificates.k8s.io", "signers", "", "kubernetes.io/kube-apiserver-client", false},
		{"create", "certificates.k8s.io", "podcertificaterequests", "team-a", "", false},
		{"update", "certificates.k8s.io", "certificatesigningrequests/approval", "", "", false},
		// With cert-manager issuing, the issuer's CA is read from the CertificateRequests' status.
		{"list", "cert-manager.io", "certificaterequests", "team-a", "", true},
		// What it must not do. No Secret outside its own namespace: session ids need no shared key,
		// the gateways' certificates are pod certificates (or cert-manager's Secret, which only the
		// gateway mounts), so a compromised manager reads and writes no tenant's Secret.
		{"get", "", "secrets", "team-a", "files-gateway-tls", false},
		{"list", "", "secrets", "team-a", "", false},
		{"watch", "", "secrets", "team-a", "", false},
		{"create", "", "secrets", "team-a", "", false},
		{"update", "", "secrets", "team-a", "files-gateway-session", false},
		{"get", "", "secrets", "kube-system", "", false},
		{"list", "", "secrets", "", "", false},
		{"delete", "", "secrets", "team-a", "", false},
		{"delete", "", "secrets", "kube-system", "", false},
		{"deletecollection", "", "secrets", "", "", false},
		{"patch", "admissionregistration.k8s.io", "validatingwebhookconfigurations", "", "someone-elses-webhook", false},
		{"create", "admissionregistration.k8s.io", "validatingwebhookconfigurations", "", "", false},
		{"delete", "admissionregistration.k8s.io", "validatingwebhookconfigurations", "", "mcp-warden-validating-webhook-configuration", false},
		{"patch", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", "", "", false},
		{"create", "", "serviceaccounts/token", "kube-system", "", false},
		{"create", "rbac.authorization.k8s.io", "clusterrolebindings", "", "", false},
		{"escalate", "rbac.authorization.k8s.io", "clusterroles", "", "", false},
		{"create", "", "pods/exec", "team-a", "", false},
		{"patch", "policy.networking.k8s.io", "clusternetworkpolicies", "", "platform-baseline", false},
		{"delete", "policy.networking.k8s.io", "clusternetworkpolicies", "", "mcp-warden-protected-ranges", false},
	} {
		if got := can(c.verb, c.group, c.resource, c.namespace, c.name); got != c.want {
			t.Errorf("manager can %s %s.%s in %q (name %q) = %v, want %v", c.verb, c.resource, c.group, c.namespace, c.name, got, c.want)
		}
	}
}
