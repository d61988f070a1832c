// Package certmanager_test runs the operator against an API server that serves cert-manager's
// Certificate (a minimal CRD fixture: cert-manager itself does not run here) with an issuer configured:
// each server's gateway certificate is then a Certificate, not the operator's own, and the Deployment
// mounts the Secret cert-manager writes, in the gateway container only.
package certmanager_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"slices"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
	"github.com/mcp-warden/mcp-warden/controllers"
	"github.com/mcp-warden/mcp-warden/internal/localcluster"
	"github.com/mcp-warden/mcp-warden/internal/testenv"
	"github.com/mcp-warden/mcp-warden/operator"
)

// certificateCRD is cert-manager.io/v1 Certificate as far as the API server needs it: the kind, served
// and stored, its spec kept as written.
func certificateCRD() *apiextensionsv1.CustomResourceDefinition {
	return cmCRD("certificates", "certificate", "Certificate")
}

// certificateRequestCRD is cert-manager.io/v1 CertificateRequest likewise.
func certificateRequestCRD() *apiextensionsv1.CustomResourceDefinition {
	return cmCRD("certificaterequests", "certificaterequest", "CertificateRequest")
}

func cmCRD(plural, singular, kind string) *apiextensionsv1.CustomResourceDefinition {
	return &apiextensionsv1.CustomResourceDefinition{
		ObjectMeta: metav1.ObjectMeta{Name: plural + ".cert-manager.io"},
		Spec: apiextensionsv1.CustomResourceDefinitionSpec{
			Group: "cert-manager.io",
			Names: apiextensionsv1.CustomResourceDefinitionNames{Plural: plural, Singular: singular, Kind: kind, ListKind: kind + "List"},
			Scope: apiextensionsv1.NamespaceScoped,
			Versions: []apiextensionsv1.CustomResourceDefinitionVersion{{
				Name: "v1", Served: true, Storage: true,
				Subresources: &apiextensionsv1.CustomResourceSubresources{Status: &apiextensionsv1.CustomResourceSubresourceStatus{}},
				Schema: &apiextensionsv1.CustomResourceValidation{OpenAPIV3Schema: &apiextensionsv1.JSONSchemaProps{
					Type: "object",
					Properties: map[string]apiextensionsv1.JSONSchemaProps{
						"spec":   {Type: "object", XPreserveUnknownFields: ptr.To(true)},
						"status": {Type: "object", XPreserveUnknownFields: ptr.To(true)},
					},
				}},
			}},
		},
	}
}

func eventually(t *testing.T, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = cond(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("after %s: %v", timeout, err)
}

// TestCertificateFromCertManager: with cert-manager's Certificate served and an issuer configured, the
// operator creates a Certificate for the server's Service names from that issuer (and issues nothing
// itself; no pod certificate), the Deployment mounts the Certificate's Secret (its CombinedPEM output as
// the gateway's credential bundle) into the gateway container alone, and once cert-manager has issued
// the certificate the issuer's CA, from the status of the Certificate's latest CertificateRequest, is
// published in mcp-warden-ca. The operator reads no Secret there (it may not): a ca.crt in the
// Secret that differs is not what it publishes.
func TestCertificateFromCertManager(t *testing.T) {
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
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "cm-"}}
	if err := k8s.Create(ctx, ns); err != nil {
		t.Fatal(err)
	}
	s := &mcpv1alpha1.MCPServer{
		ObjectMeta: metav1.ObjectMeta{Name: "files", Namespace: ns.Name},
		Spec: mcpv1alpha1.MCPServerSpec{
			Image:   "registry.example/acme/files@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
			Gateway: mcpv1alpha1.GatewaySpec{Auth: mcpv1alpha1.GatewayAuth{Disabled: true}},
		},
	}
	if err := k8s.Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	cert := &unstructured.Unstructured{}
	cert.SetGroupVersionKind(controllers.CertificateGVK)
	eventually(t, 30*time.Second, func() error {
		return k8s.Get(ctx, client.ObjectKey{Namespace: ns.Name, Name: "files-gateway-tls"}, cert)
	})
	dns, _, _ := unstructured.NestedStringSlice(cert.Object, "spec", "dnsNames")
	want := []string{"files", "files." + ns.Name, "files." + ns.Name + ".svc", "files." + ns.Name + ".svc.cluster.local"}
	if !slices.Equal(dns, want) {
		t.Errorf("Certificate dnsNames %v, want %v", dns, want)
	}
	secretName, _, _ := unstructured.NestedString(cert.Object, "spec", "secretName")
	issuer, _, _ := unstructured.NestedStringMap(cert.Object, "spec", "issuerRef")
	if secretName != "files-gateway-tls" || issuer["kind"] != "ClusterIssuer" || issuer["name"] != "cluster-ca" || issuer["group"] != "cert-manager.io" {
		t.Errorf("Certificate secretName %q issuerRef %v", secretName, issuer)
	}
	if !metav1.IsControlledBy(cert, s) {
		t.Errorf("the Certificate is not owned by its MCPServer: %v", cert.GetOwnerReferences())
	}

	dep := &appsv1.Deployment{}
	eventually(t, 30*time.Second, func() error { return k8s.Get(ctx, client.ObjectKeyFromObject(s), dep) })
	secretMountedInGatewayAlone(t, &dep.Spec.Template.Spec, cert, secretName)
	// Issued by cert-manager, not the operator: no Secret of its own, no CA.
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns.Name, Name: secretName}, &corev1.Secret{}); !apierrors.IsNotFound(err) {
		t.Errorf("the operator wrote the certificate Secret itself: %v", err)
	}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: "default", Name: operator.DefaultGatewayCASecret}, &corev1.Secret{}); !apierrors.IsNotFound(err) {
		t.Errorf("the operator made its own CA with cert-manager configured: %v", err)
	}

	// the certificate serves and is the client certificate of the peer relay
	if usages, _, _ := unstructured.NestedStringSlice(cert.Object, "spec", "usages"); !slices.Contains(usages, "server auth") || !slices.Contains(usages, "client auth") {
		t.Errorf("Certificate usages %v, want server auth and client auth", usages)
	}

	// cert-manager writes the Secret (with the labels the Certificate's secretTemplate asks for), and
	// records the issuer's CA in the status of the CertificateRequests of the Certificate.
	labels, _, _ := unstructured.NestedStringMap(cert.Object, "spec", "secretTemplate", "labels")
	issued := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: secretName, Labels: labels}, Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{"tls.crt": []byte("cert"), "tls.key": []byte("key"), "ca.crt": []byte("not what the operator publishes")}}
	if err := k8s.Create(ctx, issued); err != nil {
		t.Fatal(err)
	}
	oldCA, newCA := testCA(t, "old issuer CA"), testCA(t, "issuer CA")
	createRequests(ctx, t, k8s, cert, oldCA, newCA)
	// cert-manager marks the Certificate Ready, which brings the operator back
	eventually(t, 10*time.Second, func() error {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(cert), cert); err != nil {
			return err
		}
		_ = unstructured.SetNestedField(cert.Object, []any{map[string]any{"type": "Ready", "status": "True"}}, "status", "conditions")
		return k8s.Status().Update(ctx, cert)
	})
	eventually(t, 30*time.Second, func() error {
		cm := &corev1.ConfigMap{}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns.Name, Name: "mcp-warden-ca"}, cm); err != nil {
			return err
		}
		if cm.Data["ca.crt"] != string(newCA) {
			return fmt.Errorf("mcp-warden-ca ca.crt %q, want the latest request's CA", cm.Data["ca.crt"])
		}
		return nil
	})
}

// secretMountedInGatewayAlone: the Deployment mounts the Certificate's Secret (its CombinedPEM output
// as the gateway's credential bundle, no projected volume) into the gateway container alone.
func secretMountedInGatewayAlone(t *testing.T, pod *corev1.PodSpec, cert *unstructured.Unstructured, secretName string) {
	t.Helper()
	vol := ""
	for _, v := range pod.Volumes {
		if v.Secret != nil && v.Secret.SecretName == secretName {
			vol = v.Name
		}
	}
	if vol == "" {
		t.Fatalf("the Deployment does not mount the Certificate's Secret: %+v", pod.Volumes)
	}
	// The gateway reads the same credential bundle as a pod certificate's: cert-manager's CombinedPEM.
	formats, _, _ := unstructured.NestedSlice(cert.Object, "spec", "additionalOutputFormats")
	if len(formats) != 1 || formats[0].(map[string]any)["type"] != "CombinedPEM" {
		t.Errorf("Certificate additionalOutputFormats %v, want [{type: CombinedPEM}]", formats)
	}
	for _, v := range pod.Volumes {
		if v.Name == vol && !slices.Contains(v.Secret.Items, corev1.KeyToPath{Key: "tls-combined.pem", Path: "tls.pem"}) {
			t.Errorf("the Secret volume does not mount tls-combined.pem as tls.pem: %+v", v.Secret.Items)
		}
		if v.Projected != nil {
			t.Errorf("a projected volume %s with cert-manager issuing: %+v", v.Name, v.Projected)
		}
	}
	for _, c := range append(pod.InitContainers, pod.Containers...) {
		mounted := slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == vol })
		if mounted != (c.Name == "gateway") {
			t.Errorf("container %s mounts the certificate: %v (only the gateway may)", c.Name, mounted)
		}
	}
}

// createRequests creates the Certificate's CertificateRequests as cert-manager does: revision 1 issued
// by oldCA, revision 2 by newCA, revision 3 not issued yet.
func createRequests(ctx context.Context, t *testing.T, k8s client.Client, cert *unstructured.Unstructured, oldCA, newCA []byte) {
	t.Helper()
	ns := cert.GetNamespace()
	for i, c := range []struct {
		rev string
		ca  []byte
	}{{"1", oldCA}, {"2", newCA}, {"3", nil}} { // revision 3 is not issued yet
		cr := &unstructured.Unstructured{}
		cr.SetGroupVersionKind(controllers.CertificateRequestGVK)
		cr.SetNamespace(ns)
		cr.SetName(fmt.Sprintf("files-gateway-tls-%d", i+1))
		cr.SetAnnotations(map[string]string{"cert-manager.io/certificate-name": cert.GetName(), "cert-manager.io/certificate-revision": c.rev})
		cr.SetOwnerReferences([]metav1.OwnerReference{{APIVersion: "cert-manager.io/v1", Kind: "Certificate", Name: cert.GetName(), UID: cert.GetUID(), Controller: ptr.To(true)}})
		_ = unstructured.SetNestedField(cr.Object, map[string]any{"request": "", "issuerRef": map[string]any{"name": "cluster-ca", "kind": "ClusterIssuer"}}, "spec")
		if err := k8s.Create(ctx, cr); err != nil {
			t.Fatal(err)
		}
		if c.ca != nil {
			_ = unstructured.SetNestedField(cr.Object, base64.StdEncoding.EncodeToString(c.ca), "status", "ca")
			if err := k8s.Status().Update(ctx, cr); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// testCA is a self-signed CA certificate (PEM).
func testCA(t *testing.T, name string) []byte {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
