package controllers_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
	"github.com/mcp-warden/mcp-warden/controllers"
	"github.com/mcp-warden/mcp-warden/controllers/desired"
)

// serverContainerEnv is the names of the server container's variables in d.
func serverContainerEnv(d *appsv1.Deployment) map[string]bool {
	names := map[string]bool{}
	for _, c := range d.Spec.Template.Spec.Containers {
		if c.Name != "server" {
			continue
		}
		for _, e := range c.Env {
			names[e.Name] = true
		}
	}
	return names
}

// TestFieldDroppedAfterCreateIsRemoved: the operator creates a new child in one request (a create, not
// a server-side apply) and changes it later with server-side apply. A field dropped from the spec after
// the create must leave the live object: the create's field ownership (operation Update) is moved to the
// apply's first, otherwise the dropped variable would stay in the Deployment, owned by the create.
func TestFieldDroppedAfterCreateIsRemoved(t *testing.T) {
	ctx := context.Background()
	ns := restrictedNamespace(t)
	dumpOnFailure(t, ns)
	s := newServer(ns, "dropped")
	s.Spec.Env = []mcpv1alpha1.EnvVar{{Name: "KEEP", Value: ptr.To("1")}, {Name: "DROP_ME", Value: ptr.To("2")}}
	if err := k8s.Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	key := client.ObjectKeyFromObject(s)
	s = waitReady(t, key)
	d := &appsv1.Deployment{}
	if err := k8s.Get(ctx, key, d); err != nil {
		t.Fatal(err)
	}
	if env := serverContainerEnv(d); !env["KEEP"] || !env["DROP_ME"] {
		t.Fatalf("server env before the change: %v", env)
	}
	s.Spec.Env = s.Spec.Env[:1]
	if err := k8s.Update(ctx, s); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, func() error {
		if err := k8s.Get(ctx, key, d); err != nil {
			return err
		}
		if env := serverContainerEnv(d); !env["KEEP"] || env["DROP_ME"] {
			return fmt.Errorf("server env after dropping DROP_ME: %v", env)
		}
		return nil
	})
	for _, m := range d.ManagedFields {
		if m.Manager == controllers.FieldOwner && m.Operation != metav1.ManagedFieldsOperationApply {
			t.Errorf("the operator still owns fields of the Deployment through a %s entry: %+v", m.Operation, m)
		}
	}
}

// TestCreateFindsUnlabelledOwnedChild: a child the MCPServer controls but whose labels someone removed
// is not in the operator's cache; the create finds its name taken, the read around the cache shows it is
// the MCPServer's own, and it is adopted again with its labels restored (not a conflict).
func TestCreateFindsUnlabelledOwnedChild(t *testing.T) {
	ctx := context.Background()
	ns := restrictedNamespace(t)
	dumpOnFailure(t, ns)
	s := newServer(ns, "relabel")
	if err := k8s.Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	key := client.ObjectKeyFromObject(s)
	waitReady(t, key)
	sa := &corev1.ServiceAccount{}
	if err := k8s.Get(ctx, key, sa); err != nil {
		t.Fatal(err)
	}
	patch := client.MergeFrom(sa.DeepCopy())
	sa.Labels = nil
	if err := k8s.Patch(ctx, sa, patch); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, func() error {
		if err := k8s.Get(ctx, key, sa); err != nil {
			return err
		}
		if sa.Labels[controllers.LabelServer] != key.Name {
			return fmt.Errorf("labels of the unlabelled ServiceAccount: %v", sa.Labels)
		}
		return nil
	})
	if err := k8s.Get(ctx, key, s); err != nil {
		t.Fatal(err)
	}
	if c := condition(s, mcpv1alpha1.ConditionStalled); c != nil && c.Status == metav1.ConditionTrue {
		t.Fatalf("stalled on its own child: %+v", c)
	}
}

// TestNetworkPolicySelectorWideningIsReverted: a tenant with namespace edit rights adds a key to the
// server's NetworkPolicy pod selector under its own field manager (the fence webhook admits it: the
// policy then selects no server pod, which would leave the pods with no fence). A label selector is an
// atomic struct to server-side apply, so the operator's forced apply replaces the whole selector rather
// than keeping the tenant's key beside its own.
func TestNetworkPolicySelectorWideningIsReverted(t *testing.T) {
	ctx := context.Background()
	ns := restrictedNamespace(t)
	dumpOnFailure(t, ns)
	s := newServer(ns, "fenced")
	if err := k8s.Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	key := client.ObjectKeyFromObject(s)
	waitReady(t, key)
	np := &networkingv1.NetworkPolicy{}
	if err := k8s.Get(ctx, key, np); err != nil {
		t.Fatal(err)
	}
	want := np.Spec.PodSelector.DeepCopy()
	patch := []byte(`{"spec":{"podSelector":{"matchLabels":{"tenant":"nothing"}}}}`)
	if err := k8s.Patch(ctx, np, client.RawPatch(types.MergePatchType, patch), client.FieldOwner("tenant")); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, func() error {
		if err := k8s.Get(ctx, key, np); err != nil {
			return err
		}
		if !equality.Semantic.DeepEqual(np.Spec.PodSelector, *want) {
			return fmt.Errorf("pod selector %v, want %v", np.Spec.PodSelector, *want)
		}
		return nil
	})
}

// TestOwnershipMovesWhenACreatedFieldIsDropped: a child's create leaves its fields owned by an Update
// entry; an apply that keeps every one of them (adding a key, as pins.json arriving) sends no ownership
// move, and the first apply that drops one moves the ownership first, so the dropped key leaves the
// live object, as does a key only an apply wrote.
func TestOwnershipMovesWhenACreatedFieldIsDropped(t *testing.T) {
	ctx := context.Background()
	ns := restrictedNamespace(t)
	s := newServer(ns, "moves")
	if err := k8s.Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	c := &movesCounter{Client: k8s}
	key := client.ObjectKey{Namespace: ns, Name: "moves-probe"}
	apply := func(data map[string]string) *corev1.ConfigMap {
		t.Helper()
		meta := desired.ObjectMeta(s)
		meta.Name = key.Name
		cm := &corev1.ConfigMap{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"}, ObjectMeta: meta, Data: data}
		if err := controllers.ApplyChild(ctx, c, s, cm, &corev1.ConfigMap{}); err != nil {
			t.Fatal(err)
		}
		live := &corev1.ConfigMap{}
		if err := k8s.Get(ctx, key, live); err != nil {
			t.Fatal(err)
		}
		return live
	}
	updateEntry := func(cm *corev1.ConfigMap) bool {
		for _, m := range cm.ManagedFields {
			if m.Manager == controllers.FieldOwner && m.Operation == metav1.ManagedFieldsOperationUpdate {
				return true
			}
		}
		return false
	}

	if live := apply(map[string]string{"gateway.json": "{}"}); !updateEntry(live) {
		t.Fatalf("after the create: managed fields %+v, want the create's Update entry", live.ManagedFields)
	}
	live := apply(map[string]string{"gateway.json": "{}", "pins.json": "[]", "extra": "1"})
	if c.moves != 0 || !updateEntry(live) {
		t.Fatalf("an apply that keeps every created field: %d ownership moves (Update entry kept: %v), want none", c.moves, updateEntry(live))
	}
	if live = apply(map[string]string{"gateway.json": "{}", "pins.json": "[]"}); c.moves != 0 || live.Data["extra"] != "" {
		t.Fatalf("dropping a key only an apply wrote: %d ownership moves, data %v; want none and the key gone", c.moves, live.Data)
	}
	live = apply(map[string]string{"pins.json": "[]"})
	if c.moves != 1 || updateEntry(live) {
		t.Fatalf("dropping a created key: %d ownership moves (Update entry left: %v), want one and none", c.moves, updateEntry(live))
	}
	if _, ok := live.Data["gateway.json"]; ok || live.Data["pins.json"] != "[]" {
		t.Fatalf("data after dropping gateway.json: %v, want only pins.json", live.Data)
	}
}

// movesCounter counts the JSON patches (ownership moves) sent through it.
type movesCounter struct {
	client.Client
	moves int
}

func (c *movesCounter) Patch(ctx context.Context, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
	if patch.Type() == types.JSONPatchType {
		c.moves++
	}
	return c.Client.Patch(ctx, obj, patch, opts...)
}
