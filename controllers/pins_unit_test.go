package controllers

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/event"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
	gwconfig "github.com/mcp-warden/mcp-warden/gateway/config"
)

type countingReader struct{ reads atomic.Int32 }

func (c *countingReader) ReadStatus(context.Context, *corev1.Pod) (gwconfig.Status, error) {
	c.reads.Add(1)
	return gwconfig.Status{}, nil
}

// TestPinReadAfterAReadInFlight: a reconcile that finds a status read in flight must not be lost. The
// read in flight listed the pods before the pod was running (it saw none); the reconcile the pod's
// start caused finds it in flight and starts none; without a second read after it, the server would wait
// for the next poll (5 s while not MCP-ready) to learn of the gateway's handshake.
// pinFixture is a server with its Deployment, ReplicaSet and running pod in a fake client with the
// given interceptors.
func pinFixture(t *testing.T, funcs interceptor.Funcs) (*mcpv1alpha1.MCPServer, client.Client) {
	t.Helper()
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, appsv1.AddToScheme, mcpv1alpha1.AddToScheme} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	s := &mcpv1alpha1.MCPServer{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "files", UID: "server"}}
	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "files", UID: "dep",
		OwnerReferences: []metav1.OwnerReference{{APIVersion: mcpv1alpha1.GroupVersion.String(), Kind: "MCPServer", Name: "files", UID: "server", Controller: ptr.To(true)}}}}
	rs := &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "files-abc", UID: "rs",
		OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: "files", UID: "dep", Controller: ptr.To(true)}}}}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "files-abc-1", Labels: map[string]string{LabelServer: "files"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "files-abc", UID: "rs", Controller: ptr.To(true)}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.0.0.1"},
	}
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(s, dep, rs, pod).WithIndex(&corev1.Pod{}, podServerIndex, indexPodServer).
		WithInterceptorFuncs(funcs).Build()
	return s, c
}

// TestPollerReadsWithoutAReconcile: after a read, the poller reads the server's gateways again on its
// own cadence (here 50 ms), with no reconcile queued for it; a server forgotten, or a manager stopped,
// is read no more.
func TestPollerReadsWithoutAReconcile(t *testing.T) {
	s, c := pinFixture(t, interceptor.Funcs{})
	reader := &countingReader{}
	r := &MCPServerReconciler{Client: c, Pins: reader, poller: newPinPoller(), PinPollInterval: 50 * time.Millisecond}
	if err := r.reconcilePins(context.Background(), s, &reconcileState{}); err != nil {
		t.Fatal(err)
	}
	<-r.poller.events // the first read is new: the server is reconciled (not done here)
	waitReads := func(n int32) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for reader.reads.Load() < n {
			if time.Now().After(deadline) {
				t.Fatalf("%d status reads after 5 s without a reconcile, want %d", reader.reads.Load(), n)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitReads(4)
	select {
	case <-r.poller.events:
		t.Fatal("a read that found nothing new reconciled the server")
	default:
	}
	quiet := func(what string) {
		t.Helper()
		time.Sleep(100 * time.Millisecond) // a read in flight ends
		before := reader.reads.Load()
		time.Sleep(300 * time.Millisecond)
		if after := reader.reads.Load(); after != before {
			t.Fatalf("%d reads after %s, want none", after-before, what)
		}
	}
	r.poller.forget(client.ObjectKeyFromObject(s))
	quiet("the server was forgotten")

	// A poller whose manager stops.
	r.poller = newPinPoller()
	if err := r.reconcilePins(context.Background(), s, &reconcileState{}); err != nil {
		t.Fatal(err)
	}
	<-r.poller.events
	waitReads(reader.reads.Load() + 2)
	r.poller.stop()
	quiet("the poller stopped")
}

func TestPinReadAfterAReadInFlight(t *testing.T) {
	firstList := make(chan struct{})
	var lists atomic.Int32
	s, c := pinFixture(t, interceptor.Funcs{List: func(ctx context.Context, cl client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
		if lists.Add(1) == 1 {
			<-firstList // the first read lists what the cache held before the pod ran: nothing
			return nil
		}
		return cl.List(ctx, list, opts...)
	}})
	reader := &countingReader{}
	r := &MCPServerReconciler{Client: c, Pins: reader, poller: newPinPoller()}
	ctx := context.Background()
	if err := r.reconcilePins(ctx, s, &reconcileState{}); err != nil {
		t.Fatal(err)
	}
	// The pod now runs; its reconcile finds the first read in flight.
	if err := r.reconcilePins(ctx, s, &reconcileState{}); err != nil {
		t.Fatal(err)
	}
	close(firstList)
	select {
	case <-r.poller.events:
	case <-time.After(5 * time.Second):
		t.Fatalf("no reconcile after the pod ran: %d list(s), %d status read(s)", lists.Load(), reader.reads.Load())
	}
	if n := reader.reads.Load(); n != 1 {
		t.Fatalf("%d status reads, want 1", n)
	}
}

// TestPinReadEndsAfterTheManagerStops: a read that finds something new reports it on the channel the
// controller consumes. Once the manager has stopped nothing consumes it; a read finishing then (here
// with the channel full of reports nobody took) must end rather than block its goroutine forever.
func TestPinReadEndsAfterTheManagerStops(t *testing.T) {
	s, c := pinFixture(t, interceptor.Funcs{})
	r := &MCPServerReconciler{Client: c, Pins: &countingReader{}, poller: newPinPoller()}
	for range cap(r.poller.events) {
		r.poller.events <- event.GenericEvent{Object: s}
	}
	r.poller.mu.Lock()
	r.poller.state[client.ObjectKeyFromObject(s)] = &polledPins{server: s, inflight: true}
	r.poller.mu.Unlock()
	r.poller.stop()
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.refreshPins(context.Background(), s) // the first read is new: it reports a change
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("a pin read that found something new after the manager stopped still blocks, 5 s on, reporting it to a controller that no longer runs")
	}
	if n := len(r.poller.events); n != cap(r.poller.events) {
		t.Fatalf("%d reports queued, want the %d put there (none added or taken)", n, cap(r.poller.events))
	}
}
