// Package guardrails applies the platform's MCPServerPolicies to an MCPServer: which policies govern its
// namespace, whether its image comes from an allowed registry, whether its egress allow-list stays under
// every policy's ceiling, and whether its gateway settings (authentication, issuer) are allowed. The
// admission webhook denies with these errors; the controller uses the same checks (and the combined
// ceiling) so the two never disagree. ValidatePolicy checks a policy itself.
package guardrails

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/controller-runtime/pkg/client"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
	"github.com/mcp-warden/mcp-warden/policy/netpol"
)

// +kubebuilder:rbac:groups=mcp.warden.dev,resources=mcpserverpolicies,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch

// Matching returns the policies whose namespaceSelector selects the namespace.
func Matching(ctx context.Context, c client.Reader, namespace string) ([]mcpv1alpha1.MCPServerPolicy, error) {
	ns := &corev1.Namespace{}
	if err := c.Get(ctx, client.ObjectKey{Name: namespace}, ns); err != nil {
		return nil, fmt.Errorf("get namespace %s: %w", namespace, err)
	}
	list := &mcpv1alpha1.MCPServerPolicyList{}
	if err := c.List(ctx, list); err != nil {
		return nil, fmt.Errorf("list MCPServerPolicies: %w", err)
	}
	var out []mcpv1alpha1.MCPServerPolicy
	for _, p := range list.Items {
		sel, err := metav1.LabelSelectorAsSelector(&p.Spec.NamespaceSelector)
		if err != nil {
			return nil, fmt.Errorf("MCPServerPolicy %s: spec.namespaceSelector: %w", p.Name, err)
		}
		if sel.Matches(labels.Set(ns.Labels)) {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, func(a, b mcpv1alpha1.MCPServerPolicy) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// Ceiling combines the policies' egress ceilings: a protected address class may be opened only if every
// policy allows it, and only if at least one policy governs the namespace.
func Ceiling(policies []mcpv1alpha1.MCPServerPolicy) netpol.Ceiling {
	if len(policies) == 0 {
		return netpol.Ceiling{}
	}
	var allowed []netpol.Class
	for _, class := range netpol.Classes {
		all := true
		for _, p := range policies {
			if !slices.Contains(p.Spec.Egress.AllowedAddressClasses, mcpv1alpha1.AddressClass(class)) {
				all = false
				break
			}
		}
		if all {
			allowed = append(allowed, class)
		}
	}
	return netpol.Ceiling{AllowedClasses: allowed}
}

// ScaleToZero reports whether a server that violates the policies is scaled to zero: unless every
// policy's violationAction is Report.
func ScaleToZero(policies []mcpv1alpha1.MCPServerPolicy) bool {
	for _, p := range policies {
		if p.Spec.ViolationAction != mcpv1alpha1.ViolationReport {
			return true
		}
	}
	return false
}

// CheckSecretRefs returns an error for each Secret reference in spec.env that a policy's
// allowedSecretNames does not allow.
func CheckSecretRefs(spec *mcpv1alpha1.MCPServerSpec, policies []mcpv1alpha1.MCPServerPolicy) field.ErrorList {
	var errs field.ErrorList
	for _, p := range policies {
		allowed := p.Spec.AllowedSecretNames
		if len(allowed) == 0 {
			continue
		}
		for i, e := range spec.Env {
			if e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
				continue
			}
			name := e.ValueFrom.SecretKeyRef.Name
			if !slices.ContainsFunc(allowed, func(a string) bool { return nameAllowed(name, a) }) {
				errs = append(errs, field.Forbidden(field.NewPath("spec", "env").Index(i).Child("valueFrom", "secretKeyRef", "name"),
					fmt.Sprintf("Secret %q is not one MCPServerPolicy %q lets MCP servers use (%s)", name, p.Name, strings.Join(allowed, ", "))))
			}
		}
	}
	return errs
}

func nameAllowed(name, pattern string) bool {
	if prefix, ok := strings.CutSuffix(pattern, "*"); ok {
		return strings.HasPrefix(name, prefix)
	}
	return name == pattern
}

// CheckRegistry returns an error for each policy whose allowed registries the image is not under.
func CheckRegistry(path *field.Path, image string, policies []mcpv1alpha1.MCPServerPolicy) field.ErrorList {
	var errs field.ErrorList
	for _, p := range policies {
		if len(p.Spec.AllowedRegistries) == 0 {
			continue
		}
		if !RegistryAllowed(image, p.Spec.AllowedRegistries) {
			errs = append(errs, field.Forbidden(path, fmt.Sprintf("image %s is not from a registry MCPServerPolicy %q allows (%s)", image, p.Name, strings.Join(p.Spec.AllowedRegistries, ", "))))
		}
	}
	return errs
}

// RegistryAllowed reports whether the image is under one of the entries, compared on parsed reference
// components: the same registry host (docker.io and index.docker.io are one), and a repository equal to
// the entry's path or below it at a "/" boundary, so ghcr.io/acme admits ghcr.io/acme/files but not
// ghcr.io/acme-evil/files.
func RegistryAllowed(image string, entries []string) bool {
	base, _, _ := strings.Cut(image, "@") // the digest is checked elsewhere; only the repository matters
	ref, err := name.ParseReference(base)
	if err != nil {
		return false
	}
	repo := ref.Context()
	for _, e := range entries {
		host, path, ok := registryEntry(e)
		if !ok || repo.RegistryStr() != host {
			continue
		}
		if path == "" || repo.RepositoryStr() == path || strings.HasPrefix(repo.RepositoryStr(), path+"/") {
			return true
		}
	}
	return false
}

// registryEntry parses an allowedRegistries entry: a registry host (with a dot, a port or "localhost"),
// optionally followed by a repository path; a trailing "/" is allowed.
func registryEntry(e string) (host, path string, ok bool) {
	e = strings.TrimSuffix(strings.TrimSpace(e), "/")
	host, path, _ = strings.Cut(e, "/")
	if host == "" || !(strings.ContainsAny(host, ".:") || host == "localhost") || strings.ContainsAny(e, "*@ ") {
		return "", "", false
	}
	reg, err := name.NewRegistry(host, name.StrictValidation)
	if err != nil {
		return "", "", false
	}
	if path != "" {
		// Validated as a repository, kept as written: name would turn docker.io/acme into library/acme.
		if _, err := name.NewRepository(e); err != nil || strings.Contains(path, ":") {
			return "", "", false
		}
	}
	return reg.RegistryStr(), path, true
}

// CheckEgress checks the allow-list against every policy: the protected ranges (through the combined
// ceiling), the allowed CIDRs and names, and the entry count. Each error names the entry and the policy.
func CheckEgress(spec *mcpv1alpha1.MCPServerSpec, policies []mcpv1alpha1.MCPServerPolicy) field.ErrorList {
	var errs field.ErrorList
	base := field.NewPath("spec", "egress")
	ceiling := Ceiling(policies)
	for i, e := range spec.Egress {
		if e.CIDR != nil {
			if _, err := netpol.IPBlock(*e.CIDR, ceiling); err != nil {
				errs = append(errs, field.Invalid(base.Index(i).Child("cidr"), *e.CIDR, err.Error()))
			}
		}
	}
	for _, p := range policies {
		c := p.Spec.Egress
		if c.MaxEntries != nil && len(spec.Egress) > int(*c.MaxEntries) {
			errs = append(errs, field.TooMany(base, len(spec.Egress), int(*c.MaxEntries)))
		}
		for i, e := range spec.Egress {
			switch {
			case e.CIDR != nil && len(c.AllowedCIDRs) > 0 && !cidrWithin(*e.CIDR, c.AllowedCIDRs):
				errs = append(errs, field.Forbidden(base.Index(i).Child("cidr"), fmt.Sprintf("%s is outside the networks MCPServerPolicy %q allows (%s)", *e.CIDR, p.Name, strings.Join(c.AllowedCIDRs, ", "))))
			case e.FQDN != nil && len(c.AllowedFQDNs) > 0 && !fqdnAllowed(*e.FQDN, c.AllowedFQDNs):
				errs = append(errs, field.Forbidden(base.Index(i).Child("fqdn"), fmt.Sprintf("%s is not a name MCPServerPolicy %q allows (%s)", *e.FQDN, p.Name, strings.Join(c.AllowedFQDNs, ", "))))
			}
		}
	}
	return errs
}

// CheckGateway checks the gateway settings against every policy: authentication may be off only if the
// policy allows it, the issuer must be one the policy allows, and the gateway may serve plaintext only
// where policies allow it (see checkPlaintext).
func CheckGateway(spec *mcpv1alpha1.MCPServerSpec, policies []mcpv1alpha1.MCPServerPolicy) field.ErrorList {
	var errs field.ErrorList
	auth := field.NewPath("spec", "gateway", "auth")
	for _, p := range policies {
		c := p.Spec.Gateway
		switch {
		case spec.Gateway.Auth.Disabled && !c.AllowAuthDisabled:
			errs = append(errs, field.Forbidden(auth.Child("disabled"), fmt.Sprintf("MCPServerPolicy %q does not allow gateway authentication to be turned off; remove disabled: true and set auth.issuer", p.Name)))
		case !spec.Gateway.Auth.Disabled && len(c.AllowedIssuers) > 0 && !slices.Contains(c.AllowedIssuers, spec.Gateway.Auth.Issuer):
			errs = append(errs, field.Forbidden(auth.Child("issuer"), fmt.Sprintf("issuer %q is not an authorization server MCPServerPolicy %q allows (%s)", spec.Gateway.Auth.Issuer, p.Name, strings.Join(c.AllowedIssuers, ", "))))
		}
	}
	return append(errs, checkPlaintext(spec, policies)...)
}

// checkPlaintext refuses spec.gateway.tls.mode Disabled unless a policy governs the namespace and every
// governing policy sets gateway.allowPlaintext: plaintext puts bearer tokens on the pod network, so no
// policy is not permission.
func checkPlaintext(spec *mcpv1alpha1.MCPServerSpec, policies []mcpv1alpha1.MCPServerPolicy) field.ErrorList {
	if spec.Gateway.TLS.Mode != mcpv1alpha1.TLSDisabled {
		return nil
	}
	mode := field.NewPath("spec", "gateway", "tls", "mode")
	if len(policies) == 0 {
		return field.ErrorList{field.Forbidden(mode, "plaintext HTTP puts bearer tokens on the pod network unencrypted, so it needs an MCPServerPolicy governing this namespace with gateway.allowPlaintext: true (e.g. where a mesh does mTLS); no policy governs it: remove tls.mode (HTTPS is the default) or ask the platform team for such a policy")}
	}
	var errs field.ErrorList
	for _, p := range policies {
		if !p.Spec.Gateway.AllowPlaintext {
			errs = append(errs, field.Forbidden(mode, fmt.Sprintf("MCPServerPolicy %q does not allow a plaintext gateway (gateway.allowPlaintext); remove tls.mode: Disabled (HTTPS is the default)", p.Name)))
		}
	}
	return errs
}

func cidrWithin(cidr string, allowed []string) bool {
	p, err := netip.ParsePrefix(cidr)
	if err != nil {
		return false
	}
	for _, a := range allowed {
		ap, err := netip.ParsePrefix(a)
		if err == nil && ap.Bits() <= p.Bits() && ap.Contains(p.Addr()) {
			return true
		}
	}
	return false
}

// fqdnAllowed reports whether name is one of the allowed names or under an allowed "*." wildcard (a
// pattern of any other shape matches only itself). A wildcard entry in the spec is allowed only by the
// same or a broader wildcard.
func fqdnAllowed(name string, allowed []string) bool {
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	for _, a := range allowed {
		a = strings.ToLower(strings.TrimSuffix(a, "."))
		if a == name {
			return true
		}
		if suffix, ok := strings.CutPrefix(a, "*."); ok && validFQDN(suffix) && strings.HasSuffix(strings.TrimPrefix(name, "*"), "."+suffix) {
			return true
		}
	}
	return false
}

// validFQDN reports whether s is a DNS name of at least two labels, without wildcards.
func validFQDN(s string) bool {
	return strings.Contains(s, ".") && len(validation.IsDNS1123Subdomain(s)) == 0
}
