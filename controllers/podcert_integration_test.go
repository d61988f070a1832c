package controllers_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
	"github.com/mcp-warden/mcp-warden/policy/gatewayconfig"
)

// requestPodCert makes the PodCertificateRequest the kubelet makes for a pod's podCertificate volume:
// a fresh P-256 key on the "node" and a stub CSR signed with it (the API server verifies it), for the
// pod's UID, service account and node. It returns the request and the key.
func requestPodCert(t *testing.T, pod *corev1.Pod) (*certificatesv1.PodCertificateRequest, *ecdsa.PrivateKey) {
	t.Helper()
	ctx := context.Background()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	sa := &corev1.ServiceAccount{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: pod.Namespace, Name: pod.Spec.ServiceAccountName}, sa); err != nil {
		t.Fatal(err)
	}
	node := &corev1.Node{}
	if err := k8s.Get(ctx, client.ObjectKey{Name: pod.Spec.NodeName}, node); err != nil {
		t.Fatal(err)
	}
	pcr := &certificatesv1.PodCertificateRequest{
		ObjectMeta: metav1.ObjectMeta{Namespace: pod.Namespace, GenerateName: pod.Name + "-"},
		Spec: certificatesv1.PodCertificateRequestSpec{
			SignerName: gatewayconfig.GatewaySigner, PodName: pod.Name, PodUID: pod.UID,
			ServiceAccountName: sa.Name, ServiceAccountUID: sa.UID, NodeName: types.NodeName(pod.Spec.NodeName), NodeUID: node.UID,
			MaxExpirationSeconds: ptr.To(gatewayconfig.GatewayCertSeconds), StubPKCS10Request: csr,
		},
	}
	if err := k8s.Create(ctx, pcr); err != nil {
		t.Fatalf("create the PodCertificateRequest: %v", err)
	}
	return pcr, key
}

// concludedPCR waits for the signer's Issued, Denied or Failed condition.
func concludedPCR(t *testing.T, pcr *certificatesv1.PodCertificateRequest) (*certificatesv1.PodCertificateRequest, *metav1.Condition) {
	t.Helper()
	got := &certificatesv1.PodCertificateRequest{}
	var c *metav1.Condition
	eventually(t, 20*time.Second, func() error {
		if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(pcr), got); err != nil {
			return err
		}
		for _, typ := range []string{"Issued", "Denied", "Failed"} {
			if c = meta.FindStatusCondition(got.Status.Conditions, typ); c != nil {
				return nil
			}
		}
		return fmt.Errorf("no Issued, Denied or Failed condition: %+v", got.Status)
	})
	return got, c
}

func scheduledPod(t *testing.T, ns, server string) *corev1.Pod {
	t.Helper()
	pods := &corev1.PodList{}
	eventually(t, 30*time.Second, func() error {
		if err := k8s.List(context.Background(), pods, client.InNamespace(ns), client.MatchingLabels{"mcp.warden.dev/server": server}); err != nil {
			return err
		}
		for i := range pods.Items {
			if p := &pods.Items[i]; p.Spec.NodeName != "" && p.DeletionTimestamp == nil && metav1.GetControllerOf(p) != nil {
				return nil
			}
		}
		return fmt.Errorf("no scheduled pod of %s yet", server)
	})
	for i := range pods.Items {
		if p := &pods.Items[i]; p.Spec.NodeName != "" && p.DeletionTimestamp == nil && metav1.GetControllerOf(p) != nil {
			return p
		}
	}
	return nil
}

// TestGatewayPodCertificates: the gateway's serving key is a pod certificate. No Secret holds it; the
// gateway container alone mounts a podCertificate volume of signer mcp.warden.dev/gateway-serving.
// The operator signs the request the kubelet makes for a real gateway pod (with the key's proof of
// possession) for the server's Service names, chaining to the published bundle, with the refresh at
// two thirds; it denies the same request from an impostor: a tenant's pod that copies the gateway pod's
// labels and layout volume for volume, and a tenant's Deployment of that pod template, owned by the
// MCPServer, under another name.
func TestGatewayPodCertificates(t *testing.T) {
	ctx := context.Background()
	ns := restrictedNamespace(t)
	s := newServer(ns, "signed")
	if err := k8s.Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	waitReady(t, client.ObjectKeyFromObject(s))
	noSecretHoldsAKey(ctx, t, ns)
	pod := scheduledPod(t, ns, "signed")
	onlyTheGatewayMountsItsKey(t, pod)

	// The real gateway pod: issued.
	pcr, key := requestPodCert(t, pod)
	got, c := concludedPCR(t, pcr)
	if c.Type != "Issued" {
		t.Fatalf("the gateway pod's request: %s %s: %s", c.Type, c.Reason, c.Message)
	}
	checkIssuedCertificate(ctx, t, s, got, key)

	impostorPodDenied(t, s, pod)
	copiedDeploymentDenied(t, s)
	if bytes.Contains([]byte(got.Status.CertificateChain), []byte("PRIVATE KEY")) {
		t.Error("the chain carries a private key")
	}
}

// noSecretHoldsAKey: no Secret of the namespace holds a serving key.
func noSecretHoldsAKey(ctx context.Context, t *testing.T, ns string) {
	t.Helper()
	secrets := &corev1.SecretList{}
	if err := k8s.List(ctx, secrets, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	for _, sec := range secrets.Items {
		if strings.HasSuffix(sec.Name, "-gateway-tls") || len(sec.Data["tls.key"]) > 0 || len(sec.Data["tls.pem"]) > 0 {
			t.Errorf("Secret %s holds a serving key", sec.Name)
		}
	}
}

// onlyTheGatewayMountsItsKey: the pod has a podCertificate volume of the gateway signer, and only
// the gateway container mounts it.
func onlyTheGatewayMountsItsKey(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	var tlsVolume string
	for _, v := range pod.Spec.Volumes {
		if v.Projected == nil {
			continue
		}
		for _, src := range v.Projected.Sources {
			if pc := src.PodCertificate; pc != nil && pc.SignerName == gatewayconfig.GatewaySigner && pc.KeyType == "ECDSAP256" && pc.CredentialBundlePath == "tls.pem" {
				tlsVolume = v.Name
			}
		}
	}
	if tlsVolume == "" {
		t.Fatalf("no podCertificate volume of signer %s: %+v", gatewayconfig.GatewaySigner, pod.Spec.Volumes)
	}
	for _, c := range append(pod.Spec.Containers, pod.Spec.InitContainers...) {
		for _, m := range c.VolumeMounts {
			if m.Name == tlsVolume && c.Name != "gateway" {
				t.Errorf("container %s mounts the gateway's key", c.Name)
			}
		}
	}
}

// checkIssuedCertificate: the issued certificate is for the kubelet's key, verifies for the server's
// Service names (serving and client use) against the published bundle and for no other server's,
// lives at most 24h and is refreshed at two thirds.
func checkIssuedCertificate(ctx context.Context, t *testing.T, s *mcpv1alpha1.MCPServer, got *certificatesv1.PodCertificateRequest, key *ecdsa.PrivateKey) {
	t.Helper()
	ns := s.Namespace
	blk, _ := pem.Decode([]byte(got.Status.CertificateChain))
	if blk == nil {
		t.Fatalf("no certificate in the chain %q", got.Status.CertificateChain)
	}
	leaf, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if pub, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok || !pub.Equal(&key.PublicKey) {
		t.Error("the certificate is not for the kubelet's key")
	}
	bundle := &corev1.ConfigMap{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "mcp-warden-ca"}, bundle); err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM([]byte(bundle.Data["ca.crt"]))
	for _, dns := range gatewayconfig.DNSNames(s, "cluster.local") {
		// for serving, and as the client certificate a replica presents on the others' peer port
		for _, use := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
			if _, err := leaf.Verify(x509.VerifyOptions{DNSName: dns, Roots: roots, KeyUsages: []x509.ExtKeyUsage{use}}); err != nil {
				t.Errorf("the certificate does not verify for %s (extended key usage %v) against the published bundle: %v", dns, use, err)
			}
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "other." + ns + ".svc", Roots: roots}); err == nil {
		t.Error("the certificate verifies for another server's name")
	}
	life := leaf.NotAfter.Sub(leaf.NotBefore)
	if life > 24*time.Hour || life < time.Hour {
		t.Errorf("lifetime %s, want at most spec.maxExpirationSeconds (24h)", life)
	}
	if refresh := got.Status.BeginRefreshAt.Sub(leaf.NotBefore); refresh < life*2/3-time.Second || refresh > life*2/3+time.Second {
		t.Errorf("beginRefreshAt %s after notBefore, want two thirds of %s", refresh, life)
	}
}

// impostorPodDenied: a tenant's pod with the gateway pod's labels and volumes (the podCertificate one
// too), whose "gateway" container is the tenant's own image, is denied a certificate. (The ReplicaSet
// may adopt it, for the labels, before it deletes it as one too many: the request is denied either
// way.)
func impostorPodDenied(t *testing.T, s *mcpv1alpha1.MCPServer, pod *corev1.Pod) {
	t.Helper()
	ctx := context.Background()
	imp := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: s.Namespace, Name: "impostor", Labels: pod.Labels}, Spec: *pod.Spec.DeepCopy()}
	imp.Spec.InitContainers[0].Image = s.Spec.Image
	imp.Spec.InitContainers[0].Command = []string{"/bin/sh", "-c", "cat /etc/mcp-warden-tls/tls.pem"}
	if err := k8s.Create(ctx, imp); err != nil {
		t.Fatal(err)
	}
	ipcr, _ := requestPodCert(t, imp)
	igot, ic := concludedPCR(t, ipcr)
	if ic.Type != "Denied" || ic.Reason != "NotAGatewayPod" || !strings.Contains(ic.Message, "is not a gateway pod of an MCPServer") {
		t.Errorf("the impostor pod's request: %s %s: %s", ic.Type, ic.Reason, ic.Message)
	}
	t.Logf("impostor denied: %s", ic.Message)
	if igot.Status.CertificateChain != "" {
		t.Error("the impostor got a certificate")
	}
}

// copiedDeploymentDenied: a tenant's Deployment of the same template, owned by the MCPServer: the
// chain reaches the MCPServer, but not through the operator's Deployment, so its pod is denied.
func copiedDeploymentDenied(t *testing.T, s *mcpv1alpha1.MCPServer) {
	t.Helper()
	ctx := context.Background()
	ns := s.Namespace
	own := metav1.NewControllerRef(s, mcpv1alpha1.GroupVersion.WithKind("MCPServer"))
	live := &appsv1.Deployment{}
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(s), live); err != nil {
		t.Fatal(err)
	}
	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "signed-copy", OwnerReferences: []metav1.OwnerReference{*own}},
		Spec: appsv1.DeploymentSpec{Replicas: ptr.To(int32(1)), Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"copy": "yes"}}, Template: *live.Spec.Template.DeepCopy()}}
	dep.Spec.Template.Labels = map[string]string{"copy": "yes"}
	if err := k8s.Create(ctx, dep); err != nil {
		t.Fatal(err)
	}
	var copyPod *corev1.Pod
	eventually(t, 30*time.Second, func() error {
		pods := &corev1.PodList{}
		if err := k8s.List(ctx, pods, client.InNamespace(ns), client.MatchingLabels{"copy": "yes"}); err != nil {
			return err
		}
		for i := range pods.Items {
			if pods.Items[i].Spec.NodeName != "" {
				copyPod = &pods.Items[i]
				return nil
			}
		}
		return fmt.Errorf("no scheduled pod of the copy yet")
	})
	cpcr, _ := requestPodCert(t, copyPod)
	if _, cc := concludedPCR(t, cpcr); cc.Type != "Denied" || !strings.Contains(cc.Message, "Deployment signed-copy is not the one the operator runs") {
		t.Errorf("the copied Deployment's pod's request: %s %s: %s", cc.Type, cc.Reason, cc.Message)
	}
}
