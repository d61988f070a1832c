package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	neturl "net/url"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
	"github.com/mcp-warden/mcp-warden/controllers"
	"github.com/mcp-warden/mcp-warden/gateway/audit"
	"github.com/mcp-warden/mcp-warden/internal/demoserver"
	"github.com/mcp-warden/mcp-warden/internal/localcluster"
	"github.com/mcp-warden/mcp-warden/policy/gatewayconfig"
)

// On the real node the demo reports what the kernel and the network did: the fence is tried by dialling
// test hosts from the server's pod and from client pods, and the tokens by a go-sdk MCP client in a
// client pod that talks to the pod's gateway through its Service.

// nodeProbes are the real node's observers: the fence's test hosts in the hosts namespace and client pods
// that run the probe (test/realnode/probe).
type nodeProbes struct {
	probeImage string
	hosts      map[string]*localcluster.TestHost
	// agent is in spec.clients of the samples (app=agent, namespace mcp-tools); other is in the same
	// namespace without the label; outsider carries the label in namespace default; none is selected by
	// any NetworkPolicy, so outsider is also the control that the test hosts are up and routed.
	agent, other, outsider client.ObjectKey
}

// startClusterDNS starts the cluster DNS once the operator's webhooks answer (they are registered for
// every pod, and fail closed).
func (d *demo) startClusterDNS(ctx context.Context) error {
	var err error
	poll(ctx, 30*time.Second, func() bool {
		err = d.cluster.StartClusterDNS(ctx, d.dnsImage, map[string]string{"public.test": localcluster.PublicHostIP, "metadata.test": localcluster.MetadataIP})
		return err == nil || !strings.Contains(err.Error(), "failed calling webhook")
	})
	return err
}

// startTestHosts starts the fence's test hosts: the metadata address, a private host and the
// allow-listed host on an allowed and a blocked port.
func (d *demo) startTestHosts() error {
	d.probes.hosts = map[string]*localcluster.TestHost{}
	for _, a := range localcluster.TestHostAddrs {
		h, err := localcluster.StartTestHost(d.cluster.Hosts(), a)
		if err != nil {
			return err
		}
		d.probes.hosts[a] = h
	}
	fmt.Printf("    test hosts in network namespace %s: %s\n", d.cluster.Hosts().Name, strings.Join(localcluster.TestHostAddrs, ", "))
	return nil
}

func (d *demo) stopTestHosts() {
	for _, h := range d.probes.hosts {
		_ = h.Close()
	}
}

// startClientPods creates the client pods (they start while the servers do).
func (d *demo) startClientPods(ctx context.Context, ns string) {
	d.probes.agent = client.ObjectKey{Namespace: ns, Name: "agent"}
	d.probes.other = client.ObjectKey{Namespace: ns, Name: "other"}
	d.probes.outsider = client.ObjectKey{Namespace: metav1.NamespaceDefault, Name: "agent"}
	for key, labels := range map[client.ObjectKey]map[string]string{
		d.probes.agent: {"app": "agent"}, d.probes.other: {"app": "other"}, d.probes.outsider: {"app": "agent"},
	} {
		if err := d.c.Create(ctx, localcluster.ClientPod(key.Namespace, key.Name, d.probes.probeImage, labels)); err != nil && !apierrors.IsAlreadyExists(err) {
			d.expect(false, "client pod %s: %v", key, err)
		}
	}
	fmt.Printf("    client pods (the probe, %s): %s (app=agent), %s (app=other), %s (app=agent, another namespace)\n", d.probes.probeImage, d.probes.agent, d.probes.other, d.probes.outsider)
}

// clientPodIP waits for a client pod to run and returns its IP ("" with a failed expectation if not).
func (d *demo) clientPodReady(ctx context.Context, key client.ObjectKey) bool {
	p := &corev1.Pod{}
	ok := poll(ctx, 60*time.Second, func() bool {
		return d.c.Get(ctx, key, p) == nil && p.Status.Phase == corev1.PodRunning && len(p.Status.ContainerStatuses) > 0 && p.Status.ContainerStatuses[0].Ready
	})
	if !ok {
		d.expect(false, "client pod %s running: phase %s", key, p.Status.Phase)
	}
	return ok
}

func (d *demo) dialFrom(ctx context.Context, key client.ObjectKey, addrs ...string) map[string]string {
	ectx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	got, err := localcluster.ExecDial(ectx, d.cluster.Config, key.Namespace, key.Name, "probe", addrs...)
	if err != nil {
		d.expect(false, "probe dial from %s: %v", key, err)
		return map[string]string{}
	}
	return got
}

func verdict(result string, want bool) (string, bool) {
	if want {
		return result, result == "connected"
	}
	if localcluster.Blocked(result) {
		return "blocked (" + result + ")", true
	}
	return result, false
}

// observedConnectivity dials, on the real node, what the fence is meant to allow and deny: from the
// server's pod (its network namespace: the server image is the server alone, and an MCP server pod
// admits no ephemeral container to dial from) to the test hosts and the cluster DNS, and from the client
// pods to the gateway and to the server's own port.
func (d *demo) observedConnectivity(ctx context.Context, s *mcpv1alpha1.MCPServer, pod *corev1.Pod) {
	if len(pod.Status.ContainerStatuses) == 0 {
		d.expect(false, "pod %s has no running container to observe the fence from", pod.Name)
		return
	}
	netns, err := d.cluster.ContainerNetns(pod.Status.ContainerStatuses[0].ContainerID)
	if err != nil {
		d.expect(false, "the server pod's network namespace: %v", err)
		return
	}
	metadata, private := localcluster.MetadataIP+":80", localcluster.PrivateHostIP+":80"
	allowed, otherPort := localcluster.PublicHostIP+":443", localcluster.PublicHostIP+":80"
	hostAddrs := []string{metadata, private, allowed, otherPort}

	fmt.Printf("    connectivity observed on the node (TCP connects; kube-router enforces the NetworkPolicy %s):\n", s.Name)
	// The control: every test host answers a pod no policy selects, so a block below is the fence's.
	if d.clientPodReady(ctx, d.probes.outsider) {
		control := d.dialFrom(ctx, d.probes.outsider, hostAddrs...)
		up := 0
		for _, a := range hostAddrs {
			if control[a] == "connected" {
				up++
			}
		}
		d.expect(up == len(hostAddrs), "control: a pod no NetworkPolicy selects (%s) connects to %d of %d test hosts %v", d.probes.outsider, up, len(hostAddrs), control)
	}
	before := d.probes.hosts[metadata].Conns()
	got := netns.DialEach(ctx, hostAddrs...)
	for _, r := range []struct {
		what, addr string
		want       bool
	}{
		{"server pod -> cloud metadata " + metadata, metadata, false},
		{"server pod -> private host " + private, private, false},
		{"server pod -> allow-listed " + allowed, allowed, true},
		{"server pod -> allow-listed host, other port " + otherPort, otherPort, false},
	} {
		v, ok := verdict(got[r.addr], r.want)
		d.expect(ok, "%-52s %s", r.what, v)
	}
	n := d.probes.hosts[metadata].Conns() - before
	d.expect(n == 0, "%-52s %d connection(s) accepted from the server pod", "the metadata host itself counted", n)
	addrs, rerr := resolveIn(ctx, netns, "public.test.")
	d.expect(rerr == nil && len(addrs) == 1 && addrs[0] == localcluster.PublicHostIP,
		"%-52s public.test -> %v %s", "server pod -> cluster DNS "+localcluster.ClusterDNSIP+":53/UDP", addrs, errString(rerr))

	gw := net.JoinHostPort(pod.Status.PodIP, fmt.Sprint(controllers.GatewayPort))
	direct := ""
	if s.Spec.Transport != mcpv1alpha1.TransportStdio {
		direct = net.JoinHostPort(pod.Status.PodIP, fmt.Sprint(s.Spec.Port))
		if s.Spec.Port == 0 {
			direct = net.JoinHostPort(pod.Status.PodIP, "8080")
		}
		// The control: inside its pod the server answers on the pod IP, so a refusal from outside is the
		// fence's.
		self := netns.DialEach(ctx, direct)
		d.expect(self[direct] == "connected", "%-52s %s", "control: server's own port "+direct+" from its pod", self[direct])
	}
	rows := []struct {
		what string
		from client.ObjectKey
		addr string
		want bool
	}{
		{"agent pod (app=agent, same ns) -> gateway " + gw, d.probes.agent, gw, true},
		{"other pod (same ns) -> gateway " + gw, d.probes.other, gw, false},
		{"pod in namespace default -> gateway " + gw, d.probes.outsider, gw, false},
	}
	if direct != "" {
		rows = append(rows, struct {
			what string
			from client.ObjectKey
			addr string
			want bool
		}{"agent pod -> server's own port " + direct + " (bypassing the gateway)", d.probes.agent, direct, false})
	}
	for _, r := range rows {
		if !d.clientPodReady(ctx, r.from) {
			continue
		}
		v, ok := verdict(d.dialFrom(ctx, r.from, r.addr)[r.addr], r.want)
		d.expect(ok, "%-52s %s", r.what, v)
	}
}

// resolveIn looks name up with the cluster DNS from inside netns, as the pod's resolver would.
func resolveIn(ctx context.Context, netns *localcluster.Netns, name string) ([]string, error) {
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return netns.DialContext(ctx, network, net.JoinHostPort(localcluster.ClusterDNSIP, "53"))
	}}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return r.LookupHost(ctx, name)
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return "(" + err.Error() + ")"
}

// mcpResult is the probe's MCPResult.
type mcpResult struct {
	ConnectError        string
	Tools               []string
	Status              int
	WWWAuthenticate     string
	Calls               map[string]string
	CallError, CallText string
	// SessionID is the id the gateway issued for the client's session.
	SessionID string
}

// podGatewayChecks drives the gateway in the server's pod with a go-sdk MCP client from the agent pod,
// through the server's Service (its cluster IP, kube-proxy), and verifies the audit chain the pod's
// gateway wrote.
func (d *demo) podGatewayChecks(ctx context.Context, key client.ObjectKey, is *issuer) {
	step("live gateway checks on the node: a go-sdk MCP client in pod %s -> Service %s -> the gateway in %s's pod", d.probes.agent, key, key.Name)
	svc := &corev1.Service{}
	if err := d.c.Get(ctx, key, svc); err != nil || len(svc.Spec.Ports) == 0 {
		d.expect(false, "Service %s: %v", key, err)
		return
	}
	cm := &corev1.ConfigMap{}
	if err := d.c.Get(ctx, client.ObjectKey{Namespace: key.Namespace, Name: key.Name + "-gateway"}, cm); err != nil {
		d.expect(false, "gateway ConfigMap: %v", err)
		return
	}
	var cfg struct {
		Resource string `json:"resource"`
	}
	if err := json.Unmarshal([]byte(cm.Data["gateway.json"]), &cfg); err != nil || cfg.Resource == "" {
		d.expect(false, "the rendered gateway configuration names no resource (%v)", err)
		return
	}
	if !d.clientPodReady(ctx, d.probes.agent) {
		return
	}
	// The client trusts only the CA bundle the operator publishes in the namespace and verifies the
	// gateway's certificate for the host of status.endpoint, the Service's DNS name; it dials the
	// Service's cluster IP (the node's DNS serves no Service records).
	s := &mcpv1alpha1.MCPServer{}
	bundle := &corev1.ConfigMap{}
	if err := d.c.Get(ctx, key, s); err != nil {
		d.expect(false, "MCPServer %s: %v", key, err)
		return
	}
	if err := d.c.Get(ctx, client.ObjectKey{Namespace: key.Namespace, Name: gatewayconfig.CABundleConfigMap}, bundle); err != nil {
		d.expect(false, "the published CA bundle ConfigMap %s/%s: %v", key.Namespace, gatewayconfig.CABundleConfigMap, err)
		return
	}
	scheme, host := "http", ""
	if u, err := neturl.Parse(s.Status.Endpoint); err == nil {
		scheme, host = u.Scheme, u.Hostname()
	}
	trust := []string{}
	if scheme == "https" {
		trust = []string{"--ca-pem", bundle.Data[gatewayconfig.CABundleKey], "--server-name", host}
	}
	url := fmt.Sprintf("%s://%s/mcp", scheme, net.JoinHostPort(svc.Spec.ClusterIP, fmt.Sprint(svc.Spec.Ports[0].Port)))
	fmt.Printf("    endpoint %s (Service %s, cluster IP), resource (token audience) %s\n", url, key, cfg.Resource)
	if scheme == "https" {
		fmt.Printf("    the client trusts only %s of ConfigMap %s/%s and verifies the certificate for %s\n",
			gatewayconfig.CABundleKey, key.Namespace, gatewayconfig.CABundleConfigMap, host)
	}
	probeTrusting := func(trust []string, args ...string) mcpResult {
		ectx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		argv := append(append([]string{"/probe", "mcp"}, trust...), args...)
		out, err := localcluster.Exec(ectx, d.cluster.Config, d.probes.agent.Namespace, d.probes.agent.Name, "probe", argv...)
		var r mcpResult
		if err == nil {
			err = json.Unmarshal(out, &r)
		}
		if err != nil {
			r.ConnectError, r.Status = err.Error(), -1
		}
		return r
	}

	probe := func(args ...string) mcpResult { return probeTrusting(trust, args...) }
	if scheme == "https" {
		r := probeTrusting(nil, url)
		d.expect(r.Status == -1 && strings.Contains(r.ConnectError, "x509"),
			"a client trusting only the system roots -> no HTTP exchange: %s", firstN(r.ConnectError, 120))
		r = probeTrusting(nil, "http"+strings.TrimPrefix(url, "https"))
		d.expect(r.Status == 400, "plaintext http:// to the TLS port -> HTTP %d", r.Status)
	}
	r := probe(url)
	d.expect(r.Status == 401 && r.ConnectError != "" && len(r.Tools) == 0 && strings.Contains(r.WWWAuthenticate, "resource_metadata="),
		"no token -> HTTP %d, WWW-Authenticate: %s", r.Status, r.WWWAuthenticate)
	wrong, _ := is.token("https://other-server.example/mcp")
	r = probe(url, wrong)
	d.expect(r.Status == 401, "token for another audience -> HTTP %d", r.Status)

	tok, err := is.token(cfg.Resource)
	if err != nil {
		d.expect(false, "mint token: %v", err)
		return
	}
	r = probe("--call", "read_file", "--arguments", `{"path":"report.txt"}`, url, tok,
		`read_file={"path":"readme.txt"}`, "admin_reset", `write_file={"path":"x","content":"y"}`)
	joined := strings.Join(r.Tools, ",")
	d.expect(r.Status == 200 && r.ConnectError == "" && strings.Contains(joined, "read_file") && !strings.Contains(joined, "admin_reset") && !strings.Contains(joined, "write_file"),
		"token with scope files:read -> HTTP %d, tools/list shows %v (write_file and admin_reset hidden) %s", r.Status, r.Tools, r.ConnectError)
	d.expect(strings.Contains(r.Calls["read_file"], "Demo files"), "allowed tool read_file -> %q", firstN(r.Calls["read_file"], 80))
	d.expect(strings.HasPrefix(r.Calls["admin_reset"], "error:"), "hidden tool admin_reset called directly -> refused: %s", firstN(r.Calls["admin_reset"], 120))
	d.expect(strings.HasPrefix(r.Calls["write_file"], "error:"), "write_file, outside scope files:read -> refused: %s", firstN(r.Calls["write_file"], 120))
	clean := r.CallError == "" && strings.HasPrefix(r.CallText, demoserver.ReportVisible) && !strings.ContainsAny(r.CallText, "\u200b\U000E0049") &&
		!strings.Contains(r.CallText, "<!--") && !strings.Contains(r.CallText, "AKIAIOSFODNN7EXAMPLE")
	d.expect(clean, "injected hidden text stripped and key redacted: server sent %q, client got %q %s", demoserver.ReportVisible+"<hidden ...>", r.CallText, r.CallError)
	r = probe("--call", "read_file", "--arguments", `{"path":7}`, url, tok)
	d.expect(r.CallError != "", "arguments that break the input schema -> refused: %s", firstN(r.CallError, 120))

	d.podAudit(ctx, key)
}

// podAudit reads the audit records the pod's gateway wrote (its container's stdout, through the
// kubelet's logs) and verifies their hash chain.
func (d *demo) podAudit(ctx context.Context, key client.ObjectKey) {
	pods := &corev1.PodList{}
	if err := d.c.List(ctx, pods, client.InNamespace(key.Namespace), client.MatchingLabels{controllers.LabelServer: key.Name}); err != nil || len(pods.Items) == 0 {
		d.expect(false, "the server's pod: %v", err)
		return
	}
	p := pods.Items[0]
	// The gateway is the native sidecar (an init container that keeps running) with the gateway
	// image; a stdio server's pod also runs that image as the init container that installs the bridge.
	container := ""
	for _, c := range p.Spec.InitContainers {
		if c.Image == d.gatewayImage && c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			container = c.Name
			break
		}
	}
	cs, err := kubernetes.NewForConfig(d.cluster.Config)
	if err != nil {
		d.expect(false, "client: %v", err)
		return
	}
	lctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	raw, err := cs.CoreV1().Pods(p.Namespace).GetLogs(p.Name, &corev1.PodLogOptions{Container: container}).DoRaw(lctx)
	if err != nil {
		d.expect(false, "logs of the gateway container %s of %s: %v", container, p.Name, err)
		return
	}
	// The container's log interleaves the gateway's JSON logs (stderr) with the audit records (stdout).
	var records bytes.Buffer
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		var rec struct {
			Seq  *uint64 `json:"seq"`
			Prev *string `json:"prev"`
			Hash string  `json:"hash"`
		}
		if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Seq != nil && rec.Prev != nil && rec.Hash != "" {
			records.Write(sc.Bytes())
			records.WriteByte('\n')
		}
	}
	log := records.String()
	sum, err := audit.Verify(strings.NewReader(log))
	d.expect(err == nil && sum.Records >= 4, "audit log of the pod's gateway (container %s, kubectl logs): %d records, hash chain verified (%v)", container, sum.Records, err)
	tampered := strings.Replace(log, `"decision":"deny"`, `"decision":"allow"`, 1)
	_, terr := audit.Verify(strings.NewReader(tampered))
	d.expect(tampered != log && terr != nil, "audit log with one decision edited -> %v", terr)
}

func firstN(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
