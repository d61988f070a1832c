package webhooks

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
	"github.com/mcp-warden/mcp-warden/fence"
)

// NetworkPolicyPath is where the NetworkPolicy fence webhook is served.
const NetworkPolicyPath = "/validate-networkpolicies"

// +kubebuilder:webhook:path=/validate-networkpolicies,mutating=false,failurePolicy=fail,sideEffects=None,groups=networking.k8s.io,resources=networkpolicies,verbs=create;update,versions=v1,name=vnetworkpolicies.mcp.warden.dev,admissionReviewVersions=v1,timeoutSeconds=10

// NetworkPolicyValidator keeps a namespace's own users from widening the fence around MCP server pods:
// it refuses a NetworkPolicy that allows any traffic (has an ingress or egress rule) and can select MCP
// server pods, unless the request comes from the operator or an exempt identity. A policy that selects
// server pods without rules (a pure deny policy) only narrows and is admitted. In a namespace without
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
		servers := &mcpv1alpha1.MCPServerList{}
		if err := v.Reader.List(ctx, servers, client.InNamespace(np.Namespace)); err != nil {
			return admission.Errored(http.StatusInternalServerError, fmt.Errorf("list MCPServers in %s: %w", np.Namespace, err))
		}
		if len(servers.Items) == 0 {
			return admission.Allowed("no MCP servers in the namespace")
		}
	}
	return admission.Denied(fence.Message(np))
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
