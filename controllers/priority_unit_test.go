package controllers

import (
	"context"
	"fmt"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/controller/priorityqueue"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
)

// queueBehindBurst is controller-runtime's priority queue (the controller's) holding the reconciles of
// a burst of n new servers at the default priority.
func queueBehindBurst(t *testing.T, n int) priorityqueue.PriorityQueue[reconcile.Request] {
	t.Helper()
	q := priorityqueue.New[reconcile.Request]("test")
	t.Cleanup(q.ShutDown)
	for i := range n {
		q.Add(reconcile.Request{NamespacedName: types.NamespacedName{Namespace: "ns", Name: fmt.Sprintf("new-%03d", i)}})
	}
	return q
}

// serverDeployment is the Deployment of server name with available replicas (and as resourceVersion,
// so that each update is one: controller-runtime lowers the priority of a resync's).
func serverDeployment(name string, available int32) *appsv1.Deployment {
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, Generation: 1, ResourceVersion: fmt.Sprint(available), OwnerReferences: []metav1.OwnerReference{{
			APIVersion: mcpv1alpha1.GroupVersion.String(), Kind: "MCPServer", Name: name, UID: "server", Controller: ptr.To(true)}}},
		Spec:   appsv1.DeploymentSpec{Replicas: ptr.To(int32(1))},
		Status: appsv1.DeploymentStatus{ObservedGeneration: 1, Replicas: 1, UpdatedReplicas: 1, ReadyReplicas: available, AvailableReplicas: available},
	}
}

// owns stands in for Owns' handler: the controlling server, at the default priority.
var owns = handler.Funcs{UpdateFunc: func(_ context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	if key, ok := controllingServer(e.ObjectNew); ok {
		q.Add(reconcile.Request{NamespacedName: key})
	}
}}

// TestRolloutCompletionRunsAheadOfTheBurst: a server whose Deployment has just rolled out is reconciled
// (and reported Ready) before the queued reconciles of a burst of new servers; a Deployment update that
// does not complete a rollout waits its turn, and a requeue never inherits the priority.
func TestRolloutCompletionRunsAheadOfTheBurst(t *testing.T) {
	q := queueBehindBurst(t, 200)
	h := deploymentEvents(owns, newPinPoller().rolloutMayJump)
	ctx := context.Background()
	// Still rolling out (a progress update), then done.
	h.Update(ctx, event.UpdateEvent{ObjectOld: serverDeployment("progress", 0), ObjectNew: func() *appsv1.Deployment {
		d := serverDeployment("progress", 0)
		d.Status.UpdatedReplicas, d.ResourceVersion = 1, "new"
		return d
	}()}, q)
	h.Update(ctx, event.UpdateEvent{ObjectOld: serverDeployment("ready", 0), ObjectNew: serverDeployment("ready", 1)}, q)
	got, priority, _ := q.GetWithPriority()
	if got.Name != "ready" || priority != statusPriority {
		t.Fatalf("first reconcile %s at priority %d, want ready at %d (ahead of the burst of 200)", got.Name, priority, statusPriority)
	}
	for range 200 {
		if next, _, _ := q.GetWithPriority(); next.Name == "progress" {
			t.Fatal("a progress update of a rollout ran ahead of the burst")
		}
	}
	if next, p, _ := q.GetWithPriority(); next.Name != "progress" || p != defaultPriority {
		t.Fatalf("after the burst: %s at priority %d, want progress at %d", next.Name, p, defaultPriority)
	}
	// A Deployment not controlled by an MCPServer enqueues nothing ahead.
	foreign := serverDeployment("foreign", 1)
	foreign.OwnerReferences[0].Kind = "ReplicaSet"
	h.Update(ctx, event.UpdateEvent{ObjectOld: serverDeployment("foreign", 0), ObjectNew: foreign}, q)
	if q.Len() != 0 {
		t.Fatalf("%d reconciles queued for a Deployment no MCPServer controls", q.Len())
	}
}

// TestFirstGatewayReportRunsAheadOnce: the reconcile of a server's first gateway report runs ahead of a
// burst; the report after it (a tool changed, say) waits its turn.
func TestFirstGatewayReportRunsAheadOnce(t *testing.T) {
	q := queueBehindBurst(t, 50)
	r := &MCPServerReconciler{poller: newPinPoller()}
	key := types.NamespacedName{Namespace: "ns", Name: "files"}
	r.poller.state[key] = &polledPins{urgent: true}
	report := event.GenericEvent{Object: &mcpv1alpha1.MCPServer{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name}}}
	r.pinEvents().Generic(context.Background(), report, q)
	if got, p, _ := q.GetWithPriority(); got.NamespacedName != key || p != statusPriority {
		t.Fatalf("first reconcile %s at priority %d, want %s at %d", got.Name, p, key, statusPriority)
	}
	q.Done(reconcile.Request{NamespacedName: key})
	r.pinEvents().Generic(context.Background(), report, q)
	if got, _, _ := q.GetWithPriority(); got.NamespacedName == key {
		t.Fatal("a second report ran ahead of the burst: its urgency was not taken by the first")
	}
}

// TestFlappingRolloutDoesNotStayAhead is the attacker's test (a tenant whose server's availability
// flaps, its MCP handshake failing and recovering in a loop): its first rollout completion runs ahead
// of a burst, the next one within urgentEvery waits its turn.
func TestFlappingRolloutDoesNotStayAhead(t *testing.T) {
	q := queueBehindBurst(t, 50)
	p := newPinPoller()
	key := types.NamespacedName{Namespace: "ns", Name: "flapping"}
	p.state[key] = &polledPins{}
	h := deploymentEvents(owns, p.rolloutMayJump)
	ctx := context.Background()
	recovered := event.UpdateEvent{ObjectOld: serverDeployment(key.Name, 0), ObjectNew: serverDeployment(key.Name, 1)}
	h.Update(ctx, recovered, q)
	if got, prio, _ := q.GetWithPriority(); got.NamespacedName != key || prio != statusPriority {
		t.Fatalf("first reconcile %s at priority %d, want %s at %d", got.Name, prio, key, statusPriority)
	}
	q.Done(reconcile.Request{NamespacedName: key})
	h.Update(ctx, recovered, q)
	if got, prio, _ := q.GetWithPriority(); got.NamespacedName == key || prio == statusPriority {
		t.Fatalf("the flapping server's second recovery ran ahead of the burst (%s at priority %d)", got.Name, prio)
	}
}

// TestRolloutAndFirstReportBothRunAhead: a new server's rollout completion and its gateways' first
// report arrive within a second of each other, in either order, and the reconcile of the first cannot
// yet report Ready (the cache lags the other event). Both run ahead of a burst: when they shared one
// turn, the second waited behind every new server's reconcile (Available -> Ready p50 37 s at 500).
func TestRolloutAndFirstReportBothRunAhead(t *testing.T) {
	ctx := context.Background()
	key := types.NamespacedName{Namespace: "ns", Name: "files"}
	rollout := event.UpdateEvent{ObjectOld: serverDeployment(key.Name, 0), ObjectNew: serverDeployment(key.Name, 1)}
	report := event.GenericEvent{Object: &mcpv1alpha1.MCPServer{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name}}}
	first := func(q priorityqueue.PriorityQueue[reconcile.Request], what string) {
		t.Helper()
		if got, p, _ := q.GetWithPriority(); got.NamespacedName != key || p != statusPriority {
			t.Fatalf("%s: first reconcile %s at priority %d, want %s at %d", what, got.Name, p, key, statusPriority)
		}
		q.Done(reconcile.Request{NamespacedName: key})
	}

	// The report first, then the rollout.
	q := queueBehindBurst(t, 50)
	r := &MCPServerReconciler{poller: newPinPoller()}
	r.poller.state[key] = &polledPins{}
	r.poller.state[key].takeReportTurn(true)
	r.pinEvents().Generic(ctx, report, q)
	first(q, "report")
	deploymentEvents(owns, r.poller.rolloutMayJump).Update(ctx, rollout, q)
	first(q, "rollout after the report")

	// The rollout first, then the report.
	q = queueBehindBurst(t, 50)
	r = &MCPServerReconciler{poller: newPinPoller()}
	r.poller.state[key] = &polledPins{}
	deploymentEvents(owns, r.poller.rolloutMayJump).Update(ctx, rollout, q)
	first(q, "rollout")
	r.poller.state[key].takeReportTurn(true)
	r.pinEvents().Generic(ctx, report, q)
	first(q, "report after the rollout")

	// Each kind still has one turn per urgentEvery: a second report (a flapping handshake) waits.
	r.poller.state[key].takeReportTurn(true)
	r.pinEvents().Generic(ctx, report, q)
	if got, _, _ := q.GetWithPriority(); got.NamespacedName == key {
		t.Fatal("a flapping handshake's second report ran ahead of the burst")
	}
}
