package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
	"github.com/mcp-warden/mcp-warden/controllers"
	"github.com/mcp-warden/mcp-warden/internal/localcluster"
	"github.com/mcp-warden/mcp-warden/policy/gatewayconfig"
)

// On the real node the demo also shows what a client and the platform's scraper observe of a server's
// gateway: its Prometheus metrics through the Service, the W3C trace id of a request in the audit
// record, and an MCP session that survives the loss of the replica that holds it.

// The platform's Prometheus, as the operator is told about it (--gateway-metrics-scraper-*).
var (
	scraperNamespace = "monitoring"
	scraperLabels    = map[string]string{"app.kubernetes.io/name": "prometheus"}
	scraperKey       = client.ObjectKey{Namespace: scraperNamespace, Name: "prometheus"}
)

// startScraperPod creates the scraper's namespace and pod.
func (d *demo) startScraperPod(ctx context.Context) {
	if err := d.c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: scraperNamespace}}); err != nil && !apierrors.IsAlreadyExists(err) {
		d.expect(false, "namespace %s: %v", scraperNamespace, err)
		return
	}
	if err := d.c.Create(ctx, localcluster.ClientPod(scraperNamespace, scraperKey.Name, d.probes.probeImage, scraperLabels)); err != nil && !apierrors.IsAlreadyExists(err) {
		d.expect(false, "scraper pod %s: %v", scraperKey, err)
	}
}

// gatewayClient is what a client of one server's gateway needs: the probe's trust flags (the
// namespace's published CA bundle and the Service name), and a token of scope files:read.
type gatewayClient struct {
	trust []string
	token string
}

func (d *demo) gatewayClient(ctx context.Context, key client.ObjectKey, is *issuer) (*gatewayClient, bool) {
	cm, bundle := &corev1.ConfigMap{}, &corev1.ConfigMap{}
	if err := d.c.Get(ctx, client.ObjectKey{Namespace: key.Namespace, Name: key.Name + "-gateway"}, cm); err != nil {
		d.expect(false, "gateway ConfigMap: %v", err)
		return nil, false
	}
	if err := d.c.Get(ctx, client.ObjectKey{Namespace: key.Namespace, Name: gatewayconfig.CABundleConfigMap}, bundle); err != nil {
		d.expect(false, "the published CA bundle: %v", err)
		return nil, false
	}
	var cfg struct {
		Resource string `json:"resource"`
	}
	if err := json.Unmarshal([]byte(cm.Data["gateway.json"]), &cfg); err != nil || cfg.Resource == "" {
		d.expect(false, "the rendered gateway configuration names no resource (%v)", err)
		return nil, false
	}
	tok, err := is.token(cfg.Resource)
	if err != nil {
		d.expect(false, "mint token: %v", err)
		return nil, false
	}
	return &gatewayClient{
		trust: []string{"--ca-pem", bundle.Data[gatewayconfig.CABundleKey], "--server-name", key.Name + "." + key.Namespace + ".svc"},
		token: tok,
	}, true
}

func (d *demo) execProbe(ctx context.Context, key client.ObjectKey, timeout time.Duration, args ...string) ([]byte, error) {
	ectx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return localcluster.Exec(ectx, d.cluster.Config, key.Namespace, key.Name, "probe", append([]string{"/probe"}, args...)...)
}

// metricSum sums the samples of a metric whose labels contain every given pair, in a Prometheus text
// exposition.
func metricSum(body, name string, labels ...string) float64 {
	var sum float64
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		ok := true
		for _, l := range labels {
			ok = ok && strings.Contains(line, l)
		}
		if i := strings.LastIndexByte(line, ' '); ok && i > 0 {
			if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
				sum += v
			}
		}
	}
	return sum
}

// telemetryChecks scrapes the server's gateway metrics through its Service's "metrics" port from the
// scraper pod before and after MCP calls, checks that a client pod is refused on that port, and that
// the trace id a client sends is in the gateway's audit record of its call.
func (d *demo) telemetryChecks(ctx context.Context, key client.ObjectKey, is *issuer) {
	step("telemetry on the node: pod %s scrapes Service %s's metrics port; a client's W3C traceparent in the audit", scraperKey, key)
	svc := &corev1.Service{}
	if err := d.c.Get(ctx, key, svc); err != nil || len(svc.Spec.Ports) == 0 {
		d.expect(false, "Service %s: %v", key, err)
		return
	}
	var metricsPort int32
	for _, p := range svc.Spec.Ports {
		if p.Name == controllers.MetricsPortName {
			metricsPort = p.Port
		}
	}
	gc, ok := d.gatewayClient(ctx, key, is)
	if !ok || !d.clientPodReady(ctx, scraperKey) {
		return
	}
	metricsURL := fmt.Sprintf("http://%s/metrics", net.JoinHostPort(svc.Spec.ClusterIP, fmt.Sprint(metricsPort)))
	scrape := func() (string, string) {
		var r struct {
			Status      int
			Body, Error string
		}
		// The ingress fence learns a new pod's address within seconds.
		poll(ctx, 30*time.Second, func() bool {
			out, err := d.execProbe(ctx, scraperKey, 30*time.Second, "get", metricsURL)
			if err != nil || json.Unmarshal(out, &r) != nil {
				r.Error = fmt.Sprint(err)
			}
			return r.Status == 200
		})
		return r.Body, r.Error
	}
	series := func(body string) (allow, deny, latency, secrets, hidden float64) {
		return metricSum(body, "mcp_warden_gateway_tool_calls_total", `decision="allow"`),
			metricSum(body, "mcp_warden_gateway_tool_calls_total", `decision="deny"`),
			metricSum(body, "mcp_warden_gateway_tool_call_duration_seconds_count"),
			metricSum(body, "mcp_warden_gateway_sanitized_total", `kind="secret"`),
			metricSum(body, "mcp_warden_gateway_sanitized_total", `kind="hidden_character"`)
	}
	body, serr := scrape()
	d.expect(metricsPort != 0 && body != "", "scraper pod %s -> %s (Service port %q): %d bytes of metrics %s", scraperKey, metricsURL, controllers.MetricsPortName, len(body), serr)
	a0, n0, l0, s0, h0 := series(body)

	b := make([]byte, 24)
	_, _ = rand.Read(b)
	traceID := hex.EncodeToString(b[:16])
	tp := "00-" + traceID + "-" + hex.EncodeToString(b[16:]) + "-01"
	url := fmt.Sprintf("https://%s/mcp", net.JoinHostPort(svc.Spec.ClusterIP, fmt.Sprint(svc.Spec.Ports[0].Port)))
	args := append(append([]string{"mcp"}, gc.trust...), "--traceparent", tp, url, gc.token, `read_file={"path":"report.txt"}`, `write_file={"path":"x","content":"y"}`)
	out, err := d.execProbe(ctx, d.probes.agent, 60*time.Second, args...)
	var r mcpResult
	if err == nil {
		err = json.Unmarshal(out, &r)
	}
	d.expect(err == nil && r.ConnectError == "" && !strings.HasPrefix(r.Calls["read_file"], "error") && strings.HasPrefix(r.Calls["write_file"], "error"),
		"agent pod, traceparent %s: read_file allowed, write_file refused %v", tp, err)

	body, serr = scrape()
	a1, n1, l1, s1, h1 := series(body)
	d.expect(a1 > a0 && n1 > n0 && l1 >= l0+2 && s1 > s0 && h1 > h0,
		"scraped again: tool calls allow %v->%v, deny %v->%v; call latency histogram count %v->%v; redacted secrets %v->%v, hidden characters %v->%v %s",
		a0, a1, n0, n1, l0, l1, s0, s1, h0, h1, serr)

	pods := &corev1.PodList{}
	if err := d.c.List(ctx, pods, client.InNamespace(key.Namespace), client.MatchingLabels{controllers.LabelServer: key.Name}); err != nil || len(pods.Items) == 0 {
		d.expect(false, "the server's pod: %v", err)
		return
	}
	svcAddr := net.JoinHostPort(svc.Spec.ClusterIP, fmt.Sprint(metricsPort))
	v, blockedOK := verdict(d.dialFrom(ctx, d.probes.agent, svcAddr)[svcAddr], false)
	d.expect(blockedOK, "%-52s %s", "agent pod (a client, not the scraper) -> metrics "+svcAddr, v)

	// The audit record of the read_file call carries the client's trace id.
	cs, err := kubernetes.NewForConfig(d.cluster.Config)
	if err != nil {
		d.expect(false, "client: %v", err)
		return
	}
	var audit string
	poll(ctx, 10*time.Second, func() bool {
		for _, p := range pods.Items {
			raw, _ := cs.CoreV1().Pods(p.Namespace).GetLogs(p.Name, &corev1.PodLogOptions{Container: "gateway"}).DoRaw(ctx)
			for _, line := range strings.Split(string(raw), "\n") {
				if strings.Contains(line, `"traceId":"`+traceID+`"`) && strings.Contains(line, "read_file") {
					audit = line
				}
			}
		}
		return audit != ""
	})
	d.expect(audit != "", "the gateway's audit record of read_file carries the client's trace id %s: %s", traceID, firstN(audit, 160))
}

// sessionReport is the probe's SessionReport.
type sessionReport struct {
	Warmups  int
	Sessions []struct {
		Owner              string
		Phase1OK, Phase2OK int
		Failures           []string
		Reinitialized      int
		NotFoundMs         float64
		NotFoundURL        string
	}
	Gone        string
	GoneAfterMs int64
	Error       string
}

// readyPods appends to pods the server's pods that are Running, not being deleted, and whose every
// container is ready; false when the pods cannot be listed.
func (d *demo) readyPods(ctx context.Context, key client.ObjectKey, pods []corev1.Pod) ([]corev1.Pod, bool) {
	list := &corev1.PodList{}
	if d.c.List(ctx, list, client.InNamespace(key.Namespace), client.MatchingLabels{controllers.LabelServer: key.Name}) != nil {
		return pods, false
	}
	for _, p := range list.Items {
		ok := p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil && len(p.Status.ContainerStatuses) > 0
		for _, c := range p.Status.ContainerStatuses {
			ok = ok && c.Ready
		}
		if ok {
			pods = append(pods, p)
		}
	}
	return pods, true
}

// sessionChecks scales the server to 3 replicas; a go-sdk client in the agent pod initializes one
// session at each pod, all held by its principal's home replica, and their requests alternate across
// the three pods; the home pod is deleted mid-session, and the client re-initializes each session once.
func (d *demo) sessionChecks(ctx context.Context, key client.ObjectKey, is *issuer) {
	step("sessions across replicas: %s scaled to 3; a go-sdk client alternates every request across the pods; one pod deleted mid-session", key)
	s := &mcpv1alpha1.MCPServer{}
	if err := d.c.Get(ctx, key, s); err != nil {
		d.expect(false, "MCPServer %s: %v", key, err)
		return
	}
	patch := client.MergeFrom(s.DeepCopy())
	three, rate := int32(3), int32(200)
	s.Spec.Replicas = &three
	// The client's rounds are bursts of one principal, all counted at its home replica: above the
	// default 10 requests per second (burst 20).
	s.Spec.Gateway.RatePerSecond = &rate
	start := time.Now()
	if err := d.c.Patch(ctx, s, patch); err != nil {
		d.expect(false, "scale %s to 3: %v", key, err)
		return
	}
	// The rate changes the gateway's configuration, which rolls the pods: wait for 3 ready pods of one
	// template and no other pod (the old ones gone).
	var pods []corev1.Pod
	rolled := poll(ctx, 120*time.Second, func() bool {
		ready, ok := d.readyPods(ctx, key, pods[:0])
		if !ok {
			return false
		}
		pods = ready
		all := &corev1.PodList{}
		if d.c.List(ctx, all, client.InNamespace(key.Namespace), client.MatchingLabels{controllers.LabelServer: key.Name}) != nil {
			return false
		}
		hashes := map[string]bool{}
		for _, p := range pods {
			hashes[p.Labels["pod-template-hash"]] = true
		}
		return len(pods) == 3 && len(all.Items) == 3 && len(hashes) == 1
	})
	if !rolled {
		pods = nil
	}
	d.expect(len(pods) == 3, "3 replicas Running and ready, rolled to the new configuration, %s after the scale", time.Since(start).Round(100*time.Millisecond))
	gc, ok := d.gatewayClient(ctx, key, is)
	if len(pods) != 3 || !ok {
		return
	}
	var urls []string
	for _, p := range pods {
		urls = append(urls, fmt.Sprintf("https://%s/mcp", net.JoinHostPort(p.Status.PodIP, fmt.Sprint(controllers.GatewayPort))))
	}
	if !d.homeFirst(ctx, key, gc, pods, urls) {
		return
	}
	type result struct {
		out []byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		args := append(append([]string{"session"}, gc.trust...), append([]string{"--rounds", "2", gc.token}, urls...)...)
		out, err := d.execProbe(ctx, d.probes.agent, 3*time.Minute, args...)
		done <- result{out, err}
	}()
	var res result
	cued := poll(ctx, 2*time.Minute, func() bool {
		select {
		case res = <-done:
			return true
		default:
		}
		return d.dialFrom(ctx, d.probes.agent, "127.0.0.1:7070")["127.0.0.1:7070"] == "connected"
	})
	if res.out != nil || res.err != nil || !cued {
		d.expect(false, "the client's first phase did not complete: %v %s", res.err, firstN(string(res.out), 300))
		return
	}
	if err := d.c.Delete(ctx, &pods[0], client.GracePeriodSeconds(0)); err != nil {
		d.expect(false, "delete pod %s: %v", pods[0].Name, err)
		return
	}
	// The owner is gone once its peer port, where the other replicas relay its sessions, refuses
	// (its gateway serves there while the pod terminates): dialled from a surviving replica's pod.
	deleted := time.Now()
	// Its MCP port too, seen from the client pod: the gateway closes its listeners one after the
	// other, and the client checks the MCP port after the cue.
	peer := net.JoinHostPort(pods[0].Status.PodIP, fmt.Sprint(controllers.PeerPort))
	mcpPort := net.JoinHostPort(pods[0].Status.PodIP, fmt.Sprint(controllers.GatewayPort))
	if len(pods[1].Status.ContainerStatuses) > 0 {
		if netns, err := d.cluster.ContainerNetns(pods[1].Status.ContainerStatuses[0].ContainerID); err == nil {
			poll(ctx, 90*time.Second, func() bool {
				return netns.DialEach(ctx, peer)[peer] != "connected" && d.dialFrom(ctx, d.probes.agent, mcpPort)[mcpPort] != "connected"
			})
		}
	}
	fmt.Printf("    pod %s deleted; its peer port %s and MCP port %s closed %s later\n", pods[0].Name, peer, mcpPort, time.Since(deleted).Round(10*time.Millisecond))
	d.dialFrom(ctx, d.probes.agent, "127.0.0.1:7070")
	res = <-done
	var rep sessionReport
	if res.err == nil {
		res.err = json.Unmarshal(res.out, &rep)
	}
	if res.err != nil || rep.Error != "" || len(rep.Sessions) != 3 {
		d.expect(false, "probe session: %v %s %s", res.err, rep.Error, firstN(string(res.out), 300))
		return
	}
	for i, sr := range rep.Sessions {
		d.expect(len(sr.Failures) == 0 && sr.Phase1OK == 6, "session %d (initialized at %s): %d calls alternating across the 3 pods, all succeeded %v", i, sr.Owner, sr.Phase1OK, sr.Failures)
	}
	for i, sr := range rep.Sessions {
		d.expect(sr.Reinitialized == 1 && sr.NotFoundMs > 0 && !strings.Contains(sr.NotFoundURL, "status") && len(sr.Failures) == 0 && sr.Phase2OK == 4,
			"home pod %s deleted: session %d's next request -> HTTP 404 from %s in %.0f ms; the client re-initialized %d time(s) and its %d calls succeeded",
			pods[0].Name, i, sr.NotFoundURL, sr.NotFoundMs, sr.Reinitialized, sr.Phase2OK)
	}
}

// homeFirst finds the client principal's home replica, which holds all of its sessions whichever
// replica an initialize reaches, once the gateways resolve the replicas' headless Service, and moves it
// to pods[0] and urls[0] (the pod deleted mid-session).
func (d *demo) homeFirst(ctx context.Context, key client.ObjectKey, gc *gatewayClient, pods []corev1.Pod, urls []string) bool {
	name := key.Name + "-peers." + key.Namespace + ".svc.cluster.local."
	resolved := poll(ctx, 60*time.Second, func() bool {
		out, err := d.execProbe(ctx, d.probes.agent, 10*time.Second, "resolve", name)
		var res []struct{ Addrs []string }
		return err == nil && json.Unmarshal(out, &res) == nil && len(res) == 1 && len(res[0].Addrs) == 3
	})
	d.expect(resolved, "the replicas' headless Service %s resolves to the 3 pods (the gateways' live replica set)", name)
	if !resolved {
		return false
	}
	time.Sleep(2500 * time.Millisecond) // the gateways' cached answers (2 s) expire
	out, err := d.execProbe(ctx, d.probes.agent, 60*time.Second, append(append([]string{"mcp"}, gc.trust...), urls[0], gc.token)...)
	var r mcpResult
	if err == nil {
		err = json.Unmarshal(out, &r)
	}
	owner := ""
	if parts := strings.Split(r.SessionID, "."); err == nil && len(parts) == 3 {
		b, _ := base64.RawURLEncoding.DecodeString(parts[1])
		owner = string(b)
	}
	for i := range pods {
		if owner == net.JoinHostPort(pods[i].Status.PodIP, fmt.Sprint(controllers.PeerPort)) {
			pods[0], pods[i] = pods[i], pods[0]
			urls[0], urls[i] = urls[i], urls[0]
		}
	}
	found := owner != "" && owner == net.JoinHostPort(pods[0].Status.PodIP, fmt.Sprint(controllers.PeerPort))
	d.expect(found, "the client principal's home (rendezvous hashing over the live replicas): pod %s, %s; a session initialized at any pod is held there %v", pods[0].Name, owner, err)
	return found
}

// streamable reports whether the MCPServer speaks streamable HTTP (the sample the telemetry and
// session checks run on).
func (d *demo) streamable(ctx context.Context, key client.ObjectKey) bool {
	s := &mcpv1alpha1.MCPServer{}
	return d.c.Get(ctx, key, s) == nil && s.Spec.Transport != mcpv1alpha1.TransportStdio
}
