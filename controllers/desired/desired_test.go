package desired

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/utils/ptr"

	"github.com/mattfenwick/cyclonus/pkg/matcher"
	psaapi "k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
	gwconfig "github.com/mcp-warden/mcp-warden/gateway/config"
	gwpolicy "github.com/mcp-warden/mcp-warden/gateway/policy"
	"github.com/mcp-warden/mcp-warden/policy/gatewayconfig"
	"github.com/mcp-warden/mcp-warden/policy/netpol"
	"github.com/mcp-warden/mcp-warden/policy/sandbox"
)

// testGatewayImage is the gateway image the tests build pods with (the operator's default).
const testGatewayImage = "mcp-warden/gateway:dev"

// testOptions are the operator's settings the tests build with: no collector, no scraper.
var testOptions = Options{GatewayImage: testGatewayImage, ClusterDomain: "cluster.local", DNS: DefaultDNSPeer}

const testImage = "ghcr.io/acme/files@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func testServer() *mcpv1alpha1.MCPServer {
	return &mcpv1alpha1.MCPServer{
		ObjectMeta: metav1.ObjectMeta{Name: "files", Namespace: "tools"},
		Spec: mcpv1alpha1.MCPServerSpec{
			Image:   testImage,
			Port:    8080,
			Gateway: mcpv1alpha1.GatewaySpec{Auth: mcpv1alpha1.GatewayAuth{Issuer: "https://auth.example.com"}, Scopes: []mcpv1alpha1.ScopeGrant{{Scope: "files:read", Tools: []string{"read_file"}}}},
			Env: []mcpv1alpha1.EnvVar{
				{Name: "LOG_LEVEL", Value: ptr.To("debug")},
				{Name: "GITHUB_TOKEN", ValueFrom: &mcpv1alpha1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "gh"}, Key: "token"}}},
			},
			Clients: []mcpv1alpha1.ClientSelector{{
				NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": "agents"}},
				PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"app": "agent"}},
			}},
			Egress: []mcpv1alpha1.EgressRule{
				{CIDR: ptr.To("140.82.112.0/20"), Ports: []mcpv1alpha1.EgressPort{{Port: 443, Protocol: mcpv1alpha1.ProtocolTCP}}},
				{FQDN: ptr.To("api.github.com"), Ports: []mcpv1alpha1.EgressPort{{Port: 443}}},
			},
		},
	}
}

func TestDesiredDeploymentIsSandboxed(t *testing.T) {
	d := Deployment(testServer(), testOptions, "hash")
	pod := d.Spec.Template.Spec
	if v := sandbox.Violations(&pod); len(v) != 0 {
		t.Fatalf("desired pod violates the sandbox: %v", v)
	}
	if len(pod.Containers) != 1 || len(pod.InitContainers) != 1 || pod.InitContainers[0].Name != "gateway" || pod.InitContainers[0].Ports[0].Name != portName {
		t.Fatalf("want the gateway as the one init container (a sidecar), serving the %q port, and the server alone: %+v %+v", portName, pod.InitContainers, pod.Containers)
	}
	c := pod.Containers[0]
	if c.Image != testImage || pod.ServiceAccountName != "files" || *d.Spec.Replicas != 1 {
		t.Fatalf("image %q sa %q replicas %d", c.Image, pod.ServiceAccountName, *d.Spec.Replicas)
	}
	env := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		env[e.Name] = e
	}
	if env["HOME"].Value != sandbox.HomeDir || env["TMPDIR"].Value != sandbox.TmpDir || env["LOG_LEVEL"].Value != "debug" {
		t.Fatalf("env = %+v", c.Env)
	}
	if env["GITHUB_TOKEN"].ValueFrom == nil || env["GITHUB_TOKEN"].ValueFrom.SecretKeyRef.Name != "gh" || env["GITHUB_TOKEN"].Value != "" {
		t.Fatalf("secret env = %+v", env["GITHUB_TOKEN"])
	}
	for k, v := range selectorLabels(testServer()) {
		if d.Spec.Selector.MatchLabels[k] != v || d.Spec.Template.Labels[k] != v {
			t.Fatalf("selector/template label %s missing", k)
		}
	}
}

// mountsOf maps a container's mounted volume names to their paths.
func mountsOf(c *corev1.Container) map[string]string {
	m := map[string]string{}
	for _, vm := range c.VolumeMounts {
		m[vm.Name] = vm.MountPath
	}
	return m
}

// TestServerCannotTouchTheGateway is the pod layout that keeps the server from the gateway, for both
// transports: the gateway a native sidecar (restartPolicy Always) whose startup probe waits for its
// ports, as its own user; the server as another user, with spec.env, without the gateway's volumes;
// no shared PID namespace; the gateway's files not readable by other users.
func TestServerCannotTouchTheGateway(t *testing.T) {
	for _, transport := range []mcpv1alpha1.Transport{mcpv1alpha1.TransportStreamableHTTP, mcpv1alpha1.TransportStdio} {
		t.Run(string(transport), func(t *testing.T) {
			s := testServer()
			s.Spec.Transport, s.Spec.Command = transport, []string{"mcp-server"}
			s.Spec.Gateway.AuditKeySecretName = "files-audit"
			pod := Deployment(s, testOptions, "hash").Spec.Template.Spec
			if v := sandbox.Violations(&pod); len(v) != 0 {
				t.Fatalf("sandbox: %v", v)
			}
			if ptr.Deref(pod.ShareProcessNamespace, false) {
				t.Fatal("the pod shares its PID namespace: the server would see the gateway's processes")
			}
			gw, srv := pod.InitContainers[0], pod.Containers[0]
			checkGatewaySidecar(t, &gw)
			checkSeparateUsers(t, &gw, &srv)
			checkGatewayFilesPrivate(t, &pod, &gw, &srv, transport)
		})
	}
}

// checkGatewaySidecar: the gateway is a native sidecar whose startup probe waits for its ports and
// whose readiness is the MCP handshake.
func checkGatewaySidecar(t *testing.T, gw *corev1.Container) {
	t.Helper()
	if gw.Name != gatewayName || ptr.Deref(gw.RestartPolicy, "") != corev1.ContainerRestartPolicyAlways {
		t.Fatalf("initContainers[0] must be the gateway as a native sidecar: %s restartPolicy %v", gw.Name, gw.RestartPolicy)
	}
	if gw.StartupProbe == nil || gw.StartupProbe.TCPSocket == nil || gw.StartupProbe.TCPSocket.Port.StrVal != statusPortName {
		t.Fatalf("the server must start only once the gateway bound its ports (startup probe on the status port, bound last): %+v", gw.StartupProbe)
	}
	if gw.ReadinessProbe == nil || gw.ReadinessProbe.HTTPGet == nil || gw.ReadinessProbe.HTTPGet.Path != "/readyz" {
		t.Fatalf("the gateway's readiness must be the MCP handshake: %+v", gw.ReadinessProbe)
	}
}

// checkSeparateUsers: the gateway and the server run as different users and groups, and spec.env
// reaches the server only.
func checkSeparateUsers(t *testing.T, gw, srv *corev1.Container) {
	t.Helper()
	gu, su := *gw.SecurityContext.RunAsUser, *srv.SecurityContext.RunAsUser
	if gu != sandbox.GatewayUID || su != sandbox.UID || gu == su || *gw.SecurityContext.RunAsGroup == *srv.SecurityContext.RunAsGroup {
		t.Fatalf("gateway runs as %d, server as %d: want %d and %d, different users and groups", gu, su, sandbox.GatewayUID, sandbox.UID)
	}
	// the gateway gets its pod's IP (for its session ids) and nothing of spec.env
	if len(gw.Env) != 1 || gw.Env[0].Name != podIPEnv || gw.Env[0].ValueFrom == nil || len(gw.EnvFrom) != 0 || len(srv.Env) == 0 {
		t.Fatalf("spec.env must reach the server only: gateway env %+v", gw.Env)
	}
}

// checkGatewayFilesPrivate: the gateway's volumes are its own (the stdio socket's emptyDir is the only
// one both containers mount), and no ConfigMap or Secret volume is readable by other users.
func checkGatewayFilesPrivate(t *testing.T, pod *corev1.PodSpec, gw, srv *corev1.Container, transport mcpv1alpha1.Transport) {
	t.Helper()
	gm, sm := mountsOf(gw), mountsOf(srv)
	for _, v := range []string{gatewayName, gatewayStateVolume, gatewayAuditKey} {
		if _, ok := gm[v]; !ok {
			t.Errorf("the gateway does not mount its %s volume", v)
		}
		if p, ok := sm[v]; ok {
			t.Errorf("the server mounts the gateway's %s volume at %s", v, p)
		}
	}
	for _, v := range pod.Volumes {
		if src := v.ConfigMap; src != nil && ptr.Deref(src.DefaultMode, 0o644)&0o007 != 0 {
			t.Errorf("volume %s: mode %o lets other users read", v.Name, *src.DefaultMode)
		}
		if src := v.Secret; src != nil && ptr.Deref(src.DefaultMode, 0o644)&0o007 != 0 {
			t.Errorf("volume %s: mode %o lets other users read", v.Name, *src.DefaultMode)
		}
	}
	shared := []string{}
	for v := range sm {
		if _, ok := gm[v]; ok {
			shared = append(shared, v)
		}
	}
	want := "[]"
	if transport == mcpv1alpha1.TransportStdio {
		want = "[stdio]" // the socket's emptyDir, nothing else
	}
	if fmt.Sprint(shared) != want {
		t.Errorf("volumes both containers mount: %v, want %s", shared, want)
	}
}

// TestDesiredPodPassesRestrictedPodSecurity checks the pod template with Pod Security Admission's own
// evaluator at the "restricted" level, independently of the sandbox package's checks.
func TestDesiredPodPassesRestrictedPodSecurity(t *testing.T) {
	d := Deployment(testServer(), testOptions, "hash")
	eval, err := policy.NewEvaluator(policy.DefaultChecks(), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range eval.EvaluatePod(psaapi.LevelVersion{Level: psaapi.LevelRestricted, Version: psaapi.LatestVersion()}, &d.Spec.Template.ObjectMeta, &d.Spec.Template.Spec) {
		if !r.Allowed {
			t.Errorf("restricted: %s: %s", r.ForbiddenReason, r.ForbiddenDetail)
		}
	}
}

// TestStdioDeployment: a stdio server runs in its own container, started by the gateway binary's
// stdio-exec (copied in by an init container) on the socket the gateway sidecar listens on; all of it
// sandboxed; the gateway configuration has no upstream.
func TestStdioDeployment(t *testing.T) {
	s := testServer()
	s.Spec.Transport = mcpv1alpha1.TransportStdio
	s.Spec.Command = []string{"npx", "mcp-server-files"}
	s.Spec.Args = []string{"/data"}
	d := Deployment(s, testOptions, "hash")
	pod := d.Spec.Template.Spec
	if v := sandbox.Violations(&pod); len(v) != 0 {
		t.Fatalf("stdio pod violates the sandbox: %v", v)
	}
	if len(pod.InitContainers) != 2 || pod.InitContainers[0].Name != gatewayName || pod.InitContainers[1].Image != testGatewayImage ||
		strings.Join(pod.InitContainers[1].Args, " ") != "install /opt/mcp-warden/gateway" {
		t.Fatalf("init containers = %+v", pod.InitContainers)
	}
	if got := strings.Join(pod.InitContainers[0].Args, " "); got != "--config=/etc/mcp-warden/gateway.json --stdio-socket=/run/mcp-warden/stdio.sock" {
		t.Fatalf("gateway args %q", got)
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("want one container, got %d", len(pod.Containers))
	}
	c := pod.Containers[0]
	want := "/opt/mcp-warden/gateway stdio-exec /run/mcp-warden/stdio.sock -- npx mcp-server-files"
	if c.Image != testImage || strings.Join(c.Command, " ") != want || strings.Join(c.Args, " ") != "/data" {
		t.Fatalf("server container runs %q %q, want %q /data", c.Command, c.Args, want)
	}
	if len(c.Ports) != 0 {
		t.Fatalf("the stdio server container listens on nothing: %+v", c.Ports)
	}
	mounts := map[string]bool{}
	for _, m := range c.VolumeMounts {
		mounts[m.MountPath] = m.ReadOnly
	}
	if ro, ok := mounts["/opt/mcp-warden"]; !ok || !ro {
		t.Fatalf("gateway binary must be mounted read-only in the server container: %+v", c.VolumeMounts)
	}
	if _, ok := mounts["/etc/mcp-warden"]; ok {
		t.Fatalf("the stdio server container mounts the gateway's configuration: %+v", c.VolumeMounts)
	}
	cm, _, err := GatewayConfigMap(s, testOptions)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &gwconfig.Config{}
	if err := json.Unmarshal([]byte(cm.Data["gateway.json"]), cfg); err != nil || !cfg.Stdio || cfg.Upstream != "" {
		t.Fatalf("stdio gateway config: %+v %v", cfg, err)
	}
	eval, err := policy.NewEvaluator(policy.DefaultChecks(), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range eval.EvaluatePod(psaapi.LevelVersion{Level: psaapi.LevelRestricted, Version: psaapi.LatestVersion()}, &d.Spec.Template.ObjectMeta, &pod) {
		if !r.Allowed {
			t.Errorf("restricted: %s: %s", r.ForbiddenReason, r.ForbiddenDetail)
		}
	}
}

func TestDesiredDeploymentIsDeterministic(t *testing.T) {
	a, b := Deployment(testServer(), testOptions, "hash"), Deployment(testServer(), testOptions, "hash")
	for i := range a.Spec.Template.Spec.Containers[0].Env {
		if a.Spec.Template.Spec.Containers[0].Env[i].Name != b.Spec.Template.Spec.Containers[0].Env[i].Name {
			t.Fatal("env order differs between two builds")
		}
	}
}

func TestResourcesDefaulting(t *testing.T) {
	q := resource.MustParse
	cases := []struct {
		name             string
		in               corev1.ResourceRequirements
		reqCPU, limitCPU string
		reqMem, limitMem string
	}{
		{name: "empty", reqCPU: "50m", limitCPU: "500m", reqMem: "64Mi", limitMem: "256Mi"},
		{name: "big request raises limit", in: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: q("2")}}, reqCPU: "2", limitCPU: "2", reqMem: "64Mi", limitMem: "256Mi"},
		{name: "small limit caps request", in: corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: q("32Mi")}}, reqCPU: "50m", limitCPU: "500m", reqMem: "32Mi", limitMem: "32Mi"},
		{name: "kept", in: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: q("100m")}, Limits: corev1.ResourceList{corev1.ResourceCPU: q("1")}}, reqCPU: "100m", limitCPU: "1", reqMem: "64Mi", limitMem: "256Mi"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := testServer()
			s.Spec.Resources = tc.in
			r := resources(s)
			got := []string{r.Requests.Cpu().String(), r.Limits.Cpu().String(), r.Requests.Memory().String(), r.Limits.Memory().String()}
			want := []string{tc.reqCPU, tc.limitCPU, tc.reqMem, tc.limitMem}
			if strings.Join(got, ",") != strings.Join(want, ",") {
				t.Fatalf("requests/limits = %v, want %v", got, want)
			}
		})
	}
}

func TestDesiredServiceAccountHasNoToken(t *testing.T) {
	if sa := ServiceAccount(testServer()); sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken {
		t.Fatal("service account mounts a token")
	}
}

func TestDesiredNetworkPolicyRefusesPrivateEgress(t *testing.T) {
	s := testServer()
	s.Spec.Egress = append(s.Spec.Egress, mcpv1alpha1.EgressRule{CIDR: ptr.To("10.0.0.0/8"), Ports: []mcpv1alpha1.EgressPort{{Port: 5432}}})
	_, errs := NetworkPolicy(s, Options{DNS: DefaultDNSPeer}, netpol.Ceiling{})
	if len(errs) != 1 || errs[0].Field != "spec.egress[2].cidr" {
		t.Fatalf("errors = %v, want one on spec.egress[2].cidr", errs)
	}
	if _, errs := NetworkPolicy(s, Options{DNS: DefaultDNSPeer}, netpol.Ceiling{AllowedClasses: []netpol.Class{netpol.ClassPrivate}}); len(errs) != 0 {
		t.Fatalf("a ceiling allowing private ranges still refused: %v", errs)
	}
}

// TestNetworkPolicyTruthTable evaluates the generated policy with an independent NetworkPolicy engine
// (cyclonus) rather than reading its YAML.
func TestNetworkPolicyTruthTable(t *testing.T) {
	s := testServer()
	s.Spec.Egress = append(s.Spec.Egress, mcpv1alpha1.EgressRule{CIDR: ptr.To("0.0.0.0/0"), Ports: []mcpv1alpha1.EgressPort{{Port: 8443}}})
	operator := Peer{Namespace: "mcp-warden-system", PodLabels: map[string]string{"app.kubernetes.io/name": "mcp-warden"}}
	np, errs := NetworkPolicy(s, Options{DNS: DefaultDNSPeer, Operator: operator}, netpol.Ceiling{})
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	policy := matcher.BuildNetworkPolicies(false, []*networkingv1.NetworkPolicy{np})
	server := &matcher.TrafficPeer{IP: "10.244.0.10", Internal: &matcher.InternalPeer{
		Namespace: "tools", NamespaceLabels: map[string]string{"kubernetes.io/metadata.name": "tools"}, PodLabels: objectLabels(s),
	}}
	external := func(ip string) *matcher.TrafficPeer { return &matcher.TrafficPeer{IP: ip} }
	pod := func(ns string, labels map[string]string) *matcher.TrafficPeer {
		return &matcher.TrafficPeer{IP: "10.244.1.1", Internal: &matcher.InternalPeer{Namespace: ns, NamespaceLabels: map[string]string{"kubernetes.io/metadata.name": ns}, PodLabels: labels}}
	}
	dns := pod("kube-system", map[string]string{"k8s-app": "kube-dns"})
	cases := []struct {
		name     string
		from, to *matcher.TrafficPeer
		port     int
		portName string
		proto    corev1.Protocol
		allowed  bool
	}{
		{"egress to cloud metadata", server, external("169.254.169.254"), 80, "", corev1.ProtocolTCP, false},
		{"egress to a private address", server, external("10.0.0.5"), 443, "", corev1.ProtocolTCP, false},
		{"egress to a private address on the 0.0.0.0/0 port", server, external("10.0.0.5"), 8443, "", corev1.ProtocolTCP, false},
		{"egress to metadata on the 0.0.0.0/0 port", server, external("169.254.169.254"), 8443, "", corev1.ProtocolTCP, false},
		{"egress to loopback on the 0.0.0.0/0 port", server, external("127.0.0.1"), 8443, "", corev1.ProtocolTCP, false},
		{"egress to a public address on the 0.0.0.0/0 port", server, external("8.8.8.8"), 8443, "", corev1.ProtocolTCP, true},
		{"DNS over UDP", server, dns, 53, "", corev1.ProtocolUDP, true},
		{"DNS over TCP", server, dns, 53, "", corev1.ProtocolTCP, true},
		{"DNS to a non-DNS pod in kube-system", server, pod("kube-system", map[string]string{"app": "other"}), 53, "", corev1.ProtocolUDP, false},
		{"allow-listed CIDR and port", server, external("140.82.113.4"), 443, "", corev1.ProtocolTCP, true},
		{"allow-listed CIDR, other port", server, external("140.82.113.4"), 22, "", corev1.ProtocolTCP, false},
		{"outside the allow-list", server, external("1.1.1.1"), 443, "", corev1.ProtocolTCP, false},
		{"egress to a pod in another namespace", server, pod("default", map[string]string{"app": "db"}), 5432, "", corev1.ProtocolTCP, false},
		{"ingress from the allowed client", pod("agents", map[string]string{"app": "agent"}), server, GatewayPort, portName, corev1.ProtocolTCP, true},
		{"ingress from the allowed client to the server's own port", pod("agents", map[string]string{"app": "agent"}), server, 8080, serverPortName, corev1.ProtocolTCP, false},
		{"ingress from the allowed client, other port", pod("agents", map[string]string{"app": "agent"}), server, 9090, "metrics", corev1.ProtocolTCP, false},
		{"ingress from a non-allowed namespace", pod("default", map[string]string{"app": "agent"}), server, GatewayPort, portName, corev1.ProtocolTCP, false},
		{"ingress from another pod in the allowed namespace", pod("agents", map[string]string{"app": "intruder"}), server, GatewayPort, portName, corev1.ProtocolTCP, false},
		{"ingress from outside the cluster", external("203.0.113.9"), server, GatewayPort, portName, corev1.ProtocolTCP, false},
		{"operator reads the gateway status", pod("mcp-warden-system", operator.PodLabels), server, StatusPort, statusPortName, corev1.ProtocolTCP, true},
		{"operator to the MCP port", pod("mcp-warden-system", operator.PodLabels), server, GatewayPort, portName, corev1.ProtocolTCP, false},
		{"allowed client to the status port", pod("agents", map[string]string{"app": "agent"}), server, StatusPort, statusPortName, corev1.ProtocolTCP, false},
		{"other pod in the operator namespace to the status port", pod("mcp-warden-system", map[string]string{"app": "x"}), server, StatusPort, statusPortName, corev1.ProtocolTCP, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			traffic := &matcher.Traffic{Source: tc.from, Destination: tc.to, ResolvedPort: tc.port, ResolvedPortName: tc.portName, Protocol: tc.proto}
			res := policy.IsTrafficAllowed(traffic)
			if res.IsAllowed() != tc.allowed {
				t.Fatalf("allowed = %v, want %v\n%s", res.IsAllowed(), tc.allowed, traffic.Table())
			}
		})
	}
}

func TestNoClientsMeansNoIngress(t *testing.T) {
	s := testServer()
	s.Spec.Clients = nil
	np, _ := NetworkPolicy(s, Options{DNS: DefaultDNSPeer}, netpol.Ceiling{})
	// only the server's own pods, to the gateways' peer port
	if len(np.Spec.Ingress) != 1 || np.Spec.Ingress[0].Ports[0].Port.IntValue() != PeerPort || len(np.Spec.PolicyTypes) != 2 {
		t.Fatalf("ingress = %+v, policyTypes = %v", np.Spec.Ingress, np.Spec.PolicyTypes)
	}
	policy := matcher.BuildNetworkPolicies(false, []*networkingv1.NetworkPolicy{np})
	traffic := &matcher.Traffic{
		Source:       &matcher.TrafficPeer{IP: "10.244.1.1", Internal: &matcher.InternalPeer{Namespace: "tools", PodLabels: map[string]string{"app": "x"}}},
		Destination:  &matcher.TrafficPeer{IP: "10.244.0.10", Internal: &matcher.InternalPeer{Namespace: "tools", PodLabels: objectLabels(s)}},
		ResolvedPort: GatewayPort, ResolvedPortName: portName, Protocol: corev1.ProtocolTCP,
	}
	if policy.IsTrafficAllowed(traffic).IsAllowed() {
		t.Fatal("a pod in the same namespace reached a server with no clients")
	}
}

func TestGatewayConfig(t *testing.T) {
	s := testServer()
	s.Spec.Gateway = mcpv1alpha1.GatewaySpec{
		Auth:               mcpv1alpha1.GatewayAuth{Issuer: "https://auth.example.com"},
		Scopes:             []mcpv1alpha1.ScopeGrant{{Scope: "files:read", Tools: []string{"read_file"}}},
		DestructiveTools:   []string{"delete_all"},
		PrivateDataTools:   []string{"read_file"},
		ExternalWriteTools: []string{"send_mail"},
	}
	cm, hash, err := GatewayConfigMap(s, testOptions)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &gwconfig.Config{}
	if err := json.Unmarshal([]byte(cm.Data["gateway.json"]), cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Upstream != "http://127.0.0.1:8080/mcp" || cfg.Resource != "https://files.tools.svc.cluster.local:8080/mcp" || cfg.Auth.Issuer != "https://auth.example.com" ||
		cfg.Scopes["files:read"][0] != "read_file" || cfg.Destructive[0] != "delete_all" ||
		cfg.ToolLabels["read_file"][0] != gwpolicy.ReadsPrivate || cfg.ToolLabels["send_mail"][0] != gwpolicy.WritesExternal {
		t.Fatalf("gateway config = %+v", cfg)
	}
	s.Spec.Gateway.Scopes[0].Tools = append(s.Spec.Gateway.Scopes[0].Tools, "write_file")
	if _, hash2, _ := GatewayConfigMap(s, testOptions); hash2 == hash {
		t.Fatal("a changed gateway configuration keeps the same hash, so pods would not roll")
	}
	s.Spec.Gateway.Auth = mcpv1alpha1.GatewayAuth{}
	if _, _, err := GatewayConfigMap(s, testOptions); err == nil || !strings.Contains(err.Error(), "auth.issuer") {
		t.Fatalf("missing issuer: %v", err)
	}
}

func TestEndpoint(t *testing.T) {
	if got := gatewayconfig.Endpoint(testServer(), "cluster.local"); got != "https://files.tools.svc.cluster.local:8080/mcp" {
		t.Fatal(got)
	}
}

// TestKnownPinsRenderedOutsideTheHash: the pins the operator has seen reach every gateway at start
// (pins.json, read via knownPinsPath), and a newly seen tool does not roll the pods.
func TestKnownPinsRenderedOutsideTheHash(t *testing.T) {
	s := testServer()
	s.Spec.Gateway = mcpv1alpha1.GatewaySpec{Auth: mcpv1alpha1.GatewayAuth{Issuer: "https://auth.example.com"},
		Scopes: []mcpv1alpha1.ScopeGrant{{Scope: "files:read", Tools: []string{"read_file"}}}}
	_, hash, err := GatewayConfigMap(s, testOptions)
	if err != nil {
		t.Fatal(err)
	}
	s.Status.Tools = []mcpv1alpha1.ToolPin{
		{Name: "read_file", Status: "pinned", PinnedHash: "sha256:aa", ObservedHash: "sha256:aa"},
		{Name: "send_email", Status: "changed", PinnedHash: "sha256:bb", ObservedHash: "sha256:cc"},
	}
	cm, hash2, err := GatewayConfigMap(s, testOptions)
	if err != nil {
		t.Fatal(err)
	}
	if hash2 != hash {
		t.Fatal("a newly recorded pin changes the config hash, so every new tool would roll the pods")
	}
	cfg := &gwconfig.Config{}
	if err := json.Unmarshal([]byte(cm.Data["gateway.json"]), cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.KnownPinsPath != "/etc/mcp-warden/pins.json" {
		t.Fatalf("knownPinsPath = %q", cfg.KnownPinsPath)
	}
	var st struct {
		Tools []struct{ Name, PinnedHash string }
	}
	if err := json.Unmarshal([]byte(cm.Data["pins.json"]), &st); err != nil || len(st.Tools) != 2 || st.Tools[1].PinnedHash != "sha256:bb" {
		t.Fatalf("pins.json = %s (%v)", cm.Data["pins.json"], err)
	}
}

// TestAuditKeyReachesTheGatewayOnly: the audit key Secret and the head file's emptyDir are mounted into
// the gateway container, never into the server's, and the rendered config points at them, for stdio
// servers too.
func TestAuditKeyReachesTheGatewayOnly(t *testing.T) {
	s := testServer()
	s.Spec.Gateway = mcpv1alpha1.GatewaySpec{Auth: mcpv1alpha1.GatewayAuth{Issuer: "https://auth.example.com"}, AuditKeySecretName: "files-audit"}
	d := Deployment(s, Options{GatewayImage: "gw@sha256:" + strings.Repeat("a", 64)}, "h")
	gw, srv := &d.Spec.Template.Spec.InitContainers[0], &d.Spec.Template.Spec.Containers[0]
	mounted := func(c *corev1.Container, vol string) bool {
		for _, m := range c.VolumeMounts {
			if m.Name == vol {
				return true
			}
		}
		return false
	}
	if gw.Name != gatewayName || !mounted(gw, gatewayAuditKey) || !mounted(gw, gatewayStateVolume) {
		t.Fatalf("gateway mounts: %+v", gw)
	}
	if mounted(srv, gatewayAuditKey) || mounted(srv, gatewayStateVolume) {
		t.Fatalf("the server container mounts the gateway's key or state: %+v", srv.VolumeMounts)
	}
	cfg := gatewayconfig.Render(s, "cluster.local")
	if cfg.Audit.KeyPath != "/etc/mcp-warden-audit/key" || cfg.Audit.StatePath != "/var/lib/mcp-warden/audit-head.json" {
		t.Fatalf("audit config: %+v", cfg.Audit)
	}
	// A stdio server runs in a container of its own too, so it may have an audit key.
	s.Spec.Transport = mcpv1alpha1.TransportStdio
	s.Spec.Command = []string{"mcp-server"}
	if errs := gatewayconfig.Check(s); strings.Contains(errs.ToAggregate().Error(), "auditKeySecretName") {
		t.Fatalf("a stdio server with an audit key: %v", errs)
	}
	if cfg := gatewayconfig.Render(s, "cluster.local"); cfg.Audit.KeyPath != "/etc/mcp-warden-audit/key" {
		t.Fatalf("stdio audit config: %+v", cfg.Audit)
	}
}

// TestMetricsScraperReachesOnlyTheStatusPort: with a metrics scraper configured, its pods reach the
// gateway's status port (metrics), not the MCP port; other pods in its namespace reach neither; the
// Service exposes the status port as "metrics". Without one, nothing but the operator reaches it.
func TestMetricsScraperReachesOnlyTheStatusPort(t *testing.T) {
	s := testServer()
	operator := Peer{Namespace: "mcp-warden-system", PodLabels: map[string]string{"app.kubernetes.io/name": "mcp-warden"}}
	scraper := Peer{Namespace: "monitoring", PodLabels: map[string]string{"app.kubernetes.io/name": "prometheus"}}
	server := &matcher.TrafficPeer{IP: "10.244.0.10", Internal: &matcher.InternalPeer{
		Namespace: "tools", NamespaceLabels: map[string]string{"kubernetes.io/metadata.name": "tools"}, PodLabels: objectLabels(s),
	}}
	pod := func(ns string, labels map[string]string) *matcher.TrafficPeer {
		return &matcher.TrafficPeer{IP: "10.244.1.1", Internal: &matcher.InternalPeer{Namespace: ns, NamespaceLabels: map[string]string{"kubernetes.io/metadata.name": ns}, PodLabels: labels}}
	}
	prom, other := pod("monitoring", scraper.PodLabels), pod("monitoring", map[string]string{"app": "other"})
	for _, withScraper := range []bool{false, true} {
		var np *networkingv1.NetworkPolicy
		var errs field.ErrorList
		o := Options{DNS: DefaultDNSPeer, Operator: operator}
		if withScraper {
			o.MetricsScraper = scraper
		}
		np, errs = NetworkPolicy(s, o, netpol.Ceiling{})
		if len(errs) > 0 {
			t.Fatal(errs)
		}
		policy := matcher.BuildNetworkPolicies(false, []*networkingv1.NetworkPolicy{np})
		allowed := func(from *matcher.TrafficPeer, port int, name string) bool {
			return policy.IsTrafficAllowed(&matcher.Traffic{Source: from, Destination: server, ResolvedPort: port, ResolvedPortName: name, Protocol: corev1.ProtocolTCP}).IsAllowed()
		}
		if got := allowed(prom, StatusPort, statusPortName); got != withScraper {
			t.Errorf("scraper configured %v: the scraper reaches the status port: %v", withScraper, got)
		}
		if allowed(prom, GatewayPort, portName) {
			t.Errorf("scraper configured %v: the scraper must not reach the MCP port", withScraper)
		}
		if allowed(other, StatusPort, statusPortName) {
			t.Errorf("scraper configured %v: another pod of the scraper's namespace reaches the status port", withScraper)
		}
		svc := Service(s, o)
		if got := len(svc.Spec.Ports) == 2 && svc.Spec.Ports[1].Name == MetricsPortName && svc.Spec.Ports[1].TargetPort.IntVal == StatusPort; got != withScraper {
			t.Errorf("scraper configured %v: Service ports %+v", withScraper, svc.Spec.Ports)
		}
	}
}
