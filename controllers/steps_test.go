package controllers

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
)

// TestConcurrentlyRunsStepsAtOnce: the independent children's steps run at the same time (each waits
// until all have started, which never happens when they run one after the other), all run even when one
// fails, and their errors come back in step order, so the first step's stall is the one reported.
func TestConcurrentlyRunsStepsAtOnce(t *testing.T) {
	const n = 6
	var started sync.WaitGroup
	started.Add(n)
	all := make(chan struct{})
	go func() { started.Wait(); close(all) }()
	ran := make([]bool, n)
	steps := make([]step, n)
	for i := range steps {
		steps[i] = func(context.Context, *mcpv1alpha1.MCPServer, *reconcileState) error {
			started.Done()
			select {
			case <-all:
			case <-time.After(5 * time.Second):
				return errors.New("the other steps did not start: run one after the other")
			}
			ran[i] = true
			switch i {
			case 1:
				return stalling(ReasonChildConflict, errors.New("first"))
			case 2:
				return errors.New("transient")
			case 4:
				return stalling(ReasonChildConflict, errors.New("second"))
			}
			return nil
		}
	}
	err := concurrently(context.Background(), testServer(), &reconcileState{}, steps...)
	for i, ok := range ran {
		if !ok {
			t.Fatalf("step %d did not run to the end: %v", i, err)
		}
	}
	var stall *StallingError
	if !errors.As(err, &stall) || stall.Err.Error() != "first" {
		t.Fatalf("want the first step's stall, got %v", err)
	}
	if err.Error() != "first\ntransient\nsecond" {
		t.Fatalf("errors not joined in step order: %q", err.Error())
	}
}
