package controllers

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"slices"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/client-go/util/csaupgrade"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/structured-merge-diff/v6/fieldpath"
	"sigs.k8s.io/structured-merge-diff/v6/value"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
)

// FieldOwner is the server-side apply field manager of every object the operator writes.
const FieldOwner = "mcp-warden"

// applier applies desired child objects with server-side apply under one field owner. It remembers,
// for each object, the desired object it last applied and a fingerprint of what the API server returned
// (everything but status and the fields only the API server and built-in controllers write), so an
// object that has not changed since, or whose status alone has moved, is not sent again: in steady
// state, and while a Deployment rolls out, a reconcile writes no child.
type applier struct {
	client client.Client
	// reader reads around the cache, which only holds objects the operator labels.
	reader client.Reader
	mu     sync.Mutex
	last   map[string]appliedState
}

type appliedState struct {
	hash            [32]byte
	resourceVersion string
	live            [32]byte
	// from is the resourceVersion the cache showed when the operator applied (empty for a create): while
	// the cache still shows it, it has not caught up with the apply, which made the object what was
	// applied. Anyone's later write gives the object a resourceVersion of its own.
	from string
}

// applyResult says what an apply did.
type applyResult struct {
	// Created is true when the object did not exist before (first reconcile, or someone deleted it).
	Created bool
	// Skipped is true when the live object was already what the operator last applied.
	Skipped bool
}

// errNotOwned is a conflict with an object of the same name that this MCPServer does not control.
type errNotOwned struct {
	kind, name string
}

func (e errNotOwned) Error() string {
	return fmt.Sprintf("a %s named %q already exists and is not managed by this MCPServer; rename the MCPServer or delete the %s", e.kind, e.name, e.kind)
}

// apply makes live (a typed object of desired's kind, read from the cache) match desired. On return live
// holds the object as the API server has it. desired must carry owner's controller reference (the
// builders of package desired set it): an object without it is refused, never applied.
//
// A child the cache does not hold is created (one request). The cache only sees objects the operator
// labels, so an object of that name may still exist; then the create fails with AlreadyExists and only
// then is the object read around the cache: one the MCPServer does not control is a conflict and is
// never written. A child the operator created is later changed with server-side apply; the first apply
// that drops a field the create wrote first moves the create's field ownership to the apply's
// (csaupgrade), so the dropped field is removed from the live one. An apply that only adds or changes
// fields (a ConfigMap's pins.json arriving) needs no move and sends none.
func (a *applier) apply(ctx context.Context, owner *mcpv1alpha1.MCPServer, desired, live client.Object) (applyResult, error) {
	var res applyResult
	gvk := desired.GetObjectKind().GroupVersionKind()
	kind := gvk.Kind
	key := client.ObjectKeyFromObject(desired)
	if ref := metav1.GetControllerOf(desired); ref == nil || ref.UID != owner.UID || ref.Kind != "MCPServer" || ref.APIVersion != mcpv1alpha1.GroupVersion.String() {
		return res, fmt.Errorf("%s %s: the object to apply does not name MCPServer %s/%s (uid %s) as its controller (controller reference %v); build it with package desired, which sets the reference", kind, key.Name, owner.Namespace, owner.Name, owner.UID, ref)
	}

	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(desired)
	if err != nil {
		return res, fmt.Errorf("convert %s %s: %w", kind, key.Name, err)
	}
	delete(u, "status")
	unstructured.RemoveNestedField(u, "metadata", "creationTimestamp")
	body, err := json.Marshal(u)
	if err != nil {
		return res, fmt.Errorf("encode %s %s: %w", kind, key.Name, err)
	}
	hash := sha256.Sum256(body)
	id := kind + "/" + key.String()

	cached := true
	if err := a.get(ctx, id, key, live); apierrors.IsNotFound(err) {
		cached = false
		obj := &unstructured.Unstructured{Object: runtime.DeepCopyJSON(u)}
		obj.SetGroupVersionKind(gvk)
		err := a.client.Create(ctx, obj, client.FieldOwner(FieldOwner))
		switch {
		case err == nil:
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj.Object, live); err != nil {
				return res, fmt.Errorf("decode %s %s: %w", kind, key.Name, err)
			}
			a.remember(id, hash, live)
			res.Created = true
			return res, nil
		case !apierrors.IsAlreadyExists(err):
			return res, fmt.Errorf("create %s %s: %w", kind, key.Name, err)
		}
		probe := &metav1.PartialObjectMetadata{}
		probe.SetGroupVersionKind(gvk)
		if err := a.reader.Get(ctx, key, probe); err != nil {
			return res, fmt.Errorf("get %s %s: %w", kind, key.Name, err)
		}
		if !metav1.IsControlledBy(probe, owner) {
			return res, errNotOwned{kind: kind, name: key.Name}
		}
		if err := a.upgradeOwnership(ctx, probe); err != nil {
			return res, fmt.Errorf("field ownership of %s %s: %w", kind, key.Name, err)
		}
	} else if err != nil {
		return res, fmt.Errorf("get %s %s: %w", kind, key.Name, err)
	} else if !metav1.IsControlledBy(live, owner) {
		return res, errNotOwned{kind: kind, name: key.Name}
	}

	if cached {
		a.mu.Lock()
		prev, ok := a.last[id]
		a.mu.Unlock()
		// A Deployment's live object is read after the apply (drift, rollout), so it is never one
		// the cache has yet to update.
		if ok && prev.unchanged(hash, live, kind != "Deployment") {
			res.Skipped = true
			return res, nil
		}
		if !createdFieldsKept(live, gvk.GroupVersion().String(), u) {
			if err := a.upgradeOwnership(ctx, live); err != nil {
				return res, fmt.Errorf("field ownership of %s %s: %w", kind, key.Name, err)
			}
		}
	}
	from := ""
	if cached {
		from = live.GetResourceVersion()
	}
	obj := &unstructured.Unstructured{Object: u}
	if err := a.client.Apply(ctx, client.ApplyConfigurationFromUnstructured(obj), client.FieldOwner(FieldOwner), client.ForceOwnership); err != nil {
		return res, fmt.Errorf("apply %s %s: %w", kind, key.Name, err)
	}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj.Object, live); err != nil {
		return res, fmt.Errorf("decode %s %s: %w", kind, key.Name, err)
	}
	a.rememberFrom(id, hash, live, from)
	return res, nil
}

// upgradeOwnership moves the fields the operator's create owns (manager FieldOwner, operation Update)
// to its server-side apply entry, so the next apply owns, and may remove, every field the operator
// wrote. It sends nothing when there is no such entry, which is the case for every object after its
// first change.
func (a *applier) upgradeOwnership(ctx context.Context, live client.Object) error {
	patch, err := csaupgrade.UpgradeManagedFieldsPatch(live, sets.New(FieldOwner), FieldOwner)
	if err != nil || patch == nil {
		return err
	}
	return a.client.Patch(ctx, live, client.RawPatch(types.JSONPatchType, patch))
}

// createdFieldsKept reports whether every field the operator's create (or drift revert) owns through
// an Update entry of live's managed fields is still in the desired object: the apply then removes
// nothing those fields hold, so the create's ownership needs no moving yet (it co-owns them with the
// apply, and is moved by the first apply that drops one). It is false, and the ownership is moved,
// when an entry cannot be read, is of another API version, or names a field desired lacks.
func createdFieldsKept(live client.Object, apiVersion string, desired map[string]any) bool {
	for _, m := range live.GetManagedFields() {
		if m.Manager != FieldOwner || m.Operation != metav1.ManagedFieldsOperationUpdate || m.Subresource != "" {
			continue
		}
		if m.APIVersion != apiVersion || m.FieldsV1 == nil {
			return false
		}
		set := &fieldpath.Set{}
		if err := set.FromJSON(m.FieldsV1.GetRawReader()); err != nil {
			return false
		}
		kept := true
		set.Iterate(func(p fieldpath.Path) {
			kept = kept && pathIn(desired, p)
		})
		if !kept {
			return false
		}
	}
	return true
}

// pathIn reports whether the field at p exists in obj (an object as JSON decodes it): a map key, a
// list element by its keys or by its value. An index into an atomic list is never taken as present.
func pathIn(obj any, p fieldpath.Path) bool {
	cur := obj
	for _, pe := range p {
		switch {
		case pe.FieldName != nil:
			m, ok := cur.(map[string]any)
			if !ok {
				return false
			}
			if cur, ok = m[*pe.FieldName]; !ok {
				return false
			}
		case pe.Key != nil:
			l, _ := cur.([]any)
			i := slices.IndexFunc(l, func(e any) bool {
				em, ok := e.(map[string]any)
				if !ok {
					return false
				}
				for _, f := range *pe.Key {
					v, ok := em[f.Name]
					if !ok || !value.Equals(value.NewValueInterface(v), f.Value) {
						return false
					}
				}
				return true
			})
			if i < 0 {
				return false
			}
			cur = l[i]
		case pe.Value != nil:
			l, _ := cur.([]any)
			i := slices.IndexFunc(l, func(e any) bool { return value.Equals(value.NewValueInterface(e), *pe.Value) })
			if i < 0 {
				return false
			}
			cur = l[i]
		default:
			return false
		}
	}
	return true
}

// unchanged reports whether live, as the cache shows it, is still what the apply remembered made it,
// for the same desired object (hash): its resourceVersion is the apply's, or its fingerprint is, or
// (staleOK: the caller does not use live) still the one the apply was made over (the cache has yet to
// deliver the apply).
func (prev appliedState) unchanged(hash [32]byte, live client.Object, staleOK bool) bool {
	rv := live.GetResourceVersion()
	return prev.hash == hash && (prev.resourceVersion == rv || (staleOK && prev.from != "" && prev.from == rv) || sameFingerprint(prev.live, live))
}

// get reads live from the cache. An object the operator wrote that the cache does not show has yet to
// be delivered (a reconcile that follows the create at once), or someone deleted or unlabelled it: one
// read around the cache tells, where a create would fail, read and apply again.
func (a *applier) get(ctx context.Context, id string, key client.ObjectKey, live client.Object) error {
	err := a.client.Get(ctx, key, live)
	if apierrors.IsNotFound(err) && a.wrote(id) {
		err = a.reader.Get(ctx, key, live)
	}
	return err
}

// ownWrite reports whether obj, as a watch delivers it, is at the resourceVersion the operator's last
// write of it returned.
func (a *applier) ownWrite(kind string, obj client.Object) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	prev, ok := a.last[kind+"/"+client.ObjectKeyFromObject(obj).String()]
	return ok && prev.resourceVersion != "" && prev.resourceVersion == obj.GetResourceVersion()
}

// wrote reports whether the operator created or applied the object (since it last forgot it).
func (a *applier) wrote(id string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	_, ok := a.last[id]
	return ok
}

func (a *applier) remember(id string, hash [32]byte, live client.Object) {
	a.rememberFrom(id, hash, live, "")
}

// rememberFrom remembers an apply made over the cache's resourceVersion from.
func (a *applier) rememberFrom(id string, hash [32]byte, live client.Object, from string) {
	st := appliedState{hash: hash, resourceVersion: live.GetResourceVersion(), live: fingerprint(live), from: from}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.last == nil {
		a.last = map[string]appliedState{}
	}
	a.last[id] = st
}

// fingerprint hashes what anyone may change of a live child: all but its status, resourceVersion,
// generation and managedFields, and the revision annotation the Deployment controller keeps. A
// changed spec, label, annotation or owner reference changes it; a status update does not.
func fingerprint(live client.Object) [32]byte {
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(live)
	if err != nil {
		return [32]byte{}
	}
	// The cache's typed objects may or may not carry apiVersion and kind.
	delete(u, "apiVersion")
	delete(u, "kind")
	delete(u, "status")
	for _, f := range []string{"resourceVersion", "generation", "managedFields"} {
		unstructured.RemoveNestedField(u, "metadata", f)
	}
	unstructured.RemoveNestedField(u, "metadata", "annotations", deploymentRevision)
	if ann, ok, _ := unstructured.NestedMap(u, "metadata", "annotations"); ok && len(ann) == 0 {
		unstructured.RemoveNestedField(u, "metadata", "annotations")
	}
	body, err := json.Marshal(u)
	if err != nil {
		return [32]byte{}
	}
	return sha256.Sum256(body)
}

// sameFingerprint reports whether live still has the fingerprint remembered (never for an object that
// could not be fingerprinted).
func sameFingerprint(remembered [32]byte, live client.Object) bool {
	return remembered != [32]byte{} && remembered == fingerprint(live)
}

// deploymentRevision is the annotation the Deployment controller sets on every Deployment.
const deploymentRevision = "deployment.kubernetes.io/revision"

// forget drops what is remembered of an object, so the next reconcile applies it again.
func (a *applier) forget(kind string, key types.NamespacedName) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.last, kind+"/"+key.String())
}
