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
func TestPinReadAfterAReadInFlight(t *testing.T) {
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
	firstList := make(chan struct{})
	var lists atomic.Int32
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(s, dep, rs, pod).WithIndex(&corev1.Pod{}, podServerIndex, indexPodServer).
		WithInterceptorFuncs(interceptor.Funcs{List: func(ctx context.Context, cl client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
			if lists.Add(1) == 1 {
				<-firstList // the first read lists what the cache held before the pod ran: nothing
				return nil
			}
			return cl.List(ctx, list, opts...)
		}}).Build()
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
