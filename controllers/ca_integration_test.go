package controllers_test

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/mcp-warden/mcp-warden/trust/servingcert"
)

func leafOf(t *testing.T, certPEM []byte) *x509.Certificate {
	t.Helper()
	blk, _ := pem.Decode(certPEM)
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func verifies(leaf *x509.Certificate, bundle []byte, at time.Time) error {
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(bundle)
	_, err := leaf.Verify(x509.VerifyOptions{DNSName: "files.tools.svc", Roots: roots, CurrentTime: at})
	return err
}

// TestGatewayCARotation, against the API server: two operator replicas starting at once agree on one
// CA; at two thirds of its life the CA is rotated, the old one staying in the bundle so certificates it
// signed keep verifying until they are renewed at their own time; once expired it leaves the bundle; a
// leaf is due at two thirds of its life.
func TestGatewayCARotation(t *testing.T) {
	ctx := context.Background()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "ca-"}}
	if err := k8s.Create(ctx, ns); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	clock := func() time.Time { return now }
	key := types.NamespacedName{Namespace: ns.Name, Name: "gateway-ca"}
	authority := func() *servingcert.Authority {
		return &servingcert.Authority{Client: k8s, Reader: k8s, Secret: key, Now: clock}
	}
	names := []string{"files", "files.tools", "files.tools.svc", "files.tools.svc.cluster.local"}

	var wg sync.WaitGroup
	cas := make([]*servingcert.CA, 2)
	for i := range cas {
		wg.Go(func() {
			var err error
			if cas[i], err = authority().Current(ctx); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	if !cas[0].Cert.Equal(cas[1].Cert) {
		t.Fatal("two replicas starting at once made two CAs")
	}
	first := cas[0]
	a := authority()
	certPEM, keyPEM, err := a.Issue(first, names)
	if err != nil {
		t.Fatal(err)
	}
	if why := a.Renewal(first, certPEM, keyPEM, names); why != "" {
		t.Fatalf("a fresh certificate needs renewal: %s", why)
	}
	if why := a.Renewal(first, certPEM, keyPEM, names[:3]); why == "" {
		t.Error("a certificate for other names was accepted")
	}
	old := leafOf(t, certPEM)

	now = now.Add(21 * 24 * time.Hour) // past two thirds of the leaf's 30 days
	if why := a.Renewal(first, certPEM, keyPEM, names); why == "" {
		t.Error("a 21-day-old certificate is not due for renewal")
	}

	now = time.Now().Add(servingcert.CALifetime*2/3 + time.Hour)
	second, err := authority().Current(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if second.Cert.Equal(first.Cert) {
		t.Fatal("the CA was not rotated at two thirds of its life")
	}
	if err := verifies(old, second.Bundle, time.Now()); err != nil {
		t.Errorf("a certificate of the previous CA does not verify against the bundle after rotation: %v", err)
	}
	newPEM, _, err := a.Issue(second, names)
	if err != nil {
		t.Fatal(err)
	}
	if err := verifies(leafOf(t, newPEM), second.Bundle, now); err != nil {
		t.Errorf("a certificate of the new CA does not verify against the bundle: %v", err)
	}
	sec := &corev1.Secret{}
	if err := k8s.Get(ctx, key, sec); err != nil {
		t.Fatal(err)
	}
	if string(sec.Data[servingcert.CABundleKey]) != string(second.Bundle) {
		t.Error("the rotated bundle was not persisted")
	}

	now = first.Cert.NotAfter.Add(time.Hour)
	now = maxTime(now, second.Cert.NotBefore.Add(servingcert.CALifetime*2/3+time.Hour))
	third, err := authority().Current(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := verifies(old, third.Bundle, old.NotBefore.Add(time.Hour)); err == nil {
		t.Error("the expired first CA is still in the bundle")
	}
	if err := verifies(leafOf(t, newPEM), third.Bundle, leafOf(t, newPEM).NotBefore.Add(time.Hour)); err != nil {
		t.Errorf("the second CA left the bundle while still valid: %v", err)
	}
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
