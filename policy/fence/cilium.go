package fence

import (
	"fmt"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// CiliumRule is one rule of a cilium.io/v2 CiliumNetworkPolicy (spec, or an entry of specs) as the fence
// sees it.
type CiliumRule struct {
	// Path is the rule's field path (spec or specs[i]).
	Path *field.Path
	// EndpointSelector is the rule's endpointSelector with Cilium's label sources (k8s:, any:) taken
	// off the keys; nil when the rule has none (a node rule).
	EndpointSelector *metav1.LabelSelector
	// Allows names the allow sections the rule has ("ingress", "egress"); egressDeny and ingressDeny
	// only narrow.
	Allows []string
}

// CiliumRules reads the rules of a CiliumNetworkPolicy given as unstructured content. A rule whose
// endpointSelector does not decode gets an empty selector (it selects everything).
func CiliumRules(obj map[string]any) []CiliumRule {
	var out []CiliumRule
	if spec, ok, _ := unstructured.NestedMap(obj, "spec"); ok {
		out = append(out, ciliumRule(field.NewPath("spec"), spec))
	}
	specs, _, _ := unstructured.NestedSlice(obj, "specs")
	for i, s := range specs {
		if m, ok := s.(map[string]any); ok {
			out = append(out, ciliumRule(field.NewPath("specs").Index(i), m))
		}
	}
	return out
}

func ciliumRule(path *field.Path, rule map[string]any) CiliumRule {
	r := CiliumRule{Path: path}
	for _, section := range []string{"ingress", "egress"} {
		if l, ok := rule[section].([]any); ok && len(l) > 0 {
			r.Allows = append(r.Allows, section)
		}
	}
	raw, ok := rule["endpointSelector"].(map[string]any)
	if !ok {
		if _, node := rule["nodeSelector"]; !node {
			r.EndpointSelector = &metav1.LabelSelector{}
		}
		return r
	}
	sel := &metav1.LabelSelector{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(raw, sel); err != nil {
		return CiliumRule{Path: path, EndpointSelector: &metav1.LabelSelector{}, Allows: r.Allows}
	}
	r.EndpointSelector = kubernetesKeys(sel)
	return r
}

// kubernetesKeys rewrites a Cilium endpoint selector into one over pod labels: k8s: and any: sources
// are removed; a key from another source (reserved:, cidr:, ...) never names a pod label and is kept as
// is, so it matches as an absent label. Labels Cilium derives for every endpoint (the namespace, the
// service account, the namespace's labels: io.kubernetes.*, io.cilium.*) become the operator's
// pod-template-hash, which fence treats as any value: a server pod can have them.
func kubernetesKeys(sel *metav1.LabelSelector) *metav1.LabelSelector {
	out := &metav1.LabelSelector{}
	derived := 0
	key := func(k string) string {
		k = strings.TrimPrefix(strings.TrimPrefix(k, "k8s:"), "any:")
		if strings.HasPrefix(k, "io.kubernetes.") || strings.HasPrefix(k, "io.cilium.") {
			derived++
			return fmt.Sprintf("%s%d", derivedKey, derived)
		}
		return k
	}
	for k, v := range sel.MatchLabels {
		if out.MatchLabels == nil {
			out.MatchLabels = map[string]string{}
		}
		out.MatchLabels[key(k)] = v
	}
	for _, e := range sel.MatchExpressions {
		e.Key = key(e.Key)
		out.MatchExpressions = append(out.MatchExpressions, e)
	}
	return out
}

// CiliumWidening lists the rules of the policy that can select the pods of some MCP server (name "")
// or of the server named name, and allow traffic.
func CiliumWidening(rules []CiliumRule, name string) []CiliumRule {
	var out []CiliumRule
	for _, r := range rules {
		if len(r.Allows) > 0 && r.EndpointSelector != nil && selects(r.EndpointSelector, name) {
			out = append(out, r)
		}
	}
	return out
}

// CiliumMessage is the denial or condition text for a CiliumNetworkPolicy that widens the fence.
func CiliumMessage(namespace, name string, widening []CiliumRule) string {
	var parts []string
	for _, r := range widening {
		parts = append(parts, fmt.Sprintf("%s (%s)", r.Path, strings.Join(r.Allows, " and ")))
	}
	return fmt.Sprintf("CiliumNetworkPolicy %s/%s was not written by the operator and has rules that select MCP server pods and allow traffic: %s; Cilium policies add up with the operator's, so it would reopen what the operator's policies close (cloud metadata, private ranges, the server port behind the gateway). Keep server pods out of its endpointSelector (matchExpressions: [{key: %s, operator: DoesNotExist}]), use only egressDeny and ingressDeny (a pure deny policy), or let spec.egress and spec.clients of the MCPServer open what is needed",
		namespace, name, strings.Join(parts, ", "), LabelServer)
}
