package issuerkeys

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
)

// TestZonedAddressesAreRefused: netip.Prefix.Contains is false for any address with an IPv6 zone, so
// an issuer written as an IP literal with a zone (https://[::1%25lo]:PORT, https://[fe80::1%25eth0])
// slipped past every protected range and the operator connected to its own loopback or a link-local
// neighbour. The dialer must judge the address without its zone.
func TestZonedAddressesAreRefused(t *testing.T) {
	for _, a := range []string{"::1%lo", "::1%1", "fe80::1%eth0", "fe80::a9fe:a9fe%2", "64:ff9b::7f00:1%lo", "::7f00:1%lo", "ff02::1%lo"} {
		if Refused(netip.MustParseAddr(a)) == "" {
			t.Errorf("Refused(%s) = \"\": a zone must not hide a protected address", a)
		}
	}
	l, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback here: %v", err)
	}
	var hits atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
		_, _ = w.Write([]byte(`{"keys":[]}`))
	}))
	srv.Listener = l
	srv.StartTLS()
	defer srv.Close()
	port := l.Addr().(*net.TCPAddr).Port
	// The loopback issuer's certificate is trusted, as an in-cluster issuer's CA would be: only the
	// dialer stands between the tenant's URL and the operator's loopback.
	f := &Fetcher{Client: NewClient(srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs)}
	for _, zone := range []string{"lo", "1"} {
		u := fmt.Sprintf("https://[::1%%25%s]:%d", zone, port)
		_, _, _, err := f.Fetch(context.Background(), Source{Issuer: u, JWKSURL: u + "/keys"})
		var blocked *BlockedError
		if !errors.As(err, &blocked) || !strings.Contains(err.Error(), "loopback") {
			t.Errorf("%s: want a BlockedError naming loopback, got %v", u, err)
		}
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("the operator's loopback was reached %d times through a zoned address", n)
	}
}
