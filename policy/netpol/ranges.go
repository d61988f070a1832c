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
	// ClassReserved covers multicast, broadcast, the reserved 240.0.0.0/4, IETF protocol assignments
	// (192.0.0.0/24) and benchmarking networks (198.18.0.0/15): nothing an MCP server needs, and some of
	// them reach special services on the node or the network.
	ClassReserved Class = "reserved"
)

// Classes lists every class.
var Classes = []Class{ClassPrivate, ClassLoopback, ClassLinkLocal, ClassUnspecified, ClassReserved}

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// protectedIPv4 are the IPv4 ranges; each is also protected in every IPv6 spelling that embeds an IPv4
// address (see translators).
var protectedIPv4 = []Range{
	{mustPrefix("169.254.0.0/16"), ClassLinkLocal, "link-local / cloud metadata"},
	{mustPrefix("168.63.129.16/32"), ClassLinkLocal, "Azure platform endpoint (wireserver)"},
	{mustPrefix("127.0.0.0/8"), ClassLoopback, "loopback"},
	{mustPrefix("10.0.0.0/8"), ClassPrivate, "private (RFC 1918)"},
	{mustPrefix("172.16.0.0/12"), ClassPrivate, "private (RFC 1918)"},
	{mustPrefix("192.168.0.0/16"), ClassPrivate, "private (RFC 1918)"},
	{mustPrefix("100.64.0.0/10"), ClassPrivate, "carrier-grade NAT (RFC 6598)"},
	{mustPrefix("0.0.0.0/8"), ClassUnspecified, "this network"},
	{mustPrefix("192.0.0.0/24"), ClassReserved, "IETF protocol assignments (RFC 6890)"},
	{mustPrefix("198.18.0.0/15"), ClassReserved, "benchmarking (RFC 2544)"},
	{mustPrefix("224.0.0.0/4"), ClassReserved, "multicast"},
	{mustPrefix("240.0.0.0/4"), ClassReserved, "reserved (RFC 1112) and broadcast"},
}

// protectedIPv6 are the native IPv6 ranges.
var protectedIPv6 = []Range{
	{mustPrefix("fe80::/10"), ClassLinkLocal, "IPv6 link-local"},
	{mustPrefix("::1/128"), ClassLoopback, "IPv6 loopback"},
	{mustPrefix("fc00::/7"), ClassPrivate, "IPv6 unique local"},
	{mustPrefix("64:ff9b:1::/48"), ClassPrivate, "local-use NAT64 (RFC 8215)"},
	{mustPrefix("::ffff:0:0/96"), ClassUnspecified, "IPv4-mapped IPv6"},
	{mustPrefix("ff00::/8"), ClassReserved, "IPv6 multicast"},
}

// translator is an IPv6 prefix that carries an IPv4 address at a fixed bit offset: traffic to it
// reaches that IPv4 address through a translator or a tunnel.
type translator struct {
	prefix netip.Prefix
	offset int // bit position of the embedded IPv4 address, a multiple of 8
	name   string
}

var translators = []translator{
	{mustPrefix("64:ff9b::/96"), 96, "NAT64 (RFC 6052)"},
	{mustPrefix("2002::/16"), 16, "6to4 (RFC 3056)"},
	{mustPrefix("::/96"), 96, "IPv4-compatible IPv6"},
}

// embed returns the IPv6 prefix that spells the IPv4 prefix v4 inside t.
func (t translator) embed(v4 netip.Prefix) netip.Prefix {
	b := t.prefix.Addr().As16()
	a := v4.Addr().As4()
	copy(b[t.offset/8:], a[:])
	return netip.PrefixFrom(netip.AddrFrom16(b), t.offset+v4.Bits())
}

// Protected lists every range that is closed unless its class is allowed: the IPv4 ranges, the native
// IPv6 ranges, and each IPv4 range as spelled through NAT64, 6to4 and IPv4-compatible addresses, with
// the embedded IPv4 address decoded: 64:ff9b::a9fe:a9fe (the metadata address through NAT64) is as
// closed as 169.254.169.254, while NAT64 of a public address stays reachable.
var Protected = protected()

func protected() []Range {
	out := append(slices.Clone(protectedIPv4), protectedIPv6...)
	for _, t := range translators {
		for _, r := range protectedIPv4 {
			out = append(out, Range{Prefix: t.embed(r.Prefix), Class: r.Class, Name: fmt.Sprintf("%s spelling of the %s range %s", t.name, r.Name, r.Prefix)})
		}
	}
	return out
}

// ExceptString is how a protected prefix is written in a NetworkPolicy except list or a Cilium CIDR
// rule. The API server parses ::ffff:0:0/96 as an IPv4 network and refuses it inside an IPv6 cidr, so
// the IPv4-mapped range is excluded through its parent ::fffe:0:0/95 (the other half, ::fffe:0:0/96,
// is unassigned).
func ExceptString(p netip.Prefix) string {
	if p == ipv4Mapped {
		return "::fffe:0:0/95"
	}
	return p.String()
}

var ipv4Mapped = mustPrefix("::ffff:0:0/96")

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
		return nil, fmt.Errorf("not a CIDR (expected e.g. 140.82.112.0/20 or 2606:50c0::/32): %w", err)
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
			block.Except = append(block.Except, ExceptString(r.Prefix))
		}
	}
	return block, nil
}
