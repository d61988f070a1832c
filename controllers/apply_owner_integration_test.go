package controllers_test

import (
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
	"github.com/mcp-warden/mcp-warden/controllers"
	"github.com/mcp-warden/mcp-warden/controllers/desired"
)

// TestApplyRefusesAnObjectItsServerDoesNotControl: the reconciler applies only objects that already
// name their MCPServer as controller (the builders set it); one without a controller reference, or
// naming another controller, is refused before anything reaches the API server, so a builder that
// forgot the reference cannot leave an orphan nor a child another owner's garbage collection takes.
func TestApplyRefusesAnObjectItsServerDoesNotControl(t *testing.T) {
	ctx := context.Background()
	ns := restrictedNamespace(t)
	s := newServer(ns, "owned")
	if err := k8s.Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	cm := func(meta metav1.ObjectMeta) *corev1.ConfigMap {
		meta.Name = "owned-probe"
		return &corev1.ConfigMap{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"}, ObjectMeta: meta, Data: map[string]string{"k": "v"}}
	}
	key := client.ObjectKey{Namespace: ns, Name: "owned-probe"}
	unowned := desired.ObjectMeta(s)
	unowned.OwnerReferences = nil
	foreign := desired.ObjectMeta(s)
	foreign.OwnerReferences = []metav1.OwnerReference{{APIVersion: mcpv1alpha1.GroupVersion.String(), Kind: "MCPServer", Name: "other",
		UID: types.UID("7f1d2c3b-0000-4000-8000-000000000001"), Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)}}
	for name, meta := range map[string]metav1.ObjectMeta{"no controller reference": unowned, "another server's reference": foreign} {
		err := controllers.ApplyChild(ctx, k8s, s, cm(meta), &corev1.ConfigMap{})
		if err == nil || !strings.Contains(err.Error(), "as its controller") || !strings.Contains(err.Error(), "package desired") {
			t.Errorf("%s: apply returned %v, want a refusal naming the missing controller reference", name, err)
		}
		if err := k8s.Get(ctx, key, &corev1.ConfigMap{}); !apierrors.IsNotFound(err) {
			t.Errorf("%s: the refused object reached the API server (get: %v)", name, err)
		}
	}
	live := &corev1.ConfigMap{}
	if err := controllers.ApplyChild(ctx, k8s, s, cm(desired.ObjectMeta(s)), live); err != nil {
		t.Fatalf("an object built with the server's controller reference: %v", err)
	}
	if !metav1.IsControlledBy(live, s) {
		t.Fatalf("applied ConfigMap owner references %+v, want the server's", live.OwnerReferences)
	}
}
