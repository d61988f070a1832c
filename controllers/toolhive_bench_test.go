package controllers_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/mcp-warden/mcp-warden/operator"
)

// ToolHive's operator (hack/toolhive.sh builds it, MCP_WARDEN_TOOLHIVE names its directory) run out of
// cluster against the same control plane, on the same N, in the same run. Its MCPServer is Ready when
// its status.phase is "Ready": the operator saw its proxy Deployment's pod running with every container
// ready and the server's StatefulSet present. On a real cluster the proxy runner, once its pod runs,
// creates that StatefulSet; the simulated node runs no process, so the benchmark creates each
// StatefulSet (zero replicas, owned by the MCPServer so the operator hears of it) right after the
// MCPServer. That is earlier and cheaper than the proxy runner could, so ToolHive's time is a lower bound.
var toolhiveServer = schema.GroupVersionKind{Group: "toolhive.stacklok.dev", Version: "v1beta1", Kind: "MCPServer"}

// toolhiveDir is the directory hack/toolhive.sh printed (bin/thv-operator, crds/), or "" to skip.
func toolhiveDir() string { return os.Getenv("MCP_WARDEN_TOOLHIVE") }

// installToolhiveCRDs creates ToolHive's CRDs (if absent) and waits until each is established.
func installToolhiveCRDs(tb testing.TB, dir string) {
	ctx := context.Background()
	files, err := filepath.Glob(filepath.Join(dir, "crds", "*.yaml"))
	if err != nil || len(files) == 0 {
		tb.Fatalf("ToolHive CRDs: none in %s/crds (%v); run hack/toolhive.sh", dir, err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			tb.Fatal(err)
		}
		crd := &apiextensionsv1.CustomResourceDefinition{}
		if err := yaml.Unmarshal(b, crd); err != nil {
			tb.Fatalf("ToolHive CRD %s: %v", f, err)
		}
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(b, &u.Object); err != nil {
			tb.Fatalf("ToolHive CRD %s: %v", f, err)
		}
		if err := k8s.Create(ctx, u); err != nil && !apierrors.IsAlreadyExists(err) {
			tb.Fatalf("create ToolHive CRD %s: %v", crd.Name, err)
		}
		eventuallyB(tb, time.Minute, func() error {
			got := &unstructured.Unstructured{}
			got.SetGroupVersionKind(schema.GroupVersionKind{Group: "apiextensions.k8s.io", Version: "v1", Kind: "CustomResourceDefinition"})
			if err := k8s.Get(ctx, client.ObjectKey{Name: crd.Name}, got); err != nil {
				return err
			}
			conds, _, _ := unstructured.NestedSlice(got.Object, "status", "conditions")
			for _, c := range conds {
				m, _ := c.(map[string]any)
				if m["type"] == "Established" && m["status"] == "True" {
					return nil
				}
			}
			return fmt.Errorf("CRD %s not established", crd.Name)
		})
	}
}

// startToolhive runs ToolHive's operator for one namespace, waits for its readiness endpoint and
// returns a stop.
func startToolhive(tb testing.TB, dir, ns string) func() {
	port := freePort(tb)
	metrics := freePort(tb)
	cmd := exec.Command(filepath.Join(dir, "bin", "thv-operator"),
		"--health-probe-bind-address=127.0.0.1:"+strconv.Itoa(port), "--metrics-bind-address=127.0.0.1:"+strconv.Itoa(metrics))
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig, "WATCH_NAMESPACE="+ns, "POD_NAMESPACE="+ns)
	logf, err := os.CreateTemp("", "mcp-warden-bench-toolhive-"+ns+"-*.log")
	if err != nil {
		tb.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start ToolHive's operator: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() {
		_ = cmd.Process.Kill()
		tb.Logf("ToolHive's operator stopped: %v", <-exited)
		_ = logf.Close()
	}
	hc := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(time.Minute)
	for {
		select {
		case err := <-exited:
			tb.Fatalf("ToolHive's operator exited: %v (log: %s)", err, logf.Name())
		default:
		}
		if resp, err := hc.Get(fmt.Sprintf("http://127.0.0.1:%d/readyz", port)); err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return stop
			}
		}
		if time.Now().After(deadline) {
			stop()
			tb.Fatalf("ToolHive's operator not ready after a minute (log: %s)", logf.Name())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func freePort(tb testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// createToolhiveFleet creates n ToolHive MCPServers at once in a fresh namespace watched by a ToolHive
// operator of its own, and returns how long it took until every one's phase was Ready.
func createToolhiveFleet(tb testing.TB, dir string, n int, timeout time.Duration) time.Duration {
	ctx := context.Background()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "toolhive-"}}
	if err := k8s.Create(ctx, ns); err != nil {
		tb.Fatal(err)
	}
	stop := startToolhive(tb, dir, ns.Name)
	defer stop()
	start := time.Now()
	// Created as mcp-warden's MCPServers are: by as many clients at once as mcp-warden has workers.
	work := make(chan int)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for range operator.DefaultMaxConcurrentReconciles() {
		wg.Go(func() {
			for i := range work {
				if err := createToolhiveServer(ctx, ns.Name, fmt.Sprintf("t%04d", i)); err != nil {
					errs <- err
				}
			}
		})
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		tb.Fatal(err)
	}
	waitAll(tb, ns.Name, toolhiveServer, n, timeout, func(u *unstructured.Unstructured) bool {
		phase, _, _ := unstructured.NestedString(u.Object, "status", "phase")
		return phase == "Ready"
	})
	return time.Since(start)
}

// createToolhiveServer creates one ToolHive MCPServer and the StatefulSet its proxy runner would create.
func createToolhiveServer(ctx context.Context, ns, name string) error {
	s := &unstructured.Unstructured{}
	s.SetGroupVersionKind(toolhiveServer)
	s.SetNamespace(ns)
	s.SetName(name)
	s.Object["spec"] = map[string]any{"image": digestImage}
	if err := k8s.Create(ctx, s); err != nil {
		return fmt.Errorf("create ToolHive MCPServer: %w", err)
	}
	// The proxy runner's StatefulSet (see above).
	sts := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"toolhive": "true", "toolhive-name": name},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: toolhiveServer.GroupVersion().String(), Kind: toolhiveServer.Kind, Name: name, UID: s.GetUID(), Controller: ptr.To(true)}}},
		Spec: appsv1.StatefulSetSpec{
			Replicas: ptr.To(int32(0)),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"toolhive-sts": name}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"toolhive-sts": name}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "mcp", Image: digestImage}}},
			},
		},
	}
	if err := k8s.Create(ctx, sts); err != nil {
		return fmt.Errorf("create the StatefulSet of ToolHive MCPServer %s: %w", name, err)
	}
	return nil
}

// eventuallyB is eventually for benchmarks too.
func eventuallyB(tb testing.TB, timeout time.Duration, cond func() error) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = cond(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	tb.Fatalf("after %s: %v", timeout, err)
}
