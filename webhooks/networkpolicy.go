package webhooks

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
	"github.com/mcp-warden/mcp-warden/policy/fence"
)

// NetworkPolicyPath is where the NetworkPolicy fence webhook is served.
const NetworkPolicyPath = "/validate-networkpolicies"

// The one webhook covers NetworkPolicies and Cilium's CiliumNetworkPolicies (a rule for a kind the API
// server does not serve is inert).
// +kubebuilder:webhook:path=/validate-networkpolicies,mutating=false,failurePolicy=fail,sideEffects=None,groups=networking.k8s.io;cilium.io,resources=networkpolicies;ciliumnetworkpolicies,verbs=create;update,versions=v1;v2,name=vnetworkpolicies.mcp.warden.dev,admissionReviewVersions=v1,timeoutSeconds=10

// NetworkPolicyValidator keeps a namespace's own users from widening the fence around MCP server pods:
// it refuses a NetworkPolicy that allows any traffic (has an ingress or egress rule) and can select MCP
// server pods, unless the request comes from the operator or an exempt identity. A policy that selects
// server pods without rules (a pure deny policy) only narrows and is admitted. The same holds for a
// cilium.io/v2 CiliumNetworkPolicy: a rule (spec or specs[i]) whose endpointSelector can select server
// pods and that has ingress or egress allow rules is refused; egressDeny and ingressDeny only narrow. In a namespace without
// MCPServers, only selectors that name the servers' labels are refused; a broad policy created there
// before a server is shows on that server as EgressEnforced=False.
type NetworkPolicyValidator struct {
	// Reader lists MCPServers (the manager's cache).
	Reader client.Reader
	// ExemptUsers may write any NetworkPolicy: the operator's own identity, and e.g. a platform GitOps
	// controller.
	ExemptUsers []string
	// ExemptGroups may write any NetworkPolicy (e.g. system:masters).
	ExemptGroups []string
}

var _ admission.Handler = &NetworkPolicyValidator{}

// Handle admits or refuses one NetworkPolicy.
func (v *NetworkPolicyValidator) Handle(ctx context.Context, req admission.Request) admission.Response {
	if slices.Contains(v.ExemptUsers, req.UserInfo.Username) || slices.ContainsFunc(req.UserInfo.Groups, func(g string) bool { return slices.Contains(v.ExemptGroups, g) }) {
		return admission.Allowed("exempt identity")
	}
	if req.Kind.Group == "cilium.io" {
		return v.handleCilium(ctx, req)
	}
	np := &networkingv1.NetworkPolicy{}
	if err := json.Unmarshal(req.Object.Raw, np); err != nil {
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("decode NetworkPolicy: %w", err))
	}
	if np.Namespace == "" {
		np.Namespace = req.Namespace
	}
	if !fence.Widens(np) {
		return admission.Allowed("allows no traffic")
	}
	if !fence.CanSelectServers(&np.Spec.PodSelector) {
		return admission.Allowed("cannot select MCP server pods")
	}
	if !namesServerLabels(&np.Spec.PodSelector) {
		if resp, none := v.noServers(ctx, np.Namespace); none {
			return resp
		}
	}
	return admission.Denied(fence.Message(np))
}

// noServers answers for a namespace without MCPServers (or when they cannot be listed).
func (v *NetworkPolicyValidator) noServers(ctx context.Context, namespace string) (admission.Response, bool) {
	servers := &mcpv1alpha1.MCPServerList{}
	if err := v.Reader.List(ctx, servers, client.InNamespace(namespace)); err != nil {
		return admission.Errored(http.StatusInternalServerError, fmt.Errorf("list MCPServers in %s: %w", namespace, err)), true
	}
	if len(servers.Items) == 0 {
		return admission.Allowed("no MCP servers in the namespace"), true
	}
	return admission.Response{}, false
}

// handleCilium admits or refuses one CiliumNetworkPolicy.
func (v *NetworkPolicyValidator) handleCilium(ctx context.Context, req admission.Request) admission.Response {
	u := &unstructured.Unstructured{}
	if err := json.Unmarshal(req.Object.Raw, &u.Object); err != nil {
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("decode CiliumNetworkPolicy: %w", err))
	}
	namespace := u.GetNamespace()
	if namespace == "" {
		namespace = req.Namespace
	}
	widening := fence.CiliumWidening(fence.CiliumRules(u.Object), "")
	if len(widening) == 0 {
		return admission.Allowed("allows no traffic to or from MCP server pods")
	}
	if !slices.ContainsFunc(widening, func(r fence.CiliumRule) bool { return namesServerLabels(r.EndpointSelector) }) {
		if resp, none := v.noServers(ctx, namespace); none {
			return resp
		}
	}
	return admission.Denied(fence.CiliumMessage(namespace, u.GetName(), widening))
}

// namesServerLabels reports whether the selector asks for a label that marks MCP server pods:
// mcp.warden.dev/server, or the servers' app name or manager. (CanSelectServers already holds, so
// such a requirement admits server pods.)
func namesServerLabels(sel *metav1.LabelSelector) bool {
	marks := func(key string) bool {
		return key == fence.LabelServer || key == fence.LabelName || key == fence.LabelManagedBy
	}
	for k := range sel.MatchLabels {
		if marks(k) {
			return true
		}
	}
	for _, e := range sel.MatchExpressions {
		if marks(e.Key) && (e.Operator == metav1.LabelSelectorOpIn || e.Operator == metav1.LabelSelectorOpExists) {
			return true
		}
	}
	return false
}
