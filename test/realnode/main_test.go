// Package realnode runs the operator against a real node (containerd, runc, the kubelet, kube-router
// enforcing NetworkPolicies) and observes, from inside the pods, what the kernel and the network
// actually do with the sandbox and the fence the operator declares.
package realnode

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/mcp-warden/mcp-warden/controllers"
	"github.com/mcp-warden/mcp-warden/internal/localcluster"
	"github.com/mcp-warden/mcp-warden/internal/testenv"
	"github.com/mcp-warden/mcp-warden/operator"
	"github.com/mcp-warden/mcp-warden/supplychain/imageverify/imagetest"
	"github.com/mcp-warden/mcp-warden/supplychain/release"
)

var (
	// skipReason is set when this machine cannot run a real node at all (not Linux, not root).
	skipReason string
	env        *testenv.Env
	k8s        client.Client
	cs         *kubernetes.Clientset
	probeImage string
	// issuer is the token issuer (issuerURL) the operator fetches keys from.
	issuer *testenv.Issuer
	// registryHost is the in-process registry (127.0.0.1:PORT) the node pulls from; gatewayImage is the
	// gateway image the tests' manager puts in front of servers.
	registryHost, gatewayImage string
	// filesImage is the demo MCP server (cmd/mcp-files), for the stdio transport.
	filesImage string
	// everythingImage is the third-party reference server @modelcontextprotocol/server-everything on
	// Node.js, from npm (hack/everything.sh); empty, with everythingSkip saying why, when
	// MCP_WARDEN_EVERYTHING is not set.
	everythingImage, everythingSkip string
	// hosts are the test hosts' listeners in the hosts namespace, by address, counting connections.
	hosts = map[string]*localcluster.TestHost{}
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	err := localcluster.RealNodePrerequisites()
	if errors.Is(err, localcluster.ErrRealNodeImpossible) {
		skipReason = err.Error()
		fmt.Fprintf(os.Stderr, "\n*** SKIPPING every real-node test: %s ***\n\n", skipReason)
		return m.Run()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "real node: %v\n", err)
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := time.Now()
	root, err := localcluster.ModuleRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	reg := imagetest.StartRegistry()
	defer reg.Close()
	registryHost = reg.Host
	pause, err := localcluster.PushSandboxImage(ctx, root, reg.Host)
	if err != nil {
		fmt.Fprintln(os.Stderr, "build the sandbox image:", err)
		return 1
	}
	gw, err := localcluster.PushImage(ctx, root, reg.Host, release.Components[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "build the gateway image:", err)
		return 1
	}
	gatewayImage = gw
	if probeImage, err = localcluster.PushImage(ctx, root, reg.Host, localcluster.ProbeComponent); err != nil {
		fmt.Fprintln(os.Stderr, "build the probe image:", err)
		return 1
	}
	if filesImage, err = localcluster.PushImage(ctx, root, reg.Host, release.Component{Name: "mcp-files", Package: "./cmd/mcp-files", Binary: "/mcp-files"}); err != nil {
		fmt.Fprintln(os.Stderr, "build the mcp-files image:", err)
		return 1
	}
	dns, err := localcluster.PushClusterDNSImage(ctx, root, reg.Host)
	if err != nil {
		fmt.Fprintln(os.Stderr, "build the cluster DNS image:", err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "real node: images built and pushed in %s\n", time.Since(start).Round(100*time.Millisecond))
	if tree := os.Getenv("MCP_WARDEN_EVERYTHING"); tree == "" {
		everythingSkip = "MCP_WARDEN_EVERYTHING is not set: run the tests with `make test`, or export MCP_WARDEN_EVERYTHING=$(hack/everything.sh)"
	} else {
		t0 := time.Now()
		if everythingImage, err = localcluster.PushTreeImage(ctx, reg.Host, "server-everything", tree, []string{everythingNode, everythingMain}); err != nil {
			fmt.Fprintln(os.Stderr, "build the server-everything image from", tree+":", err)
			return 1
		}
		fmt.Fprintf(os.Stderr, "real node: server-everything image (Node.js and npm packages, %s) built and pushed in %s\n", tree, time.Since(t0).Round(100*time.Millisecond))
	}
	nodeStart := time.Now()
	env, err = testenv.Start(ctx, localcluster.Options{
		RealNode: true, Registries: []string{reg.Host}, SandboxImage: pause,
		DNSImage: dns, DNSRecords: map[string]string{"public.test": localcluster.PublicHostIP, "metadata.test": localcluster.MetadataIP},
		Out: func(f string, a ...any) { fmt.Fprintf(os.Stderr, "real node: "+f+"\n", a...) },
	}, func(c *localcluster.Cluster) operator.Options {
		// The token issuer is a test host on a private address (issuerURL), in the hosts namespace;
		// the operator fetches its keys from there, and no server pod may reach it.
		l, lerr := c.Hosts().Listen(localcluster.PrivateHostIP + ":443")
		if lerr != nil {
			fmt.Fprintln(os.Stderr, "issuer:", lerr)
			return operator.Options{GatewayImage: gw}
		}
		issuer = testenv.StartIssuerOn(l, c.Hosts().DialContext)
		return operator.Options{GatewayImage: gw, IssuerKeys: issuer.Fetcher(2 * time.Second),
			// A Prometheus and an OpenTelemetry collector, as a platform runs them (telemetry_test.go).
			MetricsScraper: controllers.Peer{Namespace: scraperNamespace, PodLabels: scraperLabels},
			Telemetry: controllers.Telemetry{OTLPEndpoint: collectorEndpoint,
				Collector: controllers.Peer{Namespace: collectorNamespace, PodLabels: collectorLabels}}}
	})
	defer env.Stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "real node:", err)
		return 1
	}
	if issuer == nil {
		fmt.Fprintln(os.Stderr, "real node: the test issuer did not start")
		return 1
	}
	defer issuer.Close()
	fmt.Fprintf(os.Stderr, "real node: node Ready %s after start (logs in %s)\n", time.Since(nodeStart).Round(100*time.Millisecond), env.Cluster.LogDir)
	k8s = env.Client
	if cs, err = kubernetes.NewForConfig(env.Cluster.Config); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for _, a := range append(localcluster.TestHostAddrs, localcluster.PrivateHostIP+":53") {
		h, err := localcluster.StartTestHost(env.Cluster.Hosts(), a)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer h.Close()
		hosts[a] = h
	}
	code := m.Run()
	fmt.Fprintf(os.Stderr, "real node: memory (RSS) %s\n", rssReport())
	return code
}

func needNode(t *testing.T) {
	t.Helper()
	if skipReason != "" {
		t.Skip("SKIPPED, no real node on this machine: " + skipReason)
	}
}

// clientPod starts a sandboxed pod with the given labels that sleeps, for exec, and waits for it to
// run.
func clientPod(t *testing.T, ns, name string, labels map[string]string) *corev1.Pod {
	t.Helper()
	p := localcluster.ClientPod(ns, name, probeImage, labels)
	if err := k8s.Create(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	return waitRunning(t, ns, name, 60*time.Second)
}

func ptrTo[T any](v T) *T { return &v }

// waitRunning waits for the pod to be Running with every container ready, and reports the pod's last
// state and events if it is not.
func waitRunning(t *testing.T, ns, name string, timeout time.Duration) *corev1.Pod {
	t.Helper()
	p := &corev1.Pod{}
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, p); err != nil {
			return false, nil
		}
		if p.Status.Phase != corev1.PodRunning {
			return false, nil
		}
		for _, c := range p.Status.ContainerStatuses {
			if !c.Ready {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		t.Fatalf("pod %s/%s not Running and ready after %s: phase %s, containers %+v\nevents:\n%s", ns, name, timeout, p.Status.Phase, p.Status.ContainerStatuses, events(ns))
	}
	return p
}

// events lists the namespace's events for a failure message.
//
//nolint:contextcheck // called after the caller's deadline may have passed, so it does not inherit it.
func events(ns string) string {
	evs := &corev1.EventList{}
	_ = k8s.List(context.Background(), evs, client.InNamespace(ns))
	var b strings.Builder
	for _, e := range evs.Items {
		fmt.Fprintf(&b, "  %s %s: %s %s\n", e.InvolvedObject.Kind, e.InvolvedObject.Name, e.Reason, e.Message)
	}
	return b.String()
}

// execIn runs a command in a container through the API server and the kubelet (kubectl exec) and
// returns its stdout. Each exec has its own 60 s deadline; callers that retry bound the retries.
//
//nolint:contextcheck // one exec's deadline is its own, not the retrying caller's poll.
func execIn(t *testing.T, ns, pod, container string, cmd ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := localcluster.Exec(ctx, env.Cluster.Config, ns, pod, container, cmd...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// rssReport sums the resident memory of the node's processes by name (from /proc).
func rssReport() string {
	want := []string{"kubelet", "containerd", "containerd-shim-runc-v2", "kube-router", "kube-proxy", "kube-apiserver", "etcd"}
	sums := map[string]int64{}
	counts := map[string]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		raw, err := os.ReadFile(filepath.Join("/proc", e.Name(), "status"))
		if err != nil {
			continue
		}
		var name string
		var rss int64
		for _, line := range strings.Split(string(raw), "\n") {
			if v, ok := strings.CutPrefix(line, "Name:"); ok {
				name = strings.TrimSpace(v)
			}
			if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				_, _ = fmt.Sscanf(strings.TrimSpace(v), "%d", &rss)
			}
		}
		// /proc's Name is at most 15 characters.
		for _, w := range want {
			if name != "" && strings.HasPrefix(w, name) && len(name) >= min(len(w), 15) {
				sums[w] += rss
				counts[w]++
			}
		}
	}
	var parts []string
	for _, w := range want {
		if counts[w] > 0 {
			parts = append(parts, fmt.Sprintf("%s %d MiB (%d)", w, sums[w]/1024, counts[w]))
		}
	}
	return strings.Join(parts, ", ")
}
