package controllers

import (
	"context"

	"sigs.k8s.io/controller-runtime/pkg/client"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
)

// ApplyChild applies desired for owner as the reconciler does, through an applier of its own over c
// (for the tests of package controllers_test).
func ApplyChild(ctx context.Context, c client.Client, owner *mcpv1alpha1.MCPServer, desired, live client.Object) error {
	a := &applier{client: c, reader: c}
	_, err := a.apply(ctx, owner, desired, live)
	return err
}
