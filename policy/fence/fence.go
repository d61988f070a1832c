// Package fence decides whether a NetworkPolicy the operator did not write widens the fence around MCP
// server pods. NetworkPolicies add up: a pod selected by several policies may send and receive what any
// of them allows, so a tenant's own policy selecting a server pod with a rule such as `egress: [{}]`
// reopens everything the operator's policy closed. A policy that selects server pods but allows nothing
// (a pure deny policy) only narrows, and is fine.
//
// The admission webhook refuses widening policies before they exist; the controller reports any that
// exist anyway (created while the webhook was down, or before the namespace had servers).
package fence

import (
	"fmt"
	"strings"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
)

// Labels every MCP server pod carries. The operator's pod template sets them and reverts any change;
// the Deployment controller adds pod-template-hash.
const (
	LabelName      = "app.kubernetes.io/name"
	LabelInstance  = "app.kubernetes.io/instance"
	LabelManagedBy = "app.kubernetes.io/managed-by"
	LabelServer    = "mcp.warden.dev/server"
	// ServerAppName is the value of LabelName on server pods.
	ServerAppName = "mcp-server"
	// ManagerName is the value of LabelManagedBy on server pods.
	ManagerName = "mcp-warden"
)

// labelHash is the label the Deployment controller adds to every pod of a ReplicaSet.
const labelHash = "pod-template-hash"

// derivedKey prefixes the keys that stand for labels Cilium gives every endpoint (see kubernetesKeys):
// a server pod has them with some value.
const derivedKey = "fence.mcp.warden.dev/cilium-derived-"

// PodLabels are the labels of the pods of the MCPServer named name (without pod-template-hash).
func PodLabels(name string) map[string]string {
	return map[string]string{LabelName: ServerAppName, LabelInstance: name, LabelServer: name, LabelManagedBy: ManagerName}
}

// Widens reports whether the policy allows any traffic: it has at least one ingress or egress rule.
func Widens(np *networkingv1.NetworkPolicy) bool {
	return len(np.Spec.Ingress) > 0 || len(np.Spec.Egress) > 0
}

// Allows names what the policy's rules open, for messages: "ingress", "egress" or both.
func Allows(np *networkingv1.NetworkPolicy) string {
	var parts []string
	if len(np.Spec.Ingress) > 0 {
		parts = append(parts, "ingress")
	}
	if len(np.Spec.Egress) > 0 {
		parts = append(parts, "egress")
	}
	return strings.Join(parts, " and ")
}

// CanSelectServers reports whether the pod selector can select the pods of some MCP server, present
// or future, whatever its name. An invalid selector counts as one that can.
func CanSelectServers(sel *metav1.LabelSelector) bool {
	return selects(sel, "")
}

// SelectsServer reports whether the pod selector selects the pods of the MCPServer named name.
func SelectsServer(sel *metav1.LabelSelector, name string) bool {
	return selects(sel, name)
}

// selects evaluates every requirement against the labels server pods carry; name "" stands for any
// server name. pod-template-hash may have any value.
func selects(ls *metav1.LabelSelector, name string) bool {
	sel, err := metav1.LabelSelectorAsSelector(ls)
	if err != nil {
		return true
	}
	reqs, _ := sel.Requirements()
	for _, r := range reqs {
		if !satisfiable(r, name) {
			return false
		}
	}
	return true
}

func satisfiable(r labels.Requirement, name string) bool {
	key := r.Key()
	switch key {
	case LabelName:
		return r.Matches(labels.Set{key: ServerAppName})
	case LabelManagedBy:
		return r.Matches(labels.Set{key: ManagerName})
	case LabelInstance, LabelServer:
		if name != "" {
			return r.Matches(labels.Set{key: name})
		}
		return anyValue(r)
	case labelHash:
		return anyValue(r)
	}
	if strings.HasPrefix(key, derivedKey) {
		return anyValue(r)
	}
	// Server pods carry no other label.
	return r.Matches(labels.Set{})
}

// anyValue reports whether some value of the label satisfies the requirement.
func anyValue(r labels.Requirement) bool {
	return r.Operator() != selection.DoesNotExist
}

// Message is the denial or condition text for a policy that widens the fence.
func Message(np *networkingv1.NetworkPolicy) string {
	return fmt.Sprintf("NetworkPolicy %s/%s was not written by the operator, selects MCP server pods (spec.podSelector) and allows %s; NetworkPolicies add up, so it would reopen what the operator's policy closes (cloud metadata, private ranges, the server port behind the gateway). Keep server pods out of it (spec.podSelector.matchExpressions: [{key: %s, operator: DoesNotExist}]), leave it without rules (a pure deny policy), or let spec.egress and spec.clients of the MCPServer open what is needed",
		np.Namespace, np.Name, Allows(np), LabelServer)
}
