package desired

import (
	"encoding/json"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/mcp-warden/mcp-warden/policy/netpol"
)

var (
	dns    = Peer{Namespace: "kube-system", PodLabels: map[string]string{"k8s-app": "kube-dns"}}
	labels = map[string]string{"mcp.warden.dev/server": "gh"}
)

func TestDesiredIsAValidCiliumRule(t *testing.T) {
	cnp := ciliumPolicy(metav1.ObjectMeta{Name: "gh", Namespace: "tools"}, labels, []fqdnEntry{
		{FQDN: "api.github.com", Ports: []netpol.Port{{Port: 443}}},
		{FQDN: "*.githubusercontent.com", Ports: []netpol.Port{{Port: 443}, {Port: 8443, Protocol: "UDP"}}},
	}, dns, netpol.Ceiling{})
	// Cilium's own validation of a rule, as its agent runs it.
	if err := cnp.Spec.Sanitize(); err != nil {
		t.Fatalf("cilium rejects the rule: %v", err)
	}
	body, err := json.Marshal(cnp)
	if err != nil {
		t.Fatal(err)
	}
	got := string(body)
	for _, want := range []string{
		`"toFQDNs":[{"matchName":"api.github.com"}]`,
		`"toFQDNs":[{"matchPattern":"*.githubusercontent.com"}]`,
		`"dns":[{"matchPattern":"*"}]`,
		`"k8s:io.kubernetes.pod.namespace":"kube-system"`,
		`{"port":"8443","protocol":"UDP"}`,
		`"egressDeny":[{"toCIDRSet":[{"cidr":"169.254.0.0/16"}`,
		`{"cidr":"10.0.0.0/8"}`,
		`{"cidr":"64:ff9b::a9fe:0/112"}`,
		`{"cidr":"2002:a9fe::/32"}`,
		`{"cidr":"168.63.129.16/32"}`,
		`{"cidr":"240.0.0.0/4"}`,
		`{"cidr":"::fffe:0:0/95"}`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("policy lacks %s\n%s", want, got)
		}
	}
}

func TestCeilingLiftsOnlyItsClass(t *testing.T) {
	cnp := ciliumPolicy(metav1.ObjectMeta{Name: "gh", Namespace: "tools"}, labels, []fqdnEntry{{FQDN: "db.internal.example", Ports: []netpol.Port{{Port: 5432}}}},
		dns, netpol.Ceiling{AllowedClasses: []netpol.Class{netpol.ClassPrivate}})
	body, _ := json.Marshal(cnp.Spec.EgressDeny)
	if strings.Contains(string(body), "10.0.0.0/8") || !strings.Contains(string(body), "169.254.0.0/16") {
		t.Fatalf("deny = %s: want private ranges lifted and link-local kept", body)
	}
}
