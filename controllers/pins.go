package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/log"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
	"github.com/mcp-warden/mcp-warden/gateway/pin"
	"github.com/mcp-warden/mcp-warden/gatewayconfig"
)

const (
	// StatusPort is where every server pod's gateway serves its status (the pin state) to the operator;
	// the NetworkPolicy opens it to the operator's pods alone.
	StatusPort     = gatewayconfig.StatusPort
	statusPortName = "status"
	// DefaultPinPollInterval is how often the operator reads each server's pin state.
	DefaultPinPollInterval = 30 * time.Second
	// ReasonToolDefinitionChanged is the ToolsPinned reason (and event reason) when a tool changed after
	// it was pinned.
	ReasonToolDefinitionChanged = "ToolDefinitionChanged"
	// ReasonToolsMatchPins is the ToolsPinned reason when every tool matches its pin.
	ReasonToolsMatchPins = "ToolsMatchPins"
)

// PinReader reads the pin state that a server pod's gateway reports.
type PinReader interface {
	ReadPins(ctx context.Context, pod *corev1.Pod) (pin.State, error)
}

// HTTPPinReader reads GET http://<pod IP>:8444/pins under a deadline.
type HTTPPinReader struct {
	// Client makes the requests (default: no proxy, 2 s connect and header deadlines).
	Client *http.Client
	// Timeout bounds one read (default 3 s).
	Timeout time.Duration
}

// ReadPins implements PinReader.
func (h *HTTPPinReader) ReadPins(ctx context.Context, pod *corev1.Pod) (pin.State, error) {
	var st pin.State
	if pod.Status.PodIP == "" {
		return st, fmt.Errorf("pod %s has no IP yet", pod.Name)
	}
	timeout := h.Timeout
	if timeout == 0 {
		timeout = 3 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c := h.Client
	if c == nil {
		c = defaultPinClient
	}
	url := "http://" + net.JoinHostPort(pod.Status.PodIP, strconv.Itoa(StatusPort)) + "/pins"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return st, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return st, fmt.Errorf("read pins of pod %s: %w", pod.Name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("read pins of pod %s: HTTP %d", pod.Name, resp.StatusCode)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&st); err != nil {
		return st, fmt.Errorf("read pins of pod %s: %w", pod.Name, err)
	}
	return st, nil
}

var defaultPinClient = &http.Client{Transport: &http.Transport{
	Proxy:                 nil,
	DialContext:           (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
	ResponseHeaderTimeout: 2 * time.Second,
	MaxIdleConnsPerHost:   1,
	IdleConnTimeout:       time.Minute,
}}

// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch

// DefaultPinBudget bounds one server's pin read (all its pods, read concurrently).
const DefaultPinBudget = 5 * time.Second

// maxPinReads bounds the pod reads in flight across all servers.
const maxPinReads = 16

// pinPoller reads pin state off the reconcile path: a reconcile reports the last state read and starts
// a new read if none is in flight; when a read finds something new, the server is reconciled again. A
// pod whose status port accepts and never answers costs its server at most the budget, and costs no
// other server anything.
type pinPoller struct {
	mu     sync.Mutex
	state  map[types.NamespacedName]*polledPins
	sem    chan struct{}
	events chan event.GenericEvent
}

type polledPins struct {
	read     bool
	tools    []mcpv1alpha1.ToolPin
	inflight bool
}

func newPinPoller() *pinPoller {
	return &pinPoller{state: map[types.NamespacedName]*polledPins{}, sem: make(chan struct{}, maxPinReads), events: make(chan event.GenericEvent, 1024)}
}

func (p *pinPoller) forget(key types.NamespacedName) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.state, key)
}

// reconcilePins reports the last pin state read for the server into st and starts the next read.
func (r *MCPServerReconciler) reconcilePins(ctx context.Context, s *mcpv1alpha1.MCPServer, st *reconcileState) error {
	if r.Pins == nil {
		return nil
	}
	key := client.ObjectKeyFromObject(s)
	p := r.poller
	p.mu.Lock()
	cur, ok := p.state[key]
	if !ok {
		cur = &polledPins{}
		p.state[key] = cur
	}
	st.pinsRead, st.tools = cur.read, slices.Clone(cur.tools)
	start := !cur.inflight
	cur.inflight = true
	p.mu.Unlock()
	if start {
		go r.refreshPins(log.IntoContext(context.Background(), log.FromContext(ctx)), s.DeepCopy())
	}
	return nil
}

// refreshPins reads the server's pin state under the budget and requeues the server if it changed.
func (r *MCPServerReconciler) refreshPins(ctx context.Context, s *mcpv1alpha1.MCPServer) {
	budget := r.PinBudget
	if budget == 0 {
		budget = DefaultPinBudget
	}
	ctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	tools, read := r.readPins(ctx, s)
	key := client.ObjectKeyFromObject(s)
	p := r.poller
	p.mu.Lock()
	cur, ok := p.state[key]
	changed := false
	if ok {
		cur.inflight = false
		if read && (!cur.read || !equality.Semantic.DeepEqual(cur.tools, tools)) {
			cur.read, cur.tools, changed = true, tools, true
		}
	}
	p.mu.Unlock()
	if changed {
		p.events <- event.GenericEvent{Object: s}
	}
}

// readPins reads the pin state of every ready pod's gateway, concurrently, and merges it: a tool any
// pod reports as changed is changed. Pods that do not answer are skipped; read is false if none does.
func (r *MCPServerReconciler) readPins(ctx context.Context, s *mcpv1alpha1.MCPServer) (tools []mcpv1alpha1.ToolPin, read bool) {
	pods := &corev1.PodList{}
	// Served from the manager's cache, which holds the pods the operator's Deployments run.
	if err := r.Client.List(ctx, pods, client.InNamespace(s.Namespace), client.MatchingLabels{LabelServer: s.Name}); err != nil {
		log.FromContext(ctx).V(1).Info("list pods for pin state", "err", err.Error())
		return nil, false
	}
	var (
		mu       sync.Mutex
		wg       sync.WaitGroup
		states   []pin.State
		sem      = r.poller.sem
		deadline = ctx.Done()
	)
	for i := range pods.Items {
		pod := &pods.Items[i]
		if !podReady(pod) || !ownedByServerReplicaSet(pod, s) {
			continue
		}
		select {
		case sem <- struct{}{}:
		case <-deadline:
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			state, err := r.Pins.ReadPins(ctx, pod)
			if err != nil {
				log.FromContext(ctx).V(1).Info("pin state unavailable", "pod", pod.Name, "err", err.Error())
				return
			}
			mu.Lock()
			states = append(states, state)
			mu.Unlock()
		}()
	}
	wg.Wait()
	if len(states) == 0 {
		return nil, false
	}
	merged := map[string]mcpv1alpha1.ToolPin{}
	for _, state := range states {
		for _, t := range state.Tools {
			if prev, ok := merged[t.Name]; ok && prev.Status == string(pin.Changed) {
				continue
			}
			merged[t.Name] = mcpv1alpha1.ToolPin{Name: t.Name, Status: string(t.Status), PinnedHash: t.PinnedHash, ObservedHash: t.ObservedHash}
		}
	}
	tools = make([]mcpv1alpha1.ToolPin, 0, len(merged))
	for _, t := range merged {
		tools = append(tools, t)
	}
	sort.Slice(tools, func(i, j int) bool { return tools[i].Name < tools[j].Name })
	return tools, true
}

// pinSummary is the ToolsPinned condition for a set of tools.
func pinSummary(tools []mcpv1alpha1.ToolPin) (ok bool, msg string) {
	var changed []string
	for _, t := range tools {
		if t.Status == string(pin.Changed) {
			changed = append(changed, fmt.Sprintf("%s (observed %s, pinned %s)", t.Name, t.ObservedHash, t.PinnedHash))
		}
	}
	if len(changed) == 0 {
		return true, fmt.Sprintf("%d tool(s) match their pins", len(tools))
	}
	return false, fmt.Sprintf("tool definitions changed after they were pinned: %s. They are hidden and refused; review the new definitions and approve each by setting spec.gateway.pinnedTools.<tool> to its observed hash",
		strings.Join(changed, "; "))
}

// emitPinChanges records a warning event for each tool that newly changed.
func (r *MCPServerReconciler) emitPinChanges(before, after *mcpv1alpha1.MCPServer) {
	prev := map[string]mcpv1alpha1.ToolPin{}
	for _, t := range before.Status.Tools {
		prev[t.Name] = t
	}
	for _, t := range after.Status.Tools {
		if t.Status != string(pin.Changed) {
			continue
		}
		if p, ok := prev[t.Name]; ok && p.Status == t.Status && p.ObservedHash == t.ObservedHash {
			continue
		}
		r.Recorder.Eventf(after, nil, corev1.EventTypeWarning, ReasonToolDefinitionChanged, "PinCheck",
			"tool %s changed after it was pinned (observed %s, pinned %s); it is hidden and refused until spec.gateway.pinnedTools.%s is set to the observed hash",
			t.Name, t.ObservedHash, t.PinnedHash, t.Name)
	}
}

func podReady(p *corev1.Pod) bool {
	if p.DeletionTimestamp != nil || p.Status.Phase != corev1.PodRunning {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// ownedByServerReplicaSet reports whether the pod belongs to a ReplicaSet of the server's Deployment, so
// that another pod carrying the server's label cannot speak for it.
func ownedByServerReplicaSet(p *corev1.Pod, s *mcpv1alpha1.MCPServer) bool {
	ref := metav1.GetControllerOf(p)
	return ref != nil && ref.Kind == "ReplicaSet" && strings.HasPrefix(ref.Name, s.Name+"-")
}
