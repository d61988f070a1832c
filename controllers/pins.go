package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"reflect"
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
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/log"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
	gwconfig "github.com/mcp-warden/mcp-warden/gateway/config"
	"github.com/mcp-warden/mcp-warden/gateway/pin"
	"github.com/mcp-warden/mcp-warden/policy/gatewayconfig"
)

const (
	// StatusPort is where every server pod's gateway serves its status (the pin state) to the operator;
	// the NetworkPolicy opens it to the operator's pods alone.
	StatusPort = gatewayconfig.StatusPort
	// DefaultPinPollInterval is how often the operator reads each server's pin state.
	DefaultPinPollInterval = 30 * time.Second
	// ReasonToolDefinitionChanged is the ToolsPinned reason (and event reason) when a tool changed after
	// it was pinned.
	ReasonToolDefinitionChanged = "ToolDefinitionChanged"
	// ReasonToolsMatchPins is the ToolsPinned reason when every tool matches its pin.
	ReasonToolsMatchPins = "ToolsMatchPins"
)

// StatusReader reads what a server pod's gateway reports on its status port: the pin state of the
// server's tools and the outcome of the gateway's MCP handshake with the server.
type StatusReader interface {
	ReadStatus(ctx context.Context, pod *corev1.Pod) (gwconfig.Status, error)
}

// HTTPStatusReader reads GET http://<pod IP>:8444/status under a deadline.
type HTTPStatusReader struct {
	// Client makes the requests (default: no proxy, 2 s connect and header deadlines).
	Client *http.Client
	// Timeout bounds one read (default 3 s).
	Timeout time.Duration
}

// ReadStatus implements StatusReader.
func (h *HTTPStatusReader) ReadStatus(ctx context.Context, pod *corev1.Pod) (gwconfig.Status, error) {
	var st gwconfig.Status
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
	url := "http://" + net.JoinHostPort(pod.Status.PodIP, strconv.Itoa(StatusPort)) + "/status"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return st, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return st, fmt.Errorf("read the gateway status of pod %s: %w", pod.Name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("read the gateway status of pod %s: HTTP %d", pod.Name, resp.StatusCode)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&st); err != nil {
		return st, fmt.Errorf("read the gateway status of pod %s: %w", pod.Name, err)
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

// DefaultPinBudget bounds one server's status read (all its pods, read concurrently).
const DefaultPinBudget = 5 * time.Second

// pinPoller reads the gateways' status (pin state, MCP handshake) off the reconcile path: a reconcile
// reports the last state read and starts a new read if none is in flight; when a read finds something
// new, the server is reconciled again. A pod whose status port accepts and never answers costs its
// server at most the budget, and costs the servers of other namespaces nothing: reads are shared out
// by namespace (readSlots).
//
// The poller keeps each server's cadence itself: once a read has found nothing new, the next read of
// the server is due after the poll interval (sooner while its gateways have not completed an MCP
// handshake), without a reconcile. A reconcile queued only to poll would wait behind a burst of new
// servers and hold a worker they need; a read that finds something new reconciles the server.
type pinPoller struct {
	mu     sync.Mutex
	state  map[types.NamespacedName]*polledPins
	slots  *readSlots
	events chan event.GenericEvent
	// stopped is set when the manager stops: no further read is scheduled; done is closed then, so a
	// read that ends afterwards does not wait on events, which nothing consumes any more.
	stopped bool
	done    chan struct{}
}

// rolloutMayJump reports whether the server's rollout completion may run ahead of the queue, and takes
// the server's turn for rollouts (at most one every urgentEvery). Rollouts and gateway reports have a
// turn each: a new server's rollout completing and its gateways' first report arrive within a second
// of each other, in either order, and whichever runs first cannot yet report Ready; were the turn
// shared, the other would wait behind the whole burst.
func (p *pinPoller) rolloutMayJump(key types.NamespacedName) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	cur, ok := p.state[key]
	if !ok {
		return true // not reconciled yet since the operator started: its first turn
	}
	if time.Since(cur.rolloutAt) < urgentEvery {
		return false
	}
	cur.rolloutAt = time.Now()
	return true
}

// takeReportTurn marks the server's reconcile urgent when a read reported its first status or a change
// of whether its handshake completed (firstOrFlip), at most every urgentEvery.
func (cur *polledPins) takeReportTurn(firstOrFlip bool) {
	if firstOrFlip && time.Since(cur.urgentAt) >= urgentEvery {
		cur.urgent, cur.urgentAt = true, time.Now()
	}
}

// takeUrgent reports whether the server's last reported read is to be reconciled ahead of the queue
// (see pinEvents), and clears it.
func (p *pinPoller) takeUrgent(key types.NamespacedName) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	cur, ok := p.state[key]
	if !ok || !cur.urgent {
		return false
	}
	cur.urgent = false
	return true
}

type polledPins struct {
	// server is the server as a read needs it (name and UID), from its last reconcile.
	server   *mcpv1alpha1.MCPServer
	read     bool
	tools    []mcpv1alpha1.ToolPin
	mcp      mcpState
	inflight bool
	// again is set by a reconcile that found a read in flight: that read may have listed the pods
	// before the change that caused the reconcile (a pod now running), so another read follows it.
	again bool
	// urgent is set when a read reported the server's first status or a change of whether its
	// handshake completed, at most every urgentEvery (urgentAt): its reconcile runs ahead of the queue.
	urgent   bool
	urgentAt time.Time
	// rolloutAt is when the server's Deployment last completed a rollout ahead of the queue.
	rolloutAt time.Time
	// next is the server's next scheduled read, and pollGen the number of reads scheduled so far (a
	// timer that is no longer the latest does nothing when it fires).
	next    *time.Timer
	pollGen uint64
}

// mcpState merges the gateways' MCP handshakes with the server: ready when every gateway that answered
// completed one; otherwise the first failing pod's (by name) error.
type mcpState struct {
	ready     bool
	info      *mcpv1alpha1.ServerInfo
	toolCount int32
	// failedPod and failure describe a gateway whose handshake failed; overdue is set once it has failed
	// for longer than MCPGrace (a server still starting is not yet a server that does not speak MCP).
	failedPod, failure string
	overdue            bool
}

// DefaultMCPGrace is how long a gateway's handshake with its server may fail before the server is
// reported as not speaking MCP (until then it is starting).
const DefaultMCPGrace = 15 * time.Second

func newPinPoller() *pinPoller {
	return &pinPoller{state: map[types.NamespacedName]*polledPins{}, slots: newReadSlots(maxPinReads, maxPinReadsPerNamespace), events: make(chan event.GenericEvent, 1024), done: make(chan struct{})}
}

// report queues a reconcile of the server (a read found something new): it waits while the controller
// is behind, and not at all once the manager has stopped.
func (p *pinPoller) report(s *mcpv1alpha1.MCPServer) {
	select {
	case p.events <- event.GenericEvent{Object: s}:
	case <-p.done:
	}
}

func (p *pinPoller) forget(key types.NamespacedName) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if cur, ok := p.state[key]; ok && cur.next != nil {
		cur.next.Stop()
	}
	delete(p.state, key)
}

// stop cancels every scheduled read and schedules no more (the manager is stopping).
func (p *pinPoller) stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.stopped {
		close(p.done)
	}
	p.stopped = true
	for _, cur := range p.state {
		if cur.next != nil {
			cur.next.Stop()
			cur.next = nil
		}
	}
}

// pollInterval is how long after a read that found nothing new the server is read again: the poll
// interval, at most 5 s while its gateways have not completed an MCP handshake.
func (r *MCPServerReconciler) pollInterval(mcpReady bool) time.Duration {
	interval := r.PinPollInterval
	if interval == 0 {
		interval = DefaultPinPollInterval
	}
	if !mcpReady {
		interval = min(interval, 5*time.Second)
	}
	return interval
}

// scheduleLocked makes the server's next read due after interval, replacing any read scheduled before.
func (r *MCPServerReconciler) scheduleLocked(ctx context.Context, key types.NamespacedName, cur *polledPins, interval time.Duration) {
	p := r.poller
	if p.stopped {
		return
	}
	if cur.next != nil {
		cur.next.Stop()
	}
	cur.pollGen++
	gen := cur.pollGen
	cur.next = time.AfterFunc(interval, func() {
		p.mu.Lock()
		now, ok := p.state[key]
		if !ok || now != cur || cur.pollGen != gen || p.stopped {
			p.mu.Unlock()
			return
		}
		cur.next = nil
		server := cur.server
		start := server != nil && p.startLocked(cur)
		p.mu.Unlock()
		if start {
			r.refreshPins(ctx, server)
		}
	})
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
	// What a read needs of the server: its name, and its UID, which its pods' owner chain must lead to.
	server := &mcpv1alpha1.MCPServer{ObjectMeta: metav1.ObjectMeta{Namespace: s.Namespace, Name: s.Name, UID: s.UID}}
	cur.server = server
	st.pinsRead, st.tools, st.mcp = cur.read, slices.Clone(cur.tools), cur.mcp
	start := p.startLocked(cur)
	p.mu.Unlock()
	if start {
		// The read outlives the reconcile that starts it: the context keeps its values (the logger), not
		// its cancellation.
		go r.refreshPins(context.WithoutCancel(ctx), server)
	}
	return nil
}

// startLocked marks a read of the server as wanted: true when none is in flight (the caller starts
// it); otherwise the read in flight is followed by another.
func (p *pinPoller) startLocked(cur *polledPins) bool {
	start := !cur.inflight
	cur.inflight = true
	cur.again = !start
	return start
}

// podStarted reads the gateway status of the pod's server as soon as a pod of it runs or turns ready
// (rather than on the reconcile its Deployment's status causes later, behind the queue), so that the
// server's Ready can follow its rollout at once. Only servers reconciled since the operator started are
// read (their UID is known); which pods are read is still decided by their owner chain (readStatus).
func (r *MCPServerReconciler) podStarted(ctx context.Context, old, pod *corev1.Pod) {
	name := pod.Labels[LabelServer]
	if name == "" || !podRunning(pod) || (old != nil && podRunning(old) && podReady(old) == podReady(pod)) {
		return
	}
	p := r.poller
	p.mu.Lock()
	cur, ok := p.state[types.NamespacedName{Namespace: pod.Namespace, Name: name}]
	var server *mcpv1alpha1.MCPServer
	if ok {
		server = cur.server
	}
	start := server != nil && p.startLocked(cur)
	p.mu.Unlock()
	if start {
		go r.refreshPins(ctx, server)
	}
}

// podReady reports whether the pod's Ready condition is True.
func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// podEvents calls podStarted on the pod cache's events.
func (r *MCPServerReconciler) podEvents(ctx context.Context) toolscache.ResourceEventHandler {
	return toolscache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			if pod, ok := obj.(*corev1.Pod); ok {
				r.podStarted(ctx, nil, pod)
			}
		},
		UpdateFunc: func(oldObj, newObj any) {
			old, ok1 := oldObj.(*corev1.Pod)
			pod, ok2 := newObj.(*corev1.Pod)
			if ok1 && ok2 {
				r.podStarted(ctx, old, pod)
			}
		},
	}
}

// refreshPins reads the server's pin state under the budget and requeues the server if it changed.
func (r *MCPServerReconciler) refreshPins(ctx context.Context, s *mcpv1alpha1.MCPServer) {
	budget := r.PinBudget
	if budget == 0 {
		budget = DefaultPinBudget
	}
	key := client.ObjectKeyFromObject(s)
	p := r.poller
	for {
		rctx, cancel := context.WithTimeout(ctx, budget)
		tools, mcp, read := r.readStatus(rctx, s)
		cancel()
		p.mu.Lock()
		cur, ok := p.state[key]
		// A server deleted and created again under the name while the read ran is not the one read.
		ok = ok && cur.server != nil && cur.server.UID == s.UID
		changed, again := false, false
		if ok {
			if read && (!cur.read || !equality.Semantic.DeepEqual(cur.tools, tools) || !reflect.DeepEqual(cur.mcp, mcp)) {
				cur.takeReportTurn(!cur.read || cur.mcp.ready != mcp.ready)
				cur.read, cur.tools, cur.mcp, changed = true, tools, mcp, true
			}
			// A change is reported by reconciling the server, which reads again itself.
			again = cur.again && !changed
			cur.again = false
			cur.inflight = again
			if !again {
				// A change also reconciles the server, whose read then schedules the next one; should
				// that reconcile not read (a stall), the poll still goes on.
				r.scheduleLocked(ctx, key, cur, r.pollInterval(cur.mcp.ready))
			}
		}
		p.mu.Unlock()
		if changed {
			p.report(s)
		}
		if !again {
			return
		}
	}
}

// readStatus reads the status of every running gateway pod of the server (ready or not: a gateway whose
// server does not speak MCP keeps its pod unready; its owner chain leads to this MCPServer, see
// gatewayPodOf), concurrently, and merges it: a tool any pod reports as changed
// is changed, and the handshake is as mergeMCP says. Pods that do not answer are skipped; read is false
// if none does.
func (r *MCPServerReconciler) readStatus(ctx context.Context, s *mcpv1alpha1.MCPServer) (tools []mcpv1alpha1.ToolPin, mcp mcpState, read bool) {
	pods := &corev1.PodList{}
	// Served from the manager's cache, which holds the pods the operator's Deployments run, through its
	// index of them by server (a label selector would scan every pod of the namespace).
	if err := r.Client.List(ctx, pods, client.InNamespace(s.Namespace), client.MatchingFields{podServerIndex: s.Name}); err != nil {
		log.FromContext(ctx).V(1).Info("list pods for the gateway status", "err", err.Error())
		return nil, mcp, false
	}
	var (
		mu     sync.Mutex
		wg     sync.WaitGroup
		states []podStatus
		slots  = r.poller.slots
	)
	for i := range pods.Items {
		pod := &pods.Items[i]
		if !podRunning(pod) || !r.gatewayPodOf(ctx, pod, s) {
			continue
		}
		if !slots.acquire(ctx, s.Namespace) {
			break // out of budget
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer slots.release(s.Namespace)
			state, err := r.Pins.ReadStatus(ctx, pod)
			if err != nil {
				log.FromContext(ctx).V(1).Info("gateway status unavailable", "pod", pod.Name, "err", err.Error())
				return
			}
			mu.Lock()
			states = append(states, podStatus{pod: pod.Name, Status: state})
			mu.Unlock()
		}()
	}
	wg.Wait()
	if len(states) == 0 {
		return nil, mcp, false
	}
	sort.Slice(states, func(i, j int) bool { return states[i].pod < states[j].pod })
	merged := map[string]mcpv1alpha1.ToolPin{}
	for _, state := range states {
		for _, t := range state.Pins.Tools {
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
	return tools, r.mergeMCP(states), true
}

type podStatus struct {
	pod string
	gwconfig.Status
}

// mergeMCP merges the gateways' handshakes (states sorted by pod): ready when all completed one, the
// server described by the first; otherwise the first pod whose handshake failed.
func (r *MCPServerReconciler) mergeMCP(states []podStatus) mcpState {
	grace := r.grace()
	var m mcpState
	for _, st := range states {
		u := st.Upstream
		if !u.Initialized {
			return mcpState{failedPod: st.pod, failure: u.Error, overdue: time.Duration(u.FailingSeconds)*time.Second >= grace}
		}
		if m.info == nil {
			m = mcpState{ready: true, toolCount: int32(min(u.ToolCount, 1<<20)), //nolint:gosec // G115: bounded by the min
				info: &mcpv1alpha1.ServerInfo{Name: cut(u.ServerName), Version: cut(u.ServerVersion), ProtocolVersion: cut(u.ProtocolVersion)}}
		}
	}
	return m
}

// cut bounds a server-provided string for the status (the CRD allows 256).
func cut(s string) string {
	if len(s) > 128 {
		return strings.ToValidUTF8(s[:128], "")
	}
	return s
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

// podRunning reports whether the pod runs (its gateway can answer) and is not being deleted.
func podRunning(p *corev1.Pod) bool {
	return p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning && p.Status.PodIP != ""
}

// gatewayPodOf reports whether the pod is a gateway pod of the server by its owner chain (pod ->
// ReplicaSet -> Deployment -> MCPServer, each the controller of the next by UID), read from the
// manager's cache (it holds the operator's Deployments and their ReplicaSets' metadata), so that a
// ReplicaSet or pod a tenant makes with the server's name or labels cannot speak for it.
func (r *MCPServerReconciler) gatewayPodOf(ctx context.Context, pod *corev1.Pod, s *mcpv1alpha1.MCPServer) bool {
	chain := ownerChain{replicaSets: r.Client, deployments: r.Client, servers: r.Client}
	owner, why, err := chain.serverOf(ctx, pod)
	if err != nil || why != "" || owner.UID != s.UID {
		if why == "" && err == nil {
			why = fmt.Sprintf("its MCPServer %s (uid %s) is not the one read (uid %s)", owner.Name, owner.UID, s.UID)
		}
		log.FromContext(ctx).V(1).Info("not reading the gateway status of a pod that is not the server's", "pod", pod.Name, "why", why, "err", err)
		return false
	}
	return true
}
