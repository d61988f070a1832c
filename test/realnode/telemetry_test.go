package realnode

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/mcp-warden/mcp-warden/controllers"
	"github.com/mcp-warden/mcp-warden/internal/localcluster"
)

// The platform's telemetry, as the operator is told about it (see TestMain): a Prometheus in
// scraperNamespace whose pods carry scraperLabels, and an OpenTelemetry collector in collectorNamespace
// (pods collectorLabels) behind a Service at a fixed cluster IP, so that the OTLP endpoint is known before
// the node starts.
const (
	scraperNamespace   = "monitoring"
	collectorNamespace = "observability"
	collectorIP        = "10.96.200.200"
	collectorEndpoint  = "http://" + collectorIP + ":4318/v1/traces"
)

var (
	scraperLabels   = map[string]string{"app.kubernetes.io/name": "prometheus"}
	collectorLabels = map[string]string{"app.kubernetes.io/name": "opentelemetry-collector"}

	telemetryOnce sync.Once
	telemetryErr  error
	// scraper is a pod with the scraper's labels; collectorPod runs probe otlp.
	scraper, collectorPod *corev1.Pod
)

// telemetry starts (once) the scraper pod and the collector (pod and Service).
func telemetry(t *testing.T) {
	t.Helper()
	needNode(t)
	telemetryOnce.Do(func() { telemetryErr = startTelemetry(t) })
	if telemetryErr != nil {
		t.Fatal(telemetryErr)
	}
}

func startTelemetry(t *testing.T) error {
	ctx := context.Background()
	for _, ns := range []string{scraperNamespace, collectorNamespace} {
		if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil && !apierrors.IsAlreadyExists(err) {
			return err
		}
	}
	c := localcluster.ClientPod(collectorNamespace, "otel-collector", probeImage, collectorLabels)
	c.Spec.Containers[0].Args = []string{"otlp", "--port", "4318"}
	if err := k8s.Create(ctx, c); err != nil {
		return err
	}
	tcp := corev1.ProtocolTCP
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "otel-collector", Namespace: collectorNamespace},
		Spec: corev1.ServiceSpec{ClusterIP: collectorIP, Selector: collectorLabels, Ports: []corev1.ServicePort{{
			Name: "otlp-http", Port: 4318, TargetPort: intstr.FromInt32(4318), Protocol: tcp,
		}}},
	}
	if err := k8s.Create(ctx, svc); err != nil {
		return fmt.Errorf("the collector's Service at %s: %w", collectorIP, err)
	}
	collectorPod = waitRunning(t, collectorNamespace, c.Name, 60*time.Second)
	scraper = clientPod(t, scraperNamespace, "prometheus", scraperLabels)
	return nil
}

// metricSum sums the samples of a metric whose labels contain every one of the given label pairs
// (k="v") in a Prometheus text exposition.
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

// scrape GETs the server's metrics through its Service's "metrics" port from the scraper pod, waiting
// for the ingress fence to learn the scraper's address.
func scrape(t *testing.T, url string) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		out := execIn(t, scraperNamespace, scraper.Name, "probe", "/probe", "get", url)
		var r struct {
			Status int
			Body   string
			Error  string
		}
		if err := json.Unmarshal(out, &r); err != nil {
			t.Fatalf("probe get: %v: %s", err, out)
		}
		if r.Status == 200 {
			return r.Body
		}
		if time.Now().After(deadline) {
			t.Fatalf("the scraper pod cannot scrape %s: status %d %s", url, r.Status, r.Error)
		}
		time.Sleep(time.Second)
	}
}

// TestMetricsScrapedThroughService: a pod with the scraper's labels (the operator's
// --gateway-metrics-scraper-* flags) scrapes the gateway's metrics through the Service's "metrics" port
// and sees the series move after MCP calls (tool calls by decision, the call latency histogram,
// sanitized and redacted content); a client pod of the server and a stranger are refused by the kernel
// on that port, at the Service and at the pod.
func TestMetricsScrapedThroughService(t *testing.T) {
	f := server(t)
	telemetry(t)
	ctx := context.Background()
	svc := &corev1.Service{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: "probe"}, svc); err != nil {
		t.Fatal(err)
	}
	var metricsPort int32
	for _, p := range svc.Spec.Ports {
		if p.Name == controllers.MetricsPortName {
			metricsPort = p.Port
		}
	}
	if metricsPort == 0 {
		t.Fatalf("the Service has no %q port with a metrics scraper configured: %+v", controllers.MetricsPortName, svc.Spec.Ports)
	}
	url := fmt.Sprintf("http://%s:%d/metrics", svc.Spec.ClusterIP, metricsPort)
	series := func(body string) map[string]float64 {
		return map[string]float64{
			"allowed calls":       metricSum(body, "mcp_warden_gateway_tool_calls_total", `decision="allow"`, `result="ok"`),
			"denied calls":        metricSum(body, "mcp_warden_gateway_tool_calls_total", `decision="deny"`),
			"call latency count":  metricSum(body, "mcp_warden_gateway_tool_call_duration_seconds_count"),
			"call latency <=1s":   metricSum(body, "mcp_warden_gateway_tool_call_duration_seconds_bucket", `le="1"`),
			"redacted secrets":    metricSum(body, "mcp_warden_gateway_sanitized_total", `kind="secret"`),
			"hidden characters":   metricSum(body, "mcp_warden_gateway_sanitized_total", `kind="hidden_character"`),
			"html comments":       metricSum(body, "mcp_warden_gateway_sanitized_total", `kind="html_comment"`),
			"POST requests (200)": metricSum(body, "mcp_warden_gateway_http_requests_total", `method="post"`, `code="200"`),
		}
	}
	before := series(scrape(t, url))

	// One allowed call whose result the gateway sanitizes (report.txt: hidden characters, an HTML
	// comment and an access key), one the token's scope does not grant.
	gw, trust := gatewayURL(t, f.ns, "probe", f.pod)
	out := execIn(t, f.ns, f.agent.Name, "probe", probeMCP(trust, gw, token(t, f), `read_file={"path":"report.txt"}`, `write_file={"path":"a","content":"b"}`)...)
	var r mcpResult
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("probe mcp: %v: %s", err, out)
	}
	if r.ConnectError != "" || strings.HasPrefix(r.Calls["read_file"], "error") || !strings.HasPrefix(r.Calls["write_file"], "error") {
		t.Fatalf("the calls: read_file must be allowed and write_file refused: %+v", r)
	}
	after := series(scrape(t, url))
	for _, k := range []string{"allowed calls", "denied calls", "call latency count", "call latency <=1s", "redacted secrets", "hidden characters", "html comments", "POST requests (200)"} {
		if after[k] <= before[k] {
			t.Errorf("scraped through the Service, %s did not move after the calls: %v -> %v", k, before[k], after[k])
		}
	}
	if d := after["call latency count"] - before["call latency count"]; d < 2 {
		t.Errorf("the call latency histogram counted %v calls, want the 2 made", d)
	}
	t.Logf("scraped %s from %s/%s: before %v, after %v", url, scraperNamespace, scraper.Name, before, after)

	// The port is the scraper's only: the server's own client and a stranger are refused, at the
	// Service and at the pod; the scraper reaches the pod too (the control).
	svcAddr := fmt.Sprintf("%s:%d", svc.Spec.ClusterIP, metricsPort)
	podAddr := fmt.Sprintf("%s:%d", f.pod.Status.PodIP, controllers.StatusPort)
	if got := dialFrom(t, scraperNamespace, scraper.Name, "probe", podAddr); got[podAddr] != "connected" {
		t.Errorf("control: the scraper must reach the pod's metrics port %s: %s", podAddr, got[podAddr])
	}
	for _, p := range []*corev1.Pod{f.agent, f.stranger} {
		got := dialFrom(t, f.ns, p.Name, "probe", svcAddr, podAddr)
		for _, a := range []string{svcAddr, podAddr} {
			if !blocked(got[a]) {
				t.Errorf("pod %s (labels %v) must be refused on the metrics port %s: %s", p.Name, p.Labels, a, got[a])
			}
		}
		t.Logf("pod %s on the metrics port: %v", p.Name, got)
	}
}

// TestTraceContextReachesServerAndAudit: a client sends a W3C traceparent; the server behind the
// gateway receives a traceparent with the same trace id (and the gateway's span as parent), the
// gateway's audit record of the call carries that trace id, and the gateway's span with that trace id
// arrives at the OTLP collector pod through the Service the operator was told about.
func TestTraceContextReachesServerAndAudit(t *testing.T) {
	f := server(t)
	telemetry(t)
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	traceID, clientSpan := hex.EncodeToString(b[:16]), hex.EncodeToString(b[16:])
	tp := "00-" + traceID + "-" + clientSpan + "-01"
	gw, trust := gatewayURL(t, f.ns, "probe", f.pod)
	out := execIn(t, f.ns, f.agent.Name, "probe", probeMCP(append(trust, "--traceparent", tp), gw, token(t, f), `read_file={"path":"readme.txt"}`)...)
	var r mcpResult
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("probe mcp: %v: %s", err, out)
	}
	if r.ConnectError != "" || strings.HasPrefix(r.Calls["read_file"], "error") {
		t.Fatalf("the call: %+v", r)
	}

	// The server's view: its log has each request's traceparent.
	var serverTP []string
	for _, line := range strings.Split(podLogs(f.ns, f.pod.Name, "server"), "\n") {
		var l struct{ Traceparent string }
		if json.Unmarshal([]byte(line), &l) == nil && strings.Contains(l.Traceparent, traceID) {
			serverTP = append(serverTP, l.Traceparent)
		}
	}
	if len(serverTP) == 0 {
		t.Fatalf("the server received no traceparent with the client's trace id %s", traceID)
	}
	for _, got := range serverTP {
		if parts := strings.Split(got, "-"); len(parts) != 4 || parts[2] == clientSpan {
			t.Errorf("the server's traceparent %q must carry the gateway's span id as parent, not the client's %s", got, clientSpan)
		}
	}

	// The gateway's audit record of the call.
	var audit string
	for _, line := range strings.Split(podLogs(f.ns, f.pod.Name, "gateway"), "\n") {
		if strings.Contains(line, traceID) && strings.Contains(line, "read_file") {
			audit = line
		}
	}
	if audit == "" {
		t.Errorf("no audit record of the read_file call in the gateway's log carries the trace id %s", traceID)
	}
	t.Logf("client traceparent %s; the server got %v; audit: %s", tp, serverTP, audit)

	// The span at the collector (exported in batches, within seconds).
	var spans struct {
		Exports, Spans int
		Traces         map[string][]string
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		out := execIn(t, collectorNamespace, collectorPod.Name, "probe", "/probe", "get", "http://127.0.0.1:4318/spans")
		var g struct{ Body string }
		if err := json.Unmarshal(out, &g); err != nil || json.Unmarshal([]byte(g.Body), &spans) != nil {
			t.Fatalf("the collector's report: %s", out)
		}
		if len(spans.Traces[traceID]) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no span with trace id %s reached the collector at %s in 20s (it received %d exports, %d spans)", traceID, collectorEndpoint, spans.Exports, spans.Spans)
		}
		time.Sleep(time.Second)
	}
	t.Logf("the collector received %d exports, %d spans; trace %s: spans %v", spans.Exports, spans.Spans, traceID, spans.Traces[traceID])
}
