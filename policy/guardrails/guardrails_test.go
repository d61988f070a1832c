package guardrails

import (
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/utils/ptr"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
	"github.com/mcp-warden/mcp-warden/policy/netpol"
	"github.com/mcp-warden/mcp-warden/supplychain/imageverify/imagetest"
)

func policy(name string, mutate func(*mcpv1alpha1.MCPServerPolicySpec)) mcpv1alpha1.MCPServerPolicy {
	p := mcpv1alpha1.MCPServerPolicy{}
	p.Name = name
	mutate(&p.Spec)
	return p
}

func TestCeilingIsTheIntersection(t *testing.T) {
	private := policy("a", func(s *mcpv1alpha1.MCPServerPolicySpec) {
		s.Egress.AllowedAddressClasses = []mcpv1alpha1.AddressClass{"private", "loopback"}
	})
	strict := policy("b", func(s *mcpv1alpha1.MCPServerPolicySpec) {
		s.Egress.AllowedAddressClasses = []mcpv1alpha1.AddressClass{"private"}
	})
	if got := Ceiling(nil).AllowedClasses; len(got) != 0 {
		t.Fatalf("no policy allows %v", got)
	}
	if got := Ceiling([]mcpv1alpha1.MCPServerPolicy{private, strict}).AllowedClasses; !slices.Equal(got, []netpol.Class{netpol.ClassPrivate}) {
		t.Fatalf("ceiling = %v, want [private]", got)
	}
}

func TestCheckRegistry(t *testing.T) {
	p := policy("prod", func(s *mcpv1alpha1.MCPServerPolicySpec) { s.AllowedRegistries = []string{"ghcr.io/acme/"} })
	path := field.NewPath("spec", "image")
	if errs := CheckRegistry(path, "ghcr.io/acme/files@sha256:00", []mcpv1alpha1.MCPServerPolicy{p}); len(errs) != 0 {
		t.Fatal(errs)
	}
	errs := CheckRegistry(path, "ghcr.io/acmeevil/files@sha256:00", []mcpv1alpha1.MCPServerPolicy{p})
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), `MCPServerPolicy "prod" allows (ghcr.io/acme/)`) {
		t.Fatalf("errors = %v", errs)
	}
}

// TestRegistryAllowedOnComponents: entries match parsed registry and repository components at path
// boundaries, never as string prefixes.
func TestRegistryAllowedOnComponents(t *testing.T) {
	for _, tc := range []struct {
		entry, image string
		want         bool
	}{
		{"ghcr.io/acme", "ghcr.io/acme/files@sha256:00", true},
		{"ghcr.io/acme", "ghcr.io/acme-evil/files@sha256:00", false},
		{"ghcr.io/acme/", "ghcr.io/acme-evil/files", false},
		{"ghcr.io/acme", "ghcr.io/acme", true},
		{"ghcr.io/acme/files", "ghcr.io/acme/files-evil:1", false},
		{"ghcr.io", "ghcr.io/anyone/x", true},
		{"ghcr.io", "ghcr.io.evil.example/x", false},
		{"ghcr.io/acme", "GHCR.io/acme/x", false}, // not a valid reference: refused
		{"docker.io/library", "nginx@sha256:00", true},
		{"docker.io/acme", "index.docker.io/acme/x", true},
		{"127.0.0.1:5000/acme", "127.0.0.1:5000/acme/x", true},
		{"127.0.0.1:5000/acme", "127.0.0.1:5001/acme/x", false},
		{"acme", "acme/x", false},         // not a registry
		{"ghcr.io/*", "ghcr.io/x", false}, // no wildcards
	} {
		if got := RegistryAllowed(tc.image, []string{tc.entry}); got != tc.want {
			t.Errorf("RegistryAllowed(%q, [%q]) = %v, want %v", tc.image, tc.entry, got, tc.want)
		}
	}
}

func TestCheckEgress(t *testing.T) {
	p := policy("egress", func(s *mcpv1alpha1.MCPServerPolicySpec) {
		s.Egress.AllowedCIDRs = []string{"140.82.112.0/20"}
		s.Egress.AllowedFQDNs = []string{"*.github.com", "pypi.org"}
		s.Egress.MaxEntries = ptr.To[int32](3)
	})
	entry := func(cidr, fqdn string) mcpv1alpha1.EgressRule {
		e := mcpv1alpha1.EgressRule{Ports: []mcpv1alpha1.EgressPort{{Port: 443}}}
		if cidr != "" {
			e.CIDR = ptr.To(cidr)
		} else {
			e.FQDN = ptr.To(fqdn)
		}
		return e
	}
	cases := []struct {
		name   string
		egress []mcpv1alpha1.EgressRule
		want   []string
	}{
		{"within", []mcpv1alpha1.EgressRule{entry("140.82.113.0/24", ""), entry("", "api.github.com"), entry("", "pypi.org")}, nil},
		{"wildcard within wildcard", []mcpv1alpha1.EgressRule{entry("", "*.github.com")}, nil},
		{"cidr outside", []mcpv1alpha1.EgressRule{entry("1.1.1.0/24", "")}, []string{"spec.egress[0].cidr", "outside the networks"}},
		{"wider than allowed", []mcpv1alpha1.EgressRule{entry("140.82.0.0/16", "")}, []string{"spec.egress[0].cidr"}},
		{"name outside", []mcpv1alpha1.EgressRule{entry("", "evilgithub.com")}, []string{"spec.egress[0].fqdn", `"egress"`}},
		{"apex not covered by wildcard", []mcpv1alpha1.EgressRule{entry("", "github.com")}, []string{"spec.egress[0].fqdn"}},
		{"protected range", []mcpv1alpha1.EgressRule{entry("169.254.169.254/32", "")}, []string{"link-local"}},
		{"too many", []mcpv1alpha1.EgressRule{entry("", "pypi.org"), entry("", "pypi.org"), entry("", "pypi.org"), entry("", "pypi.org")}, []string{"spec.egress: Too many: 4"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			spec := &mcpv1alpha1.MCPServerSpec{Egress: tc.egress}
			errs := CheckEgress(spec, []mcpv1alpha1.MCPServerPolicy{p})
			wantErrors(t, errs, tc.want)
		})
	}
}

func TestCheckGateway(t *testing.T) {
	open := policy("open", func(s *mcpv1alpha1.MCPServerPolicySpec) { s.Gateway.AllowAuthDisabled = true })
	idp := policy("idp", func(s *mcpv1alpha1.MCPServerPolicySpec) {
		s.Gateway.AllowedIssuers = []string{"https://login.acme.example"}
	})
	none := policy("plain", func(*mcpv1alpha1.MCPServerPolicySpec) {})
	spec := func(disabled bool, issuer string) *mcpv1alpha1.MCPServerSpec {
		return &mcpv1alpha1.MCPServerSpec{Gateway: mcpv1alpha1.GatewaySpec{Auth: mcpv1alpha1.GatewayAuth{Disabled: disabled, Issuer: issuer}}}
	}
	cases := []struct {
		name     string
		spec     *mcpv1alpha1.MCPServerSpec
		policies []mcpv1alpha1.MCPServerPolicy
		want     []string
	}{
		{"no policy governs the namespace", spec(true, ""), nil, nil},
		{"auth off, allowed", spec(true, ""), []mcpv1alpha1.MCPServerPolicy{open}, nil},
		{"auth off, a policy that says nothing", spec(true, ""), []mcpv1alpha1.MCPServerPolicy{none}, []string{"spec.gateway.auth.disabled", `"plain" does not allow`}},
		{"auth off, one of two policies allows", spec(true, ""), []mcpv1alpha1.MCPServerPolicy{open, idp}, []string{`"idp" does not allow`}},
		{"allowed issuer", spec(false, "https://login.acme.example"), []mcpv1alpha1.MCPServerPolicy{idp, none}, nil},
		{"other issuer", spec(false, "https://evil.example"), []mcpv1alpha1.MCPServerPolicy{idp}, []string{"spec.gateway.auth.issuer", `"https://evil.example"`, "(https://login.acme.example)"}},
		{"issuer prefix is not enough", spec(false, "https://login.acme.example.evil.example"), []mcpv1alpha1.MCPServerPolicy{idp}, []string{"spec.gateway.auth.issuer"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			errs := CheckGateway(tc.spec, tc.policies)
			wantErrors(t, errs, tc.want)
		})
	}
}

func TestValidatePolicy(t *testing.T) {
	ca, err := imagetest.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	good := policy("good", func(s *mcpv1alpha1.MCPServerPolicySpec) {
		s.AllowedRegistries = []string{"ghcr.io/acme", "registry.internal.example:5000/mcp/"}
		s.Egress.AllowedFQDNs = []string{"*.github.com", "pypi.org"}
		s.Authorities = []mcpv1alpha1.Authority{{Name: "ci", Keyless: &mcpv1alpha1.KeylessAuthority{IssuerRegExp: `^https://token\.actions\.example$`, Subject: "a@b", Roots: string(ca.RootPEM)}}}
		s.Attestations = []mcpv1alpha1.AttestationRequirement{{Name: "provenance", PredicateType: "https://slsa.dev/provenance/v1", Authorities: []string{"ci"}}}
		s.Egress.AllowedCIDRs = []string{"140.82.112.0/20"}
		s.Gateway.AllowedIssuers = []string{"https://login.acme.example"}
	})
	if errs := ValidatePolicy(&good); len(errs) != 0 {
		t.Fatal(errs)
	}
	cases := []struct {
		name   string
		mutate func(*mcpv1alpha1.MCPServerPolicySpec)
		want   string
	}{
		{"bad regexp", func(s *mcpv1alpha1.MCPServerPolicySpec) { s.Authorities[0].Keyless.IssuerRegExp = "(" }, "spec.authorities[0].keyless.issuerRegExp"},
		{"unknown authority", func(s *mcpv1alpha1.MCPServerPolicySpec) { s.Attestations[0].Authorities = []string{"release"} }, `spec.attestations[0].authorities[0]: Not found: "release"`},
		{"attestation without authorities", func(s *mcpv1alpha1.MCPServerPolicySpec) { s.Authorities = nil; s.Attestations[0].Authorities = nil }, "the policy has none"},
		{"host bits", func(s *mcpv1alpha1.MCPServerPolicySpec) { s.Egress.AllowedCIDRs = []string{"140.82.112.7/20"} }, "spec.egress.allowedCIDRs[0]"},
		{"not a CIDR", func(s *mcpv1alpha1.MCPServerPolicySpec) { s.Egress.AllowedCIDRs = []string{"github"} }, "spec.egress.allowedCIDRs[0]"},
		{"bad selector", func(s *mcpv1alpha1.MCPServerPolicySpec) {
			s.NamespaceSelector.MatchExpressions = []metav1.LabelSelectorRequirement{{Key: "env", Operator: "Near"}}
		}, "spec.namespaceSelector"},
		{"issuer without host", func(s *mcpv1alpha1.MCPServerPolicySpec) { s.Gateway.AllowedIssuers = []string{"https://"} }, "spec.gateway.allowedIssuers[0]"},
		{"registry glob", func(s *mcpv1alpha1.MCPServerPolicySpec) { s.AllowedRegistries = []string{"ghcr.io/*"} }, "spec.allowedRegistries[0]"},
		{"registry without a host", func(s *mcpv1alpha1.MCPServerPolicySpec) { s.AllowedRegistries = []string{"acme/files"} }, "spec.allowedRegistries[0]"},
		{"registry with a tag", func(s *mcpv1alpha1.MCPServerPolicySpec) { s.AllowedRegistries = []string{"ok.io", "ghcr.io/acme:1"} }, "spec.allowedRegistries[1]"},
		{"FQDN wildcard matching everything", func(s *mcpv1alpha1.MCPServerPolicySpec) { s.Egress.AllowedFQDNs = []string{"*"} }, "spec.egress.allowedFQDNs[0]"},
		{"FQDN suffix without a dot", func(s *mcpv1alpha1.MCPServerPolicySpec) { s.Egress.AllowedFQDNs = []string{"*github.com"} }, "spec.egress.allowedFQDNs[0]"},
		{"FQDN wildcard over a TLD", func(s *mcpv1alpha1.MCPServerPolicySpec) { s.Egress.AllowedFQDNs = []string{"*.com"} }, "spec.egress.allowedFQDNs[0]"},
		{"bad key", func(s *mcpv1alpha1.MCPServerPolicySpec) {
			s.Authorities = append(s.Authorities, mcpv1alpha1.Authority{Name: "k", Key: &mcpv1alpha1.KeyAuthority{Data: "-----BEGIN PUBLIC KEY-----\nAA==\n-----END PUBLIC KEY-----"}})
		}, "spec.authorities[1].key.data"},
		{"keyless without roots", func(s *mcpv1alpha1.MCPServerPolicySpec) { s.Authorities[0].Keyless.Roots = "nope" }, "spec.authorities[0].keyless.roots"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := good.DeepCopy()
			tc.mutate(&p.Spec)
			errs := ValidatePolicy(p)
			if agg := errs.ToAggregate(); agg == nil || !strings.Contains(agg.Error(), tc.want) {
				t.Fatalf("errors %v lack %q", agg, tc.want)
			}
		})
	}
}

// wantErrors fails unless errs is empty when want is, and otherwise mentions every string in want.
func wantErrors(t *testing.T, errs field.ErrorList, want []string) {
	t.Helper()
	if len(want) == 0 {
		if len(errs) != 0 {
			t.Fatal(errs)
		}
		return
	}
	msg := errs.ToAggregate()
	for _, w := range want {
		if msg == nil || !strings.Contains(msg.Error(), w) {
			t.Fatalf("errors %v lack %q", msg, w)
		}
	}
}

// TestFQDNPatterns: only "*."-prefixed patterns are wildcards; "*" and "*github.com" admit nothing but
// themselves.
func TestFQDNPatterns(t *testing.T) {
	for _, tc := range []struct {
		pattern, name string
		want          bool
	}{
		{"*.github.com", "api.github.com", true},
		{"*.github.com", "a.b.github.com", true},
		{"*.github.com", "github.com", false},
		{"*.github.com", "evilgithub.com", false},
		{"*github.com", "evilgithub.com", false},
		{"*", "evil.example", false},
		{"*.com", "evil.com", false},
		{"pypi.org", "PyPI.org.", true},
		{"*.github.com", "*.api.github.com", true},
	} {
		if got := fqdnAllowed(tc.name, []string{tc.pattern}); got != tc.want {
			t.Errorf("fqdnAllowed(%q, [%q]) = %v, want %v", tc.name, tc.pattern, got, tc.want)
		}
	}
}

// TestSecretReferencesLimited: with allowedSecretNames, a server may not expose another Secret of the
// namespace (a confused deputy for users who may create MCPServers but not read Secrets).
func TestSecretReferencesLimited(t *testing.T) {
	ref := func(name string) mcpv1alpha1.EnvVar {
		return mcpv1alpha1.EnvVar{Name: "X", ValueFrom: &mcpv1alpha1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: name}, Key: "k"}}}
	}
	spec := &mcpv1alpha1.MCPServerSpec{Env: []mcpv1alpha1.EnvVar{ref("mcp-github"), ref("db-admin")}}
	p := []mcpv1alpha1.MCPServerPolicy{{ObjectMeta: metav1.ObjectMeta{Name: "secrets"}, Spec: mcpv1alpha1.MCPServerPolicySpec{AllowedSecretNames: []string{"mcp-*", "shared"}}}}
	errs := CheckSecretRefs(spec, p)
	if len(errs) != 1 || errs[0].Field != "spec.env[1].valueFrom.secretKeyRef.name" || !strings.Contains(errs[0].Detail, `Secret "db-admin" is not one MCPServerPolicy "secrets" lets MCP servers use`) {
		t.Fatalf("errors = %v", errs)
	}
	if errs := CheckSecretRefs(spec, nil); len(errs) > 0 {
		t.Fatalf("no policy: %v", errs)
	}
}

// TestPlaintextNeedsEveryPolicy: tls.mode Disabled is refused with no governing policy, and with any
// governing policy that does not set allowPlaintext; HTTPS (the default) needs nothing.
func TestPlaintextNeedsEveryPolicy(t *testing.T) {
	allow := mcpv1alpha1.MCPServerPolicy{ObjectMeta: metav1.ObjectMeta{Name: "mesh"}, Spec: mcpv1alpha1.MCPServerPolicySpec{Gateway: mcpv1alpha1.GatewayCeiling{AllowPlaintext: true}}}
	strict := mcpv1alpha1.MCPServerPolicy{ObjectMeta: metav1.ObjectMeta{Name: "strict"}}
	plain := &mcpv1alpha1.MCPServerSpec{Gateway: mcpv1alpha1.GatewaySpec{Auth: mcpv1alpha1.GatewayAuth{Issuer: "https://auth.example.com"}, TLS: mcpv1alpha1.GatewayTLS{Mode: mcpv1alpha1.TLSDisabled}}}
	https := &mcpv1alpha1.MCPServerSpec{Gateway: mcpv1alpha1.GatewaySpec{Auth: mcpv1alpha1.GatewayAuth{Issuer: "https://auth.example.com"}}}
	for _, tc := range []struct {
		name     string
		spec     *mcpv1alpha1.MCPServerSpec
		policies []mcpv1alpha1.MCPServerPolicy
		want     string
	}{
		{"no policy", plain, nil, "no policy governs it"},
		{"a strict policy", plain, []mcpv1alpha1.MCPServerPolicy{strict}, `MCPServerPolicy "strict" does not allow a plaintext gateway`},
		{"one of two allows", plain, []mcpv1alpha1.MCPServerPolicy{allow, strict}, `MCPServerPolicy "strict"`},
		{"allowed", plain, []mcpv1alpha1.MCPServerPolicy{allow}, ""},
		{"https without policy", https, nil, ""},
	} {
		errs := CheckGateway(tc.spec, tc.policies)
		switch {
		case tc.want == "" && len(errs) > 0:
			t.Errorf("%s: refused: %v", tc.name, errs)
		case tc.want != "" && (len(errs) != 1 || errs[0].Field != "spec.gateway.tls.mode" || !strings.Contains(errs[0].Error(), tc.want)):
			t.Errorf("%s: %v, want one error on spec.gateway.tls.mode with %q", tc.name, errs, tc.want)
		}
	}
}
