package controllers_test

import (
	"fmt"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
)

// kstatusIs checks what kstatus (kubectl wait, Flux, Config Sync and Argo CD's health library) reads
// from the MCPServer as the API server returned it: Current when ready, Failed when stalled.
func kstatusIs(s *mcpv1alpha1.MCPServer, want status.Status) error {
	obj := s.DeepCopy()
	obj.APIVersion, obj.Kind = mcpv1alpha1.GroupVersion.String(), "MCPServer"
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return err
	}
	res, err := status.Compute(&unstructured.Unstructured{Object: u})
	if err != nil {
		return fmt.Errorf("kstatus: %w", err)
	}
	if res.Status != want {
		return fmt.Errorf("kstatus %s (%s), want %s; conditions %+v", res.Status, res.Message, want, s.Status.Conditions)
	}
	return nil
}
