package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
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

// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list

// reconcilePins reads the pin state of every ready pod's gateway and merges it into st.tools: a tool
// any pod reports as changed is changed. Pods that do not answer are skipped; if none answers, the
// status keeps what it had.
func (r *MCPServerReconciler) reconcilePins(ctx context.Context, s *mcpv1alpha1.MCPServer, st *reconcileState) error {
	if r.Pins == nil {
		return nil
	}
	pods := &corev1.PodList{}
	// ResourceVersion "0" is served from the API server's watch cache.
	if err := r.APIReader.List(ctx, pods, client.InNamespace(s.Namespace), client.MatchingLabels{LabelServer: s.Name},
		&client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: "0"}}); err != nil {
		return fmt.Errorf("list pods: %w", err)
	}
	merged := map[string]mcpv1alpha1.ToolPin{}
	answered := 0
	for i := range pods.Items {
		p := &pods.Items[i]
		if !podReady(p) || !ownedByServerReplicaSet(p, s) {
			continue
		}
		state, err := r.Pins.ReadPins(ctx, p)
		if err != nil {
			log.FromContext(ctx).V(1).Info("pin state unavailable", "pod", p.Name, "err", err.Error())
			continue
		}
		answered++
		for _, t := range state.Tools {
			if prev, ok := merged[t.Name]; ok && prev.Status == string(pin.Changed) {
				continue
			}
			merged[t.Name] = mcpv1alpha1.ToolPin{Name: t.Name, Status: string(t.Status), PinnedHash: t.PinnedHash, ObservedHash: t.ObservedHash}
		}
	}
	if answered == 0 {
		return nil
	}
	st.pinsRead = true
	st.tools = make([]mcpv1alpha1.ToolPin, 0, len(merged))
	for _, t := range merged {
		st.tools = append(st.tools, t)
	}
	sort.Slice(st.tools, func(i, j int) bool { return st.tools[i].Name < st.tools[j].Name })
	return nil
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
