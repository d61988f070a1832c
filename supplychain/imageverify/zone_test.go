package imageverify_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/mcp-warden/mcp-warden/supplychain/imageverify"
)

// TestZonedRedirectIsRefused: a registry the policy names redirects to an IPv6 literal with a zone
// (https://[::1%25lo]:PORT). netip.Prefix.Contains is false for every zoned address, so the target was
// judged public and the verifier connected to the operator's loopback. It must be refused before any
// connection.
func TestZonedRedirectIsRefused(t *testing.T) {
	l, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback here: %v", err)
	}
	var conns atomic.Int64
	target := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	target.Listener = l
	target.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	target.StartTLS()
	t.Cleanup(target.Close)
	port := l.Addr().(*net.TCPAddr).Port
	f := newFixture(t)
	img, err := f.reg.PushSigned("acme/files", f.release, slsa)
	must(t, err)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, fmt.Sprintf("https://[::1%%25lo]:%d%s", port, r.URL.Path), http.StatusTemporaryRedirect)
	}))
	t.Cleanup(front.Close)
	host := front.Listener.Addr().String()
	p := f.policy()
	p.Registries = []string{host}
	_, err = imageverify.New(imageverify.Options{}).Verify(context.Background(), host+"/acme/files@"+img.DigestStr(), []imageverify.Policy{p})
	denial(t, err, imageverify.CheckRegistryRefused, "loopback")
	if n := conns.Load(); n != 0 {
		t.Fatalf("the verifier connected %d times to the operator's loopback through a zoned address", n)
	}
}
