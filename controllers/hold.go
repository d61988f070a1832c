package controllers

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"sync"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ciliumv2 "github.com/cilium/cilium/pkg/k8s/apis/cilium.io/v2"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
	"github.com/mcp-warden/mcp-warden/controllers/desired"
)

// ReasonScaledToZero is the event reason when a server is scaled to zero because it violates a policy
// (or stalled with no known good configuration).
const ReasonScaledToZero = "ScaledToZero"

// memory is what the reconciler remembers between reconciles: each server's last good children, and
// each Deployment's desired spec as the API server defaults it.
type memory struct {
	mu       sync.Mutex
	good     map[types.NamespacedName]*goodState
	defaults map[types.NamespacedName]defaultedDeployment
}

// goodState is the children of the last generation that reconciled without a stall.
type goodState struct {
	generation    int64
	networkPolicy *networkingv1.NetworkPolicy
	ciliumPolicy  *ciliumv2.CiliumNetworkPolicy
	configMap     *corev1.ConfigMap
	deployment    *appsv1.Deployment
}

type defaultedDeployment struct {
	hash [32]byte
	spec *appsv1.DeploymentSpec
}

func (m *memory) forget(key types.NamespacedName) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.good, key)
	delete(m.defaults, key)
}

// rememberGood records the children of a generation that reconciled fully, and its spec in
// status.lastGood so that a restarted operator can build them again.
func (r *MCPServerReconciler) rememberGood(s *mcpv1alpha1.MCPServer, st *reconcileState) {
	if st.networkPolicy == nil || st.configMap == nil || st.desiredDeployment == nil {
		return
	}
	if s.Status.LastGood == nil || s.Status.LastGood.Generation != s.Generation {
		if body, err := json.Marshal(s.Spec); err == nil {
			s.Status.LastGood = &mcpv1alpha1.LastGoodSpec{Generation: s.Generation, Spec: runtime.RawExtension{Raw: body}}
		}
	}
	g := &goodState{generation: s.Generation, networkPolicy: st.networkPolicy.DeepCopy(), configMap: st.configMap.DeepCopy(), deployment: st.desiredDeployment.DeepCopy()}
	if st.ciliumPolicy != nil {
		g.ciliumPolicy = st.ciliumPolicy.DeepCopy()
	}
	r.mem.mu.Lock()
	defer r.mem.mu.Unlock()
	if r.mem.good == nil {
		r.mem.good = map[types.NamespacedName]*goodState{}
	}
	r.mem.good[client.ObjectKeyFromObject(s)] = g
}

// lastGood returns the children of the server's last good generation: remembered since the operator
// started, or else built again from status.lastGood (nil when neither is known or the recorded spec no
// longer passes, with the reason).
func (r *MCPServerReconciler) lastGood(ctx context.Context, s *mcpv1alpha1.MCPServer) (*goodState, string) {
	r.mem.mu.Lock()
	g := r.mem.good[client.ObjectKeyFromObject(s)]
	r.mem.mu.Unlock()
	if g != nil {
		return g, ""
	}
	lg := s.Status.LastGood
	if lg == nil || lg.Generation >= s.Generation {
		return nil, "no good configuration of this server is known"
	}
	g, err := r.rebuildGood(ctx, s, lg)
	if err != nil {
		return nil, fmt.Sprintf("the last good configuration (generation %d, status.lastGood) no longer passes: %v", lg.Generation, err)
	}
	return g, ""
}

// rebuildGood builds the children of the recorded good spec, after checking that spec as the current
// one is checked (the policies of today, the image verification, the gateway's own check). Nothing is
// applied and the server's status is not touched.
func (r *MCPServerReconciler) rebuildGood(ctx context.Context, s *mcpv1alpha1.MCPServer, lg *mcpv1alpha1.LastGoodSpec) (*goodState, error) {
	prev := s.DeepCopy()
	prev.Spec = mcpv1alpha1.MCPServerSpec{}
	dec := json.NewDecoder(bytes.NewReader(lg.Spec.Raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&prev.Spec); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	prev.Generation = lg.Generation
	st := &reconcileState{}
	if err := r.reconcileSpec(ctx, prev, st); err != nil {
		return nil, err
	}
	g := &goodState{generation: lg.Generation, networkPolicy: st.networkPolicy}
	if r.Cilium && len(st.fqdns) > 0 {
		g.ciliumPolicy = desired.CiliumNetworkPolicy(prev, r.options(), st.ceiling)
	}
	cm, hash, err := desired.GatewayConfigMap(prev, r.options())
	if err != nil {
		return nil, err
	}
	g.configMap = cm
	g.deployment = r.withCertSource(desired.Deployment(prev, r.options(), hash), prev)
	r.mem.mu.Lock()
	defer r.mem.mu.Unlock()
	if r.mem.good == nil {
		r.mem.good = map[types.NamespacedName]*goodState{}
	}
	r.mem.good[client.ObjectKeyFromObject(s)] = g
	return g, nil
}

// holdLastGood keeps a stalled server fenced: the NetworkPolicies, gateway ConfigMap and Deployment of
// its last good generation are applied again (so drift is still reverted), the Deployment at zero
// replicas when the stall is a policy violation the policies scale to zero. With no good generation
// known since the operator started, the server gets a deny-all NetworkPolicy and a sandboxed
// Deployment at zero replicas. The stall's message says which.
func (r *MCPServerReconciler) holdLastGood(ctx context.Context, s *mcpv1alpha1.MCPServer, st *reconcileState, stall *StallingError) error {
	scale := (stall.Reason == ReasonPolicyViolation || stall.Reason == ReasonVerificationFailed) && st.scaleToZero
	g, unknown := r.lastGood(ctx, s)
	// With no good generation known, nothing new is created: only what exists is fenced off.
	onlyExisting := g == nil
	if g == nil {
		g = r.closedFence(s, st)
		scale = true
		stall.Note += "; " + unknown + ", so what exists of it is fenced off (no egress, no clients) and scaled to zero until the spec is fixed"
	} else {
		stall.Note += fmt.Sprintf("; the children of generation %d stay enforced", g.generation)
		if scale {
			stall.Note += ", scaled to zero replicas until the spec complies (MCPServerPolicy violationAction: ScaleToZero; Report only reports)"
		}
	}
	if err := r.holdPolicies(ctx, s, g, onlyExisting); err != nil {
		return err
	}
	return r.holdDeployment(ctx, s, g, scale, onlyExisting, stall)
}

// closedFence is what a stalled server with no known good generation is held at: a deny-all
// NetworkPolicy (DNS and the operator only: no clients, no egress, no scraper, no collector) and a
// sandboxed Deployment at zero replicas.
func (r *MCPServerReconciler) closedFence(s *mcpv1alpha1.MCPServer, st *reconcileState) *goodState {
	closed := s.DeepCopy()
	closed.Spec.Egress, closed.Spec.Clients = nil, nil
	np, _ := desired.NetworkPolicy(closed, desired.Options{DNS: r.DNS, Operator: r.Operator}, st.ceiling)
	d := r.withCertSource(desired.Deployment(s, r.options(), ""), s)
	d.Spec.Replicas = ptr.To(int32(0))
	return &goodState{networkPolicy: np, deployment: d}
}

// holdPolicies applies the held NetworkPolicies and gateway ConfigMap again (onlyExisting: only those
// that exist). A child the operator does not own is left alone.
func (r *MCPServerReconciler) holdPolicies(ctx context.Context, s *mcpv1alpha1.MCPServer, g *goodState, onlyExisting bool) error {
	for _, obj := range []client.Object{g.networkPolicy, g.ciliumPolicy, g.configMap} {
		if reflect.ValueOf(obj).IsNil() {
			continue
		}
		live := obj.DeepCopyObject().(client.Object)
		if onlyExisting {
			exists, err := r.exists(ctx, live)
			if err != nil {
				return err
			}
			if !exists {
				continue
			}
		}
		if _, err := r.applier.apply(ctx, s, obj.DeepCopyObject().(client.Object), live); err != nil && !errors.As(err, new(errNotOwned)) {
			return err
		}
	}
	return nil
}

// holdDeployment applies the held Deployment again (onlyExisting: only if it exists), at zero replicas
// when scale is set, with an event when that scaled running replicas down.
func (r *MCPServerReconciler) holdDeployment(ctx context.Context, s *mcpv1alpha1.MCPServer, g *goodState, scale, onlyExisting bool, stall *StallingError) error {
	d := g.deployment.DeepCopy()
	if scale {
		d.Spec.Replicas = ptr.To(int32(0))
	}
	before := &appsv1.Deployment{}
	err := r.Client.Get(ctx, client.ObjectKeyFromObject(d), before)
	if err != nil && !apierrors.IsNotFound(err) {
		return transient(ReasonReadFailed, fmt.Errorf("get Deployment %s: %w", d.Name, err))
	}
	if onlyExisting && apierrors.IsNotFound(err) {
		return nil
	}
	if _, err := r.applyDeployment(ctx, s, d); err != nil {
		if errors.As(err, new(*StallingError)) {
			return nil
		}
		return err
	}
	if scale && ptr.Deref(before.Spec.Replicas, 0) > 0 {
		r.Recorder.Eventf(s, nil, corev1.EventTypeWarning, ReasonScaledToZero, "Reconcile", "scaled to zero replicas: %s", stall.Error())
	}
	return nil
}

// exists reports whether the object (read from the cache by obj's key) exists.
func (r *MCPServerReconciler) exists(ctx context.Context, obj client.Object) (bool, error) {
	err := r.Client.Get(ctx, client.ObjectKeyFromObject(obj), obj)
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("get %s: %w", obj.GetName(), err)
	}
	return true, nil
}

// defaultedSpec returns the Deployment's spec as the API server would store it, from a server-side
// dry-run create (defaults and mutating admission applied). It is remembered per Deployment until the
// desired spec changes.
func (r *MCPServerReconciler) defaultedSpec(ctx context.Context, d *appsv1.Deployment) (*appsv1.DeploymentSpec, error) {
	body, err := json.Marshal(d.Spec)
	if err != nil {
		return nil, err
	}
	hash := sha256.Sum256(body)
	key := client.ObjectKeyFromObject(d)
	r.mem.mu.Lock()
	cached, ok := r.mem.defaults[key]
	r.mem.mu.Unlock()
	if ok && cached.hash == hash {
		return cached.spec, nil
	}
	probe := &appsv1.Deployment{}
	probe.GenerateName = d.Name + "-"
	probe.Namespace = d.Namespace
	probe.Labels = d.Labels
	probe.Spec = *d.Spec.DeepCopy()
	if err := r.Client.Create(ctx, probe, client.DryRunAll, client.FieldOwner(FieldOwner)); err != nil {
		return nil, fmt.Errorf("dry-run Deployment %s to learn its defaults: %w", d.Name, err)
	}
	r.mem.mu.Lock()
	defer r.mem.mu.Unlock()
	if r.mem.defaults == nil {
		r.mem.defaults = map[types.NamespacedName]defaultedDeployment{}
	}
	r.mem.defaults[key] = defaultedDeployment{hash: hash, spec: &probe.Spec}
	return &probe.Spec, nil
}

// learnDefaults records the spec of a Deployment the operator's apply has just created as the stored
// form of desired, which saves defaultedSpec its dry run. Only when every field of it is the operator's
// (a Deployment someone created in between carries their fields too).
func (r *MCPServerReconciler) learnDefaults(key types.NamespacedName, desired *appsv1.DeploymentSpec, created *appsv1.Deployment) {
	for _, m := range created.ManagedFields {
		if m.Manager != FieldOwner {
			return
		}
	}
	body, err := json.Marshal(desired)
	if err != nil {
		return
	}
	r.mem.mu.Lock()
	defer r.mem.mu.Unlock()
	if r.mem.defaults == nil {
		r.mem.defaults = map[types.NamespacedName]defaultedDeployment{}
	}
	r.mem.defaults[key] = defaultedDeployment{hash: sha256.Sum256(body), spec: created.Spec.DeepCopy()}
}

// specDiff lists the paths (e.g. template.spec.hostAliases) where the live spec differs from the
// wanted one, at most ten.
func specDiff(want, live *appsv1.DeploymentSpec) []string {
	w, err1 := runtime.DefaultUnstructuredConverter.ToUnstructured(want)
	l, err2 := runtime.DefaultUnstructuredConverter.ToUnstructured(live)
	if err1 != nil || err2 != nil {
		return nil
	}
	var out []string
	diffValues("", w, l, &out)
	if len(out) > 10 {
		out = append(out[:10], fmt.Sprintf("%d more", len(out)-10))
	}
	return out
}

func diffValues(path string, want, live any, out *[]string) {
	wm, wok := want.(map[string]any)
	lm, lok := live.(map[string]any)
	if wok && lok {
		keys := map[string]bool{}
		for k := range wm {
			keys[k] = true
		}
		for k := range lm {
			keys[k] = true
		}
		sorted := make([]string, 0, len(keys))
		for k := range keys {
			sorted = append(sorted, k)
		}
		sort.Strings(sorted)
		for _, k := range sorted {
			p := k
			if path != "" {
				p = path + "." + k
			}
			diffValues(p, wm[k], lm[k], out)
		}
		return
	}
	wl, wok := want.([]any)
	ll, lok := live.([]any)
	if wok && lok && len(wl) == len(ll) {
		for i := range wl {
			diffValues(fmt.Sprintf("%s[%d]", path, i), wl[i], ll[i], out)
		}
		return
	}
	if !equality.Semantic.DeepEqual(want, live) {
		*out = append(*out, path)
	}
}
