package realnode

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
	"github.com/mcp-warden/mcp-warden/controllers"
	"github.com/mcp-warden/mcp-warden/internal/localcluster"
)

// issuerURL is the server's token issuer: a test host the fence does not open.
var issuerURL = "https://" + localcluster.PrivateHostIP

// serverFixture is one MCPServer running the probe as its server, with its pod, a listed client pod and
// an unlisted one, shared by the tests (started once: a pod start is the slow part).
type serverFixture struct {
	ns               string
	pod              *corev1.Pod
	agent, stranger  *corev1.Pod
	createdToRunning time.Duration
	err              error
}

var (
	fixtureOnce sync.Once
	fixture     serverFixture
)

// server starts (once) an MCPServer whose server is the probe (`probe serve`), allowed to reach
// PublicHostIP:443 only, reachable from pods labelled app=agent, with tokens from issuerURL.
func server(t *testing.T) *serverFixture {
	t.Helper()
	needNode(t)
	fixtureOnce.Do(func() { fixture.err = startServer(t) })
	if fixture.err != nil {
		t.Fatal(fixture.err)
	}
	return &fixture
}

func startServer(t *testing.T) error {
	// Kept if a t.Fatal below ends the first test inside the sync.Once.
	fixture.err = errors.New("the shared MCPServer fixture failed in an earlier test")
	ctx := context.Background()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "rn-", Labels: map[string]string{
		"pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/enforce-version": "latest",
	}}}
	if err := k8s.Create(ctx, ns); err != nil {
		return err
	}
	fixture.ns = ns.Name
	s := &mcpv1alpha1.MCPServer{
		ObjectMeta: metav1.ObjectMeta{Name: "probe", Namespace: ns.Name},
		Spec: mcpv1alpha1.MCPServerSpec{
			Image:   probeImage,
			Command: []string{"/probe", "serve", "--port", "8080"},
			Port:    8080,
			Clients: []mcpv1alpha1.ClientSelector{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "agent"}}}},
			Egress:  []mcpv1alpha1.EgressRule{{CIDR: ptrTo(localcluster.PublicHostIP + "/32"), Ports: []mcpv1alpha1.EgressPort{{Port: 443}}}},
			Gateway: mcpv1alpha1.GatewaySpec{
				Auth:   mcpv1alpha1.GatewayAuth{Issuer: issuerURL},
				Scopes: []mcpv1alpha1.ScopeGrant{{Scope: "files:read", Tools: []string{"read_file", "list_directory"}}},
			},
		},
	}
	created := time.Now()
	if err := k8s.Create(ctx, s); err != nil {
		return err
	}
	pod, err := waitServerPod(ctx, s)
	if err != nil {
		return err
	}
	fixture.createdToRunning = time.Since(created)
	fixture.pod = pod
	fmt.Printf("real node: MCPServer created -> pod %s Running and ready: %s (pod IP %s)\n", pod.Name, fixture.createdToRunning.Round(10*time.Millisecond), pod.Status.PodIP)
	fixture.agent = clientPod(t, ns.Name, "agent", map[string]string{"app": "agent"})
	fixture.stranger = clientPod(t, ns.Name, "stranger", map[string]string{"app": "stranger"})
	return nil
}

// waitServerPod waits for the MCPServer's pod to be Running with every container ready.
func waitServerPod(ctx context.Context, s *mcpv1alpha1.MCPServer) (*corev1.Pod, error) {
	var pod *corev1.Pod
	var last string
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 90*time.Second, true, func(ctx context.Context) (bool, error) {
		pods := &corev1.PodList{}
		if err := k8s.List(ctx, pods, client.InNamespace(s.Namespace), client.MatchingLabels{controllers.LabelServer: s.Name}); err != nil || len(pods.Items) == 0 {
			return false, nil
		}
		p := &pods.Items[0]
		last = fmt.Sprintf("phase %s, init containers %+v, containers %+v", p.Status.Phase, p.Status.InitContainerStatuses, p.Status.ContainerStatuses)
		if p.Status.Phase != corev1.PodRunning || len(p.Status.ContainerStatuses) == 0 {
			return false, nil
		}
		for _, c := range p.Status.ContainerStatuses {
			if !c.Ready {
				return false, nil
			}
		}
		pod = p
		return true, nil
	})
	if err != nil {
		return nil, fmt.Errorf("MCPServer %s: the pod is not Running and ready after 90s (%s)\nevents:\n%s", s.Name, last, events(s.Namespace))
	}
	return pod, nil
}

// facts mirrors the probe's Facts.
type facts struct {
	Self, PID1                     map[string]string
	WriteRoot, WriteTmp, WriteHome string
	Home                           string
	ServiceAccountToken            bool
	CloneNewUser                   string
}

// TestSandboxObservedInServerPod runs the probe inside the server container (exec, as the server's own
// user and with its security context) and checks what the kernel reports for it and for the server
// process (PID 1).
func TestSandboxObservedInServerPod(t *testing.T) {
	f := server(t)
	var got facts
	out := execIn(t, f.ns, f.pod.Name, "server", "/probe", "facts")
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("probe facts: %v: %s", err, out)
	}
	t.Logf("observed in the server container: %s", out)
	for who, st := range map[string]map[string]string{"exec'd probe": got.Self, "server process (PID 1)": got.PID1} {
		want := map[string]string{
			"Uid": "65532 65532 65532 65532", "Gid": "65532 65532 65532 65532",
			"CapEff": "0000000000000000", "CapBnd": "0000000000000000", "CapPrm": "0000000000000000",
			"CapInh": "0000000000000000", "CapAmb": "0000000000000000",
			"NoNewPrivs": "1", "Seccomp": "2",
		}
		for k, v := range want {
			if st[k] != v {
				t.Errorf("%s: %s = %q, want %q", who, k, st[k], v)
			}
		}
	}
	if !strings.Contains(got.WriteRoot, "read-only file system") {
		t.Errorf("writing / must fail with a read-only file system, got %q", got.WriteRoot)
	}
	if got.WriteTmp != "" {
		t.Errorf("/tmp must be writable: %s", got.WriteTmp)
	}
	if got.Home == "" || got.WriteHome != "" {
		t.Errorf("$HOME (%q) must be writable: %s", got.Home, got.WriteHome)
	}
	if got.ServiceAccountToken {
		t.Error("a service-account token is mounted in the server container")
	}
	if !strings.Contains(got.CloneNewUser, "operation not permitted") {
		t.Errorf("clone(CLONE_NEWUSER) must be refused by the RuntimeDefault seccomp profile, got %q", got.CloneNewUser)
	}
	// The kernel's view from outside the pod: every process of the server container, from this
	// machine's /proc.
	for _, cst := range f.pod.Status.ContainerStatuses {
		procs, err := env.Cluster.ContainerProcessStatus(cst.ContainerID)
		if err != nil {
			t.Fatalf("container %s: %v", cst.Name, err)
		}
		for _, st := range procs {
			for k, v := range map[string]string{"Uid": "65532 65532 65532 65532", "CapEff": "0000000000000000", "CapBnd": "0000000000000000", "CapPrm": "0000000000000000", "NoNewPrivs": "1", "Seccomp": "2"} {
				if st[k] != v {
					t.Errorf("container %s, process %s (%s) seen from the host: %s = %q, want %q", cst.Name, st["Pid"], st["Name"], k, st[k], v)
				}
			}
		}
		t.Logf("container %s: %d process(es) seen from the host, all UID 65532, no capabilities, NoNewPrivs, seccomp filter", cst.Name, len(procs))
	}
	// The server's own startup report (its log, read through the kubelet) says the same for PID 1.
	logs, err := cs.CoreV1().Pods(f.ns).GetLogs(f.pod.Name, &corev1.PodLogOptions{Container: "server"}).DoRaw(context.Background())
	if err != nil {
		t.Fatalf("server logs: %v", err)
	}
	var boot facts
	if err := json.Unmarshal([]byte(strings.SplitN(string(logs), "\n", 2)[0]), &boot); err != nil || boot.Self["Uid"] != "65532 65532 65532 65532" || boot.Self["Seccomp"] != "2" {
		t.Errorf("the server's startup report does not show UID 65532 under seccomp (%v): %s", err, logs)
	}
}

// dialFrom dials addrs from a container of the pod (the probe's dial). Each exec has its own 60 s
// deadline; callers that retry bound the retries.
//
//nolint:contextcheck // one exec's deadline is its own, not the retrying caller's poll.
func dialFrom(t *testing.T, ns, pod, container string, addrs ...string) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	m, err := localcluster.ExecDial(ctx, env.Cluster.Config, ns, pod, container, addrs...)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestEgressFenceEnforced dials the test hosts from the server container: only the allow-listed
// address and port connect. The same dials from a pod no policy selects all connect (the control: the
// hosts are up and routed, so a block is the policy's).
func TestEgressFenceEnforced(t *testing.T) {
	f := server(t)
	metadata, private := localcluster.MetadataIP+":80", localcluster.PrivateHostIP+":80"
	allowed, otherPort := localcluster.PublicHostIP+":443", localcluster.PublicHostIP+":80"
	addrs := []string{metadata, private, allowed, otherPort}

	control := dialFrom(t, f.ns, f.agent.Name, "probe", addrs...)
	for _, a := range addrs {
		if control[a] != "connected" {
			t.Errorf("control: from a pod no policy selects, %s: %s, want connected (the test host must be reachable)", a, control[a])
		}
	}
	before := hosts[metadata].Conns()
	got := dialFrom(t, f.ns, f.pod.Name, "server", addrs...)
	if got[allowed] != "connected" {
		t.Errorf("from the server container, the allow-listed %s: %s, want connected", allowed, got[allowed])
	}
	for _, a := range []string{metadata, private, otherPort} {
		if !blocked(got[a]) {
			t.Errorf("from the server container, %s: %s, want blocked (refused by the firewall, or timeout)", a, got[a])
		}
	}
	if n := hosts[metadata].Conns() - before; n != 0 {
		t.Errorf("the metadata host accepted %d connection(s) from the server pod", n)
	}
	t.Logf("from the server container: %v; from an unselected pod: %v", got, control)
}

func blocked(result string) bool { return localcluster.Blocked(result) }

// TestIngressFenceEnforced connects to the server pod from a listed client (app=agent) and from an
// unlisted one: only the listed one reaches the gateway port, and nobody reaches the server's own port.
func TestIngressFenceEnforced(t *testing.T) {
	f := server(t)
	gw := fmt.Sprintf("%s:%d", f.pod.Status.PodIP, controllers.GatewayPort)
	direct := f.pod.Status.PodIP + ":8080"
	// The control: inside the pod the server answers on its pod IP, so a refusal from outside is the
	// fence's.
	self := dialFrom(t, f.ns, f.pod.Name, "server", direct)
	if self[direct] != "connected" {
		t.Fatalf("control: inside its pod, the server must answer on %s: %s", direct, self[direct])
	}
	agent := dialFrom(t, f.ns, f.agent.Name, "probe", gw, direct)
	stranger := dialFrom(t, f.ns, f.stranger.Name, "probe", gw, direct)
	if agent[gw] != "connected" {
		t.Errorf("a listed client (app=agent) must reach the gateway %s: %s", gw, agent[gw])
	}
	if !blocked(agent[direct]) {
		t.Errorf("a listed client must not reach the server's own port %s (only the gateway): %s", direct, agent[direct])
	}
	if !blocked(stranger[gw]) || !blocked(stranger[direct]) {
		t.Errorf("a pod not in spec.clients must reach nothing: gateway %s, server port %s", stranger[gw], stranger[direct])
	}
	t.Logf("agent: %v; stranger: %v", agent, stranger)
}

// TestDNSThroughTheFence resolves names from the server container through the cluster DNS (the
// NetworkPolicy's DNS rule, for real), and checks that the rule opens only the cluster DNS: port 53 of
// another host is blocked from the server pod and open from an unselected one.
func TestDNSThroughTheFence(t *testing.T) {
	f := server(t)
	out := execIn(t, f.ns, f.pod.Name, "server", "/probe", "resolve", "public.test.", "metadata.test.", "nowhere.test.")
	var rs []struct {
		Name  string
		Addrs []string
		Error string
	}
	if err := json.Unmarshal(out, &rs); err != nil || len(rs) != 3 {
		t.Fatalf("probe resolve: %v: %s", err, out)
	}
	want := map[string]string{"public.test.": localcluster.PublicHostIP, "metadata.test.": localcluster.MetadataIP}
	for _, r := range rs[:2] {
		if len(r.Addrs) != 1 || r.Addrs[0] != want[r.Name] {
			t.Errorf("from the server container, %s resolved to %v (%s), want %s", r.Name, r.Addrs, r.Error, want[r.Name])
		}
	}
	if !strings.Contains(rs[2].Error, "no such host") {
		t.Errorf("an unknown name must be NXDOMAIN from the cluster DNS, got %v %q", rs[2].Addrs, rs[2].Error)
	}
	other := localcluster.PrivateHostIP + ":53"
	if c := dialFrom(t, f.ns, f.agent.Name, "probe", other); c[other] != "connected" {
		t.Fatalf("control: %s must be reachable from an unselected pod: %s", other, c[other])
	}
	if got := dialFrom(t, f.ns, f.pod.Name, "server", other); !blocked(got[other]) {
		t.Errorf("the DNS rule must open only the cluster DNS; %s from the server pod: %s", other, got[other])
	}
	t.Logf("resolved from the server container: %s", out)
}

// mcpResult mirrors the probe's MCPResult.
type mcpResult struct {
	ConnectError    string
	Tools           []string
	Status          int
	WWWAuthenticate string
	Calls           map[string]string
	// CallError and CallText are the result of probe mcp --call.
	CallError, CallText string
}

// TestGatewayRefusesAnonymousClient connects a go-sdk MCP client from the listed client pod to the
// gateway sidecar without a token: 401 with the RFC 9728 resource metadata pointer.
func TestGatewayRefusesAnonymousClient(t *testing.T) {
	f := server(t)
	url, trust := gatewayURL(t, f.ns, "probe", f.pod)
	out := execIn(t, f.ns, f.agent.Name, "probe", probeMCP(trust, url)...)
	var r mcpResult
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("probe mcp: %v: %s", err, out)
	}
	if r.Status != 401 || r.ConnectError == "" || len(r.Tools) != 0 {
		t.Errorf("without a token: status %d, connect error %q, tools %v; want 401, an error, no tools", r.Status, r.ConnectError, r.Tools)
	}
	if !strings.Contains(r.WWWAuthenticate, "resource_metadata") {
		t.Errorf("the 401 must point to the protected resource metadata: WWW-Authenticate %q", r.WWWAuthenticate)
	}
	t.Logf("anonymous client: %+v", r)
}

// token mints an access token from issuerURL for the fixture server's resource, scope files:read,
// signed with the issuer's current key.
func token(t *testing.T, f *serverFixture) string {
	t.Helper()
	return tokenFor(t, f.ns, "probe", "files:read")
}

// tokenFor mints an access token from issuerURL for the resource of MCPServer ns/name (read from the
// gateway configuration the operator rendered), with the given scope, signed with the issuer's
// current key.
//
//nolint:contextcheck // a test helper reading the rendered configuration, called from polls of any length.
func tokenFor(t *testing.T, ns, name, scope string) string {
	t.Helper()
	cm := &corev1.ConfigMap{}
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name + "-gateway"}, cm); err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Resource string `json:"resource"`
	}
	if err := json.Unmarshal([]byte(cm.Data["gateway.json"]), &cfg); err != nil || cfg.Resource == "" {
		t.Fatalf("gateway.json has no resource (%v): %s", err, cm.Data["gateway.json"])
	}
	tok, err := issuer.Token(issuerURL, cfg.Resource, scope)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestStdioServerOnRealNode runs the demo MCP server (cmd/mcp-files) with transport stdio: it runs in
// a container of its own (stdio-exec on the gateway sidecar's socket), the gateway in its sidecar.
// Both, seen from the host, are sandboxed, each as its own user; an anonymous MCP client gets 401.
func TestStdioServerOnRealNode(t *testing.T) {
	f := server(t)
	ctx := context.Background()
	s := &mcpv1alpha1.MCPServer{
		ObjectMeta: metav1.ObjectMeta{Name: "files-stdio", Namespace: f.ns},
		Spec: mcpv1alpha1.MCPServerSpec{
			Image:     filesImage,
			Transport: mcpv1alpha1.TransportStdio,
			Command:   []string{"/mcp-files", "--stdio"},
			Clients:   []mcpv1alpha1.ClientSelector{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "agent"}}}},
			Gateway: mcpv1alpha1.GatewaySpec{
				Auth:   mcpv1alpha1.GatewayAuth{Issuer: issuerURL},
				Scopes: []mcpv1alpha1.ScopeGrant{{Scope: "files:read", Tools: []string{"read_file", "list_directory"}}},
			},
		},
	}
	created := time.Now()
	if err := k8s.Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	pod, err := waitServerPod(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("stdio MCPServer created -> pod Running and ready: %s", time.Since(created).Round(10*time.Millisecond))
	if len(pod.Status.ContainerStatuses) != 1 {
		t.Fatalf("a stdio server runs in one container of its own, got %d", len(pod.Status.ContainerStatuses))
	}
	// The server in its container, the gateway in its sidecar, each as its own user (see
	// isolation_test.go).
	waitExecd(t, pod, "mcp-files")
	gw, srv := assertUsers(t, pod)
	if !gw["gateway"] || !srv["mcp-files"] || srv["gateway"] {
		t.Errorf("the gateway sidecar must run the gateway and the server container mcp-files alone: gateway %v, server %v", gw, srv)
	}
	url, trust := gatewayURL(t, f.ns, "files-stdio", pod)
	out := execIn(t, f.ns, f.agent.Name, "probe", probeMCP(trust, url)...)
	var r mcpResult
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("probe mcp: %v: %s", err, out)
	}
	if r.Status != 401 || r.ConnectError == "" {
		t.Errorf("without a token, the stdio server's gateway: status %d, connect error %q; want 401 and an error", r.Status, r.ConnectError)
	}
}
