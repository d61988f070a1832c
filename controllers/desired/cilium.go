package desired

// The CiliumNetworkPolicy enforces an MCPServer's DNS-name egress entries (toFQDNs) on clusters running
// Cilium. A Kubernetes NetworkPolicy cannot express DNS names, so without Cilium such entries open
// nothing.

import (
	"strconv"

	ciliumv2 "github.com/cilium/cilium/pkg/k8s/apis/cilium.io/v2"
	"github.com/cilium/cilium/pkg/policy/api"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/mcp-warden/mcp-warden/policy/netpol"
)

// fqdnEntry is one DNS-name egress destination.
type fqdnEntry struct {
	// FQDN is a name (api.github.com) or a wildcard (*.github.com).
	FQDN string
	// Ports are the allowed destination ports.
	Ports []netpol.Port
}

// ciliumPolicy returns the CiliumNetworkPolicy for the entries, selecting the server's pods by podLabels:
//   - DNS to the cluster DNS pods through Cilium's DNS proxy (required for toFQDNs to learn addresses);
//   - each name on its ports only;
//   - an egressDeny for every protected range the ceiling does not allow, so a name that resolves to
//     cloud metadata or a private address (DNS rebinding) is still refused: in Cilium a deny wins over
//     any allow.
func ciliumPolicy(meta metav1.ObjectMeta, podLabels map[string]string, entries []fqdnEntry, dns Peer, ceiling netpol.Ceiling) *ciliumv2.CiliumNetworkPolicy {
	dnsPeer := map[string]string{"k8s:io.kubernetes.pod.namespace": dns.Namespace}
	for k, v := range dns.PodLabels {
		dnsPeer["k8s:"+k] = v
	}
	egress := []api.EgressRule{{
		EgressCommonRule: api.EgressCommonRule{ToEndpoints: []api.EndpointSelector{api.NewESFromMatchRequirements(dnsPeer, nil)}},
		ToPorts: api.PortRules{{
			Ports: []api.PortProtocol{{Port: "53", Protocol: api.ProtoAny}},
			Rules: &api.L7Rules{DNS: []api.PortRuleDNS{{MatchPattern: "*"}}},
		}},
	}}
	for _, e := range entries {
		sel := api.FQDNSelector{MatchName: e.FQDN}
		if len(e.FQDN) > 1 && e.FQDN[0] == '*' {
			sel = api.FQDNSelector{MatchPattern: e.FQDN}
		}
		ports := make([]api.PortProtocol, 0, len(e.Ports))
		for _, p := range e.Ports {
			proto := api.ProtoTCP
			if p.Protocol == "UDP" {
				proto = api.ProtoUDP
			}
			ports = append(ports, api.PortProtocol{Port: strconv.Itoa(int(p.Port)), Protocol: proto})
		}
		egress = append(egress, api.EgressRule{ToFQDNs: api.FQDNSelectorSlice{sel}, ToPorts: api.PortRules{{Ports: ports}}})
	}
	var deny api.CIDRRuleSlice
	for _, r := range netpol.Protected {
		if !ceiling.Allows(r.Class) {
			deny = append(deny, api.CIDRRule{Cidr: api.CIDR(netpol.ExceptString(r.Prefix))})
		}
	}
	rule := &api.Rule{
		EndpointSelector: api.NewESFromMatchRequirements(podLabels, nil),
		Egress:           egress,
	}
	if len(deny) > 0 {
		rule.EgressDeny = []api.EgressDenyRule{{EgressCommonRule: api.EgressCommonRule{ToCIDRSet: deny}}}
	}
	return &ciliumv2.CiliumNetworkPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: "cilium.io/v2", Kind: "CiliumNetworkPolicy"},
		ObjectMeta: meta,
		Spec:       rule,
	}
}
