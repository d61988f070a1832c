package controllers_test

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
	"github.com/mcp-warden/mcp-warden/issuerkeys"
	"github.com/mcp-warden/mcp-warden/operator"
)

// verifyServing checks that the Secret's certificate chains to the published bundle for every Service
// name of the server and for nothing else, and returns it.
func verifyServing(t *testing.T, ns, name string) *x509.Certificate {
	t.Helper()
	ctx := context.Background()
	sec := &corev1.Secret{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: name + "-gateway-tls"}, sec); err != nil {
		t.Fatal(err)
	}
	if sec.Type != corev1.SecretTypeTLS {
		t.Errorf("Secret type %s, want %s", sec.Type, corev1.SecretTypeTLS)
	}
	bundle := &corev1.ConfigMap{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "mcp-warden-ca"}, bundle); err != nil {
		t.Fatalf("the CA bundle ConfigMap: %v", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM([]byte(bundle.Data["ca.crt"])) {
		t.Fatalf("mcp-warden-ca ca.crt holds no certificate: %q", bundle.Data["ca.crt"])
	}
	blk, _ := pem.Decode(sec.Data["tls.crt"])
	if blk == nil {
		t.Fatal("tls.crt holds no PEM certificate")
	}
	leaf, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	for _, dns := range []string{name, name + "." + ns, name + "." + ns + ".svc", name + "." + ns + ".svc.cluster.local"} {
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: dns, Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			t.Errorf("the serving certificate does not verify for %s against the published bundle: %v", dns, err)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "other." + ns + ".svc", Roots: roots}); err == nil {
		t.Error("the serving certificate verifies for another server's name")
	}
	if life := leaf.NotAfter.Sub(leaf.NotBefore); life > 31*24*time.Hour {
		t.Errorf("serving certificate lives %s, want about 30 days", life)
	}
	return leaf
}

// TestGatewayServesTLSByDefault: a server with no TLS settings gets an https endpoint, a serving
// certificate for its Service names from the operator's CA in a Secret that only the gateway container
// mounts, a gateway configuration that serves it, and the CA bundle in the namespace's mcp-warden-ca
// ConfigMap; a certificate someone replaces (for other names) is reissued.
func TestGatewayServesTLSByDefault(t *testing.T) {
	ctx := context.Background()
	ns := restrictedNamespace(t)
	s := newServer(ns, "secure")
	if err := k8s.Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	got := waitReady(t, client.ObjectKeyFromObject(s))
	if want := "https://secure." + ns + ".svc.cluster.local:8080/mcp"; got.Status.Endpoint != want {
		t.Errorf("endpoint %q, want %q", got.Status.Endpoint, want)
	}
	first := verifyServing(t, ns, "secure")

	cm := &corev1.ConfigMap{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "secure-gateway"}, cm); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"certFile": "/etc/mcp-warden-tls/tls.crt"`, `"keyFile": "/etc/mcp-warden-tls/tls.key"`, `"resource": "https://secure.`} {
		if !strings.Contains(cm.Data["gateway.json"], want) {
			t.Errorf("gateway.json lacks %s:\n%s", want, cm.Data["gateway.json"])
		}
	}

	dep := &appsv1.Deployment{}
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(s), dep); err != nil {
		t.Fatal(err)
	}
	pod := dep.Spec.Template.Spec
	var tlsVolume string
	for _, v := range pod.Volumes {
		if v.Secret != nil && v.Secret.SecretName == "secure-gateway-tls" {
			tlsVolume = v.Name
		}
	}
	if tlsVolume == "" {
		t.Fatalf("no volume of Secret secure-gateway-tls: %+v", pod.Volumes)
	}
	mounts := func(c corev1.Container) bool {
		for _, m := range c.VolumeMounts {
			if m.Name == tlsVolume {
				return true
			}
		}
		return false
	}
	if !mounts(pod.InitContainers[0]) || pod.InitContainers[0].Name != "gateway" {
		t.Errorf("the gateway container does not mount its certificate: %+v", pod.InitContainers[0].VolumeMounts)
	}
	for _, c := range append(pod.Containers, pod.InitContainers[1:]...) {
		if mounts(c) {
			t.Errorf("container %s mounts the gateway's key", c.Name)
		}
		for _, e := range c.Env {
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil && e.ValueFrom.SecretKeyRef.Name == "secure-gateway-tls" {
				t.Errorf("container %s reads the gateway's key through env %s", c.Name, e.Name)
			}
		}
	}

	ca := &corev1.Secret{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: "default", Name: operator.DefaultGatewayCASecret}, ca); err != nil {
		t.Fatalf("the operator's CA Secret: %v", err)
	}
	if len(ca.Data["ca.key"]) == 0 {
		t.Error("the CA Secret holds no key")
	}

	// Someone swaps in a certificate of another server's: the operator issues a right one again.
	other := &corev1.Secret{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "secure-gateway-tls"}, other); err != nil {
		t.Fatal(err)
	}
	s2 := newServer(ns, "other")
	if err := k8s.Create(ctx, s2); err != nil {
		t.Fatal(err)
	}
	waitReady(t, client.ObjectKeyFromObject(s2))
	foreign := &corev1.Secret{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "other-gateway-tls"}, foreign); err != nil {
		t.Fatal(err)
	}
	other.Data["tls.crt"], other.Data["tls.key"] = foreign.Data["tls.crt"], foreign.Data["tls.key"]
	if err := k8s.Update(ctx, other); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, func() error {
		sec := &corev1.Secret{}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "secure-gateway-tls"}, sec); err != nil {
			return err
		}
		blk, _ := pem.Decode(sec.Data["tls.crt"])
		if blk == nil {
			return errors.New("no certificate")
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return err
		}
		if c.VerifyHostname("secure."+ns+".svc") != nil {
			return fmt.Errorf("still serving a certificate for %v", c.DNSNames)
		}
		return nil
	})
	if again := verifyServing(t, ns, "secure"); again.SerialNumber.Cmp(first.SerialNumber) == 0 {
		t.Error("the replaced certificate was not reissued")
	}
}

// TestPlaintextGatewayNeedsPolicy: with a policy that allows plaintext (a mesh doing mTLS), a server
// with tls.mode Disabled gets an http endpoint and no certificate; without it, the controller stalls
// the server naming the field (the webhook refuses it first; see the webhooks tests).
func TestPlaintextGatewayNeedsPolicy(t *testing.T) {
	ctx := context.Background()
	ns := restrictedNamespace(t)
	if err := k8s.Get(ctx, client.ObjectKey{Name: ns}, &corev1.Namespace{}); err != nil {
		t.Fatal(err)
	}
	s := newServer(ns, "plain")
	s.Spec.Gateway.TLS.Mode = mcpv1alpha1.TLSDisabled
	if err := k8s.Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	dumpOnFailure(t, ns)
	eventually(t, 30*time.Second, func() error {
		got := &mcpv1alpha1.MCPServer{}
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(s), got); err != nil {
			return err
		}
		c := condition(got, mcpv1alpha1.ConditionStalled)
		if c == nil || c.Status != metav1.ConditionTrue || !strings.Contains(c.Message, "spec.gateway.tls.mode") || !strings.Contains(c.Message, "allowPlaintext") {
			return fmt.Errorf("Stalled: %+v", c)
		}
		return nil
	})
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "plain"}, &appsv1.Deployment{}); err == nil {
		t.Error("a Deployment was created for a plaintext gateway no policy allows")
	}

	pol := &mcpv1alpha1.MCPServerPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "mesh-" + ns},
		Spec: mcpv1alpha1.MCPServerPolicySpec{
			NamespaceSelector: metav1.LabelSelector{MatchLabels: map[string]string{corev1.LabelMetadataName: ns}},
			Gateway:           mcpv1alpha1.GatewayCeiling{AllowPlaintext: true},
		},
	}
	if err := k8s.Create(ctx, pol); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(ctx, pol) })
	got := waitReady(t, client.ObjectKeyFromObject(s))
	if want := "http://plain." + ns + ".svc.cluster.local:8080/mcp"; got.Status.Endpoint != want {
		t.Errorf("endpoint %q, want %q", got.Status.Endpoint, want)
	}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "plain-gateway-tls"}, &corev1.Secret{}); err == nil {
		t.Error("a plaintext gateway got a serving certificate")
	}
	cm := &corev1.ConfigMap{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "plain-gateway"}, cm); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(cm.Data["gateway.json"], "certFile") {
		t.Errorf("a plaintext gateway is configured with a certificate:\n%s", cm.Data["gateway.json"])
	}
}

// TestDeliveredKeysSurviveOperatorRestart: an operator that (re)starts has not fetched the issuer's keys
// yet (here its fetches never complete); it keeps the jwks.json already delivered for the same issuer
// instead of emptying it, so the gateways keep accepting tokens.
func TestDeliveredKeysSurviveOperatorRestart(t *testing.T) {
	ctx := context.Background()
	ns := restrictedNamespace(t)
	s := newServer(ns, "restart")
	if err := k8s.Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	waitReady(t, client.ObjectKeyFromObject(s))
	cmName := "restart-gateway"
	cm := &corev1.ConfigMap{}
	eventually(t, 10*time.Second, func() error {
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: cmName}, cm); err != nil {
			return err
		}
		if !strings.Contains(cm.Data["jwks.json"], issuer.KeyID()) {
			return fmt.Errorf("keys not delivered yet: %s", cm.Data["jwks.json"])
		}
		return nil
	})

	w, err := clients.CoreV1().ConfigMaps(ns).Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=" + cmName, ResourceVersion: cm.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	emptied := make(chan string, 1)
	go func() {
		for ev := range w.ResultChan() {
			if c, ok := ev.Object.(*corev1.ConfigMap); ok && ev.Type == watch.Modified && !strings.Contains(c.Data["jwks.json"], issuer.KeyID()) {
				select {
				case emptied <- c.Data["jwks.json"]:
				default:
				}
			}
		}
	}()

	// A second operator, as after a restart: its key fetches hang until they time out.
	var writes atomic.Int32
	hang := &http.Client{Transport: roundTripper(func(r *http.Request) (*http.Response, error) {
		<-r.Context().Done()
		return nil, r.Context().Err()
	})}
	mctx, stop := context.WithCancel(ctx)
	defer stop()
	mgr, err := operator.New(restConfig, operator.Options{
		SeveralInProcess: true, MetricsAddr: "0", ProbeAddr: "0",
		IssuerKeys: &issuerkeys.Fetcher{Client: hang, Refresh: time.Hour},
		WrapTransport: func(rt http.RoundTripper) http.RoundTripper {
			return roundTripper(func(r *http.Request) (*http.Response, error) {
				if r.Method == http.MethodPatch && strings.HasSuffix(r.URL.Path, "/namespaces/"+ns+"/configmaps/"+cmName) {
					writes.Add(1)
				}
				return rt.RoundTrip(r)
			})
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- mgr.Start(mctx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("the second operator: %v", err)
		}
	}()
	eventually(t, 30*time.Second, func() error {
		if writes.Load() == 0 {
			return errors.New("the restarted operator has not applied the gateway ConfigMap yet")
		}
		return nil
	})
	select {
	case body := <-emptied:
		t.Fatalf("the restarted operator emptied the delivered keys before its first fetch: jwks.json %s", body)
	case <-time.After(3 * time.Second):
	}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: cmName}, cm); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(cm.Data["jwks.json"], issuer.KeyID()) {
		t.Errorf("jwks.json after the restart: %s", cm.Data["jwks.json"])
	}
}
