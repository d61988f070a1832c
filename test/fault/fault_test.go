// Package fault runs the operator through faults on a real control plane (etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler and a KWOK node): kube-apiserver killed and restarted
// mid-reconcile, the API server becoming unreachable mid-reconcile, the manager killed and restarted, and leader election handing over between two
// managers. Each test ends when every MCPServer converged with exactly its own children.
package fault

import (
	"context"
	"flag"
	"fmt"
	"net"
	neturl "net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
	"github.com/mcp-warden/mcp-warden/controllers"
	"github.com/mcp-warden/mcp-warden/internal/localcluster"
	"github.com/mcp-warden/mcp-warden/internal/testenv"
	"github.com/mcp-warden/mcp-warden/operator"
)

var (
	cluster *localcluster.Cluster
	k8s     client.Client
)

func TestMain(m *testing.M) {
	flag.Parse()
	ctrl.SetLogger(logr.Discard())
	os.Exit(run(m))
}

func run(m *testing.M) int {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	root, err := localcluster.ModuleRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	cluster, err = localcluster.Start(ctx, localcluster.Options{CRDDirs: []string{filepath.Join(root, "config", "crd", "bases")}, Controllers: true})
	defer func() {
		if cluster != nil {
			_ = cluster.Stop()
		}
	}()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if k8s, err = client.New(cluster.Config, client.Options{Scheme: operator.Scheme()}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// runningManager is an operator instance in this process.
type runningManager struct {
	mgr    manager.Manager
	cancel context.CancelFunc
	done   chan error
}

// startManager starts an operator against cfg; stop it with stop (a kill, as far as the cluster can tell:
// nothing is cleaned up).
func startManager(t *testing.T, cfg *rest.Config, o operator.Options) *runningManager {
	t.Helper()
	o.MetricsAddr, o.ProbeAddr, o.SeveralInProcess = "0", "0", true
	if o.IssuerKeys == nil {
		// The suite's servers trust https://auth.example.com; its keys come from an in-process issuer.
		is := testenv.StartIssuer()
		t.Cleanup(is.Close)
		o.IssuerKeys = is.Fetcher(0)
	}
	mgr, err := operator.New(cfg, o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	rm := &runningManager{mgr: mgr, cancel: cancel, done: make(chan error, 1)}
	go func() { rm.done <- mgr.Start(ctx) }()
	t.Cleanup(rm.stop)
	return rm
}

func (rm *runningManager) stop() {
	rm.cancel()
	select {
	case <-rm.done: //nolint:errcheck // the manager was cancelled; only waiting for it matters
	case <-time.After(30 * time.Second):
	}
}

func namespace(t *testing.T) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "fault-", Labels: map[string]string{"pod-security.kubernetes.io/enforce": "restricted"}}}
	if err := k8s.Create(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
	return ns.Name
}

func createServers(t *testing.T, ns, prefix string, n int) []string {
	t.Helper()
	var names []string
	for i := range n {
		name := fmt.Sprintf("%s-%02d", prefix, i)
		s := &mcpv1alpha1.MCPServer{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec: mcpv1alpha1.MCPServerSpec{
				Image:   "ghcr.io/acme/files@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
				Gateway: mcpv1alpha1.GatewaySpec{Auth: mcpv1alpha1.GatewayAuth{Issuer: "https://auth.example.com"}, Scopes: []mcpv1alpha1.ScopeGrant{{Scope: "files:read", Tools: []string{"read_file"}}}},
			},
		}
		if err := k8s.Create(context.Background(), s); err != nil {
			t.Fatal(err)
		}
		names = append(names, name)
	}
	return names
}

// waitConverged waits until exactly the named servers exist in ns, each Ready for its current
// generation, each with exactly one Deployment, Service, ServiceAccount, NetworkPolicy and gateway
// ConfigMap that it controls, and no child controlled by anything else. It returns how long it took.
func waitConverged(t *testing.T, ns string, names []string, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	var last error
	for time.Since(start) < timeout {
		if last = converged(ns, names); last == nil {
			return time.Since(start)
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("not converged after %s: %v", timeout, last)
	return 0
}

func converged(ns string, names []string) error {
	ctx := context.Background()
	list := &mcpv1alpha1.MCPServerList{}
	if err := k8s.List(ctx, list, client.InNamespace(ns)); err != nil {
		return err
	}
	uids := map[string]string{}
	for _, s := range list.Items {
		c := meta.FindStatusCondition(s.Status.Conditions, mcpv1alpha1.ConditionReady)
		if c == nil || c.Status != metav1.ConditionTrue || s.Status.ObservedGeneration != s.Generation {
			return fmt.Errorf("%s not Ready: %+v", s.Name, c)
		}
		uids[string(s.UID)] = s.Name
	}
	if len(uids) != len(names) {
		return fmt.Errorf("%d servers, want %d", len(uids), len(names))
	}
	kinds := map[string]client.ObjectList{
		"Deployment": &appsv1.DeploymentList{}, "Service": &corev1.ServiceList{}, "ServiceAccount": &corev1.ServiceAccountList{},
		"NetworkPolicy": &networkingv1.NetworkPolicyList{}, "ConfigMap": &corev1.ConfigMapList{},
	}
	for kind, l := range kinds {
		if err := k8s.List(ctx, l, client.InNamespace(ns), client.MatchingLabels{controllers.LabelManagedBy: "mcp-warden"}); err != nil {
			return err
		}
		per := map[string]int{}
		var bad error
		_ = meta.EachListItem(l, func(o runtime.Object) error {
			obj := o.(client.Object)
			if kind == "ConfigMap" && obj.GetName() == "mcp-warden-ca" {
				return nil // the namespace's CA bundle belongs to no one server
			}
			ref := metav1.GetControllerOf(obj)
			if ref == nil || uids[string(ref.UID)] == "" {
				bad = fmt.Errorf("%s %s is orphaned or owned by a deleted server (%+v)", kind, obj.GetName(), ref)
				return nil
			}
			per[uids[string(ref.UID)]]++
			return nil
		})
		if bad != nil {
			return bad
		}
		for _, n := range names {
			if per[n] != 1 {
				return fmt.Errorf("server %s has %d %s children, want 1", n, per[n], kind)
			}
		}
	}
	return nil
}

// outageProxy forwards TCP to the API server and can cut every connection and refuse new ones, as an
// API server that went down does, then come back on the same address.
type outageProxy struct {
	target, addr string
	mu           sync.Mutex
	ln           net.Listener
	conns        map[net.Conn]bool
}

func newOutageProxy(t *testing.T, target string) *outageProxy {
	p := &outageProxy{target: target, conns: map[net.Conn]bool{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.addr = ln.Addr().String()
	p.serve(ln)
	t.Cleanup(p.down)
	return p
}

func (p *outageProxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.DialTimeout("tcp", p.target, 5*time.Second)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns[c], p.conns[u] = true, true
			p.mu.Unlock()
			pipe := func(dst, src net.Conn) {
				buf := make([]byte, 32<<10)
				for {
					n, err := src.Read(buf)
					if n > 0 {
						if _, werr := dst.Write(buf[:n]); werr != nil {
							break
						}
					}
					if err != nil {
						break
					}
				}
				dst.Close()
				src.Close()
			}
			go pipe(u, c)
			go pipe(c, u)
		}
	}()
}

// down closes the listener and every open connection.
func (p *outageProxy) down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		c.Close()
	}
	p.conns = map[net.Conn]bool{}
}

// up listens again on the same address.
func (p *outageProxy) up(t *testing.T) {
	var ln net.Listener
	var err error
	for range 50 {
		if ln, err = net.Listen("tcp", p.addr); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	p.serve(ln)
}

// TestAPIServerOutageMidReconcile: the API server becomes unreachable while the operator reconciles a
// batch of servers (every connection cut, new ones refused, for 8 s), and more servers are created in the
// meantime. Once it is back, every server converges without a restart of the operator.
func TestAPIServerOutageMidReconcile(t *testing.T) {
	ns := namespace(t)
	host, err := url(cluster.Config.Host)
	if err != nil {
		t.Fatal(err)
	}
	proxy := newOutageProxy(t, host)
	cfg := rest.CopyConfig(cluster.Config)
	cfg.Host = "https://" + proxy.addr
	startManager(t, cfg, operator.Options{})

	names := createServers(t, ns, "before", 15)
	time.Sleep(700 * time.Millisecond) // mid-reconcile
	proxy.down()
	names = append(names, createServers(t, ns, "during", 5)...) // straight to the API server
	time.Sleep(8 * time.Second)
	proxy.up(t)
	took := waitConverged(t, ns, names, 3*time.Minute)
	t.Logf("20 servers converged %s after the API server came back", took.Round(100*time.Millisecond))
}

// TestAPIServerRestartMidReconcile: kube-apiserver itself is killed (SIGKILL) while the operator
// reconciles a batch of servers, stays down for 5 s, and is started again on the same address and etcd.
// Every watch and connection of the operator, kube-controller-manager, the scheduler and the node is
// reset. Servers created after the restart and those caught mid-reconcile all converge, without a
// restart of the operator.
func TestAPIServerRestartMidReconcile(t *testing.T) {
	ns := namespace(t)
	startManager(t, cluster.Config, operator.Options{})

	names := createServers(t, ns, "before", 15)
	time.Sleep(700 * time.Millisecond) // mid-reconcile
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	restarted := time.Now()
	if err := cluster.RestartAPIServer(ctx, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	t.Logf("kube-apiserver killed and serving again after %s", time.Since(restarted).Round(100*time.Millisecond))
	names = append(names, createServers(t, ns, "after", 5)...)
	took := waitConverged(t, ns, names, 3*time.Minute)
	t.Logf("20 servers converged %s after the restarted API server was ready", took.Round(100*time.Millisecond))
}

// TestManagerKilledAndRestarted: the operator stops mid-reconcile (its context cancelled: nothing is
// cleaned up), a server is deleted and others created while it is down, and a new instance converges:
// no duplicates, no orphans, the deleted server's children collected by the garbage collector.
func TestManagerKilledAndRestarted(t *testing.T) {
	ns := namespace(t)
	first := startManager(t, cluster.Config, operator.Options{})
	names := createServers(t, ns, "s", 15)
	time.Sleep(1500 * time.Millisecond)
	first.stop()

	ctx := context.Background()
	gone := &mcpv1alpha1.MCPServer{ObjectMeta: metav1.ObjectMeta{Name: names[0], Namespace: ns}}
	if err := k8s.Delete(ctx, gone, client.PropagationPolicy(metav1.DeletePropagationBackground)); err != nil {
		t.Fatal(err)
	}
	names = append(names[1:], createServers(t, ns, "late", 5)...)

	startManager(t, cluster.Config, operator.Options{})
	took := waitConverged(t, ns, names, 3*time.Minute)
	t.Logf("19 servers converged %s after the restart, with no orphans", took.Round(100*time.Millisecond))
}

// TestLeaderElectionHandover: two managers elect one leader; the other does not reconcile. When the
// leader stops, the other takes over and reconciles what is created next.
func TestLeaderElectionHandover(t *testing.T) {
	ns := namespace(t)
	le := operator.Options{LeaderElection: true, LeaderElectionNamespace: "default", LeaseDuration: 4 * time.Second, RenewDeadline: 3 * time.Second, RetryPeriod: 500 * time.Millisecond}
	a := startManager(t, cluster.Config, le)
	select {
	case <-a.mgr.Elected():
	case <-time.After(30 * time.Second):
		t.Fatal("the first manager was not elected")
	}
	b := startManager(t, cluster.Config, le)
	select {
	case <-b.mgr.Elected():
		t.Fatal("two leaders at once")
	case <-time.After(3 * time.Second):
	}
	names := createServers(t, ns, "a", 3)
	waitConverged(t, ns, names, time.Minute)

	stopped := time.Now()
	a.stop()
	select {
	case <-b.mgr.Elected():
	case <-time.After(30 * time.Second):
		t.Fatal("the second manager did not take over")
	}
	handover := time.Since(stopped)
	names = append(names, createServers(t, ns, "b", 3)...)
	took := waitConverged(t, ns, names, time.Minute)
	t.Logf("handover in %s; new servers converged %s later", handover.Round(100*time.Millisecond), took.Round(100*time.Millisecond))
	if handover > 10*time.Second {
		t.Errorf("handover took %s; the lease is released on stop, so it should take about a retry period", handover)
	}
}

func url(host string) (string, error) {
	u, err := neturl.Parse(host)
	if err != nil {
		return "", err
	}
	return u.Host, nil
}
