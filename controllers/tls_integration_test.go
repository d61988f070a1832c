package controllers_test

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
	"github.com/mcp-warden/mcp-warden/controllers"
	"github.com/mcp-warden/mcp-warden/operator"
	"github.com/mcp-warden/mcp-warden/trust/issuerkeys"
)

// TestGatewayServesTLSByDefault: a server with no TLS settings gets an https endpoint, a gateway
// configuration that serves the credential bundle of a pod certificate (the kubelet's key, the
// operator's signature; see TestGatewayPodCertificates) which only the gateway container mounts, and
// the CA bundle in the namespace's mcp-warden-ca ConfigMap, mounted beside it for the peer hop. The
// operator writes no Secret in the server's namespace for it.
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
	bundle := &corev1.ConfigMap{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "mcp-warden-ca"}, bundle); err != nil {
		t.Fatalf("the CA bundle ConfigMap: %v", err)
	}
	if !x509.NewCertPool().AppendCertsFromPEM([]byte(bundle.Data["ca.crt"])) {
		t.Fatalf("mcp-warden-ca ca.crt holds no certificate: %q", bundle.Data["ca.crt"])
	}

	cm := &corev1.ConfigMap{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "secure-gateway"}, cm); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"certFile": "/etc/mcp-warden-tls/tls.pem"`, `"keyFile": "/etc/mcp-warden-tls/tls.pem"`, `"peerCAFile": "/etc/mcp-warden-tls/ca.crt"`, `"resource": "https://secure.`} {
		if !strings.Contains(cm.Data["gateway.json"], want) {
			t.Errorf("gateway.json lacks %s:\n%s", want, cm.Data["gateway.json"])
		}
	}

	dep := &appsv1.Deployment{}
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(s), dep); err != nil {
		t.Fatal(err)
	}
	gatewayAloneMountsCert(t, &dep.Spec.Template.Spec)
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "secure-gateway-tls"}, &corev1.Secret{}); !apierrors.IsNotFound(err) {
		t.Errorf("Secret secure-gateway-tls: %v, want none", err)
	}

	ca := &corev1.Secret{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: "default", Name: operator.DefaultGatewayCASecret}, ca); err != nil {
		t.Fatalf("the operator's CA Secret: %v", err)
	}
	if len(ca.Data["ca.key"]) == 0 {
		t.Error("the CA Secret holds no key")
	}
}

// gatewayAloneMountsCert: the pod has a projected volume of a pod certificate and the CA bundle, and
// only the gateway container mounts it.
func gatewayAloneMountsCert(t *testing.T, pod *corev1.PodSpec) {
	t.Helper()
	var tlsVolume string
	for _, v := range pod.Volumes {
		if v.Projected == nil {
			continue
		}
		var cert, ca bool
		for _, src := range v.Projected.Sources {
			cert = cert || (src.PodCertificate != nil && src.PodCertificate.SignerName == "mcp.warden.dev/gateway-serving" && src.PodCertificate.CredentialBundlePath == "tls.pem")
			ca = ca || (src.ConfigMap != nil && src.ConfigMap.Name == "mcp-warden-ca")
		}
		if cert && ca {
			tlsVolume = v.Name
		}
	}
	if tlsVolume == "" {
		t.Fatalf("no projected volume of a pod certificate and the CA bundle: %+v", pod.Volumes)
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
	// A new manager syncs its caches and reconciles every server of the suite first: on busy cores that
	// takes longer than the 30 s the other checks allow.
	eventually(t, 90*time.Second, func() error {
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

// TestForeignCABundleStallsEveryServer is the attacker's test for the bundle's publication, which one
// reconcile of a namespace claims while the cache has yet to show the ConfigMap: a ConfigMap named
// mcp-warden-ca that a namespace user created first is never overwritten, and every server of a burst
// in the namespace reports the conflict, not only the one whose reconcile found it.
func TestForeignCABundleStallsEveryServer(t *testing.T) {
	ctx := context.Background()
	ns := restrictedNamespace(t)
	foreign := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "mcp-warden-ca"}, Data: map[string]string{"ca.crt": "the tenant's own"}}
	if err := k8s.Create(ctx, foreign); err != nil {
		t.Fatal(err)
	}
	names := []string{"one", "two", "three", "four"}
	for _, n := range names {
		if err := k8s.Create(ctx, newServer(ns, n)); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range names {
		eventually(t, time.Minute, func() error {
			s := &mcpv1alpha1.MCPServer{}
			if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: n}, s); err != nil {
				return err
			}
			if c := condition(s, mcpv1alpha1.ConditionStalled); c == nil || c.Status != metav1.ConditionTrue || c.Reason != controllers.ReasonChildConflict {
				return fmt.Errorf("server %s: Stalled is %+v, want True/%s (conditions %+v)", n, c, controllers.ReasonChildConflict, s.Status.Conditions)
			}
			return nil
		})
	}
	got := &corev1.ConfigMap{}
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(foreign), got); err != nil {
		t.Fatal(err)
	}
	if got.Data["ca.crt"] != "the tenant's own" {
		t.Fatalf("the foreign ConfigMap was overwritten: %q", got.Data["ca.crt"])
	}
}
