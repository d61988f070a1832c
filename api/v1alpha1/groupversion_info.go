// Package v1alpha1 contains the mcp.warden.dev/v1alpha1 API: MCPServer, a Model Context Protocol server
// that the operator runs sandboxed behind default-deny network policies.
// +kubebuilder:object:generate=true
// +groupName=mcp.warden.dev
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the API group and version of the mcp-warden resources.
	GroupVersion = schema.GroupVersion{Group: "mcp.warden.dev", Version: "v1alpha1"}

	// SchemeBuilder registers the mcp-warden types with a runtime.Scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion} //nolint:staticcheck // the kubebuilder layout: controller-gen and every caller register through it

	// AddToScheme adds the mcp-warden types to a runtime.Scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
