package netpol

import (
	"net"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation/field"
)

func TestIPBlock(t *testing.T) {
	cases := []struct {
		cidr       string
		ceiling    Ceiling
		wantErr    string
		wantExcept []string
	}{
		{cidr: "140.82.112.0/20"},
		{cidr: "0.0.0.0/0", wantExcept: []string{"169.254.0.0/16", "168.63.129.16/32", "127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "0.0.0.0/8",
			"192.0.0.0/24", "198.18.0.0/15", "224.0.0.0/4", "240.0.0.0/4"}},
		{cidr: "::/0", wantExcept: append([]string{"fe80::/10", "::1/128", "fc00::/7", "64:ff9b:1::/48", "::fffe:0:0/95", "ff00::/8",
			"64:ff9b::a9fe:0/112", "64:ff9b::a83f:8110/128", "64:ff9b::7f00:0/104", "64:ff9b::a00:0/104", "64:ff9b::ac10:0/108", "64:ff9b::c0a8:0/112", "64:ff9b::6440:0/106", "64:ff9b::/104",
			"64:ff9b::c000:0/120", "64:ff9b::c612:0/111", "64:ff9b::e000:0/100", "64:ff9b::f000:0/100",
			"2002:a9fe::/32", "2002:a83f:8110::/48", "2002:7f00::/24", "2002:a00::/24", "2002:ac10::/28", "2002:c0a8::/32", "2002:6440::/26", "2002::/24",
			"2002:c000::/40", "2002:c612::/31", "2002:e000::/20", "2002:f000::/20"},
			"::a9fe:0/112", "::a83f:8110/128", "::7f00:0/104", "::a00:0/104", "::ac10:0/108", "::c0a8:0/112", "::6440:0/106", "::/104",
			"::c000:0/120", "::c612:0/111", "::e000:0/100", "::f000:0/100")},
		{cidr: "2606:50c0::/32"},
		{cidr: "64:ff9b::8c52:7000/116"}, // NAT64 of 140.82.112.0/20, a public network
		{cidr: "64:ff9b::a9fe:a9fe/128", wantErr: "NAT64 (RFC 6052) spelling of the link-local / cloud metadata range 169.254.0.0/16"},
		{cidr: "64:ff9b::a00:0/104", wantErr: "private (RFC 1918) range 10.0.0.0/8"},
		{cidr: "64:ff9b::/96", wantExcept: []string{"64:ff9b::a9fe:0/112", "64:ff9b::a83f:8110/128", "64:ff9b::7f00:0/104", "64:ff9b::a00:0/104", "64:ff9b::ac10:0/108",
			"64:ff9b::c0a8:0/112", "64:ff9b::6440:0/106", "64:ff9b::/104", "64:ff9b::c000:0/120", "64:ff9b::c612:0/111", "64:ff9b::e000:0/100", "64:ff9b::f000:0/100"}},
		{cidr: "64:ff9b:1::/64", wantErr: "local-use NAT64"},
		{cidr: "2002:a9fe:a9fe::/48", wantErr: "6to4 (RFC 3056) spelling of the link-local"},
		{cidr: "2002:808:808::/48"}, // 6to4 of 8.8.8.8
		{cidr: "::a9fe:a9fe/128", wantErr: "IPv4-compatible IPv6 spelling of the link-local"},
		{cidr: "168.63.129.16/32", wantErr: "Azure platform endpoint"},
		{cidr: "192.0.0.0/29", wantErr: "IETF protocol assignments"},
		{cidr: "198.19.0.0/16", wantErr: "benchmarking"},
		{cidr: "239.1.2.3/32", wantErr: "multicast"},
		{cidr: "255.255.255.255/32", wantErr: "broadcast"},
		{cidr: "241.0.0.0/8", wantErr: "reserved"},
		{cidr: "ff02::1/128", wantErr: "IPv6 multicast"},
		{cidr: "168.63.0.0/16", wantExcept: []string{"168.63.129.16/32"}},
		{cidr: "224.0.0.0/4", ceiling: Ceiling{AllowedClasses: []Class{ClassReserved}}},
		{cidr: "8.0.0.0/5", wantExcept: []string{"10.0.0.0/8"}},
		{cidr: "169.254.169.254/32", wantErr: "link-local / cloud metadata"},
		{cidr: "169.254.0.0/16", wantErr: "link-local"},
		{cidr: "10.0.0.5/32", wantErr: "private (RFC 1918)"},
		{cidr: "10.0.0.0/8", wantErr: "private"},
		{cidr: "172.20.0.0/16", wantErr: "private"},
		{cidr: "192.168.1.0/24", wantErr: "private"},
		{cidr: "100.64.1.0/24", wantErr: "carrier-grade NAT"},
		{cidr: "127.0.0.1/32", wantErr: "loopback"},
		{cidr: "fd00::/8", wantErr: "unique local"},
		{cidr: "fe80::1/128", wantErr: "link-local"},
		{cidr: "::ffff:10.0.0.1/128", wantErr: "IPv4-mapped"},
		{cidr: "10.0.0.0/8", ceiling: Ceiling{AllowedClasses: []Class{ClassPrivate}}},
		{cidr: "0.0.0.0/0", ceiling: Ceiling{AllowedClasses: []Class{ClassPrivate}}, wantExcept: []string{"169.254.0.0/16", "168.63.129.16/32", "127.0.0.0/8", "0.0.0.0/8",
			"192.0.0.0/24", "198.18.0.0/15", "224.0.0.0/4", "240.0.0.0/4"}},
		{cidr: "10.0.0.1/8", wantErr: "host bits are set; use 10.0.0.0/8"},
		{cidr: "not-a-cidr", wantErr: "not a CIDR"},
		{cidr: "1.2.3.4", wantErr: "not a CIDR"},
	}
	for _, tc := range cases {
		t.Run(tc.cidr, func(t *testing.T) {
			block, err := IPBlock(tc.cidr, tc.ceiling)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("IPBlock(%q) error = %v, want it to contain %q", tc.cidr, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("IPBlock(%q): %v", tc.cidr, err)
			}
			if !slices.Equal(block.Except, tc.wantExcept) {
				t.Fatalf("IPBlock(%q).Except = %v, want %v", tc.cidr, block.Except, tc.wantExcept)
			}
		})
	}
}

func TestEgressRuleNamesTheField(t *testing.T) {
	path := field.NewPath("spec", "egress").Index(2).Child("cidr")
	_, err := EgressRule(path, Destination{CIDR: "10.1.0.0/16", Ports: []Port{{Port: 443}}}, Ceiling{})
	if err == nil || err.Field != "spec.egress[2].cidr" || !strings.Contains(err.Error(), "MCPServerPolicy") {
		t.Fatalf("error = %v, want one on spec.egress[2].cidr telling how to allow it", err)
	}
	rule, err := EgressRule(path, Destination{CIDR: "1.1.1.1/32", Ports: []Port{{Port: 53, Protocol: "UDP"}, {Port: 443}}}, Ceiling{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rule.Ports) != 2 || *rule.Ports[0].Protocol != "UDP" || *rule.Ports[1].Protocol != "TCP" || rule.Ports[1].Port.IntVal != 443 {
		t.Fatalf("ports = %+v", rule.Ports)
	}
}

// TestExceptsAreAcceptedByTheAPIServer checks each except as the API server's validation does (Go's
// net parsing, where an IPv4-mapped prefix is IPv4): it must be a network of the cidr's family inside the
// cidr, or the whole NetworkPolicy is refused.
func TestExceptsAreAcceptedByTheAPIServer(t *testing.T) {
	for _, cidr := range []string{"0.0.0.0/0", "::/0", "64:ff9b::/96", "2002::/16", "::/64"} {
		block, err := IPBlock(cidr, Ceiling{})
		if err != nil {
			t.Fatal(err)
		}
		_, outer, _ := net.ParseCIDR(block.CIDR)
		for _, e := range block.Except {
			ip, inner, err := net.ParseCIDR(e)
			if err != nil {
				t.Fatalf("%s: except %s does not parse: %v", cidr, e, err)
			}
			if !outer.Contains(ip) || len(inner.IP) != len(outer.IP) {
				t.Errorf("%s: the API server refuses except %s (not inside the cidr's family)", cidr, e)
			}
		}
	}
}
