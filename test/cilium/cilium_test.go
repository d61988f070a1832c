// Package cilium_test runs the operator on a control plane that serves Cilium's CiliumNetworkPolicy CRD
// (installed from Cilium's own Go module), so DNS-name egress is enforced with toFQDNs rules. The
// controllers suite covers the same MCPServers on a cluster without Cilium.
package cilium_test

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ciliumv2 "github.com/cilium/cilium/pkg/k8s/apis/cilium.io/v2"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
	"github.com/mcp-warden/mcp-warden/controllers"
	"github.com/mcp-warden/mcp-warden/internal/localcluster"
	"github.com/mcp-warden/mcp-warden/internal/testenv"
)

var k8s client.Client

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(run(m))
}

func run(m *testing.M) int {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	crd, err := ciliumPolicyCRD()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	env, err := testenv.Start(ctx, localcluster.Options{CRDs: []*apiextensionsv1.CustomResourceDefinition{crd}}, nil)
	defer env.Stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	k8s = env.Client
	return m.Run()
}

// ciliumPolicyCRD reads the CiliumNetworkPolicy CRD that Cilium publishes in its Go module, at the
// version go.mod pins.
func ciliumPolicyCRD() (*apiextensionsv1.CustomResourceDefinition, error) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/cilium/cilium").Output()
	if err != nil {
		return nil, fmt.Errorf("locate the cilium module: %w", err)
	}
	path := filepath.Join(strings.TrimSpace(string(out)), "pkg", "k8s", "apis", "cilium.io", "client", "crds", "v2", "ciliumnetworkpolicies.yaml")
	body, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	crd := &apiextensionsv1.CustomResourceDefinition{}
	if err := yaml.Unmarshal(body, crd); err != nil {
		return nil, fmt.Errorf("decode %s: %w", path, err)
	}
	return crd, nil
}

func TestFQDNEgressBecomesCiliumPolicy(t *testing.T) {
	ctx := context.Background()
	s := &mcpv1alpha1.MCPServer{
		ObjectMeta: metav1.ObjectMeta{Name: "gh", Namespace: "default"},
		Spec: mcpv1alpha1.MCPServerSpec{
			Image:   "ghcr.io/acme/gh@sha256:" + strings.Repeat("cd", 32),
			Gateway: mcpv1alpha1.GatewaySpec{Auth: mcpv1alpha1.GatewayAuth{Issuer: "https://auth.example.com"}, Scopes: []mcpv1alpha1.ScopeGrant{{Scope: "files:read", Tools: []string{"read_file"}}}},
			Egress: []mcpv1alpha1.EgressRule{
				{FQDN: ptr.To("api.github.com"), Ports: []mcpv1alpha1.EgressPort{{Port: 443}}},
				{CIDR: ptr.To("140.82.112.0/20"), Ports: []mcpv1alpha1.EgressPort{{Port: 443}}},
			},
		},
	}
	if err := k8s.Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	key := client.ObjectKeyFromObject(s)
	cnp := &ciliumv2.CiliumNetworkPolicy{}
	waitFor(t, func() error {
		if err := k8s.Get(ctx, key, s); err != nil {
			return err
		}
		c := meta.FindStatusCondition(s.Status.Conditions, mcpv1alpha1.ConditionEgressEnforced)
		if c == nil || c.Status != metav1.ConditionTrue || c.Reason != controllers.ReasonCilium {
			return fmt.Errorf("EgressEnforced = %+v", c)
		}
		return k8s.Get(ctx, key, cnp)
	})
	if !metav1.IsControlledBy(cnp, s) {
		t.Errorf("CiliumNetworkPolicy not controlled by the MCPServer: %+v", cnp.OwnerReferences)
	}
	body, _ := json.Marshal(cnp.Spec)
	for _, want := range []string{`"matchName":"api.github.com"`, `"dns":[{"matchPattern":"*"}]`, `"cidr":"169.254.0.0/16"`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("stored policy lacks %s: %s", want, body)
		}
	}

	// Dropping the name removes the Cilium policy; the NetworkPolicy keeps the CIDR entry.
	s.Spec.Egress = s.Spec.Egress[1:]
	if err := k8s.Update(ctx, s); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() error {
		if err := k8s.Get(ctx, key, &ciliumv2.CiliumNetworkPolicy{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("CiliumNetworkPolicy still there (%v)", err) //nolint:errorlint // err is nil when the policy exists
		}
		return nil
	})
}

func waitFor(t *testing.T, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var err error
	for time.Now().Before(deadline) {
		if err = cond(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal(err)
}
