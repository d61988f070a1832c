package controllers

import (
	"context"
	"errors"
	"sync"

	networkingv1 "k8s.io/api/networking/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
	"github.com/mcp-warden/mcp-warden/policy/fence"
)

// step is one sub-reconciler of Reconcile.
type step func(context.Context, *mcpv1alpha1.MCPServer, *reconcileState) error

// concurrently runs independent steps at once, one goroutine each (a reconcile has a fixed handful, so
// the fan-out is bounded by the number of steps times the reconcile workers), waits for all of them and
// returns their errors joined in the order of steps: errors.As then finds the first step's stall, as
// if the steps had run one after the other. Each step must write only its own fields of the
// reconcileState and must not write the MCPServer.
func concurrently(ctx context.Context, s *mcpv1alpha1.MCPServer, st *reconcileState, steps ...step) error {
	errs := make([]error, len(steps))
	var wg sync.WaitGroup
	for i, run := range steps {
		wg.Go(func() { errs[i] = run(ctx, s, st) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// wideningIndex indexes the cached NetworkPolicies that may widen a server's fence: those the operator
// did not write and that allow some traffic. The fence check lists only these, so a reconcile costs the
// same in a namespace of a thousand servers (a thousand operator policies) as in one of ten.
const wideningIndex = "mcp.warden.dev/widens"

func indexWidening(o client.Object) []string {
	np, ok := o.(*networkingv1.NetworkPolicy)
	if !ok || operatorOwned(np) || !fence.Widens(np) {
		return nil
	}
	return []string{"true"}
}

// podServerIndex indexes the cached pods by the server they run (their LabelServer label).
const podServerIndex = "mcp.warden.dev/server"

func indexPodServer(o client.Object) []string {
	if name := o.GetLabels()[LabelServer]; name != "" {
		return []string{name}
	}
	return nil
}
