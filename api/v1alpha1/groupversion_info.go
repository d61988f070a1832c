// Package v1alpha1 contains the mcp.warden.dev/v1alpha1 API: MCPServer, a Model Context Protocol server
// that the operator runs sandboxed behind default-deny network policies.
// +kubebuilder:object:generate=true
// +groupName=mcp.warden.dev
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the API group and version of the mcp-warden resources.
	GroupVersion = schema.GroupVersion{Group: "mcp.warden.dev", Version: "v1alpha1"}

	// SchemeBuilder registers the mcp-warden types with a runtime.Scheme (each type's file registers its
	// kinds in init); the api package depends on apimachinery alone.
	SchemeBuilder = runtime.NewSchemeBuilder(func(s *runtime.Scheme) error {
		metav1.AddToGroupVersion(s, GroupVersion)
		return nil
	})

	// AddToScheme adds the mcp-warden types to a runtime.Scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
