package guardrails

import (
	"fmt"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"strings"

	"github.com/sigstore/sigstore/pkg/cryptoutils"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
)

// ValidatePolicy checks what an MCPServerPolicy's schema cannot: the namespace selector, regular
// expressions, that attestation requirements name authorities the policy has, that registries, FQDN
// patterns, CIDRs, issuers, inline keys and keyless roots parse. Each error names the field. (Keys in
// Secrets are checked by the image verifier.)
func ValidatePolicy(p *mcpv1alpha1.MCPServerPolicy) field.ErrorList {
	spec := field.NewPath("spec")
	var errs field.ErrorList
	for _, check := range []func(*field.Path, *mcpv1alpha1.MCPServerPolicySpec) field.ErrorList{
		validateNamespaceSelector,
		validateKeylessRegExps,
		validateAttestations,
		validateRegistries,
		validateFQDNs,
		validateAuthorityKeys,
		validateCIDRs,
		validateIssuers,
	} {
		errs = append(errs, check(spec, &p.Spec)...)
	}
	return errs
}

// validateNamespaceSelector checks that the namespace selector is a valid label selector.
func validateNamespaceSelector(spec *field.Path, s *mcpv1alpha1.MCPServerPolicySpec) field.ErrorList {
	if _, err := metav1.LabelSelectorAsSelector(&s.NamespaceSelector); err != nil {
		return field.ErrorList{field.Invalid(spec.Child("namespaceSelector"), s.NamespaceSelector, err.Error())}
	}
	return nil
}

// validateKeylessRegExps checks that the issuer and subject patterns of keyless authorities compile.
func validateKeylessRegExps(spec *field.Path, s *mcpv1alpha1.MCPServerPolicySpec) field.ErrorList {
	var errs field.ErrorList
	for i, a := range s.Authorities {
		k := a.Keyless
		if k == nil {
			continue
		}
		path := spec.Child("authorities").Index(i).Child("keyless")
		for f, expr := range map[string]string{"issuerRegExp": k.IssuerRegExp, "subjectRegExp": k.SubjectRegExp} {
			if _, err := regexp.Compile(expr); expr != "" && err != nil {
				errs = append(errs, field.Invalid(path.Child(f), expr, "not a regular expression (Go RE2 syntax): "+err.Error()))
			}
		}
	}
	return errs
}

// validateAttestations checks that every attestation can be signed by an authority of the policy and
// names only authorities the policy has.
func validateAttestations(spec *field.Path, s *mcpv1alpha1.MCPServerPolicySpec) field.ErrorList {
	var errs field.ErrorList
	names := make([]string, 0, len(s.Authorities))
	for _, a := range s.Authorities {
		names = append(names, a.Name)
	}
	for i, att := range s.Attestations {
		path := spec.Child("attestations").Index(i)
		if len(s.Authorities) == 0 {
			errs = append(errs, field.Required(spec.Child("authorities"), fmt.Sprintf("attestation %q must be signed by one of the policy's authorities, and the policy has none", att.Name)))
		}
		for j, n := range att.Authorities {
			if !slices.Contains(names, n) {
				errs = append(errs, field.NotFound(path.Child("authorities").Index(j), n))
			}
		}
	}
	return errs
}

// validateRegistries checks that every allowed registry is a host with an optional repository path.
func validateRegistries(spec *field.Path, s *mcpv1alpha1.MCPServerPolicySpec) field.ErrorList {
	var errs field.ErrorList
	for i, r := range s.AllowedRegistries {
		if _, _, ok := registryEntry(r); !ok {
			errs = append(errs, field.Invalid(spec.Child("allowedRegistries").Index(i), r, "want a registry host, optionally with a repository path, e.g. ghcr.io/acme (no wildcards, tags or digests)"))
		}
	}
	return errs
}

// validateFQDNs checks that every allowed egress FQDN is a DNS name or a "*." wildcard.
func validateFQDNs(spec *field.Path, s *mcpv1alpha1.MCPServerPolicySpec) field.ErrorList {
	var errs field.ErrorList
	for i, n := range s.Egress.AllowedFQDNs {
		if !validFQDNPattern(n) {
			errs = append(errs, field.Invalid(spec.Child("egress", "allowedFQDNs").Index(i), n, `want a DNS name (api.github.com) or a "*." wildcard under a name of at least two labels (*.github.com)`))
		}
	}
	return errs
}

// validateAuthorityKeys checks that inline keys are PEM public keys and keyless roots PEM certificates.
func validateAuthorityKeys(spec *field.Path, s *mcpv1alpha1.MCPServerPolicySpec) field.ErrorList {
	var errs field.ErrorList
	for i, a := range s.Authorities {
		path := spec.Child("authorities").Index(i)
		if a.Key != nil && a.Key.Data != "" {
			if _, err := cryptoutils.UnmarshalPEMToPublicKey([]byte(a.Key.Data)); err != nil {
				errs = append(errs, field.Invalid(path.Child("key", "data"), "(key)", "not a PEM public key: "+err.Error()))
			}
		}
		if k := a.Keyless; k != nil {
			if certs, err := cryptoutils.UnmarshalCertificatesFromPEM([]byte(k.Roots)); err != nil || len(certs) == 0 {
				errs = append(errs, field.Invalid(path.Child("keyless", "roots"), "(certificates)", "no PEM certificates"))
			}
		}
	}
	return errs
}

// validateCIDRs checks that every allowed egress CIDR parses and has no host bits.
func validateCIDRs(spec *field.Path, s *mcpv1alpha1.MCPServerPolicySpec) field.ErrorList {
	var errs field.ErrorList
	for i, c := range s.Egress.AllowedCIDRs {
		if pr, err := netip.ParsePrefix(c); err != nil || pr.Masked() != pr {
			errs = append(errs, field.Invalid(spec.Child("egress", "allowedCIDRs").Index(i), c, "want a CIDR without host bits, e.g. 140.82.112.0/20"))
		}
	}
	return errs
}

// validateIssuers checks that every allowed gateway issuer is a URL with a host.
func validateIssuers(spec *field.Path, s *mcpv1alpha1.MCPServerPolicySpec) field.ErrorList {
	var errs field.ErrorList
	for i, is := range s.Gateway.AllowedIssuers {
		if u, err := url.Parse(is); err != nil || u.Host == "" {
			errs = append(errs, field.Invalid(spec.Child("gateway", "allowedIssuers").Index(i), is, "want an issuer URL, e.g. https://login.example.com"))
		}
	}
	return errs
}

// validFQDNPattern reports whether n is a DNS name or a "*." wildcard under a name of two labels or more.
func validFQDNPattern(n string) bool {
	n = strings.TrimSuffix(n, ".")
	if rest, ok := strings.CutPrefix(n, "*."); ok {
		return validFQDN(rest)
	}
	return !strings.Contains(n, "*") && len(validation.IsDNS1123Subdomain(n)) == 0
}

// PolicyWarnings are what a policy allows that is probably not meant: authorities without
// allowedRegistries (images from any registry are verified, and the verifier fetches from wherever an
// image says).
func PolicyWarnings(p *mcpv1alpha1.MCPServerPolicy) []string {
	var w []string
	if len(p.Spec.Authorities) > 0 && len(p.Spec.AllowedRegistries) == 0 {
		w = append(w, fmt.Sprintf("MCPServerPolicy %s: spec.authorities is set but spec.allowedRegistries is empty: images from any public registry are admitted once signed, and each new one costs registry requests; list the registries you sign for", p.Name))
	}
	return w
}
