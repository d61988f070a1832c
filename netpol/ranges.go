// Package netpol turns an MCPServer's egress allow-list into NetworkPolicy egress rules that never open
// cloud metadata, loopback or private address ranges by accident.
package netpol

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// Range is an address range the operator never opens unless a platform policy explicitly allows its
// class.
type Range struct {
	// Prefix is the network.
	Prefix netip.Prefix
	// Class groups ranges a platform policy may allow together.
	Class Class
	// Name says what the range is, for error messages.
	Name string
}

// Class is a class of protected address ranges.
type Class string

const (
	// ClassLinkLocal covers link-local ranges, where cloud metadata services live (169.254.169.254).
	ClassLinkLocal Class = "link-local"
	// ClassLoopback covers loopback ranges.
	ClassLoopback Class = "loopback"
	// ClassPrivate covers private, carrier-grade NAT and unique-local ranges: the cluster and the
	// internal network.
	ClassPrivate Class = "private"
	// ClassUnspecified covers "this network" 0.0.0.0/8 and IPv4-mapped IPv6, which reach the other
	// ranges by another spelling.
	ClassUnspecified Class = "unspecified"
)

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// Protected lists every range that is closed unless its class is allowed.
var Protected = []Range{
	{mustPrefix("169.254.0.0/16"), ClassLinkLocal, "link-local / cloud metadata"},
	{mustPrefix("fe80::/10"), ClassLinkLocal, "IPv6 link-local"},
	{mustPrefix("127.0.0.0/8"), ClassLoopback, "loopback"},
	{mustPrefix("::1/128"), ClassLoopback, "IPv6 loopback"},
	{mustPrefix("10.0.0.0/8"), ClassPrivate, "private (RFC 1918)"},
	{mustPrefix("172.16.0.0/12"), ClassPrivate, "private (RFC 1918)"},
	{mustPrefix("192.168.0.0/16"), ClassPrivate, "private (RFC 1918)"},
	{mustPrefix("100.64.0.0/10"), ClassPrivate, "carrier-grade NAT (RFC 6598)"},
	{mustPrefix("fc00::/7"), ClassPrivate, "IPv6 unique local"},
	{mustPrefix("0.0.0.0/8"), ClassUnspecified, "this network"},
	{mustPrefix("::ffff:0:0/96"), ClassUnspecified, "IPv4-mapped IPv6"},
}

// Ceiling is what a platform policy lets an allow-list open beyond the public internet. The zero value
// allows no protected range.
type Ceiling struct {
	// AllowedClasses are the protected range classes that may be opened.
	AllowedClasses []Class
}

// Allows reports whether the ceiling lets allow-lists open ranges of the class.
func (c Ceiling) Allows(class Class) bool { return slices.Contains(c.AllowedClasses, class) }

// Port is an allowed destination port.
type Port struct {
	Port     int32
	Protocol string
}

// Destination is one allow-list entry by CIDR.
type Destination struct {
	CIDR  string
	Ports []Port
}

// EgressRule returns the NetworkPolicy egress rule for one destination. A destination inside a protected
// range the ceiling does not allow is refused with an error on path (the entry's cidr field); a
// destination containing protected ranges gets each of them as an except block.
func EgressRule(path *field.Path, d Destination, ceiling Ceiling) (networkingv1.NetworkPolicyEgressRule, *field.Error) {
	block, err := IPBlock(d.CIDR, ceiling)
	if err != nil {
		return networkingv1.NetworkPolicyEgressRule{}, field.Invalid(path, d.CIDR, err.Error())
	}
	rule := networkingv1.NetworkPolicyEgressRule{To: []networkingv1.NetworkPolicyPeer{{IPBlock: block}}}
	for _, port := range d.Ports {
		rule.Ports = append(rule.Ports, NetworkPolicyPort(port))
	}
	return rule, nil
}

// NetworkPolicyPort converts a port into its NetworkPolicy form (TCP when no protocol is given).
func NetworkPolicyPort(p Port) networkingv1.NetworkPolicyPort {
	proto := corev1.ProtocolTCP
	if p.Protocol != "" {
		proto = corev1.Protocol(p.Protocol)
	}
	port := intstr.FromInt32(p.Port)
	return networkingv1.NetworkPolicyPort{Protocol: &proto, Port: &port}
}

// IPBlock validates one CIDR against the ceiling and returns the ipBlock that opens it, with every
// protected range inside it excluded.
func IPBlock(cidr string, ceiling Ceiling) (*networkingv1.IPBlock, error) {
	prefix, err := netip.ParsePrefix(strings.TrimSpace(cidr))
	if err != nil {
		return nil, fmt.Errorf("not a CIDR (expected e.g. 140.82.112.0/20 or 2606:50c0::/32): %v", err)
	}
	if prefix != prefix.Masked() {
		return nil, fmt.Errorf("host bits are set; use %s", prefix.Masked())
	}
	block := &networkingv1.IPBlock{CIDR: prefix.String()}
	for _, r := range Protected {
		if ceiling.Allows(r.Class) || r.Prefix.Addr().Is4() != prefix.Addr().Is4() {
			continue
		}
		switch {
		case r.Prefix.Bits() <= prefix.Bits() && r.Prefix.Contains(prefix.Addr()):
			return nil, fmt.Errorf("%s lies inside the %s range %s, which MCP servers may not reach unless an MCPServerPolicy allows the %q class", prefix, r.Name, r.Prefix, r.Class)
		case prefix.Bits() < r.Prefix.Bits() && prefix.Contains(r.Prefix.Addr()):
			block.Except = append(block.Except, r.Prefix.String())
		}
	}
	return block, nil
}
