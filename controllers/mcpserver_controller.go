// Package controllers holds the MCPServer reconciler: it turns each MCPServer into a sandboxed
// Deployment, a ServiceAccount without API credentials, a Service and default-deny NetworkPolicies,
// applied with server-side apply, and reports kstatus conditions.
package controllers

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	ciliumv2 "github.com/cilium/cilium/pkg/k8s/apis/cilium.io/v2"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
	"github.com/mcp-warden/mcp-warden/controllers/desired"
	"github.com/mcp-warden/mcp-warden/policy/fence"
	"github.com/mcp-warden/mcp-warden/policy/gatewayconfig"
	"github.com/mcp-warden/mcp-warden/policy/guardrails"
	"github.com/mcp-warden/mcp-warden/policy/netpol"
	"github.com/mcp-warden/mcp-warden/policy/sandbox"
	"github.com/mcp-warden/mcp-warden/supplychain/imageverify"
	"github.com/mcp-warden/mcp-warden/trust/issuerkeys"
	"github.com/mcp-warden/mcp-warden/trust/servingcert"
)

// Condition reasons.
const (
	ReasonAvailable          = "Available"
	ReasonProgressing        = "Progressing"
	ReasonInvalidSpec        = "InvalidSpec"
	ReasonPolicyViolation    = "PolicyViolation"
	ReasonVerificationFailed = "VerificationFailed"
	ReasonChildConflict      = "ChildConflict"
	ReasonApplyFailed        = "ApplyFailed"
	ReasonEnforced           = "Enforced"
	ReasonCilium             = "EnforcedByCilium"
	ReasonFQDNNoCilium       = "FQDNRequiresCilium"
	ReasonDriftReverted      = "DriftReverted"
	ReasonRecreated          = "Recreated"
	// ReasonIssuerKeysUnavailable is the IssuerKeysDelivered and Ready reason while the issuer's keys
	// cannot be fetched.
	ReasonIssuerKeysUnavailable = "IssuerKeysUnavailable"
	// ReasonIssuerKeysFetched is the IssuerKeysDelivered reason when the keys are delivered.
	ReasonIssuerKeysFetched = "KeysFetched"
	// ReasonServerNotSpeakingMCP is the Ready reason (and event reason) when the gateway's MCP initialize
	// and tools/list with the server have failed for longer than MCPGrace; the message quotes the
	// gateway's error. The operator keeps reading: the server may yet answer.
	ReasonServerNotSpeakingMCP = "ServerNotSpeakingMCP"
	// ReasonWaitingForMCP is the Ready reason while the Deployment is available but no gateway has yet
	// completed its MCP handshake with the server (it is starting, or no status port answered).
	ReasonWaitingForMCP = "WaitingForMCP"
	// ReasonFenceWidened is the EgressEnforced reason (and event reason) when a NetworkPolicy the
	// operator did not write selects the server's pods and allows traffic.
	ReasonFenceWidened = "FenceWidened"
	// ReasonSingleReplica, ReasonRoutedToPrincipalHome and ReasonNotRelayedWithoutTLS are SessionsKept
	// reasons.
	ReasonSingleReplica = "SingleReplica"
	// ReasonRoutedToPrincipalHome: several replicas with TLS. Every session is served by the replica
	// that issued it, and every principal's sessions are issued by its home replica (picked among the
	// ready pods of the headless Service <name>-peers), so the tool-chain rule and the rate limit count
	// once per principal.
	ReasonRoutedToPrincipalHome = "RoutedToPrincipalHome"
	// ReasonNotRelayedWithoutTLS: with spec.gateway.tls.mode Disabled the replicas do not relay
	// sessions to each other (the relay is authenticated by mutual TLS), so a session lives on the
	// replica that issued it and the Service keeps a client there by its address only.
	ReasonNotRelayedWithoutTLS = "NotRelayedWithoutTLS"
)

// MCPServerReconciler reconciles MCPServer objects.
type MCPServerReconciler struct {
	// Client reads from the manager's cache and writes to the API server.
	Client client.Client
	// APIReader reads around the cache.
	APIReader client.Reader
	// Scheme knows the API types.
	Scheme *runtime.Scheme
	// Recorder emits events on MCPServers.
	Recorder events.EventRecorder
	// ClusterDomain is the cluster's DNS domain, for status.endpoint.
	ClusterDomain string
	// DNS is where the cluster DNS pods run; every server may reach them on port 53.
	DNS Peer
	// Telemetry is the platform's trace collector: rendered into every gateway's configuration, and
	// the one destination it adds to every server's egress.
	Telemetry Telemetry
	// Verifier checks image signatures and attestations when a policy asks for them (nil: such
	// servers stall, failing closed).
	Verifier imageverify.ImageVerifier
	// GatewayImage is the gateway sidecar's image (pinned by digest in releases).
	GatewayImage string
	// Discovery confirms a jwksURL against the issuer's metadata where a policy lists allowed issuers
	// (nil: such a jwksURL stalls the server).
	Discovery guardrails.IssuerDiscovery
	// Cilium is true when the cluster serves CiliumNetworkPolicy: DNS-name egress entries are then
	// enforced with toFQDNs rules.
	Cilium bool
	// Pins reads each running pod's gateway status: the pin state (status.tools and the ToolsPinned
	// condition) and the MCP handshake with the server (status.serverInfo, status.toolCount, and Ready,
	// which then waits for a completed handshake). Nil: not read, and Ready rests on the Deployment
	// alone (whose pods the gateway's readiness probe still holds back until the server answers MCP).
	Pins StatusReader
	// MCPGrace is how long a gateway's handshake may fail before Ready says ServerNotSpeakingMCP
	// (default DefaultMCPGrace).
	MCPGrace time.Duration
	// PinPollInterval is how often pin state is read (default DefaultPinPollInterval).
	PinPollInterval time.Duration
	// PinBudget bounds one server's pin read (default DefaultPinBudget).
	PinBudget time.Duration
	// MaxConcurrentReconciles is how many MCPServers reconcile at once (default 4).
	MaxConcurrentReconciles int
	// MetricsScraper selects the pods that scrape the gateways' metrics (e.g. Prometheus): the
	// NetworkPolicy opens the status port to them, and the Service exposes it as port "metrics".
	// Empty: only the operator reaches it.
	MetricsScraper Peer
	// Keys fetches and refreshes the token issuers' signing keys, delivered to each gateway in its
	// ConfigMap (jwks.json), so that server pods need no egress to their issuer. Nil: no keys are
	// delivered, and a server with authentication on is never Ready.
	Keys *issuerkeys.Fetcher
	// ProgressInterval is how long a rollout's progress message may trail (default
	// DefaultProgressInterval): a change of the Progressing message alone is written at most this
	// often per server; state changes (Ready, a failure, a stall) are written at once.
	ProgressInterval time.Duration
	// Operator selects the operator's own pods: the NetworkPolicy lets them (alone) reach the gateway's
	// status port. Empty: no ingress to the status port.
	Operator Peer
	// CA issues the gateways' serving certificates (unless CertIssuer is set) and its bundle is
	// published in every namespace with servers. Nil with CertIssuer nil: a server with TLS on stalls.
	CA *servingcert.Authority
	// CertIssuer, when set, has cert-manager issue the gateways' certificates (a Certificate per
	// server) instead of CA.
	CertIssuer *CertIssuer

	applier  *applier
	mem      memory
	poller   *pinPoller
	statuses statusWrites
	bundles  publishedBundles
}

// reconcileState carries what the sub-reconcilers learned to the status summary.
type reconcileState struct {
	ceiling netpol.Ceiling
	// scaleToZero is set when the governing policies scale a non-compliant server to zero.
	scaleToZero   bool
	networkPolicy *networkingv1.NetworkPolicy
	ciliumPolicy  *ciliumv2.CiliumNetworkPolicy
	configMap     *corev1.ConfigMap
	// desiredDeployment is the Deployment as built (live is in deployment).
	desiredDeployment *appsv1.Deployment
	gatewayHash       string
	deployment        *appsv1.Deployment
	fqdns             []string
	ciliumEnforced    bool
	// widening are messages naming the NetworkPolicies, not the operator's, that widen the fence.
	widening []string
	// pinsRead is set when at least one gateway reported its pin state, merged into tools.
	pinsRead bool
	tools    []mcpv1alpha1.ToolPin
	// keys is what the operator delivered of the issuer's keys (nil: authentication is off), and
	// issuer the issuer they are of.
	keys   *issuerkeys.Keys
	issuer string
	// mcp is the gateways' MCP handshake with the server, read with the pins.
	mcp mcpState
	// caDueAt is when the operator's gateway CA is due for rotation (zero: not the operator's CA), when
	// the bundle is published again with the next CA in it.
	caDueAt time.Time
}

// +kubebuilder:rbac:groups=mcp.warden.dev,resources=mcpservers,verbs=get;list;watch
// +kubebuilder:rbac:groups=mcp.warden.dev,resources=mcpservers/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=apps,resources=deployments,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=services;serviceaccounts;configmaps,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=networking.k8s.io,resources=networkpolicies,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=cilium.io,resources=ciliumnetworkpolicies,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile brings one MCPServer's children to their desired state and summarizes the result in its
// status.
func (r *MCPServerReconciler) Reconcile(ctx context.Context, req ctrl.Request) (result ctrl.Result, retErr error) {
	s := &mcpv1alpha1.MCPServer{}
	if err := r.Client.Get(ctx, req.NamespacedName, s); err != nil {
		if apierrors.IsNotFound(err) {
			r.forget(req.NamespacedName)
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, err
	}
	if !s.DeletionTimestamp.IsZero() {
		// Children carry owner references; the garbage collector removes them.
		return ctrl.Result{}, nil
	}
	base := s.DeepCopy()
	st := &reconcileState{}
	defer func() {
		var after time.Duration
		after, retErr = r.summarizeAndPatch(ctx, base, s, st, retErr)
		if after > 0 && (result.RequeueAfter == 0 || after < result.RequeueAfter) {
			result.RequeueAfter = after
		}
		// A requeue (a poll, a retry) does not inherit the priority this reconcile ran at.
		result.Priority = ptr.To(defaultPriority)
	}()

	// The spec is validated before anything is applied, and the NetworkPolicy lands before the
	// Deployment, so a server pod never runs without its egress and ingress fences. The children the
	// Deployment's pods need (their ServiceAccount, fences, Service and gateway configuration) do not
	// depend on one another: they are applied at once, and the Deployment waits for all of them.
	steps := []step{
		r.reconcileSpec,
		// The gateways' last reported tools, first: this reconcile writes them into status.tools and
		// into the gateway ConfigMap's pins.json alike.
		r.reconcilePins,
		func(ctx context.Context, s *mcpv1alpha1.MCPServer, st *reconcileState) error {
			return concurrently(ctx, s, st, r.reconcileServiceAccount, r.reconcileNetworkPolicy, r.reconcileFence,
				r.reconcileCiliumPolicy, r.reconcileService, r.reconcileTLS, r.reconcileGatewayConfig)
		},
		r.reconcileDeployment,
	}
	for _, step := range steps {
		if err := step(ctx, s, st); err != nil {
			var stall *StallingError
			if errors.As(err, &stall) {
				// A stall never stops enforcement: the last good children are re-applied.
				if herr := r.holdLastGood(ctx, s, st, stall); herr != nil {
					return ctrl.Result{}, fmt.Errorf("%s; holding the last good configuration: %w", stall.Error(), herr)
				}
			}
			return ctrl.Result{}, err
		}
	}
	r.rememberGood(s, st)
	return ctrl.Result{RequeueAfter: r.nextReconcile(st)}, nil
}

// forget drops what the reconciler remembers of a server that no longer exists.
func (r *MCPServerReconciler) forget(key types.NamespacedName) {
	for _, kind := range []string{"ServiceAccount", "Service", "NetworkPolicy", "Deployment", "CiliumNetworkPolicy"} {
		r.applier.forget(kind, key)
	}
	r.applier.forget("ConfigMap", types.NamespacedName{Namespace: key.Namespace, Name: key.Name + "-gateway"})
	r.applier.forget("Certificate", types.NamespacedName{Namespace: key.Namespace, Name: key.Name + "-gateway-tls"})
	r.applier.forget("Service", types.NamespacedName{Namespace: key.Namespace, Name: key.Name + "-peers"})
	r.mem.forget(key)
	r.poller.forget(key)
	if r.Keys != nil {
		r.Keys.Forget(key)
	}
	r.statuses.forget(key)
}

// nextReconcile is when a server that reconciled fully is reconciled again: every poll interval (what
// no event reports is checked again then: the namespace's CA bundle, which no server owns and a tenant
// may delete or replace with one the cache cannot see), and when the CA is rotated. The gateways' status
// is read by the pin poller on its own cadence (see pinPoller), sooner while a server starts, without
// a reconcile queued for it; a read that finds something new reconciles the server.
func (r *MCPServerReconciler) nextReconcile(st *reconcileState) time.Duration {
	interval := r.PinPollInterval
	if interval == 0 {
		interval = DefaultPinPollInterval
	}
	if renew := renewIn(st, time.Now()); renew > 0 {
		interval = min(interval, renew)
	}
	return interval
}

// applyChild applies one child and turns an ownership conflict into a stall.
func (r *MCPServerReconciler) applyChild(ctx context.Context, s *mcpv1alpha1.MCPServer, desired, live client.Object) error {
	_, err := r.applyChildResult(ctx, s, desired, live)
	return err
}

// applyChildResult is applyChild that also says what the apply did.
func (r *MCPServerReconciler) applyChildResult(ctx context.Context, s *mcpv1alpha1.MCPServer, desired, live client.Object) (applyResult, error) {
	res, err := r.applier.apply(ctx, s, desired, live)
	var conflict errNotOwned
	if errors.As(err, &conflict) {
		return res, stalling(ReasonChildConflict, conflict)
	}
	if err != nil {
		return res, err
	}
	if res.Created && s.Status.ObservedGeneration > 0 {
		kind := desired.GetObjectKind().GroupVersionKind().Kind
		r.Recorder.Eventf(s, live, corev1.EventTypeWarning, ReasonRecreated, "Reconcile", "%s %s was missing and has been re-created", kind, desired.GetName())
	}
	return res, nil
}

func (r *MCPServerReconciler) reconcileServiceAccount(ctx context.Context, s *mcpv1alpha1.MCPServer, _ *reconcileState) error {
	return r.applyChild(ctx, s, desired.ServiceAccount(s), &corev1.ServiceAccount{})
}

func (r *MCPServerReconciler) reconcileService(ctx context.Context, s *mcpv1alpha1.MCPServer, _ *reconcileState) error {
	if err := r.applyChild(ctx, s, desired.Service(s, r.options()), &corev1.Service{}); err != nil {
		return err
	}
	return r.reconcilePeersService(ctx, s)
}

// reconcilePeersService keeps the headless Service of the server's replicas while it has more than one
// (with TLS), and deletes it when it is scaled back to one. At one replica it costs no API request
// (the cache answers that there is none).
func (r *MCPServerReconciler) reconcilePeersService(ctx context.Context, s *mcpv1alpha1.MCPServer) error {
	name := gatewayconfig.PeersServiceName(s)
	if desired.NeedsPeersService(s) {
		if len(name) > 63 {
			return stalling(ReasonInvalidSpec, fmt.Errorf("metadata.name: %q is %d characters; with spec.replicas > 1 its replicas' headless Service %q needs a name of at most 63, so the server's name at most 57; rename the server or set spec.replicas to 1", s.Name, len(s.Name), name))
		}
		return r.applyChild(ctx, s, desired.PeersService(s), &corev1.Service{})
	}
	svc := &corev1.Service{}
	err := r.Client.Get(ctx, client.ObjectKey{Namespace: s.Namespace, Name: name}, svc)
	switch {
	case apierrors.IsNotFound(err):
		return nil
	case err != nil:
		return transient(ReasonReadFailed, fmt.Errorf("get Service %s: %w", name, err))
	case !metav1.IsControlledBy(svc, s):
		return nil // not the operator's: left alone
	}
	if err := r.Client.Delete(ctx, svc); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("delete Service %s: %w", name, err)
	}
	r.applier.forget("Service", client.ObjectKeyFromObject(svc))
	return nil
}

// verifyImage verifies the image when a policy requires signatures; the admission webhook did the same,
// so this is normally a cache hit, and it catches images admitted before a policy tightened. A failed
// check stalls the server; an unreachable registry is retried.
func (r *MCPServerReconciler) verifyImage(ctx context.Context, s *mcpv1alpha1.MCPServer, policies []mcpv1alpha1.MCPServerPolicy) error {
	if !imageverify.NeedsVerification(policies) {
		s.Status.Image = nil
		meta.RemoveStatusCondition(&s.Status.Conditions, mcpv1alpha1.ConditionVerified)
		return nil
	}
	if r.Verifier == nil {
		return stalling(ReasonVerificationFailed, errors.New("a policy requires signed images but the operator runs without an image verifier"))
	}
	verdict, err := r.Verifier.VerifyImage(ctx, imageverify.ImageRequest{Image: s.Spec.Image, Namespace: s.Namespace, Policies: policies})
	var denial *imageverify.Denial
	switch {
	case errors.As(err, &denial) && denial.Transient():
		return transient(ReasonRegistryUnreachable, err)
	case err != nil:
		s.Status.Image = nil
		meta.SetStatusCondition(&s.Status.Conditions, metav1.Condition{Type: mcpv1alpha1.ConditionVerified, Status: metav1.ConditionFalse, Reason: string(checkOf(err)), Message: err.Error(), ObservedGeneration: s.Generation})
		return stalling(ReasonVerificationFailed, err)
	}
	s.Status.Image = &mcpv1alpha1.VerifiedImage{Digest: verdict.Digest, Signers: verdict.Signers, Attestations: verdict.Attestations}
	meta.SetStatusCondition(&s.Status.Conditions, metav1.Condition{
		Type: mcpv1alpha1.ConditionVerified, Status: metav1.ConditionTrue, Reason: "Verified", ObservedGeneration: s.Generation,
		Message: fmt.Sprintf("signed by %s; attestations: %s", strings.Join(verdict.Signers, ", "), strings.Join(verdict.Attestations, ", ")),
	})
	return nil
}

func checkOf(err error) imageverify.Check {
	var d *imageverify.Denial
	if errors.As(err, &d) {
		return d.Check
	}
	return "Error"
}

// reconcileSpec checks what the CRD's schema cannot: the egress allow-list against the protected
// ranges, and the image, egress and gateway settings against the governing policies. A refused entry
// stalls the MCPServer before anything is applied.
func (r *MCPServerReconciler) reconcileSpec(ctx context.Context, s *mcpv1alpha1.MCPServer, st *reconcileState) error {
	policies, err := guardrails.Matching(ctx, r.Client, s.Namespace)
	if err != nil {
		return transient(ReasonListFailed, err)
	}
	st.ceiling = guardrails.Ceiling(policies)
	st.scaleToZero = guardrails.ScaleToZero(policies)
	np, errs := desired.NetworkPolicy(s, r.options(), st.ceiling)
	if len(errs) > 0 {
		reason := ReasonInvalidSpec
		if len(policies) > 0 {
			// The webhook refuses such entries; one that got past it, or a policy that tightened,
			// is a violation.
			reason = ReasonPolicyViolation
		}
		return stalling(reason, errs.ToAggregate())
	}
	if errs := gatewayconfig.Check(s); len(errs) > 0 {
		return stalling(ReasonInvalidSpec, errs.ToAggregate())
	}
	errs = guardrails.CheckRegistry(field.NewPath("spec", "image"), s.Spec.Image, policies)
	errs = append(errs, guardrails.CheckEgress(&s.Spec, policies)...)
	errs = append(errs, guardrails.CheckGateway(&s.Spec, policies)...)
	errs = append(errs, guardrails.CheckSecretRefs(&s.Spec, policies)...)
	if len(errs) == 0 {
		jwks, err := guardrails.CheckIssuerJWKS(ctx, s, policies, r.Discovery)
		if err != nil && r.Discovery == nil {
			return stalling(ReasonPolicyViolation, err)
		}
		if err != nil {
			// The issuer may be down for a moment: retried with backoff.
			return transient(ReasonIssuerUnreachable, err)
		}
		errs = jwks
	}
	if len(errs) > 0 {
		return stalling(ReasonPolicyViolation, errs.ToAggregate())
	}
	if err := r.verifyImage(ctx, s, policies); err != nil {
		return err
	}
	st.networkPolicy = np
	st.fqdns = desired.FQDNEgress(s)
	return nil
}

func (r *MCPServerReconciler) reconcileNetworkPolicy(ctx context.Context, s *mcpv1alpha1.MCPServer, st *reconcileState) error {
	return r.applyChild(ctx, s, st.networkPolicy, &networkingv1.NetworkPolicy{})
}

// reconcileCiliumPolicy enforces DNS-name egress with a CiliumNetworkPolicy where Cilium runs, and
// removes the policy when the spec no longer has such entries.
func (r *MCPServerReconciler) reconcileCiliumPolicy(ctx context.Context, s *mcpv1alpha1.MCPServer, st *reconcileState) error {
	if !r.Cilium {
		return nil
	}
	if len(st.fqdns) == 0 {
		cnp := &ciliumv2.CiliumNetworkPolicy{}
		err := r.Client.Get(ctx, client.ObjectKeyFromObject(s), cnp)
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return transient(ReasonReadFailed, fmt.Errorf("get CiliumNetworkPolicy: %w", err))
		}
		if metav1.IsControlledBy(cnp, s) {
			if err := r.Client.Delete(ctx, cnp); client.IgnoreNotFound(err) != nil {
				return fmt.Errorf("delete CiliumNetworkPolicy: %w", err)
			}
		}
		return nil
	}
	st.ciliumPolicy = desired.CiliumNetworkPolicy(s, r.options(), st.ceiling)
	if err := r.applyChild(ctx, s, st.ciliumPolicy, &ciliumv2.CiliumNetworkPolicy{}); err != nil {
		return err
	}
	st.ciliumEnforced = true
	return nil
}

// reconcileGatewayConfig renders the gateway's configuration from spec.gateway into a ConfigMap.
func (r *MCPServerReconciler) reconcileGatewayConfig(ctx context.Context, s *mcpv1alpha1.MCPServer, st *reconcileState) error {
	src := s
	if st.pinsRead {
		// pins.json carries the tools this reconcile reports in status.tools, not those of the last
		// status written: a server whose tools arrive is not left with stale pins until its next poll.
		src = s.DeepCopy()
		src.Status.Tools = st.tools
	}
	cm, hash, err := desired.GatewayConfigMap(src, r.options())
	if err != nil {
		return stalling(ReasonInvalidSpec, err)
	}
	st.gatewayHash = hash
	r.deliverKeys(ctx, s, cm, st)
	st.configMap = cm
	return r.applyChild(ctx, s, cm, &corev1.ConfigMap{})
}

// reconcileDeployment applies the Deployment, then checks the live pod template against the sandbox: a
// field another writer added (a capability, a host namespace, a sidecar) is not owned by the operator,
// so server-side apply leaves it; the spec is then replaced wholesale.
func (r *MCPServerReconciler) reconcileDeployment(ctx context.Context, s *mcpv1alpha1.MCPServer, st *reconcileState) error {
	d := r.withCertSource(desired.Deployment(s, r.options(), st.gatewayHash), s)
	st.desiredDeployment = d.DeepCopy()
	live, err := r.applyDeployment(ctx, s, d)
	if err != nil {
		return err
	}
	st.deployment = live
	return nil
}

// applyDeployment applies the Deployment, then compares the live spec with the desired one as the API
// server stores it (defaults and mutating admission applied, learnt from a server-side dry run): any
// difference (a field another writer added, such as a capability, a host namespace, a toleration, a
// sidecar or a swapped volume, is not owned by the operator, so server-side apply leaves it) is reverted
// by replacing the spec wholesale.
func (r *MCPServerReconciler) applyDeployment(ctx context.Context, s *mcpv1alpha1.MCPServer, desired *appsv1.Deployment) (*appsv1.Deployment, error) {
	spec := desired.Spec.DeepCopy()
	live := &appsv1.Deployment{}
	res, err := r.applyChildResult(ctx, s, desired, live)
	if err != nil {
		return nil, err
	}
	if res.Created {
		// The object the apply created is the desired spec as the API server stores it.
		r.learnDefaults(client.ObjectKeyFromObject(live), spec, live)
	}
	var drift []string
	want, err := r.defaultedSpec(ctx, desired)
	if err != nil {
		// Without the defaulted spec, fall back to the sandbox's own checks.
		log.FromContext(ctx).Error(err, "drift check falls back to the sandbox checks")
		drift = templateDrift(&live.Spec.Template.Spec, &desired.Spec.Template.Spec)
	} else if !equality.Semantic.DeepEqual(live.Spec, *want) {
		drift = specDiff(want, &live.Spec)
		if len(drift) == 0 {
			drift = []string{"the spec differs"}
		}
	}
	if len(drift) == 0 {
		return live, nil
	}
	live.Spec = desired.Spec
	if err := r.Client.Update(ctx, live, client.FieldOwner(FieldOwner)); err != nil {
		return nil, fmt.Errorf("revert drift of Deployment %s: %w", live.Name, err)
	}
	r.applier.forget("Deployment", client.ObjectKeyFromObject(live))
	r.Recorder.Eventf(s, live, corev1.EventTypeWarning, ReasonDriftReverted, "Reconcile", "Deployment %s was changed outside the operator (%s); restored the sandbox", live.Name, strings.Join(drift, "; "))
	return live, nil
}

// templateDrift lists how the live pod spec departs from the sandbox or carries containers and volumes
// the operator did not put there (the fallback when the defaulted spec is unknown).
func templateDrift(live, desired *corev1.PodSpec) []string {
	v := sandbox.Violations(live)
	if len(live.Containers) != len(desired.Containers) || len(live.InitContainers) != len(desired.InitContainers) {
		v = append(v, "containers were added or removed")
	}
	if len(live.Volumes) != len(desired.Volumes) {
		v = append(v, "volumes were added or removed")
	}
	return v
}

// rolledOut reports whether the Deployment has rolled out its current spec and every replica is
// available, and a message saying how far it is.
func rolledOut(d *appsv1.Deployment) (bool, string) {
	want := ptr.Deref(d.Spec.Replicas, 1)
	switch {
	case d.Status.ObservedGeneration < d.Generation:
		return false, "waiting for the Deployment controller to observe the new spec"
	case d.Status.UpdatedReplicas < want:
		return false, fmt.Sprintf("%d of %d replicas updated", d.Status.UpdatedReplicas, want)
	case d.Status.Replicas > d.Status.UpdatedReplicas:
		return false, fmt.Sprintf("%d old replicas pending termination", d.Status.Replicas-d.Status.UpdatedReplicas)
	case ptr.Deref(d.Status.TerminatingReplicas, 0) > 0:
		return false, fmt.Sprintf("%d replicas terminating", *d.Status.TerminatingReplicas)
	case d.Status.ReadyReplicas > want:
		// The replica sets' counts are summed from their own status, which can trail a scale-down.
		return false, fmt.Sprintf("%d ready replicas, %d wanted: old replicas still counted", d.Status.ReadyReplicas, want)
	case d.Status.AvailableReplicas < want:
		return false, fmt.Sprintf("%d of %d replicas available", d.Status.AvailableReplicas, want)
	}
	return true, fmt.Sprintf("%d of %d replicas available", d.Status.AvailableReplicas, want)
}

// readiness is the Ready condition of a reconcile that applied everything: the Deployment rolled out
// and available and, when the gateways' status is read and replicas are wanted, every gateway that
// answered completed an MCP initialize and tools/list with the server. A handshake failing past the
// grace period is ServerNotSpeakingMCP even while the rollout waits (the gateway's readiness probe holds
// such pods back, so the rollout would only say "0 of 1 available").
func (r *MCPServerReconciler) readiness(st *reconcileState) (metav1.ConditionStatus, string, string) {
	ok, msg := rolledOut(st.deployment)
	gated := r.Pins != nil && ptr.Deref(st.deployment.Spec.Replicas, 1) > 0
	m := st.mcp
	switch {
	case gated && st.pinsRead && !m.ready && m.overdue:
		return metav1.ConditionFalse, ReasonServerNotSpeakingMCP, fmt.Sprintf(
			"the gateway of pod %s has not completed an MCP initialize and tools/list with the server for %s or more: %s. Check that the server speaks MCP: streamable HTTP on 127.0.0.1 at spec.port and spec.path, or transport stdio with spec.command; the operator keeps checking",
			m.failedPod, r.grace(), m.failure)
	case !ok:
		return metav1.ConditionFalse, ReasonProgressing, msg
	case st.keys != nil && st.keys.JSON == nil:
		return metav1.ConditionFalse, ReasonIssuerKeysUnavailable, "the gateway refuses every token until the operator delivers the issuer's signing keys: " + keysMessage(st.issuer, st.keys)
	case !gated:
		return metav1.ConditionTrue, ReasonAvailable, "sandboxed server is available: " + msg
	case !st.pinsRead:
		return metav1.ConditionFalse, ReasonWaitingForMCP, fmt.Sprintf("%s; waiting for a gateway to report its MCP handshake with the server on its status port (%d)", msg, StatusPort)
	case !m.ready:
		return metav1.ConditionFalse, ReasonWaitingForMCP, fmt.Sprintf("%s; the gateway of pod %s is waiting for the server to answer MCP initialize: %s", msg, m.failedPod, m.failure)
	}
	return metav1.ConditionTrue, ReasonAvailable, fmt.Sprintf("sandboxed server is available: %s; it answered MCP initialize as %s %s (protocol %s) and lists %d tool(s)",
		msg, m.info.Name, m.info.Version, m.info.ProtocolVersion, m.toolCount)
}

func (r *MCPServerReconciler) grace() time.Duration {
	if r.MCPGrace == 0 {
		return DefaultMCPGrace
	}
	return r.MCPGrace
}

// summarizeAndPatch computes Ready, Reconciling, Stalled and EgressEnforced once from the reconcile's
// outcome, emits events on transitions and writes the status only when it changed. Stall errors are
// swallowed (no retry until the spec changes); other errors are returned for a retry with backoff. A
// rollout's progress alone (the Progressing message) is written at most every ProgressInterval: the
// returned duration asks for a reconcile when the held message is due.
func (r *MCPServerReconciler) summarizeAndPatch(ctx context.Context, base, s *mcpv1alpha1.MCPServer, st *reconcileState, err error) (time.Duration, error) {
	logger := log.FromContext(ctx)
	gen := s.Generation
	set := func(t string, status metav1.ConditionStatus, reason, msg string) {
		meta.SetStatusCondition(&s.Status.Conditions, metav1.Condition{Type: t, Status: status, Reason: reason, Message: msg, ObservedGeneration: gen})
	}
	var ready readiness
	if err == nil {
		s.Status.Endpoint = gatewayconfig.Endpoint(s, r.ClusterDomain)
		s.Status.ReadyReplicas = st.deployment.Status.ReadyReplicas
		keysMissing := st.keys != nil && st.keys.JSON == nil
		if st.keys != nil {
			if keysMissing {
				set(mcpv1alpha1.ConditionIssuerKeysDelivered, metav1.ConditionFalse, ReasonIssuerKeysUnavailable, keysMessage(st.issuer, st.keys))
			} else {
				set(mcpv1alpha1.ConditionIssuerKeysDelivered, metav1.ConditionTrue, ReasonIssuerKeysFetched, keysMessage(st.issuer, st.keys))
			}
		} else {
			meta.RemoveStatusCondition(&s.Status.Conditions, mcpv1alpha1.ConditionIssuerKeysDelivered)
		}
		if st.pinsRead && st.mcp.ready {
			s.Status.ServerInfo, s.Status.ToolCount = st.mcp.info, ptr.To(st.mcp.toolCount)
		}
		ready.status, ready.reason, ready.message = r.readiness(st)
	}
	succeeded := err == nil
	observed, err := computeStatus(&s.Status.Conditions, gen, err, ready)
	if observed {
		s.Status.ObservedGeneration = gen
	}
	if succeeded {
		switch {
		case len(st.widening) > 0:
			set(mcpv1alpha1.ConditionEgressEnforced, metav1.ConditionFalse, ReasonFenceWidened, strings.Join(st.widening, "; "))
		case st.ciliumEnforced:
			set(mcpv1alpha1.ConditionEgressEnforced, metav1.ConditionTrue, ReasonCilium,
				fmt.Sprintf("egress to %s is enforced by a CiliumNetworkPolicy; the rest by a NetworkPolicy", strings.Join(st.fqdns, ", ")))
		case len(st.fqdns) > 0:
			set(mcpv1alpha1.ConditionEgressEnforced, metav1.ConditionFalse, ReasonFQDNNoCilium,
				fmt.Sprintf("egress to %s cannot be enforced without Cilium, so nothing is opened for it; use CIDR entries or install Cilium", strings.Join(st.fqdns, ", ")))
		default:
			set(mcpv1alpha1.ConditionEgressEnforced, metav1.ConditionTrue, ReasonEnforced, "every egress entry is enforced by a NetworkPolicy")
		}
		status, reason, msg := sessionsKept(s)
		set(mcpv1alpha1.ConditionSessionsKept, status, reason, msg)
		if st.pinsRead {
			s.Status.Tools = st.tools
			if ok, msg := pinSummary(st.tools); ok {
				set(mcpv1alpha1.ConditionToolsPinned, metav1.ConditionTrue, ReasonToolsMatchPins, msg)
			} else {
				set(mcpv1alpha1.ConditionToolsPinned, metav1.ConditionFalse, ReasonToolDefinitionChanged, msg)
			}
		}
	}
	r.emitTransitions(base, s)
	r.emitFenceWidened(base, s)
	r.emitPinChanges(base, s)
	if equality.Semantic.DeepEqual(base.Status, s.Status) || r.statuses.inFlight(base, &s.Status) {
		return 0, err
	}
	if wait := r.statusHeld(base, &s.Status); wait > 0 {
		return wait, err
	}
	if perr := r.Client.Status().Patch(ctx, s, client.MergeFrom(base)); perr != nil {
		if apierrors.IsNotFound(perr) {
			return 0, err
		}
		logger.Error(perr, "patch status")
		return 0, errors.Join(err, fmt.Errorf("patch status: %w", perr))
	}
	r.statuses.wrote(base, &s.Status)
	return 0, err
}

// statusHeld returns how long the write of status may wait (0: now): a rollout's progress alone trails
// by at most the progress interval. A new server's first status is never held: kstatus takes an object
// without status as Current (healthy), so Flux and cli-utils would go on before the server is Ready.
func (r *MCPServerReconciler) statusHeld(base *mcpv1alpha1.MCPServer, status *mcpv1alpha1.MCPServerStatus) time.Duration {
	if !progressOnly(&base.Status, status) {
		return 0
	}
	return r.statuses.progressDue(base, r.progressInterval())
}

// emitTransitions records an event when Ready or Stalled changes.
func (r *MCPServerReconciler) emitTransitions(before, after *mcpv1alpha1.MCPServer) {
	was, now := meta.FindStatusCondition(before.Status.Conditions, mcpv1alpha1.ConditionReady), meta.FindStatusCondition(after.Status.Conditions, mcpv1alpha1.ConditionReady)
	starting := func(c *metav1.Condition) bool {
		return c == nil || (c.Status != metav1.ConditionTrue && (c.Reason == ReasonProgressing || c.Reason == ReasonWaitingForMCP))
	}
	if now != nil && starting(was) && starting(now) {
		// A server starting up (its pods coming up, then its gateway's first handshake) is not news;
		// its Ready (or a failure) is.
		return
	}
	if now != nil && (was == nil || was.Status != now.Status || was.Reason != now.Reason) {
		kind := corev1.EventTypeNormal
		if now.Status != metav1.ConditionTrue && now.Reason != ReasonProgressing && now.Reason != ReasonWaitingForMCP {
			kind = corev1.EventTypeWarning
		}
		r.Recorder.Eventf(after, nil, kind, now.Reason, "Reconcile", "Ready=%s: %s", now.Status, now.Message)
	}
}

// SetupWithManager registers the reconciler and its watches: MCPServers, and the children it owns, so
// that a changed or deleted child is restored within seconds.
func (r *MCPServerReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.APIReader == nil {
		r.APIReader = mgr.GetAPIReader()
	}
	if r.ClusterDomain == "" {
		r.ClusterDomain = "cluster.local"
	}
	if r.GatewayImage == "" {
		r.GatewayImage = DefaultGatewayImage
	}
	if r.DNS.Namespace == "" {
		r.DNS = DefaultDNSPeer
	}
	r.applier = &applier{client: r.Client, reader: r.APIReader}
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &networkingv1.NetworkPolicy{}, wideningIndex, indexWidening); err != nil {
		return fmt.Errorf("index the NetworkPolicies that may widen a fence: %w", err)
	}
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &corev1.Pod{}, podServerIndex, indexPodServer); err != nil {
		return fmt.Errorf("index the pods by server: %w", err)
	}
	if r.Pins != nil {
		// Started with the cache rather than on the first status read, which would wait for it to sync.
		if _, err := mgr.GetCache().GetInformer(context.Background(), ReplicaSetMetadata()); err != nil {
			return fmt.Errorf("watch the ReplicaSets of the servers' Deployments: %w", err)
		}
	}
	r.poller = newPinPoller()
	// The poller's scheduled reads end with the manager.
	if err := mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
		<-ctx.Done()
		r.poller.stop()
		return nil
	})); err != nil {
		return fmt.Errorf("add the pin poller: %w", err)
	}
	if r.Pins != nil {
		// A gateway pod that starts running (or turns ready) has its status read at once.
		pods, err := mgr.GetCache().GetInformer(context.Background(), &corev1.Pod{})
		if err != nil {
			return fmt.Errorf("watch the servers' pods: %w", err)
		}
		if _, err := pods.AddEventHandler(r.podEvents(log.IntoContext(context.Background(), mgr.GetLogger().WithName("pins")))); err != nil {
			return fmt.Errorf("watch the servers' pods: %w", err)
		}
	}
	var keyEvents chan event.GenericEvent
	if r.Keys != nil {
		keyEvents = make(chan event.GenericEvent, 1024)
		// A fetch that ends after the manager has stopped does not wait on a channel nothing consumes.
		r.Keys.Notify = func(n types.NamespacedName) {
			select {
			case keyEvents <- event.GenericEvent{Object: &mcpv1alpha1.MCPServer{ObjectMeta: metav1.ObjectMeta{Namespace: n.Namespace, Name: n.Name}}}:
			case <-r.poller.done:
			}
		}
		if err := mgr.Add(r.Keys); err != nil {
			return fmt.Errorf("add the issuer key fetcher: %w", err)
		}
	}
	workers := r.MaxConcurrentReconciles
	if workers == 0 {
		workers = 4
	}
	b := ctrl.NewControllerManagedBy(mgr).
		WithOptions(controller.Options{MaxConcurrentReconciles: workers}).
		// A pin read that found something new reconciles its server again.
		WatchesRawSource(source.Channel(r.poller.events, r.pinEvents()))
	if keyEvents != nil {
		// Keys fetched, rotated or failing: the servers using the issuer get the new jwks.json.
		b = b.WatchesRawSource(source.Channel(keyEvents, &handler.EnqueueRequestForObject{}))
	}
	if r.CertIssuer != nil {
		cert := &unstructured.Unstructured{}
		cert.SetGroupVersionKind(CertificateGVK)
		// cert-manager marks the Certificate Ready once issued: the issuer's CA is then published.
		b = b.Owns(cert)
	}
	if r.Cilium {
		b = b.Owns(&ciliumv2.CiliumNetworkPolicy{}).
			// Every other CiliumNetworkPolicy may widen the fence of the servers in its namespace.
			Watches(&ciliumv2.CiliumNetworkPolicy{}, handler.EnqueueRequestsFromMapFunc(r.serversInNamespace), builder.WithPredicates(predicate.NewPredicateFuncs(notOwnedByServer)))
	}
	return b.
		For(&mcpv1alpha1.MCPServer{}, builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{}, predicate.LabelChangedPredicate{}))).
		// As Owns, with a rollout's completion ahead of the queue.
		Watches(&appsv1.Deployment{}, deploymentEvents(handler.EnqueueRequestForOwner(mgr.GetScheme(), mgr.GetRESTMapper(), &mcpv1alpha1.MCPServer{}, handler.OnlyControllerOwner()), r.poller.rolloutMayJump),
			builder.WithPredicates(r.notOwnWrite("Deployment"))).
		Owns(&corev1.Service{}, builder.WithPredicates(r.notOwnWrite("Service"))).
		Owns(&corev1.ConfigMap{}, builder.WithPredicates(r.notOwnWrite("ConfigMap"))).
		Owns(&corev1.ServiceAccount{}, builder.WithPredicates(r.notOwnWrite("ServiceAccount"))).
		Owns(&networkingv1.NetworkPolicy{}, builder.WithPredicates(r.notOwnWrite("NetworkPolicy"))).
		// Every other NetworkPolicy may widen the fence of the servers in its namespace.
		Watches(&networkingv1.NetworkPolicy{}, handler.EnqueueRequestsFromMapFunc(r.serversInNamespace), builder.WithPredicates(predicate.NewPredicateFuncs(notOwnedByServer))).
		// Policy status writes (the policy controller's) do not change what a policy requires.
		Watches(&mcpv1alpha1.MCPServerPolicy{}, handler.EnqueueRequestsFromMapFunc(r.serversForPolicy), builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Named("mcpserver").
		Complete(r)
}

// notOwnWrite drops the create and update events of a child of the kind that deliver what the
// operator's own last write of it returned (the same resourceVersion): the reconcile that wrote it knew
// it already, and waking its server again for it costs a reconcile and, for a child the cache has yet
// to show, a read around the cache. Anyone else's change (a new resourceVersion), a delete, and every
// event after a restart of the operator still reconcile the server.
func (r *MCPServerReconciler) notOwnWrite(kind string) predicate.Predicate {
	return predicate.Funcs{
		CreateFunc: func(e event.CreateEvent) bool { return !r.applier.ownWrite(kind, e.Object) },
		UpdateFunc: func(e event.UpdateEvent) bool { return !r.applier.ownWrite(kind, e.ObjectNew) },
	}
}

// DefaultGatewayImage is the gateway sidecar image when none is configured (releases pin it by digest).
const DefaultGatewayImage = "mcp-warden/gateway:dev"

// ManagedObjectsSelector selects the objects the operator creates; the manager's cache holds only these.
func ManagedObjectsSelector() map[string]string {
	return map[string]string{LabelManagedBy: managerName}
}

// reconcileFence finds the NetworkPolicies of the namespace, other than the operator's own, that select
// the server's pods and allow traffic: NetworkPolicies add up, so each widens the fence.
func (r *MCPServerReconciler) reconcileFence(ctx context.Context, s *mcpv1alpha1.MCPServer, st *reconcileState) error {
	list := &networkingv1.NetworkPolicyList{}
	// Only the policies that may widen a fence (wideningIndex), read-only: the cache's own objects, not
	// copies (a namespace of a thousand servers holds a thousand policies of the operator's; listing
	// and copying them all on every reconcile was most of the operator's CPU).
	if err := r.Client.List(ctx, list, client.InNamespace(s.Namespace), client.MatchingFields{wideningIndex: "true"}, client.UnsafeDisableDeepCopy); err != nil {
		return transient(ReasonListFailed, fmt.Errorf("list NetworkPolicies: %w", err))
	}
	st.widening = nil
	for i := range list.Items {
		np := &list.Items[i]
		if operatorOwned(np) || !fence.Widens(np) || !fence.SelectsServer(&np.Spec.PodSelector, s.Name) {
			continue
		}
		st.widening = append(st.widening, fence.Message(np))
	}
	if !r.Cilium {
		return nil
	}
	cnps := &ciliumv2.CiliumNetworkPolicyList{}
	if err := r.Client.List(ctx, cnps, client.InNamespace(s.Namespace)); err != nil {
		return transient(ReasonListFailed, fmt.Errorf("list CiliumNetworkPolicies: %w", err))
	}
	for i := range cnps.Items {
		u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&cnps.Items[i])
		if err != nil {
			return fmt.Errorf("read CiliumNetworkPolicy %s: %w", cnps.Items[i].Name, err)
		}
		rules := fence.CiliumRules(u)
		rules = slices.DeleteFunc(rules, func(rule fence.CiliumRule) bool { return ciliumOperatorRule(&cnps.Items[i], rule) })
		if widening := fence.CiliumWidening(rules, s.Name); len(widening) > 0 {
			st.widening = append(st.widening, fence.CiliumMessage(s.Namespace, cnps.Items[i].Name, widening))
		}
	}
	return nil
}

// ciliumOperatorRule reports whether the rule is the one the operator writes: spec of a
// CiliumNetworkPolicy controlled by the MCPServer of the same name, whose endpointSelector is exactly
// that server's pod labels. Rules another writer adds (specs) are not the operator's.
func ciliumOperatorRule(cnp *ciliumv2.CiliumNetworkPolicy, rule fence.CiliumRule) bool {
	ref := metav1.GetControllerOf(cnp)
	if ref == nil || ref.Kind != "MCPServer" || ref.Name != cnp.Name || !strings.HasPrefix(ref.APIVersion, mcpv1alpha1.GroupVersion.Group+"/") {
		return false
	}
	if rule.Path.String() != "spec" || rule.EndpointSelector == nil {
		return false
	}
	want := &mcpv1alpha1.MCPServer{ObjectMeta: metav1.ObjectMeta{Name: cnp.Name}}
	sel := rule.EndpointSelector
	return len(sel.MatchExpressions) == 0 && equality.Semantic.DeepEqual(sel.MatchLabels, desired.SelectorLabels(want))
}

// operatorOwned reports whether the NetworkPolicy is one the operator writes: controlled by the
// MCPServer of the same name and selecting exactly that server's pods (the operator applies the
// selector; an owner reference alone can be written by anyone who can read the MCPServer's UID).
func operatorOwned(np *networkingv1.NetworkPolicy) bool {
	ref := metav1.GetControllerOf(np)
	if ref == nil || ref.Kind != "MCPServer" || ref.Name != np.Name || !strings.HasPrefix(ref.APIVersion, mcpv1alpha1.GroupVersion.Group+"/") {
		return false
	}
	want := &mcpv1alpha1.MCPServer{ObjectMeta: metav1.ObjectMeta{Name: np.Name}}
	return len(np.Spec.PodSelector.MatchExpressions) == 0 && equality.Semantic.DeepEqual(np.Spec.PodSelector.MatchLabels, desired.SelectorLabels(want))
}

func notOwnedByServer(o client.Object) bool {
	ref := metav1.GetControllerOf(o)
	return ref == nil || ref.Kind != "MCPServer"
}

// serversInNamespace enqueues every MCPServer in the object's namespace.
func (r *MCPServerReconciler) serversInNamespace(ctx context.Context, o client.Object) []reconcile.Request {
	list := &mcpv1alpha1.MCPServerList{}
	if err := r.Client.List(ctx, list, client.InNamespace(o.GetNamespace())); err != nil {
		log.FromContext(ctx).Error(err, "list MCPServers for a NetworkPolicy change")
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(list.Items))
	for _, s := range list.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&s)})
	}
	return reqs
}

// emitFenceWidened records a warning when EgressEnforced turns False because of a foreign policy.
func (r *MCPServerReconciler) emitFenceWidened(before, after *mcpv1alpha1.MCPServer) {
	was, now := meta.FindStatusCondition(before.Status.Conditions, mcpv1alpha1.ConditionEgressEnforced), meta.FindStatusCondition(after.Status.Conditions, mcpv1alpha1.ConditionEgressEnforced)
	if now != nil && now.Reason == ReasonFenceWidened && (was == nil || was.Reason != now.Reason || was.Message != now.Message) {
		r.Recorder.Eventf(after, nil, corev1.EventTypeWarning, ReasonFenceWidened, "Reconcile", "EgressEnforced=False: %s", now.Message)
	}
}

// serversForPolicy enqueues every MCPServer when a policy changes: a policy's namespace selector may have
// changed too, so the old and new sets are both covered.
func (r *MCPServerReconciler) serversForPolicy(ctx context.Context, _ client.Object) []reconcile.Request {
	list := &mcpv1alpha1.MCPServerList{}
	if err := r.Client.List(ctx, list); err != nil {
		log.FromContext(ctx).Error(err, "list MCPServers for a policy change")
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(list.Items))
	for _, s := range list.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&s)})
	}
	return reqs
}

// keysFile is the ConfigMap key of the issuer's signing keys the operator delivers to the gateway.
const keysFile = "jwks.json"

// noKeys is the jwks.json delivered before the issuer's keys are known: the gateway refuses every token.
const noKeys = `{"keys":[]}`

// deliverKeys puts the issuer's signing keys into the gateway's ConfigMap, outside the configuration
// hash (a rotation does not roll the pods; the kubelet updates the mounted file and the gateway reads
// it again).
func (r *MCPServerReconciler) deliverKeys(ctx context.Context, s *mcpv1alpha1.MCPServer, cm *corev1.ConfigMap, st *reconcileState) {
	key := types.NamespacedName{Namespace: s.Namespace, Name: s.Name}
	a := s.Spec.Gateway.Auth
	if a.Disabled {
		if r.Keys != nil {
			r.Keys.Forget(key)
		}
		return
	}
	var k issuerkeys.Keys
	if r.Keys != nil {
		k = r.Keys.Get(issuerkeys.Source{Issuer: a.Issuer, JWKSURL: a.JWKSURL}, key)
	} else {
		k.Err = errors.New("the operator runs without an issuer key fetcher")
	}
	source := a.Issuer + " " + a.JWKSURL
	if cm.Annotations == nil {
		cm.Annotations = map[string]string{}
	}
	cm.Annotations[AnnotationKeysSource] = source
	if k.JSON == nil {
		// No fetch has succeeded since the operator started (a restart, or the issuer down since): the
		// keys already delivered for the same source stay, so tokens keep validating.
		if kept, n := r.deliveredKeys(ctx, cm, source); kept != "" {
			k = issuerkeys.Keys{JSON: []byte(kept), Count: n, URL: "the gateway's ConfigMap", Err: cmp.Or(k.Err, errNoFetchYet)}
		}
	}
	st.keys, st.issuer = &k, a.Issuer
	cm.Data[keysFile] = noKeys
	if k.JSON != nil {
		cm.Data[keysFile] = string(k.JSON)
	}
}

// AnnotationKeysSource on the gateway's ConfigMap names the issuer and jwksURL its jwks.json is of.
const AnnotationKeysSource = "mcp.warden.dev/jwks-source"

var errNoFetchYet = errors.New("no fetch has completed since the operator started")

// deliveredKeys is the jwks.json the live ConfigMap delivers, and how many keys it holds, if it was
// delivered for source and holds any key ("" otherwise: keys of another issuer are never kept).
func (r *MCPServerReconciler) deliveredKeys(ctx context.Context, desired *corev1.ConfigMap, source string) (string, int) {
	live := &corev1.ConfigMap{}
	if err := r.Client.Get(ctx, client.ObjectKeyFromObject(desired), live); err != nil {
		return "", 0
	}
	body := live.Data[keysFile]
	if live.Annotations[AnnotationKeysSource] != source || body == "" {
		return "", 0
	}
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal([]byte(body), &set); err != nil || len(set.Keys) == 0 {
		return "", 0
	}
	return body, len(set.Keys)
}

// sessionsKept says how the server's MCP sessions fare across its replicas (the SessionsKept condition).
func sessionsKept(s *mcpv1alpha1.MCPServer) (metav1.ConditionStatus, string, string) {
	n := ptr.Deref(s.Spec.Replicas, 1)
	switch {
	case n <= 1:
		return metav1.ConditionTrue, ReasonSingleReplica, "one replica holds every session; losing its pod costs the clients one re-initialize (HTTP 404 on their session)"
	case !gatewayconfig.TLSEnabled(s):
		return metav1.ConditionFalse, ReasonNotRelayedWithoutTLS, fmt.Sprintf("spec.gateway.tls.mode is Disabled, so the %d replicas do not relay sessions to each other (the relay is authenticated by mutual TLS with the gateways' certificates): "+
			"each session lives on the replica that initialized it, and the Service keeps a client on one replica by its IP address (sessionAffinity ClientIP); "+
			"a request that reaches another replica (a client behind changing addresses, a mesh that routes by its own rules) gets HTTP 404 and the client initializes a new session. "+
			"Turn TLS on, set spec.replicas to 1, or have the mesh route by the Mcp-Session-Id header", n)
	default:
		return metav1.ConditionTrue, ReasonRoutedToPrincipalHome, fmt.Sprintf("every principal's sessions are issued by its home replica, picked by rendezvous hashing among the ready pods of the headless Service %s; "+
			"the other %d replicas relay its initializes and its sessions' requests to that replica's peer port (%d), so the tool-chain rule (privateDataTools, externalWriteTools) and spec.gateway.ratePerSecond count once per principal, across its sessions. "+
			"Losing a replica costs its sessions' clients one re-initialize (HTTP 404) and the tool-chain state and rate bucket of the principals homed there, as a restart does; their new sessions go to a new home", gatewayconfig.PeersServiceName(s), n-1, PeerPort)
	}
}

// maxKeysError bounds the fetch error quoted in a condition (the API server refuses a condition
// message past 32768 bytes, and with it the whole status patch).
const maxKeysError = 2048

// keysMessage says where the delivered keys came from, or why there are none.
func keysMessage(iss string, k *issuerkeys.Keys) string {
	if k.Err != nil {
		if msg := k.Err.Error(); len(msg) > maxKeysError {
			k = &issuerkeys.Keys{JSON: k.JSON, Count: k.Count, URL: k.URL, Fetched: k.Fetched,
				Err: errors.New(strings.ToValidUTF8(msg[:maxKeysError], "") + "…")}
		}
	}
	switch {
	case k.JSON == nil && k.Err == nil:
		return fmt.Sprintf("fetching the signing keys of issuer %s", iss)
	case k.JSON == nil:
		return fmt.Sprintf("cannot fetch the signing keys of issuer %s: %v; check that the issuer serves its metadata and keys over HTTPS on a public or private address the operator's pods reach (port 443)", iss, k.Err)
	case k.Err != nil:
		return fmt.Sprintf("%d key(s) of issuer %s from %s are delivered; the last refresh failed (the delivered keys are kept): %v", k.Count, iss, k.URL, k.Err)
	}
	return fmt.Sprintf("%d key(s) of issuer %s from %s are delivered", k.Count, iss, k.URL)
}
