package guardrails

import (
	"fmt"
	"net/netip"
	"net/url"
	"regexp"
	"slices"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
)

// ValidatePolicy checks what an MCPServerPolicy's schema cannot: the namespace selector, regular
// expressions, that attestation requirements name authorities the policy has, and that CIDRs and
// issuers parse. Each error names the field. (Keys and Secrets are checked by the image verifier.)
func ValidatePolicy(p *mcpv1alpha1.MCPServerPolicy) field.ErrorList {
	var errs field.ErrorList
	spec := field.NewPath("spec")
	if _, err := metav1.LabelSelectorAsSelector(&p.Spec.NamespaceSelector); err != nil {
		errs = append(errs, field.Invalid(spec.Child("namespaceSelector"), p.Spec.NamespaceSelector, err.Error()))
	}
	var names []string
	for i, a := range p.Spec.Authorities {
		names = append(names, a.Name)
		if k := a.Keyless; k != nil {
			path := spec.Child("authorities").Index(i).Child("keyless")
			for f, expr := range map[string]string{"issuerRegExp": k.IssuerRegExp, "subjectRegExp": k.SubjectRegExp} {
				if _, err := regexp.Compile(expr); expr != "" && err != nil {
					errs = append(errs, field.Invalid(path.Child(f), expr, "not a regular expression (Go RE2 syntax): "+err.Error()))
				}
			}
		}
	}
	for i, att := range p.Spec.Attestations {
		path := spec.Child("attestations").Index(i)
		if len(p.Spec.Authorities) == 0 {
			errs = append(errs, field.Required(spec.Child("authorities"), fmt.Sprintf("attestation %q must be signed by one of the policy's authorities, and the policy has none", att.Name)))
		}
		for j, n := range att.Authorities {
			if !slices.Contains(names, n) {
				errs = append(errs, field.NotFound(path.Child("authorities").Index(j), n))
			}
		}
	}
	for i, c := range p.Spec.Egress.AllowedCIDRs {
		if pr, err := netip.ParsePrefix(c); err != nil || pr.Masked() != pr {
			errs = append(errs, field.Invalid(spec.Child("egress", "allowedCIDRs").Index(i), c, "want a CIDR without host bits, e.g. 140.82.112.0/20"))
		}
	}
	for i, is := range p.Spec.Gateway.AllowedIssuers {
		if u, err := url.Parse(is); err != nil || u.Host == "" {
			errs = append(errs, field.Invalid(spec.Child("gateway", "allowedIssuers").Index(i), is, "want an issuer URL, e.g. https://login.example.com"))
		}
	}
	return errs
}
