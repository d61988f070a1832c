package guardrails

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
)

func jwksServer(issuer, jwks string) *mcpv1alpha1.MCPServer {
	s := &mcpv1alpha1.MCPServer{ObjectMeta: metav1.ObjectMeta{Name: "files", Namespace: "tools"}}
	s.Spec.Gateway.Auth = mcpv1alpha1.GatewayAuth{Issuer: issuer, JWKSURL: jwks}
	return s
}

// TestJWKSURLNeverLocal: keys served from the pod itself (the tenant's own container) would let the
// tenant mint tokens the gateway accepts.
func TestJWKSURLNeverLocal(t *testing.T) {
	for _, u := range []string{
		"http://127.0.0.1:9999/keys", "http://[::1]/keys", "http://localhost:8080/keys", "http://keys.localhost/",
		"http://169.254.169.254/keys", "http://[fe80::1]/keys", "http://0.0.0.0/keys", "http://[::ffff:127.0.0.1]/keys",
		"http://files/keys", "http://files.tools.svc.cluster.local:8080/keys",
	} {
		errs := CheckJWKSURL(jwksServer("https://login.acme.example", u))
		if len(errs) == 0 || errs[0].Field != "spec.gateway.auth.jwksURL" {
			t.Errorf("jwksURL %s: errors = %v, want one on spec.gateway.auth.jwksURL", u, errs)
		}
	}
	for _, u := range []string{"", "https://login.acme.example/.well-known/jwks.json", "https://10.0.0.5/keys"} {
		if errs := CheckJWKSURL(jwksServer("https://login.acme.example", u)); len(errs) > 0 {
			t.Errorf("jwksURL %q: %v", u, errs)
		}
	}
	if errs := CheckJWKSURL(jwksServer("https://login.acme.example", "ftp://x")); len(errs) == 0 {
		t.Error("a non-http jwksURL is accepted")
	}
}

// TestIssuerCeilingHolds: under allowedIssuers, jwksURL must be the issuer's own jwks_uri.
func TestIssuerCeilingHolds(t *testing.T) {
	var issuer string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/.well-known/openid-configuration" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintf(w, `{"issuer": %q, "jwks_uri": %q}`, issuer, issuer+"/keys")
	}))
	defer srv.Close()
	issuer = srv.URL
	policies := []mcpv1alpha1.MCPServerPolicy{{ObjectMeta: metav1.ObjectMeta{Name: "idp"}, Spec: mcpv1alpha1.MCPServerPolicySpec{Gateway: mcpv1alpha1.GatewayCeiling{AllowedIssuers: []string{issuer}}}}}
	d := &HTTPDiscovery{}
	ctx := context.Background()

	errs, err := CheckIssuerJWKS(ctx, jwksServer(issuer, "https://attacker.example/keys"), policies, d)
	if err != nil || len(errs) != 1 || !strings.Contains(errs[0].Error(), `spec.gateway.auth.jwksURL: Forbidden: https://attacker.example/keys is not the signing keys URL issuer`) {
		t.Fatalf("foreign jwksURL: %v %v", errs, err)
	}
	for _, u := range []string{"", issuer + "/keys"} {
		if errs, err := CheckIssuerJWKS(ctx, jwksServer(issuer, u), policies, d); err != nil || len(errs) > 0 {
			t.Fatalf("jwksURL %q: %v %v", u, errs, err)
		}
	}
	// Without a policy listing issuers there is nothing to hold.
	if errs, err := CheckIssuerJWKS(ctx, jwksServer(issuer, "https://keys.example/"), nil, nil); err != nil || len(errs) > 0 {
		t.Fatalf("no policy: %v %v", errs, err)
	}
	// No discovery: fail closed.
	if _, err := CheckIssuerJWKS(ctx, jwksServer(issuer, issuer+"/keys"), policies, nil); err == nil {
		t.Fatal("no discovery: a jwksURL is accepted unconfirmed")
	}
}

// TestDiscoveryHasADeadline: an issuer that accepts and never answers costs the deadline, not more.
func TestDiscoveryHasADeadline(t *testing.T) {
	block := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { <-block }))
	defer srv.Close()
	defer close(block)
	d := &HTTPDiscovery{Timeout: 300 * time.Millisecond}
	start := time.Now()
	if _, err := d.JWKSURI(context.Background(), srv.URL); err == nil {
		t.Fatal("a silent issuer was discovered")
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("discovery took %s, deadline 300ms", took)
	}
}
