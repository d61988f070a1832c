package localcluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/utils/ptr"

	"github.com/mcp-warden/mcp-warden/policy/sandbox"
	"github.com/mcp-warden/mcp-warden/supplychain/release"
)

// What the real-node tests and the demo share to observe the node: the probe image (test/realnode/probe)
// that pods run to dial, resolve and speak MCP from inside the cluster, the test hosts the fence is
// tried against, and exec through the API server.

// ProbeComponent is the probe's image (see test/realnode/probe), for PushImage.
var ProbeComponent = release.Component{Name: "probe", Package: "./test/realnode/probe", Binary: "/probe"}

// TestHostAddrs are the fence's test hosts, each answering HTTP in the hosts namespace: the metadata
// address, a private host, and the public-looking host on the port a sample allow-lists (443) and on
// one it does not (80).
var TestHostAddrs = []string{MetadataIP + ":80", PrivateHostIP + ":80", PublicHostIP + ":443", PublicHostIP + ":80"}

// TestHost answers HTTP on one address in the hosts namespace and counts accepted connections, so a
// test sees whether a blocked dial reached it at all.
type TestHost struct {
	Addr  string
	conns atomic.Int64
	srv   *http.Server
}

// Conns is the number of connections the host accepted.
func (h *TestHost) Conns() int64 { return h.conns.Load() }

// Close stops the host.
func (h *TestHost) Close() error { return h.srv.Close() }

// StartTestHost serves HTTP on addr inside ns (the hosts namespace, see Cluster.Hosts).
func StartTestHost(ns *Netns, addr string) (*TestHost, error) {
	l, err := ns.Listen(addr)
	if err != nil {
		return nil, fmt.Errorf("test host %s in %s: %w", addr, ns.Name, err)
	}
	h := &TestHost{Addr: addr}
	h.srv = &http.Server{
		Handler:           http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintf(w, "test host %s\n", addr) }),
		ReadHeaderTimeout: 5 * time.Second,
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				h.conns.Add(1)
			}
		},
	}
	go func() { _ = h.srv.Serve(l) }()
	return h, nil
}

// ClientPod is a sandboxed pod running `probe sleep` (a client to exec in) with the given labels.
func ClientPod(ns, name, probeImage string, labels map[string]string) *corev1.Pod {
	vols, mounts := sandbox.Volumes()
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
		Spec: corev1.PodSpec{
			AutomountServiceAccountToken:  ptr.To(false),
			SecurityContext:               sandbox.PodSecurityContext(),
			Volumes:                       vols,
			TerminationGracePeriodSeconds: ptr.To(int64(1)),
			Containers: []corev1.Container{{
				Name: "probe", Image: probeImage, Args: []string{"sleep"},
				SecurityContext: sandbox.ContainerSecurityContext(), VolumeMounts: mounts,
			}},
		},
	}
}

// Exec runs a command in a container through the API server and the kubelet (kubectl exec) and returns
// its stdout; the error carries its stderr.
func Exec(ctx context.Context, cfg *rest.Config, ns, pod, container string, cmd ...string) ([]byte, error) {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	req := cs.CoreV1().RESTClient().Post().Resource("pods").Namespace(ns).Name(pod).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{Container: container, Command: cmd, Stdout: true, Stderr: true}, scheme.ParameterCodec)
	ex, err := remotecommand.NewSPDYExecutor(cfg, http.MethodPost, req.URL())
	if err != nil {
		return nil, err
	}
	var stdout, stderr bytes.Buffer
	if err := ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: &stdout, Stderr: &stderr}); err != nil {
		return stdout.Bytes(), fmt.Errorf("exec %v in %s/%s (%s): %w; stderr: %s", cmd, ns, pod, container, err, bytes.TrimSpace(stderr.Bytes()))
	}
	return stdout.Bytes(), nil
}

// DialResult is one TCP connect (the probe's `dial` output): Result is "connected", "refused",
// "timeout" or another error.
type DialResult struct{ Addr, Result string }

// Blocked says a dial did not connect because something refused or dropped it (kube-router rejects).
func Blocked(result string) bool { return result == "refused" || result == "timeout" }

// ExecDial runs `probe dial` in a container whose image has the probe and returns the result by address.
func ExecDial(ctx context.Context, cfg *rest.Config, ns, pod, container string, addrs ...string) (map[string]string, error) {
	out, err := Exec(ctx, cfg, ns, pod, container, append([]string{"/probe", "dial"}, addrs...)...)
	if err != nil {
		return nil, err
	}
	var rs []DialResult
	if err := json.Unmarshal(out, &rs); err != nil {
		return nil, fmt.Errorf("probe dial: %w: %s", err, out)
	}
	m := map[string]string{}
	for _, r := range rs {
		m[r.Addr] = r.Result
	}
	return m, nil
}

// ContainerNetns is the network namespace of a running container on the real node (its pod's), found
// through its first process: what `nsenter --target PID --net` enters. A container whose image has no
// program to dial with (a server image is the server alone, and its pod admits no ephemeral container)
// is observed from there: the same interfaces, addresses and routes, so the same firewall rules.
func (c *Cluster) ContainerNetns(containerID string) (*Netns, error) {
	procs, err := c.ContainerProcessStatus(containerID)
	if err != nil {
		return nil, err
	}
	p := filepath.Join("/proc", procs[0]["Pid"], "ns", "net")
	if _, err := os.Stat(p); err != nil {
		return nil, fmt.Errorf("network namespace of container %s: %w", containerID, err)
	}
	return &Netns{Name: "container " + containerID, path: p}, nil
}

// DialEach connects to each address from inside n, 2 s each (within ctx), with the probe's verdicts.
func (n Netns) DialEach(ctx context.Context, addrs ...string) map[string]string {
	out := map[string]string{}
	for _, a := range addrs {
		dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		c, err := n.DialContext(dctx, "tcp", a)
		cancel()
		switch {
		case err == nil:
			c.Close()
			out[a] = "connected"
		case errors.Is(err, syscall.ECONNREFUSED):
			out[a] = "refused"
		case isTimeout(err):
			out[a] = "timeout"
		default:
			out[a] = err.Error()
		}
	}
	return out
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}
