package netpol

import (
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
		{cidr: "2606:50c0::/32"},
		{cidr: "0.0.0.0/0", wantExcept: []string{"169.254.0.0/16", "127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "0.0.0.0/8"}},
		{cidr: "::/0", wantExcept: []string{"fe80::/10", "::1/128", "fc00::/7", "::ffff:0.0.0.0/96"}},
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
		{cidr: "0.0.0.0/0", ceiling: Ceiling{AllowedClasses: []Class{ClassPrivate}}, wantExcept: []string{"169.254.0.0/16", "127.0.0.0/8", "0.0.0.0/8"}},
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
