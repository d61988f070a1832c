package operator_test

import (
	"context"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/mcp-warden/mcp-warden/internal/localcluster"
	"github.com/mcp-warden/mcp-warden/operator"
)

type countingTransport struct {
	next http.RoundTripper
	n    *atomic.Int64
}

func (c countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return c.next.RoundTrip(r)
}

// TestScaleOptionsTakeEffect: the worker count, the client rate limit and the transport wrapper reach
// the running manager: its MCPServer controller starts that many workers, its reads are held to the
// rate, and every request passes through the wrapper.
func TestScaleOptionsTakeEffect(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	root, err := localcluster.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	cluster, err := localcluster.Start(ctx, localcluster.Options{CRDDirs: []string{filepath.Join(root, "config", "crd", "bases")}})
	defer func() { _ = cluster.Stop() }()
	if err != nil {
		t.Fatal(err)
	}
	base := rest.CopyConfig(cluster.Config)
	var requests atomic.Int64
	mgr, err := operator.New(cluster.Config, operator.Options{
		MetricsAddr: "0", ProbeAddr: "0", SeveralInProcess: true,
		MaxConcurrentReconciles: 7, KubeAPIQPS: 20, KubeAPIBurst: 20,
		WrapTransport: func(rt http.RoundTripper) http.RoundTripper { return countingTransport{next: rt, n: &requests} },
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := mgr.GetConfig(); got.QPS != 20 || got.Burst != 20 {
		t.Fatalf("manager client config QPS=%g Burst=%d, want 20 and 20", got.QPS, got.Burst)
	}
	if cluster.Config.QPS != base.QPS || cluster.Config.Burst != base.Burst || cluster.Config.WrapTransport != nil {
		t.Fatal("operator.New changed the caller's rest.Config")
	}

	// 60 reads at 20 per second with a burst of 20 take at least two seconds; unthrottled (the test
	// cluster's own config allows 1000 per second) they take milliseconds.
	before := requests.Load()
	start := time.Now()
	for range 60 {
		if err := mgr.GetAPIReader().Get(ctx, client.ObjectKey{Name: "default"}, &corev1.Namespace{}); err != nil {
			t.Fatal(err)
		}
	}
	if took := time.Since(start); took < 1800*time.Millisecond {
		t.Fatalf("60 reads took %s: the 20/s client rate limit is not applied", took)
	}
	if n := requests.Load() - before; n != 60 {
		t.Fatalf("the transport wrapper saw %d of the 60 reads", n)
	}

	mctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { _ = mgr.Start(mctx); close(done) }()
	// The manager stops before the control plane does.
	defer func() { stop(); <-done }()
	deadline := time.Now().Add(time.Minute)
	for {
		workers, found := gauge(t, "controller_runtime_max_concurrent_reconciles", "mcpserver")
		if found && workers == 7 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("MCPServer controller workers = %g (reported: %v), want 7", workers, found)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// gauge reads a gauge of controller-runtime's metrics registry by its controller label.
func gauge(t *testing.T, name, controller string) (float64, bool) {
	t.Helper()
	families, err := ctrlmetrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "controller" && l.GetValue() == controller {
					return m.GetGauge().GetValue(), true
				}
			}
		}
	}
	return 0, false
}

// TestInvalidScaleOptions: negative workers, rate or burst, and a burst below the rate, are refused by
// name before anything starts.
func TestInvalidScaleOptions(t *testing.T) {
	for _, tc := range []struct {
		o    operator.Options
		want string
	}{
		{operator.Options{MaxConcurrentReconciles: -1}, "MaxConcurrentReconciles is -1"},
		{operator.Options{KubeAPIQPS: -5}, "KubeAPIQPS is -5"},
		{operator.Options{KubeAPIBurst: -2}, "KubeAPIBurst is -2"},
		{operator.Options{KubeAPIQPS: 100, KubeAPIBurst: 10}, "KubeAPIBurst (10) is below KubeAPIQPS (100)"},
	} {
		_, err := operator.New(&rest.Config{Host: "https://127.0.0.1:1"}, tc.o)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %v, want it to say %q", tc.o, err, tc.want)
		}
	}
	if err := (operator.Options{}).Validate(); err != nil {
		t.Errorf("zero options (defaults): %v", err)
	}
}
