package controllers

import (
	"crypto/sha256"
	"encoding/json"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
)

// statusWrites remembers each server's last status write: the resourceVersion it was made from and
// what it wrote. The cache delivers the written status a moment later; a reconcile in between reads
// the server as it was before the write and would otherwise write the same status again.
type statusWrites struct {
	mu   sync.Mutex
	last map[types.NamespacedName]statusWrite
}

type statusWrite struct {
	from string
	hash [32]byte
	at   time.Time
}

// DefaultProgressInterval is how long a rollout's progress message may trail by default.
const DefaultProgressInterval = 10 * time.Second

func (r *MCPServerReconciler) progressInterval() time.Duration {
	if r.ProgressInterval > 0 {
		return r.ProgressInterval
	}
	return DefaultProgressInterval
}

// progressDue returns how long until a progress-only change of the server's status may be written
// (0: now): interval after the operator's last status write of it.
func (w *statusWrites) progressDue(base *mcpv1alpha1.MCPServer, interval time.Duration) time.Duration {
	w.mu.Lock()
	last, ok := w.last[types.NamespacedName{Namespace: base.Namespace, Name: base.Name}]
	w.mu.Unlock()
	if !ok {
		return 0
	}
	return max(0, interval-time.Since(last.at))
}

// progressOnly reports whether now differs from base only in the messages of the Ready and
// Reconciling conditions, both Progressing before and after, for the same generation, and in what the
// gateways reported while their pods roll out with every tool matching its pin (status.tools,
// serverInfo, toolCount, ToolsPinned=True): that report arrives a moment before the rollout completes,
// and written on its own it costs each new server a status write of its own just before its Ready. A
// tool that no longer matches its pin (ToolsPinned=False) is never held.
func progressOnly(base, now *mcpv1alpha1.MCPServerStatus) bool {
	c := now.DeepCopy()
	for _, t := range []string{mcpv1alpha1.ConditionReady, mcpv1alpha1.ConditionReconciling} {
		was, cur := meta.FindStatusCondition(base.Conditions, t), meta.FindStatusCondition(c.Conditions, t)
		if was == nil || cur == nil || cur.Reason != ReasonProgressing || was.Reason != cur.Reason || was.Status != cur.Status || was.ObservedGeneration != cur.ObservedGeneration {
			return false
		}
		cur.Message = was.Message
	}
	if pinned := meta.FindStatusCondition(c.Conditions, mcpv1alpha1.ConditionToolsPinned); pinned != nil && pinned.Status == metav1.ConditionTrue {
		switch was := meta.FindStatusCondition(base.Conditions, mcpv1alpha1.ConditionToolsPinned); {
		case was == nil:
			meta.RemoveStatusCondition(&c.Conditions, mcpv1alpha1.ConditionToolsPinned)
		case was.Status == metav1.ConditionTrue:
			*pinned = *was
		}
		c.Tools, c.ServerInfo, c.ToolCount = base.Tools, base.ServerInfo, base.ToolCount
	}
	return equality.Semantic.DeepEqual(*base, *c)
}

// inFlight reports whether status is what the operator last wrote from base's resourceVersion, so the
// write only has yet to reach the cache. Anyone else's write since changes base's resourceVersion.
func (w *statusWrites) inFlight(base *mcpv1alpha1.MCPServer, status *mcpv1alpha1.MCPServerStatus) bool {
	w.mu.Lock()
	last, ok := w.last[types.NamespacedName{Namespace: base.Namespace, Name: base.Name}]
	w.mu.Unlock()
	return ok && last.from == base.ResourceVersion && last.hash == statusHash(status)
}

// wrote records a status write made from base's resourceVersion.
func (w *statusWrites) wrote(base *mcpv1alpha1.MCPServer, status *mcpv1alpha1.MCPServerStatus) {
	h := statusHash(status)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.last == nil {
		w.last = map[types.NamespacedName]statusWrite{}
	}
	w.last[types.NamespacedName{Namespace: base.Namespace, Name: base.Name}] = statusWrite{from: base.ResourceVersion, hash: h, at: time.Now()}
}

func (w *statusWrites) forget(key types.NamespacedName) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.last, key)
}

// statusHash hashes a status without its conditions' transition times, which a reconcile that reads
// the pre-write status stamps anew.
func statusHash(status *mcpv1alpha1.MCPServerStatus) [32]byte {
	c := status.DeepCopy()
	for i := range c.Conditions {
		c.Conditions[i].LastTransitionTime = metav1.Time{}
	}
	body, err := json.Marshal(c)
	if err != nil {
		return [32]byte{}
	}
	return sha256.Sum256(body)
}
