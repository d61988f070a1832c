package localcluster

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// TestNetnsForwarders checks both forwarders against a namespace of their own: a listener inside the
// namespace is reachable from the host's loopback only through ForwardIn, and a listener on the host's
// loopback from inside only through ForwardOut.
func TestNetnsForwarders(t *testing.T) {
	if err := RealNodePrerequisites(); errors.Is(err, ErrRealNodeImpossible) {
		t.Skip("SKIPPED: " + err.Error())
	}
	n, err := createNetns(fmt.Sprintf("mcp-warden-test-%d", os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := n.Delete(); err != nil {
			t.Error(err)
		}
	}()

	// In: a server in the namespace, reached from the host.
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	inside, err := n.Listen(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer inside.Close()
	go echo(inside, "inside")
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatalf("%s on the host reached the namespace's listener without a forwarder", addr)
	}
	in, err := n.ForwardIn(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	if got := roundTrip(t, func() (net.Conn, error) { return net.DialTimeout("tcp", addr, 2*time.Second) }); got != "inside" {
		t.Errorf("through ForwardIn: %q, want the namespace's server", got)
	}

	// Out: a server on the host, reached from the namespace.
	host, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()
	go echo(host, "host")
	hostAddr := host.Addr().String()
	if _, err := n.DialContext(t.Context(), "tcp", hostAddr); err == nil {
		t.Fatalf("the namespace reached the host's %s without a forwarder", hostAddr)
	}
	out, err := n.ForwardOut(hostAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if got := roundTrip(t, func() (net.Conn, error) { return n.DialContext(t.Context(), "tcp", hostAddr) }); got != "host" {
		t.Errorf("through ForwardOut: %q, want the host's server", got)
	}
}

// echo answers every connection with its name and closes it.
func echo(l net.Listener, name string) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		_, _ = io.WriteString(c, name)
		c.Close()
	}
}

func roundTrip(t *testing.T, dial func() (net.Conn, error)) string {
	t.Helper()
	c, err := dial()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
