package controllers

import (
	"context"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"
	policyv1beta1 "sigs.k8s.io/network-policy-api/apis/v1beta1"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
	"github.com/mcp-warden/mcp-warden/policy/netpol"
)

// ClusterFenceName is the name of the one ClusterNetworkPolicy the operator writes.
const ClusterFenceName = "mcp-warden-protected-ranges"

// ClusterFencePriority is its priority in the Admin tier: 0, checked before every other policy.
const ClusterFencePriority = 0

// maxNetworksPerPeer is the network-policy-api's bound on networks in one peer (and on peers in a rule).
const maxNetworksPerPeer = 25

// ClusterFenceReconciler keeps one cluster-scoped ClusterNetworkPolicy (policy.networking.k8s.io/v1beta1,
// Admin tier, priority 0) that denies egress from every MCP server pod (every pod with the
// mcp.warden.dev/server label, in any namespace) to every protected range, in every IPv6 spelling that
// embeds an IPv4 address. Admin tier rules are decided before any namespace NetworkPolicy is looked at,
// so no policy a tenant writes can reopen them. DNS to the cluster DNS pods is passed on to the
// namespace policies first (the DNS pods live in a private range). A class of ranges that some
// MCPServerPolicy lets allow-lists open is left to the namespace policies the operator writes.
//
// The operator registers it only where the API server serves the kind (see operator.New); elsewhere the
// fence relies on the NetworkPolicy webhook.
type ClusterFenceReconciler struct {
	Client client.Client
	// DNS is where the cluster DNS pods run.
	DNS  Peer
	kick chan event.GenericEvent
}

// The manager reads and changes only its own ClusterNetworkPolicy (resourceNames; the cache lists and
// watches it by name). A server-side apply that creates an object is authorized as create, which RBAC
// cannot narrow by name: create is granted on the kind, nothing else.
// +kubebuilder:rbac:groups=policy.networking.k8s.io,resources=clusternetworkpolicies,verbs=get;list;watch;patch;update,resourceNames=mcp-warden-protected-ranges
// +kubebuilder:rbac:groups=policy.networking.k8s.io,resources=clusternetworkpolicies,verbs=create

// Reconcile applies the cluster fence as the MCPServerPolicies make it.
func (r *ClusterFenceReconciler) Reconcile(ctx context.Context, _ reconcile.Request) (reconcile.Result, error) {
	policies := &mcpv1alpha1.MCPServerPolicyList{}
	if err := r.Client.List(ctx, policies); err != nil {
		return reconcile.Result{}, fmt.Errorf("list MCPServerPolicies: %w", err)
	}
	desired := DesiredClusterFence(r.DNS, OpenedClasses(policies.Items))
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(desired)
	if err != nil {
		return reconcile.Result{}, fmt.Errorf("convert ClusterNetworkPolicy %s: %w", ClusterFenceName, err)
	}
	delete(u, "status")
	if err := r.Client.Apply(ctx, client.ApplyConfigurationFromUnstructured(&unstructured.Unstructured{Object: u}), client.FieldOwner(FieldOwner), client.ForceOwnership); err != nil {
		return reconcile.Result{}, fmt.Errorf("apply ClusterNetworkPolicy %s: %w", ClusterFenceName, err)
	}
	return reconcile.Result{}, nil
}

// OpenedClasses lists the protected range classes that at least one MCPServerPolicy lets allow-lists
// open (in netpol.Classes order).
func OpenedClasses(policies []mcpv1alpha1.MCPServerPolicy) []netpol.Class {
	var out []netpol.Class
	for _, class := range netpol.Classes {
		if slices.ContainsFunc(policies, func(p mcpv1alpha1.MCPServerPolicy) bool {
			return slices.Contains(p.Spec.Egress.AllowedAddressClasses, mcpv1alpha1.AddressClass(class))
		}) {
			out = append(out, class)
		}
	}
	return out
}

// DesiredClusterFence builds the ClusterNetworkPolicy: a Pass rule for DNS to the cluster DNS pods,
// then one Deny rule per protected class not in opened, listing each of the class's ranges.
func DesiredClusterFence(dns Peer, opened []netpol.Class) *policyv1beta1.ClusterNetworkPolicy {
	dnsPort := &policyv1beta1.Port{Number: 53}
	egress := []policyv1beta1.ClusterNetworkPolicyEgressRule{{
		Name:   "dns-to-namespace-policies",
		Action: policyv1beta1.ClusterNetworkPolicyRuleActionPass,
		To: []policyv1beta1.ClusterNetworkPolicyEgressPeer{{Pods: &policyv1beta1.NamespacedPod{
			NamespaceSelector: metav1.LabelSelector{MatchLabels: map[string]string{corev1.LabelMetadataName: dns.Namespace}},
			PodSelector:       metav1.LabelSelector{MatchLabels: dns.PodLabels},
		}}},
		Protocols: []policyv1beta1.ClusterNetworkPolicyProtocol{
			{UDP: &policyv1beta1.ClusterNetworkPolicyProtocolUDP{DestinationPort: dnsPort}},
			{TCP: &policyv1beta1.ClusterNetworkPolicyProtocolTCP{DestinationPort: dnsPort}},
		},
	}}
	for _, class := range netpol.Classes {
		if slices.Contains(opened, class) {
			continue
		}
		var networks []policyv1beta1.CIDR
		for _, r := range netpol.Protected {
			if r.Class == class {
				networks = append(networks, policyv1beta1.CIDR(netpol.ExceptString(r.Prefix)))
			}
		}
		rule := policyv1beta1.ClusterNetworkPolicyEgressRule{Name: "deny-" + string(class), Action: policyv1beta1.ClusterNetworkPolicyRuleActionDeny}
		for chunk := range slices.Chunk(networks, maxNetworksPerPeer) {
			rule.To = append(rule.To, policyv1beta1.ClusterNetworkPolicyEgressPeer{Networks: chunk})
		}
		egress = append(egress, rule)
	}
	return &policyv1beta1.ClusterNetworkPolicy{
		TypeMeta: metav1.TypeMeta{APIVersion: policyv1beta1.GroupVersion.String(), Kind: "ClusterNetworkPolicy"},
		ObjectMeta: metav1.ObjectMeta{Name: ClusterFenceName, Labels: map[string]string{
			LabelManagedBy: managerName, LabelName: "mcp-warden",
		}},
		Spec: policyv1beta1.ClusterNetworkPolicySpec{
			Tier:     policyv1beta1.AdminTier,
			Priority: ClusterFencePriority,
			Subject: policyv1beta1.ClusterNetworkPolicySubject{Pods: &policyv1beta1.NamespacedPod{
				PodSelector: metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: LabelServer, Operator: metav1.LabelSelectorOpExists}}},
			}},
			Egress: egress,
		},
	}
}

// SetupWithManager registers the controller: it runs once at start, when an MCPServerPolicy's spec
// changes, and when someone changes or deletes the ClusterNetworkPolicy.
func (r *ClusterFenceReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.DNS.Namespace == "" {
		r.DNS = DefaultDNSPeer
	}
	r.kick = make(chan event.GenericEvent, 1)
	r.kick <- event.GenericEvent{Object: &policyv1beta1.ClusterNetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: ClusterFenceName}}}
	one := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
		return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: ClusterFenceName}}}
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("clusterfence").
		WatchesRawSource(source.Channel(r.kick, one)).
		Watches(&mcpv1alpha1.MCPServerPolicy{}, one, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&policyv1beta1.ClusterNetworkPolicy{}, one, builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool {
			return o.GetName() == ClusterFenceName
		}))).
		Complete(r)
}
