package gateway

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// TestCloseCancelsAndWaitsForTheRefresh: the refresh loop lists the server's tools on the gateway's
// lifetime. A server that never answers holds a listing in flight; Close must cancel it (the call
// timeout is an hour, so only cancellation ends it) and return only once the listing has ended and the
// loop is gone. A loop on context.Background would hold Close for the call timeout; an untracked one
// would still be listing when Close returned, and list again after.
func TestCloseCancelsAndWaitsForTheRefresh(t *testing.T) {
	var started, cancelled atomic.Int32
	inFlight := make(chan struct{}, 16)
	up := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		started.Add(1)
		_, _ = io.Copy(io.Discard, r.Body) // the server notices a client gone only once the body is read
		select {
		case inFlight <- struct{}{}:
		default:
		}
		<-r.Context().Done()
		cancelled.Add(1)
	}))
	defer up.Close()
	cfg := &Config{
		Listen: "127.0.0.1:0", Upstream: up.URL + "/mcp", Resource: "https://files.example.com/mcp",
		Auth: AuthConfig{Disabled: true}, PinStatePath: t.TempDir() + "/pins.json",
		Limits: Limits{CallTimeout: Duration{Duration: time.Hour}},
	}
	g, err := New(cfg, Options{AuditWriter: &bytes.Buffer{}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	g.Start(context.Background())
	select {
	case <-inFlight:
	case <-time.After(10 * time.Second):
		t.Fatal("the refresh loop never reached the server")
	}
	g.tools.requestRefresh() // a list_changed pending when the gateway stops
	closed := make(chan struct{})
	go func() {
		_ = g.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return: the listing in flight was not cancelled")
	}
	g.tools.sessMu.Lock()
	listing := g.tools.refreshing != nil
	g.tools.sessMu.Unlock()
	if listing {
		t.Fatal("Close returned while a listing was still in flight: it did not wait for the refresh loop")
	}
	deadline := time.Now().Add(5 * time.Second)
	for cancelled.Load() < started.Load() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if c, s := cancelled.Load(), started.Load(); c < s {
		t.Fatalf("%d of the gateway's %d requests to the server are still in flight after Close", s-c, s)
	}
	n := started.Load()
	time.Sleep(700 * time.Millisecond) // longer than the loop's first retry backoff
	if started.Load() != n {
		t.Fatalf("the server got %d more requests after Close: the refresh loop outlived the gateway", started.Load()-n)
	}
}
