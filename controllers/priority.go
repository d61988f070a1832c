package controllers

import (
	"context"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/priorityqueue"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
)

// Reconciles that take a server's status forward (its Deployment has just rolled out, its gateways
// have just reported their first status or a changed MCP handshake) run ahead of the others: a burst
// of new servers queues one reconcile per server and per child event, and a server whose pods already
// run would otherwise wait behind all of them to be reported Ready. Every other reconcile, and every
// requeue (the pin poll, a retry), has the default priority, so a server's status cannot keep itself
// ahead of the queue.
const (
	// statusPriority is the workqueue priority of such a reconcile (the default is 0).
	statusPriority = 10
	// defaultPriority is the priority every requeue of a reconcile is given.
	defaultPriority = 0
	// urgentEvery bounds how often the gateways' reports move one server ahead of the queue: a server
	// whose handshake flaps (its MCP server answers, then not) is reconciled at the default priority
	// in between.
	urgentEvery = 30 * time.Second
)

// enqueue adds the request, ahead of the default priority when urgent and the queue has priorities.
func enqueue(q workqueue.TypedRateLimitingInterface[reconcile.Request], req reconcile.Request, urgent bool) {
	if pq, ok := q.(priorityqueue.PriorityQueue[reconcile.Request]); ok && urgent {
		pq.AddWithOpts(priorityqueue.AddOpts{Priority: ptr.To(statusPriority)}, req)
		return
	}
	q.Add(req)
}

// pinEvents enqueues the servers whose gateways reported something new (a read in refreshPins), ahead
// of the queue when the read was the server's first or changed whether its MCP handshake completed.
func (r *MCPServerReconciler) pinEvents() handler.EventHandler {
	return handler.Funcs{GenericFunc: func(_ context.Context, e event.GenericEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
		key := client.ObjectKeyFromObject(e.Object)
		enqueue(q, reconcile.Request{NamespacedName: key}, r.poller.takeUrgent(key))
	}}
}

// deploymentEvents enqueues the MCPServer that controls a Deployment on each of its events, as Owns
// does, and ahead of the queue when an update finds it newly rolled out with every replica available
// and mayJump allows it for the server (at most every urgentEvery: a server whose availability flaps
// does not keep itself ahead of the others): the server's next status is Ready (or waits only for its
// gateways' report).
func deploymentEvents(owner handler.EventHandler, mayJump func(types.NamespacedName) bool) handler.EventHandler {
	return handler.Funcs{
		CreateFunc:  owner.Create,
		DeleteFunc:  owner.Delete,
		GenericFunc: owner.Generic,
		UpdateFunc: func(ctx context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			old, okOld := e.ObjectOld.(*appsv1.Deployment)
			cur, okNew := e.ObjectNew.(*appsv1.Deployment)
			if okOld && okNew {
				if key, ok := controllingServer(cur); ok {
					wasOut, _ := rolledOut(old)
					if isOut, _ := rolledOut(cur); isOut && !wasOut && mayJump(key) {
						enqueue(q, reconcile.Request{NamespacedName: key}, true)
						return
					}
				}
			}
			owner.Update(ctx, e, q)
		},
	}
}

// controllingServer is the MCPServer that controls the object (by its controller reference).
func controllingServer(o client.Object) (types.NamespacedName, bool) {
	ref := metav1.GetControllerOf(o)
	if ref == nil || ref.Kind != "MCPServer" || ref.APIVersion != mcpv1alpha1.GroupVersion.String() {
		return types.NamespacedName{}, false
	}
	return types.NamespacedName{Namespace: o.GetNamespace(), Name: ref.Name}, true
}
