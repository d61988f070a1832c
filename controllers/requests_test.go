package controllers_test

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// apiRequests counts the operator's requests to the API server by namespace and by verb and resource
// (e.g. "APPLY deployments", "PATCH mcpservers/status", "GET services (probe)"). Requests outside a
// namespace (the cache's cluster-wide lists and watches) are not counted.
type apiRequests struct {
	mu sync.Mutex
	by map[string]map[string]int
}

var operatorRequests = &apiRequests{by: map[string]map[string]int{}}

func (c *apiRequests) wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripper(func(r *http.Request) (*http.Response, error) {
		if ns, what, ok := classify(r); ok {
			c.mu.Lock()
			if c.by[ns] == nil {
				c.by[ns] = map[string]int{}
			}
			c.by[ns][what]++
			c.mu.Unlock()
		}
		return rt.RoundTrip(r)
	})
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// classify names a namespaced request: its namespace, and its verb and resource (with subresource).
func classify(r *http.Request) (ns, what string, ok bool) {
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	i := -1
	for j, p := range parts {
		if p == "namespaces" && j+2 < len(parts) {
			i = j
			break
		}
	}
	if i < 0 {
		return "", "", false
	}
	ns, rest := parts[i+1], parts[i+2:]
	resource := rest[0]
	if len(rest) == 3 {
		resource += "/" + rest[2]
	}
	verb := r.Method
	q := r.URL.Query()
	switch {
	case r.Method == http.MethodGet && q.Get("watch") == "true":
		verb = "WATCH"
	case r.Method == http.MethodGet && len(rest) == 1:
		verb = "LIST"
	case r.Method == http.MethodPatch && strings.HasPrefix(r.Header.Get("Content-Type"), "application/apply-patch"):
		verb = "APPLY"
	case r.Method == http.MethodPost:
		verb = "CREATE"
	}
	if q.Has("dryRun") {
		verb += " (dry run)"
	}
	return ns, verb + " " + resource, true
}

// of returns a copy of the counts for the namespace and their total.
func (c *apiRequests) of(ns string) (map[string]int, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	out, total := map[string]int{}, 0
	for k, v := range c.by[ns] {
		out[k] = v
		total += v
	}
	return out, total
}

// table formats the counts per server, most frequent first.
func table(counts map[string]int, servers int) string {
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if counts[keys[i]] != counts[keys[j]] {
			return counts[keys[i]] > counts[keys[j]]
		}
		return keys[i] < keys[j]
	})
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "  %-40s %6d  %6.2f per server\n", k, counts[k], float64(counts[k])/float64(servers))
	}
	return b.String()
}

// The floor of one server from create to Ready: its five children created (ServiceAccount,
// NetworkPolicy, Service, gateway ConfigMap, Deployment; session ids need no key, so no Secret; the serving
// certificate is a pod certificate, signed on the kubelet's request, which the simulated node does not
// make; the namespace's CA bundle ConfigMap is written once for the whole fleet, by one of the servers
// that reconcile at once), two status writes (Progressing with the endpoint and observedGeneration, then
// Ready once the rollout completed and a gateway reported its MCP handshake with the server: the
// gateways' report, which arrives a moment before the rollout completes, is held with the rollout's
// progress), the gateway ConfigMap written once more when
// the tools the gateways report become its pins.json, and the Ready event. A child is created without
// reading its name around the cache first: only a create that finds the name taken reads it (never for a
// new server here), so the operator still never adopts an object someone else put there. A change of a
// created child that keeps every field the create wrote (here the gateway ConfigMap's pins arriving)
// sends no move of the create's field ownership to the operator's server-side apply: only the first apply
// that drops such a field does (one JSON patch), and none does here. The watch events that deliver the
// operator's own writes wake no reconcile.
const (
	floorCreates      = 5
	floorPinsWrite    = 1
	floorStatusWrites = 2
	floorEvents       = 1
	// requestSlack per server covers, averaged over the fleet, a status write more where a reconcile
	// raced the cache or a gateway's report, and the reads around the cache of a child a reconcile
	// found missing from the cache just after its create.
	requestSlack = 2.0
)

// TestRequestsPerServer counts the operator's API requests for a fleet created at once, from create
// until every server is Ready and the queue has settled, and holds them to the floor plus the slack.
func TestRequestsPerServer(t *testing.T) {
	const n = 30
	// The fleet's issuer keys are fetched once for all; a server that needs them first (in another
	// namespace, not counted) takes that fetch, as one of the cluster's first servers would.
	warm := restrictedNamespace(t)
	if err := k8s.Create(context.Background(), newServer(warm, "warm")); err != nil {
		t.Fatal(err)
	}
	waitReady(t, client.ObjectKey{Namespace: warm, Name: "warm"})
	_, ns := createFleet(t, n, 3*time.Minute)
	// Requests that trail Ready (a late re-apply, a status write) count too.
	time.Sleep(3 * time.Second)
	counts, total := operatorRequests.of(ns)
	per := float64(total) / n
	floor := floorCreates + floorStatusWrites + floorPinsWrite + floorEvents
	limit := float64(floor) + requestSlack
	t.Logf("%d servers: %d requests, %.2f per server (floor %d, limit %.1f)\n%s", n, total, per, floor, limit, table(counts, n))
	if moves := counts["PATCH configmaps"]; moves > 0 {
		t.Errorf("%d non-apply patches of ConfigMaps (ownership moves), want none: pins.json arriving drops no field the create wrote\n%s", moves, table(counts, n))
	}
	if per > limit {
		logServerEvents(t, ns)
		t.Fatalf("%.2f requests per server, want at most %.1f (floor %d + slack %.1f)", per, limit, floor, requestSlack)
	}
}

// logServerEvents logs the MCPServer events of the namespace but the Ready one every server gets, with a
// count per reason and message, so a fleet that took more requests says what its servers went through.
func logServerEvents(t *testing.T, ns string) {
	t.Helper()
	evs := &corev1.EventList{}
	if err := k8s.List(context.Background(), evs, client.InNamespace(ns)); err != nil {
		t.Logf("list events: %v", err)
		return
	}
	seen := map[string]int{}
	for _, e := range evs.Items {
		if e.InvolvedObject.Kind != "MCPServer" || e.Reason == "Available" {
			continue
		}
		seen[e.Type+" "+e.Reason+": "+e.Message] += int(max(e.Count, 1))
	}
	for m, n := range seen {
		t.Logf("%d x event %s", n, m)
	}
}
