package controllers_test

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/pprof/profile"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// clockTick is the kernel's USER_HZ, the unit of /proc/<pid>/stat's CPU times (100 on Linux).
const clockTick = 100

// cpuTimes is the CPU time (user and system) the processes this test started have used so far, by
// command name (kube-apiserver, etcd, kube-controller, kube-scheduler, ...): the control plane's own
// work, apart from the operator, which runs in this process. Empty where /proc is not readable.
func cpuTimes() map[string]time.Duration {
	self := strconv.Itoa(os.Getpid())
	out := map[string]time.Duration{}
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, path := range stats {
		body, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		// pid (comm) state ppid ... utime stime: comm may hold spaces and parentheses, so fields are
		// counted after its last ')'.
		s := string(body)
		open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || end < open {
			continue
		}
		f := strings.Fields(s[end+1:])
		if len(f) < 13 || f[1] != self {
			continue
		}
		utime, err1 := strconv.ParseInt(f[11], 10, 64)
		stime, err2 := strconv.ParseInt(f[12], 10, 64)
		if err1 != nil || err2 != nil {
			continue
		}
		out[s[open+1:end]] += time.Duration(utime+stime) * time.Second / clockTick
	}
	return out
}

// controlPlaneCPU is the control plane's CPU time between two cpuTimes snapshots, in total and by
// process: every process this test started but ToolHive's operator (an operator, like the one in this
// process, not part of the control plane).
func controlPlaneCPU(before, after map[string]time.Duration) (time.Duration, map[string]time.Duration) {
	var total time.Duration
	by := map[string]time.Duration{}
	for k, v := range after {
		if k == "thv-operator" {
			continue
		}
		if d := v - before[k]; d > 0 {
			by[k] = d
			total += d
		}
	}
	return total, by
}

// cpuTable formats CPU times by process, largest first ("kube-apiserver 41.2 s, etcd 9.8 s").
func cpuTable(by map[string]time.Duration) string {
	keys := slices.SortedFunc(maps.Keys(by), func(a, b string) int { return int(by[b] - by[a]) })
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %.1f s", k, by[k].Seconds()))
	}
	return strings.Join(parts, ", ")
}

// apiserverProfile takes consecutive CPU profiles of the API server (5 s each, its /debug/pprof) until
// the returned stop is called, and returns them merged.
func apiserverProfile(tb testing.TB) (stop func() *profile.Profile) {
	ctx, cancel := context.WithCancel(context.Background())
	var parts []*profile.Profile
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			// A profile under way finishes after stop (the last 5 s): its own deadline, not ctx.
			pctx, c := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			body, err := clients.CoreV1().RESTClient().Get().AbsPath("/debug/pprof/profile").Param("seconds", "5").DoRaw(pctx)
			c()
			if err != nil {
				tb.Logf("API server profile: %v", err)
				return
			}
			p, err := profile.ParseData(body)
			if err != nil {
				tb.Logf("API server profile: %v", err)
				return
			}
			parts = append(parts, p)
		}
	}()
	return func() *profile.Profile {
		cancel()
		<-done
		if len(parts) == 0 {
			return nil
		}
		merged, err := profile.Merge(parts)
		if err != nil {
			tb.Logf("API server profile: %v", err)
			return nil
		}
		return merged
	}
}

// apiserverWork names where the API server's CPU went, by the first of these packages or functions
// found in a sample's stack (most specific first).
var apiserverWork = []struct{ name, frame string }{
	{"admission webhooks", "k8s.io/apiserver/pkg/admission/plugin/webhook"},
	{"field management (managedFields, apply)", "k8s.io/apimachinery/pkg/util/managedfields"},
	{"field management (managedFields, apply)", "sigs.k8s.io/structured-merge-diff"},
	{"field management (managedFields, apply)", "k8s.io/apiserver/pkg/endpoints/handlers/fieldmanager"},
	{"watch fan-out (watch cache)", "k8s.io/apiserver/pkg/storage/cacher"},
	{"watch fan-out (watch cache)", "k8s.io/apiserver/pkg/endpoints/handlers.serveWatch"},
	{"custom resources (CRD handler)", "k8s.io/apiextensions-apiserver/pkg/apiserver"},
	{"etcd client", "go.etcd.io/etcd/client"},
	{"requests (handlers, encoding, filters)", "k8s.io/apiserver/pkg/endpoints"},
	{"garbage collection of the Go heap", "runtime.gcBgMarkWorker"},
}

// apiserverBreakdown sums a profile's CPU samples by apiserverWork (the rest: "other").
func apiserverBreakdown(p *profile.Profile) (map[string]time.Duration, time.Duration) {
	out := map[string]time.Duration{}
	var total time.Duration
	idx := -1
	for i, st := range p.SampleType {
		if st.Type == "cpu" {
			idx = i
		}
	}
	if idx < 0 {
		return out, 0
	}
	for _, s := range p.Sample {
		d := time.Duration(s.Value[idx])
		total += d
		out[workOf(s)] += d
	}
	return out, total
}

func workOf(s *profile.Sample) string {
	for _, w := range apiserverWork {
		for _, loc := range s.Location {
			for _, line := range loc.Line {
				if line.Function != nil && strings.Contains(line.Function.Name, w.frame) {
					return w.name
				}
			}
		}
	}
	return "other"
}

// benchProfiles is the directory MCP_WARDEN_BENCH_PROFILES names ("" when unset): where the benchmark
// writes the operator's CPU and allocation profiles and the API server's CPU profile of each fleet.
func benchProfiles() string { return os.Getenv("MCP_WARDEN_BENCH_PROFILES") }

// operatorProfile profiles this process (the operator, its webhook and the benchmark's own polling)
// until the returned stop, which writes <dir>/<name>.cpu.pprof and <name>.allocs.pprof (the bytes
// and objects allocated in between). A no-op without dir or while go test's -cpuprofile runs.
func operatorProfile(tb testing.TB, dir, name string) (stop func()) {
	if dir == "" {
		return func() {}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	cpu, err := os.Create(filepath.Join(dir, name+".cpu.pprof"))
	if err != nil {
		tb.Fatal(err)
	}
	if err := pprof.StartCPUProfile(cpu); err != nil {
		tb.Logf("operator CPU profile: %v", err)
		_ = cpu.Close()
		_ = os.Remove(cpu.Name())
		cpu = nil
	}
	before := allocs(tb)
	return func() {
		if cpu != nil {
			pprof.StopCPUProfile()
			_ = cpu.Close()
		}
		after := allocs(tb)
		if before == nil || after == nil {
			return
		}
		before.Scale(-1)
		delta, err := profile.Merge([]*profile.Profile{after, before})
		if err != nil {
			tb.Logf("operator allocation profile: %v", err)
			return
		}
		f, err := os.Create(filepath.Join(dir, name+".allocs.pprof"))
		if err != nil {
			tb.Fatal(err)
		}
		defer f.Close()
		if err := delta.Write(f); err != nil {
			tb.Logf("operator allocation profile: %v", err)
		}
	}
}

// allocs is the process's allocation profile so far.
func allocs(tb testing.TB) *profile.Profile {
	runtime.GC() // the profile is as of the last GC
	var buf bytes.Buffer
	if err := pprof.Lookup("allocs").WriteTo(&buf, 0); err != nil {
		tb.Logf("allocation profile: %v", err)
		return nil
	}
	p, err := profile.Parse(&buf)
	if err != nil {
		tb.Logf("allocation profile: %v", err)
		return nil
	}
	return p
}

// writeProfile writes p to <dir>/<name> (nothing without dir).
func writeProfile(tb testing.TB, dir, name string, p *profile.Profile) {
	if dir == "" || p == nil {
		return
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	f, err := os.Create(filepath.Join(dir, name))
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	if err := p.Write(f); err != nil {
		tb.Logf("write profile %s: %v", name, err)
	}
}

// waitAll watches the namespace's objects of kind gvk until ready holds for n of them, or fails after
// timeout. A watch rather than a poll: listing a fleet of a thousand every 250 ms, as the benchmark
// once did, cost the API server and etcd more than some of what it measured.
func waitAll(tb testing.TB, ns string, gvk schema.GroupVersionKind, n int, timeout time.Duration, ready func(*unstructured.Unstructured) bool) {
	tb.Helper()
	wc, err := client.NewWithWatch(restConfig, client.Options{Scheme: k8s.Scheme()})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	state := map[string]bool{}
	for ctx.Err() == nil {
		list := &unstructured.UnstructuredList{}
		list.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
		if err := wc.List(ctx, list, client.InNamespace(ns)); err != nil {
			break
		}
		clear(state)
		for i := range list.Items {
			state[list.Items[i].GetName()] = ready(&list.Items[i])
		}
		if readyCount(state) >= n {
			return
		}
		w, err := wc.Watch(ctx, list, client.InNamespace(ns), &client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: list.GetResourceVersion()}})
		if err != nil {
			break
		}
		if follow(w, state, n, ready) {
			return
		}
	}
	tb.Fatalf("%d of %d %s in %s ready after %s", readyCount(state), n, gvk.Kind, ns, timeout)
}

// follow applies the watch's events to state until n are ready (true) or the watch ends (false: an
// error event, the resourceVersion expired, or the deadline; the caller lists again).
func follow(w watch.Interface, state map[string]bool, n int, ready func(*unstructured.Unstructured) bool) bool {
	defer w.Stop()
	for ev := range w.ResultChan() {
		u, ok := ev.Object.(*unstructured.Unstructured)
		if !ok {
			return false
		}
		switch ev.Type {
		case watch.Added, watch.Modified:
			state[u.GetName()] = ready(u)
		case watch.Deleted:
			delete(state, u.GetName())
		}
		if readyCount(state) >= n {
			return true
		}
	}
	return false
}

func readyCount(state map[string]bool) int {
	count := 0
	for _, ok := range state {
		if ok {
			count++
		}
	}
	return count
}
