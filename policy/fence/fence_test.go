package fence

import (
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestCanSelectServers(t *testing.T) {
	expr := func(key string, op metav1.LabelSelectorOperator, values ...string) *metav1.LabelSelector {
		return &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: key, Operator: op, Values: values}}}
	}
	cases := []struct {
		name string
		sel  *metav1.LabelSelector
		want bool
	}{
		{"empty selects every pod", &metav1.LabelSelector{}, true},
		{"one server by label", &metav1.LabelSelector{MatchLabels: map[string]string{LabelServer: "files"}}, true},
		{"app name", &metav1.LabelSelector{MatchLabels: map[string]string{LabelName: ServerAppName}}, true},
		{"managed-by", &metav1.LabelSelector{MatchLabels: map[string]string{LabelManagedBy: ManagerName}}, true},
		{"pod-template-hash exists", expr("pod-template-hash", metav1.LabelSelectorOpExists), true},
		{"server label exists", expr(LabelServer, metav1.LabelSelectorOpExists), true},
		{"NotIn some other app", expr("app", metav1.LabelSelectorOpNotIn, "db"), true},
		{"other app name", &metav1.LabelSelector{MatchLabels: map[string]string{LabelName: "web"}}, false},
		{"a label servers lack", &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}, false},
		{"servers excluded", expr(LabelServer, metav1.LabelSelectorOpDoesNotExist), false},
		{"app name NotIn mcp-server", expr(LabelName, metav1.LabelSelectorOpNotIn, ServerAppName), false},
		{"invalid counts as selecting", expr("app", metav1.LabelSelectorOpIn), true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := CanSelectServers(tc.sel); got != tc.want {
				t.Fatalf("CanSelectServers(%+v) = %v, want %v", tc.sel, got, tc.want)
			}
		})
	}
}

func TestSelectsServer(t *testing.T) {
	files := &metav1.LabelSelector{MatchLabels: map[string]string{LabelServer: "files"}}
	if !SelectsServer(files, "files") || SelectsServer(files, "mail") {
		t.Fatal("a selector of server files must select files and not mail")
	}
	if !SelectsServer(&metav1.LabelSelector{}, "mail") {
		t.Fatal("the empty selector selects every server")
	}
}

func TestWidens(t *testing.T) {
	deny := &networkingv1.NetworkPolicy{Spec: networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}}}
	if Widens(deny) {
		t.Fatal("a pure deny policy does not widen")
	}
	open := &networkingv1.NetworkPolicy{Spec: networkingv1.NetworkPolicySpec{Egress: []networkingv1.NetworkPolicyEgressRule{{}}}}
	if !Widens(open) || Allows(open) != "egress" {
		t.Fatalf("egress [{}] widens: %v %q", Widens(open), Allows(open))
	}
}
