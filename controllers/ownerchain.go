package controllers

import (
	"context"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
)

// +kubebuilder:rbac:groups=apps,resources=replicasets,verbs=get;list;watch

// ReplicaSetMetadata is the object the operator reads ReplicaSets as: their metadata alone (the owner
// chain of a gateway pod needs nothing else). The manager's cache holds it for the ReplicaSets the
// operator's Deployments make (they carry the pod template's labels, ManagedObjectsSelector included).
func ReplicaSetMetadata() *metav1.PartialObjectMetadata {
	m := &metav1.PartialObjectMetadata{}
	m.SetGroupVersionKind(appsv1.SchemeGroupVersion.WithKind("ReplicaSet"))
	return m
}

// ownerChain reads the controllers of a gateway pod: pod -> ReplicaSet -> Deployment -> MCPServer.
// Each reader may be the manager's cache (where it holds the objects) or the API server.
type ownerChain struct {
	// replicaSets reads ReplicaSets' metadata (ReplicaSetMetadata).
	replicaSets client.Reader
	deployments client.Reader
	servers     client.Reader
}

// serverOf returns the MCPServer whose gateway pod pod is by its owner chain: its controller is a
// ReplicaSet of the UID it names, whose controller is a Deployment of the UID it names, whose controller
// is an MCPServer of the UID it names and of the Deployment's name. A pod another writer made, or a
// ReplicaSet or Deployment someone made with the server's name or labels, does not pass. A non-empty
// why says, for a pod that does not, what did not match; err is a failed read.
func (c ownerChain) serverOf(ctx context.Context, pod *corev1.Pod) (s *mcpv1alpha1.MCPServer, why string, err error) {
	rs := ReplicaSetMetadata()
	if why, err := readController(ctx, "pod", pod, "apps/v1", "ReplicaSet", rs, c.replicaSets); why != "" || err != nil {
		return nil, why, err
	}
	dep := &appsv1.Deployment{}
	if why, err := readController(ctx, "ReplicaSet", rs, "apps/v1", "Deployment", dep, c.deployments); why != "" || err != nil {
		return nil, why, err
	}
	s = &mcpv1alpha1.MCPServer{}
	if why, err := readController(ctx, "Deployment", dep, mcpv1alpha1.GroupVersion.String(), "MCPServer", s, c.servers); why != "" || err != nil {
		return nil, why, err
	}
	if dep.Name != s.Name {
		return nil, fmt.Sprintf("Deployment %s is not the one the operator runs for MCPServer %s", dep.Name, s.Name), nil
	}
	return s, "", nil
}

// readController reads obj's controller of the kind into owner and checks that it is the one obj names
// (by UID); why says what did not match.
func readController(ctx context.Context, what string, obj client.Object, apiVersion, kind string, owner client.Object, reader client.Reader) (string, error) {
	ref := metav1.GetControllerOf(obj)
	if ref == nil || ref.APIVersion != apiVersion || ref.Kind != kind {
		return fmt.Sprintf("%s %s is not controlled by a %s", what, obj.GetName(), kind), nil
	}
	err := reader.Get(ctx, types.NamespacedName{Namespace: obj.GetNamespace(), Name: ref.Name}, owner)
	if apierrors.IsNotFound(err) || (err == nil && owner.GetUID() != ref.UID) {
		return fmt.Sprintf("its %s %s (uid %s) does not exist", kind, ref.Name, ref.UID), nil
	}
	if err != nil {
		return "", fmt.Errorf("get %s %s/%s: %w", kind, obj.GetNamespace(), ref.Name, err)
	}
	return "", nil
}
