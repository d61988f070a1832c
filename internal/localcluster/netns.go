package localcluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Netns is a network namespace the harness created (ip netns add), named under /run/netns.
type Netns struct {
	// Name is the namespace's name, e.g. mcp-warden-node.
	Name string
	// path, when set, is the namespace's file instead of /run/netns/Name (a container's, see
	// Cluster.ContainerNetns).
	path string
}

// Path is the namespace's bind mount, for nsenter --net.
func (n Netns) Path() string {
	if n.path != "" {
		return n.path
	}
	return filepath.Join("/run/netns", n.Name)
}

// createNetns creates a network namespace with its loopback up, deleting a leftover one of the same name
// first (a run that was killed).
func createNetns(name string) (Netns, error) {
	n := Netns{Name: name}
	if _, err := os.Stat(n.Path()); err == nil {
		if err := n.Delete(); err != nil {
			return n, err
		}
	}
	if err := ip("netns", "add", name); err != nil {
		return n, err
	}
	return n, ip("-n", name, "link", "set", "lo", "up")
}

// Delete removes the namespace; interfaces in it (veth ends, the bridge) go with it.
func (n Netns) Delete() error {
	if _, err := os.Stat(n.Path()); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return ip("netns", "delete", n.Name)
}

// Run runs a command in the namespace and returns an error with its output when it fails.
func (n Netns) Run(name string, args ...string) error {
	return run("nsenter", append([]string{"--net=" + n.Path(), "--", name}, args...)...)
}

// ip runs iproute2's ip.
func ip(args ...string) error { return run("ip", args...) }

// run runs a command under a deadline of its own: it also serves cleanup (Stop, a previous run's
// remains), which runs after the caller's context has ended.
//
//nolint:contextcheck // each command has its own deadline, detached from a context that may be done.
func run(name string, args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Do runs fn on an OS thread that has entered the namespace: sockets fn creates (listeners, dialed
// connections) belong to the namespace and keep working from any goroutine afterwards. The thread goes
// back to this machine's namespace before it is released; if it cannot, it is never released and ends
// with the goroutine. Threads must not end otherwise: a helper started with Pdeathsig from a thread
// that ends is killed.
func (n Netns) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		home, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open this thread's network namespace: %w", err)
			return
		}
		defer home.Close()
		f, err := os.Open(n.Path())
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open network namespace %s: %w", n.Name, err)
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter network namespace %s: %w", n.Name, err)
			return
		}
		err = fn()
		if unix.Setns(int(home.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// Listen opens a TCP listener in the namespace.
func (n Netns) Listen(addr string) (net.Listener, error) {
	var l net.Listener
	err := n.Do(func() (err error) {
		l, err = net.Listen("tcp", addr)
		return err
	})
	return l, err
}

// DialContext dials a TCP address from inside the namespace (for an http.Transport).
func (n Netns) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := n.Do(func() (err error) {
		d := net.Dialer{Timeout: 5 * time.Second}
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// forwarder copies TCP connections from a listener to a dialed address, until closed.
type forwarder struct {
	l    net.Listener
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
	to   string
	wg   sync.WaitGroup
}

// serve copies each accepted connection until the forwarder closes: the connections live as long as
// the forwarder, not as long as the context that set it up, and each dial has a deadline of its own.
//
//nolint:contextcheck // the forwarded connections outlive the context that started the forwarder.
func (f *forwarder) serve() {
	for {
		c, err := f.l.Accept()
		if err != nil {
			return
		}
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			defer c.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			up, err := f.dial(ctx, "tcp", f.to)
			cancel()
			if err != nil {
				return
			}
			defer up.Close()
			done := make(chan struct{}, 2)
			go func() { _, _ = io.Copy(up, c); closeWrite(up); done <- struct{}{} }()
			go func() { _, _ = io.Copy(c, up); closeWrite(c); done <- struct{}{} }()
			<-done
			<-done
		}()
	}
}

func closeWrite(c net.Conn) {
	if t, ok := c.(*net.TCPConn); ok {
		_ = t.CloseWrite()
	}
}

// Close stops accepting; open connections end when either side closes.
func (f *forwarder) Close() error { return f.l.Close() }

// ForwardIn makes hostAddr on this machine's loopback reach the same address inside the namespace: the
// API server listens on 127.0.0.1:PORT in the node's namespace and kubectl on the host uses the same
// kubeconfig.
func (n Netns) ForwardIn(addr string) (io.Closer, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s for the forwarder into %s: %w", addr, n.Name, err)
	}
	f := &forwarder{l: l, dial: n.DialContext, to: addr}
	go f.serve()
	return f, nil
}

// ForwardOut makes addr inside the namespace reach the same address on this machine's loopback: the
// node's containerd pulls from a registry the tests serve on the host.
func (n Netns) ForwardOut(addr string) (io.Closer, error) { return n.ForwardOutTo(addr, addr) }

// ForwardOutTo makes addr inside the namespace reach to on this machine's network.
func (n Netns) ForwardOutTo(addr, to string) (io.Closer, error) {
	l, err := n.Listen(addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s in %s for the forwarder out: %w", addr, n.Name, err)
	}
	d := &net.Dialer{Timeout: 5 * time.Second}
	f := &forwarder{l: l, dial: d.DialContext, to: to}
	go f.serve()
	return f, nil
}
