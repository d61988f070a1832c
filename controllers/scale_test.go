package controllers_test

import (
	"context"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
	"github.com/mcp-warden/mcp-warden/operator"
)

// createAndWaitReady creates n MCPServers in a fresh restricted namespace at once and returns how long
// it took until every one was Ready with its pod running.
func createAndWaitReady(tb testing.TB, n int, timeout time.Duration) time.Duration {
	took, _ := createFleet(tb, n, timeout)
	return took
}

// createFleet is createAndWaitReady that also returns the namespace.
func createFleet(tb testing.TB, n int, timeout time.Duration) (time.Duration, string) {
	ctx := context.Background()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "burst-", Labels: map[string]string{"pod-security.kubernetes.io/enforce": "restricted"}}}
	if err := k8s.Create(ctx, ns); err != nil {
		tb.Fatal(err)
	}
	// The status reads of the fleet's gateways are recorded for fleetTimeline.
	testPins.record(ns.Name)
	tb.Cleanup(func() { testPins.logs.Delete(ns.Name) })
	start := time.Now()
	// Created as the floor creates its children: by as many clients at once as the operator has
	// workers (one after the other, the creates alone take most of the time at a few hundred servers,
	// each passing the admission webhook).
	work := make(chan int)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for range operator.DefaultMaxConcurrentReconciles() {
		wg.Go(func() {
			for i := range work {
				if err := k8s.Create(ctx, newServer(ns.Name, fmt.Sprintf("s%04d", i))); err != nil {
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
	waitAll(tb, ns.Name, mcpv1alpha1.GroupVersion.WithKind("MCPServer"), n, timeout, func(u *unstructured.Unstructured) bool {
		s := &mcpv1alpha1.MCPServer{}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, s); err != nil {
			return false
		}
		c := condition(s, mcpv1alpha1.ConditionReady)
		return c != nil && c.Status == metav1.ConditionTrue
	})
	return time.Since(start), ns.Name
}

// TestBurstOfCreates: 200 MCPServers created at once are all reconciled to Ready; nothing is lost.
func TestBurstOfCreates(t *testing.T) {
	took := createAndWaitReady(t, 200, 4*time.Minute)
	t.Logf("200 MCPServers Ready in %s", took.Round(100*time.Millisecond))
}

// BenchmarkReconcileToReady measures the time for N MCPServers created at once to become Ready (pods
// scheduled and running on the simulated node) on the local control plane, beside the control plane's
// own floor measured in the same run just before: the same five children per server (ServiceAccount,
// NetworkPolicy, Service, ConfigMap, Deployment: copies of those the operator made for one server, see
// floorChildren) created directly, with the same client rate limit, until every Deployment has its
// replica available. With MCP_WARDEN_TOOLHIVE set (hack/toolhive.sh),
// ToolHive's operator is measured on the same N in the same run (see createToolhiveFleet). It also
// reports the operator's API requests per server, from create to Ready.
func BenchmarkReconcileToReady(b *testing.B) {
	for _, n := range benchSizes() {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			var total, floor, toolhive time.Duration
			// The control plane's CPU time (API server, etcd, controller manager, scheduler) while each
			// fleet went to Ready: what each way of running N servers costs the cluster itself.
			var cpu, floorCPU, toolhiveCPU time.Duration
			var writes, requests float64
			thv := toolhiveDir()
			if thv != "" {
				installToolhiveCRDs(b, thv)
			}
			measure := func(what string, run func() time.Duration) (time.Duration, time.Duration) {
				return measureFleet(b, n, what, run)
			}
			for b.Loop() {
				took, spent := measure("floor", func() time.Duration { return createFloorFleet(b, n, 10*time.Minute) })
				floor, floorCPU = floor+took, floorCPU+spent
				if thv != "" {
					took, spent = measure("ToolHive", func() time.Duration { return createToolhiveFleet(b, thv, n, 15*time.Minute) })
					toolhive, toolhiveCPU = toolhive+took, toolhiveCPU+spent
				}
				queue := snapshotQueue(b)
				var ns string
				took, spent = measure("mcp-warden", func() time.Duration {
					var took time.Duration
					took, ns = createFleet(b, n, 10*time.Minute)
					return took
				})
				b.Logf("%d servers, create to all Ready: %s", n, snapshotQueue(b).since(queue))
				total, cpu = total+took, cpu+spent
				counts, reqs := operatorRequests.of(ns)
				b.Logf("%d servers, the operator's requests from create to Ready:\n%s", n, table(counts, n))
				requests += float64(reqs) / float64(n)
				writes += steadyStateWrites(b, ns, n)
				tl := fleetTimeline(b, ns)
				b.Logf("%d servers (second resolution): created over %.0f s; creation -> Deployment available p50 %.0f s, p90 %.0f s, max %.0f s; available -> Ready p50 %.0f s, p90 %.0f s, max %.0f s",
					n, tl.created, tl.avail[0], tl.avail[1], tl.avail[2], tl.gap[0], tl.gap[1], tl.gap[2])
				b.Logf("%d servers, available -> Ready: available -> pod's first gateway status read p50 %.1f s, p90 %.1f s, max %.1f s; first read -> Ready p50 %.1f s, p90 %.1f s, max %.1f s; status reads per server until Ready p50 %.0f, max %.0f",
					n, tl.toRead[0], tl.toRead[1], tl.toRead[2], tl.readToReady[0], tl.readToReady[1], tl.readToReady[2], tl.reads[0], tl.reads[2])
			}
			b.ReportMetric(total.Seconds()/float64(b.N), "s-to-all-ready")
			b.ReportMetric(floor.Seconds()/float64(b.N), "floor-s")
			b.ReportMetric(total.Seconds()/floor.Seconds(), "x-floor")
			if thv != "" {
				b.ReportMetric(toolhive.Seconds()/float64(b.N), "toolhive-s")
				b.ReportMetric(toolhive.Seconds()/total.Seconds(), "toolhive/mcp-warden")
			}
			if floorCPU > 0 {
				b.ReportMetric(cpu.Seconds()/float64(b.N), "cp-cpu-s")
				b.ReportMetric(floorCPU.Seconds()/float64(b.N), "floor-cp-cpu-s")
				b.ReportMetric(cpu.Seconds()/floorCPU.Seconds(), "cp-cpu/floor")
				if thv != "" {
					b.ReportMetric(toolhiveCPU.Seconds()/float64(b.N), "toolhive-cp-cpu-s")
				}
			}
			b.ReportMetric(requests/float64(b.N), "requests/server")
			b.ReportMetric(writes/float64(b.N), "writes/reconcile")
		})
	}
}

// measureFleet runs one fleet's create-to-Ready (run) and logs the control plane's CPU for it and where
// the API server's went; with MCP_WARDEN_BENCH_PROFILES, the profiles are written there.
func measureFleet(b *testing.B, n int, what string, run func() time.Duration) (time.Duration, time.Duration) {
	file := strings.ToLower(strings.ReplaceAll(what, " ", "-")) + "-" + strconv.Itoa(n)
	clearFleets(b)
	before := cpuTimes()
	stop := apiserverProfile(b)
	stopOperator := func() {}
	if what == "mcp-warden" {
		stopOperator = operatorProfile(b, benchProfiles(), "operator-"+strconv.Itoa(n))
	}
	stopped := false
	defer func() {
		if !stopped { // a fleet that failed: the profiles still end
			stopOperator()
		}
	}()
	took := run()
	spent, by := controlPlaneCPU(before, cpuTimes())
	stopOperator()
	stopped = true
	b.Logf("%d servers, %s: %.1f s to Ready; control plane CPU %.1f s (%s)", n, what, took.Seconds(), spent.Seconds(), cpuTable(by))
	if p := stop(); p != nil {
		work, sampled := apiserverBreakdown(p)
		b.Logf("%d servers, %s: API server CPU samples %.1f s: %s", n, what, sampled.Seconds(), cpuTable(work))
		writeProfile(b, benchProfiles(), "apiserver-"+file+".cpu.pprof", p)
	}
	return took, spent
}

// fleetPrefixes are the namespaces' names the benchmark's fleets are created in (mcp-warden, the
// floor, ToolHive).
var fleetPrefixes = []string{"burst-", "floor-", "toolhive-"}

// clearFleets deletes the namespaces of the fleets measured before and waits until they are gone, so
// every fleet is measured on a control plane that holds none of the others (otherwise the one measured
// last pays for the watch caches, garbage collector and etcd of every fleet before it). Objects that
// hold a finalizer no running controller removes (ToolHive's, whose operator stopped with its fleet)
// have it removed.
func clearFleets(tb testing.TB) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	start := time.Now()
	for {
		nss := &corev1.NamespaceList{}
		if err := k8s.List(ctx, nss); err != nil {
			tb.Fatalf("clearing earlier fleets: %v", err)
		}
		left := 0
		for i := range nss.Items {
			ns := &nss.Items[i]
			if !slices.ContainsFunc(fleetPrefixes, func(p string) bool { return strings.HasPrefix(ns.Name, p) }) {
				continue
			}
			left++
			if ns.DeletionTimestamp == nil {
				if err := k8s.Delete(ctx, ns); client.IgnoreNotFound(err) != nil {
					tb.Fatalf("clearing earlier fleets: deleting namespace %s: %v", ns.Name, err)
				}
			} else if strings.HasPrefix(ns.Name, "toolhive-") {
				dropFinalizers(ctx, tb, ns.Name)
			}
		}
		if left == 0 {
			if took := time.Since(start); took > time.Second {
				tb.Logf("earlier fleets cleared in %.0f s", took.Seconds())
			}
			return
		}
		select {
		case <-ctx.Done():
			tb.Fatalf("clearing earlier fleets: %d namespaces still there after %s", left, time.Since(start).Round(time.Second))
		case <-time.After(2 * time.Second):
		}
	}
}

// dropFinalizers removes the finalizers of ToolHive's MCPServers in ns.
func dropFinalizers(ctx context.Context, tb testing.TB, ns string) {
	list := &unstructured.UnstructuredList{}
	list.SetGroupVersionKind(toolhiveServer.GroupVersion().WithKind(toolhiveServer.Kind + "List"))
	if err := k8s.List(ctx, list, client.InNamespace(ns)); err != nil {
		return // the CRD is not installed here, or the namespace is already empty of them
	}
	for i := range list.Items {
		u := &list.Items[i]
		if len(u.GetFinalizers()) == 0 {
			continue
		}
		patch := client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"finalizers":null}}`))
		if err := k8s.Patch(ctx, u, patch); client.IgnoreNotFound(err) != nil {
			tb.Logf("clearing earlier fleets: %s/%s: %v", ns, u.GetName(), err)
		}
	}
}

// timeline is where a fleet's time to Ready went (seconds, the API's second resolution): how long the
// creates took, and p50/p90/max from an MCPServer's creation to its Deployment's Available condition
// (the control plane's pipeline) and from that to the MCPServer's Ready condition (the operator's
// status read and write).
type timeline struct {
	created    float64
	avail, gap [3]float64
	// toRead is from the Deployment's Available to the first status read of the server's pod that
	// completed, readToReady from that read to Ready, and reads how many reads of the server's pods
	// completed until Ready (the suite's reader records them).
	toRead, readToReady, reads [3]float64
}

func fleetTimeline(tb testing.TB, ns string) timeline {
	ctx := context.Background()
	list := &mcpv1alpha1.MCPServerList{}
	deps := &appsv1.DeploymentList{}
	if err := k8s.List(ctx, list, client.InNamespace(ns)); err != nil {
		tb.Fatal(err)
	}
	if err := k8s.List(ctx, deps, client.InNamespace(ns)); err != nil {
		tb.Fatal(err)
	}
	available := map[string]time.Time{}
	for _, d := range deps.Items {
		for _, c := range d.Status.Conditions {
			if c.Type == appsv1.DeploymentAvailable && c.Status == corev1.ConditionTrue {
				available[d.Name] = c.LastTransitionTime.Time
			}
		}
	}
	var reads []podRead
	if v, ok := testPins.logs.Load(ns); ok {
		log := v.(*readLog)
		log.mu.Lock()
		reads = slices.Clone(log.reads)
		log.mu.Unlock()
	}
	var avail, gap, toRead, readToReady, count []float64
	var first, last time.Time
	for i := range list.Items {
		s := &list.Items[i]
		if c := s.CreationTimestamp.Time; first.IsZero() || c.Before(first) {
			first = c
		}
		if c := s.CreationTimestamp.Time; c.After(last) {
			last = c
		}
		a, ok := available[s.Name]
		r := condition(s, mcpv1alpha1.ConditionReady)
		if !ok || r == nil {
			continue
		}
		avail = append(avail, a.Sub(s.CreationTimestamp.Time).Seconds())
		gap = append(gap, r.LastTransitionTime.Sub(a).Seconds())
		firstRead, before := serverReads(reads, s.Name, r.LastTransitionTime.Time)
		if !firstRead.IsZero() {
			toRead = append(toRead, firstRead.Sub(a).Seconds())
			readToReady = append(readToReady, r.LastTransitionTime.Sub(firstRead).Seconds())
		}
		count = append(count, float64(before))
	}
	return timeline{created: last.Sub(first).Seconds(), avail: quantiles(avail), gap: quantiles(gap),
		toRead: quantiles(toRead), readToReady: quantiles(readToReady), reads: quantiles(count)}
}

// serverReads is when the first recorded status read of the server's pods completed (zero if none),
// and how many completed until its Ready (second resolution, so within a second after it).
func serverReads(reads []podRead, server string, ready time.Time) (first time.Time, before int) {
	for _, rd := range reads {
		if !strings.HasPrefix(rd.pod, server+"-") {
			continue
		}
		if first.IsZero() || rd.at.Before(first) {
			first = rd.at
		}
		if !rd.at.After(ready.Add(time.Second)) {
			before++
		}
	}
	return first, before
}

// quantiles is the p50, p90 and maximum of v.
func quantiles(v []float64) [3]float64 {
	if len(v) == 0 {
		return [3]float64{}
	}
	slices.Sort(v)
	return [3]float64{v[len(v)/2], v[len(v)*9/10], v[len(v)-1]}
}

// createFloorFleet creates, with a client of the operator's rate limit and as many workers as the
// operator has, n copies of the children the operator made for one server (floorChildren) in a fresh
// restricted namespace, and returns how long it took until every Deployment had its replica available.
func createFloorFleet(tb testing.TB, n int, timeout time.Duration) time.Duration {
	ctx := context.Background()
	c, err := client.New(restConfig, client.Options{Scheme: k8s.Scheme()})
	if err != nil {
		tb.Fatal(err)
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "floor-", Labels: map[string]string{"pod-security.kubernetes.io/enforce": "restricted"}}}
	if err := c.Create(ctx, ns); err != nil {
		tb.Fatal(err)
	}
	children := floorChildren(tb, ns.Name)
	start := time.Now()
	work := make(chan int)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for range operator.DefaultMaxConcurrentReconciles() {
		wg.Go(func() {
			for i := range work {
				for _, o := range children(fmt.Sprintf("f%04d", i)) {
					if err := c.Create(ctx, o); err != nil {
						errs <- err
						break
					}
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
	waitAll(tb, ns.Name, appsv1.SchemeGroupVersion.WithKind("Deployment"), n, timeout, func(u *unstructured.Unstructured) bool {
		d := &appsv1.Deployment{}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, d); err != nil {
			return false
		}
		return d.Name != floorTemplate && d.Status.ObservedGeneration >= d.Generation && d.Status.AvailableReplicas >= 1
	})
	return time.Since(start)
}

// floorTemplate is the name of the one MCPServer whose children the floor copies; it appears in no
// other string of them.
const floorTemplate = "floortemplate"

// floorChildren has the operator reconcile one MCPServer in ns to Ready, and returns a function that
// makes copies of the five children it created (ServiceAccount, NetworkPolicy, Service, gateway
// ConfigMap, Deployment, byte for byte as the API server holds them) for another name: the template's
// name replaced, and without what the API server assigns (UID, resourceVersion, managed fields, the
// Service's cluster IP, status) or owner references (no MCPServer owns them, so the operator does not
// reconcile them). The floor thus creates exactly what the operator creates, without the operator.
func floorChildren(tb testing.TB, ns string) func(name string) []client.Object {
	ctx := context.Background()
	if err := k8s.Create(ctx, newServer(ns, floorTemplate)); err != nil {
		tb.Fatal(err)
	}
	key := client.ObjectKey{Namespace: ns, Name: floorTemplate}
	eventuallyB(tb, 2*time.Minute, func() error {
		s := &mcpv1alpha1.MCPServer{}
		if err := k8s.Get(ctx, key, s); err != nil {
			return err
		}
		if c := condition(s, mcpv1alpha1.ConditionReady); c == nil || c.Status != metav1.ConditionTrue {
			return fmt.Errorf("floor template %s not Ready: %+v", key, c)
		}
		return nil
	})
	live := []client.Object{&corev1.ServiceAccount{}, &networkingv1.NetworkPolicy{}, &corev1.Service{}, &corev1.ConfigMap{}, &appsv1.Deployment{}}
	var templates [][]byte
	for _, o := range live {
		name := floorTemplate
		if _, ok := o.(*corev1.ConfigMap); ok {
			name += "-gateway"
		}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, o); err != nil {
			tb.Fatalf("floor template: %v", err)
		}
		gvks, _, err := k8s.Scheme().ObjectKinds(o)
		if err != nil {
			tb.Fatal(err)
		}
		u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(o)
		if err != nil {
			tb.Fatal(err)
		}
		obj := &unstructured.Unstructured{Object: u}
		obj.SetGroupVersionKind(gvks[0])
		for _, f := range []string{"uid", "resourceVersion", "generation", "creationTimestamp", "managedFields", "ownerReferences", "selfLink"} {
			unstructured.RemoveNestedField(obj.Object, "metadata", f)
		}
		unstructured.RemoveNestedField(obj.Object, "status")
		unstructured.RemoveNestedField(obj.Object, "spec", "clusterIP")
		unstructured.RemoveNestedField(obj.Object, "spec", "clusterIPs")
		body, err := obj.MarshalJSON()
		if err != nil {
			tb.Fatal(err)
		}
		templates = append(templates, body)
	}
	return func(name string) []client.Object {
		out := make([]client.Object, 0, len(templates))
		for _, t := range templates {
			u := &unstructured.Unstructured{}
			if err := u.UnmarshalJSON([]byte(strings.ReplaceAll(string(t), floorTemplate, name))); err != nil {
				tb.Fatal(err)
			}
			out = append(out, u)
		}
		return out
	}
}

// benchSizes are the fleet sizes BenchmarkReconcileToReady measures (MCP_WARDEN_BENCH_SIZES, e.g.
// "100,500,1000"; default 100 and 500).
func benchSizes() []int {
	v := os.Getenv("MCP_WARDEN_BENCH_SIZES")
	if v == "" {
		return []int{100, 500}
	}
	var out []int
	for _, f := range strings.Split(v, ",") {
		if n, err := strconv.Atoi(strings.TrimSpace(f)); err == nil && n > 0 {
			out = append(out, n)
		}
	}
	return out
}

// steadyStateWrites makes the operator reconcile every server of a Ready fleet once more (a label change,
// which does not change the spec) and returns the API writes it sent per reconcile: every request of
// the operator in the namespace other than a read (applies, creates, updates, patches of children,
// statuses and events), counted at its client. It first waits until the writes that trail Ready (a
// pins.json written, a held status) have settled, so only the re-reconciles are counted. The target is
// zero. (Comparing resourceVersions would also count the Deployment controller's status updates,
// which trail on a loaded machine.)
func steadyStateWrites(tb testing.TB, ns string, n int) float64 {
	ctx := context.Background()
	writes := func() (int, map[string]int) {
		counts, _ := operatorRequests.of(ns)
		total, out := 0, map[string]int{}
		for k, v := range counts {
			if verb := strings.SplitN(k, " ", 2)[0]; verb != "GET" && verb != "LIST" && verb != "WATCH" {
				total += v
				out[k] = v
			}
		}
		return total, out
	}
	// Settled: no write for three seconds (at most a minute).
	last, _ := writes()
	for quiet, deadline := 0, time.Now().Add(time.Minute); quiet < 3 && time.Now().Before(deadline); {
		time.Sleep(time.Second)
		if w, _ := writes(); w == last {
			quiet++
		} else {
			last, quiet = w, 0
		}
	}
	before, beforeBy := writes()
	servers := &mcpv1alpha1.MCPServerList{}
	if err := k8s.List(ctx, servers, client.InNamespace(ns)); err != nil {
		tb.Fatal(err)
	}
	for i := range servers.Items {
		s := &servers.Items[i]
		patch := client.MergeFrom(s.DeepCopy())
		s.Labels = map[string]string{"bench.mcp.warden.dev/resync": "1"}
		if err := k8s.Patch(ctx, s, patch); err != nil {
			tb.Fatal(err)
		}
	}
	// Give the operator time to reconcile each one (its queue drains at well over 10 per second).
	time.Sleep(5*time.Second + time.Duration(n)*10*time.Millisecond)
	after, afterBy := writes()
	if after > before {
		for k, v := range afterBy {
			afterBy[k] = v - beforeBy[k]
		}
		tb.Logf("steady state: %d writes after re-reconciling %d servers:\n%s", after-before, n, table(afterBy, n))
	}
	return float64(after-before) / float64(n)
}

// queueStats is a snapshot of the mcpserver controller's workqueue and reconcile metrics (the operator
// runs in the benchmark's process, so its registry is this one).
type queueStats struct {
	waitSum, waitCount, workSum, workCount float64
	reconciles                             map[string]float64 // by result
}

func snapshotQueue(tb testing.TB) queueStats {
	families, err := ctrlmetrics.Registry.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	q := queueStats{reconciles: map[string]float64{}}
	ours := func(m *dto.Metric) bool {
		for _, l := range m.GetLabel() {
			if (l.GetName() == "name" || l.GetName() == "controller") && l.GetValue() == "mcpserver" {
				return true
			}
		}
		return false
	}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			if !ours(m) {
				continue
			}
			switch f.GetName() {
			case "workqueue_queue_duration_seconds":
				q.waitSum, q.waitCount = m.GetHistogram().GetSampleSum(), float64(m.GetHistogram().GetSampleCount())
			case "workqueue_work_duration_seconds":
				q.workSum, q.workCount = m.GetHistogram().GetSampleSum(), float64(m.GetHistogram().GetSampleCount())
			case "controller_runtime_reconcile_total":
				for _, l := range m.GetLabel() {
					if l.GetName() == "result" {
						q.reconciles[l.GetValue()] = m.GetCounter().GetValue()
					}
				}
			}
		}
	}
	return q
}

// since describes the queue between two snapshots: reconciles by result, the mean wait in the queue
// and the mean reconcile.
func (q queueStats) since(before queueStats) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(q.reconciles)) {
		if d := q.reconciles[k] - before.reconciles[k]; d > 0 {
			parts = append(parts, fmt.Sprintf("%s %.0f", k, d))
		}
	}
	mean := func(sum, n float64) float64 {
		if n == 0 {
			return 0
		}
		return sum / n
	}
	return fmt.Sprintf("reconciles: %s; mean wait in the queue %.2f s, mean reconcile %.3f s",
		strings.Join(parts, ", "), mean(q.waitSum-before.waitSum, q.waitCount-before.waitCount), mean(q.workSum-before.workSum, q.workCount-before.workCount))
}
