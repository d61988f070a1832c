package realnode

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
	"github.com/mcp-warden/mcp-warden/gateway"
	"github.com/mcp-warden/mcp-warden/policy/gatewayconfig"
)

// isolation mirrors the probe's Isolation.
type isolation struct {
	Self      map[string]string
	Processes []struct {
		Pid                      int
		Name                     string
		UID                      string `json:"Uid"`
		Kill0, Environ, RootFile string
		SameUserAs               bool
	}
	Binds []struct {
		Addr      string
		ReusePort bool
		Result    string
	}
	Files []struct{ Path, Result string }
}

const (
	serverUIDs  = "65532 65532 65532 65532"
	gatewayUIDs = "65533 65533 65533 65533"
)

// gatewayFiles are the gateway's configuration, pins, audit head and TLS credential bundle, in the
// gateway's container.
var gatewayFiles = []string{"/etc/mcp-warden/gateway.json", "/etc/mcp-warden/pins.json", "/var/lib/mcp-warden/audit-head.json", "/etc/mcp-warden-tls/tls.pem"}

// observeIsolation runs `probe isolation` in the pod's server container.
func observeIsolation(t *testing.T, ns, pod string) isolation {
	t.Helper()
	out := execIn(t, ns, pod, "server", "/probe", "isolation",
		"--bind", "0.0.0.0:8443,127.0.0.1:8443,:8443,0.0.0.0:8444,127.0.0.1:8444,0.0.0.0:8445,127.0.0.1:8445",
		"--files", strings.Join(gatewayFiles, ","), "--root-file", "etc/mcp-warden/gateway.json")
	var iso isolation
	if err := json.Unmarshal(out, &iso); err != nil {
		t.Fatalf("probe isolation: %v: %s", err, out)
	}
	return iso
}

// assertServerCannotTouchGateway checks what the server container observed: no process of the
// gateway's user is visible (the PID namespace is not shared), the gateway's ports are taken (it bound
// them first, and SO_REUSEPORT does not share them across users), the gateway's files are not there.
func assertServerCannotTouchGateway(t *testing.T, iso isolation) {
	t.Helper()
	if iso.Self["Uid"] != serverUIDs {
		t.Errorf("the server container runs as %q, want %s", iso.Self["Uid"], serverUIDs)
	}
	for _, p := range iso.Processes {
		if p.UID == gatewayUIDs || p.Name == "gateway" {
			t.Errorf("the server container sees the gateway's process %d (%s, uid %s): kill -0 %q, environ %q", p.Pid, p.Name, p.UID, p.Kill0, p.Environ)
		}
	}
	if len(iso.Binds) != 14 {
		t.Fatalf("binds: %+v", iso.Binds)
	}
	for _, b := range iso.Binds {
		if !strings.Contains(b.Result, "address already in use") {
			t.Errorf("the server binding the gateway's %s (SO_REUSEPORT %v): %q, want address already in use", b.Addr, b.ReusePort, b.Result)
		}
	}
	for _, f := range iso.Files {
		if !strings.Contains(f.Result, "no such file or directory") {
			t.Errorf("the server reading the gateway's %s: %q, want it absent from the server's container", f.Path, f.Result)
		}
	}
}

// containerProcesses reads, from the host, the processes of the named container (init or not).
func containerProcesses(t *testing.T, pod *corev1.Pod, name string) ([]map[string]string, corev1.ContainerStatus) {
	t.Helper()
	for _, cs := range append(append([]corev1.ContainerStatus{}, pod.Status.InitContainerStatuses...), pod.Status.ContainerStatuses...) {
		if cs.Name != name {
			continue
		}
		procs, err := env.Cluster.ContainerProcessStatus(cs.ContainerID)
		if err != nil {
			t.Fatalf("container %s: %v", name, err)
		}
		return procs, cs
	}
	t.Fatalf("pod %s has no container %s", pod.Name, name)
	return nil, corev1.ContainerStatus{}
}

// waitExecd waits until the pod's server container runs name: a stdio server's container starts as
// the gateway binary's stdio-exec, which becomes the server once it has connected to the socket.
func waitExecd(t *testing.T, pod *corev1.Pod, name string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		procs, _ := containerProcesses(t, pod, "server")
		for _, st := range procs {
			if st["Name"] == name {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server container never ran %s: %v", name, procs)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// assertUsers checks, from the host, that every process of the gateway container runs as the gateway's
// user and every process of the server container as the server's, and returns their names.
func assertUsers(t *testing.T, pod *corev1.Pod) (gw, srv map[string]bool) {
	t.Helper()
	gw, srv = map[string]bool{}, map[string]bool{}
	for container, want := range map[string]string{"gateway": gatewayUIDs, "server": serverUIDs} {
		procs, _ := containerProcesses(t, pod, container)
		for _, st := range procs {
			if container == "gateway" {
				gw[st["Name"]] = true
			} else {
				srv[st["Name"]] = true
			}
			if st["Uid"] != want || st["CapEff"] != "0000000000000000" || st["NoNewPrivs"] != "1" || st["Seccomp"] != "2" {
				t.Errorf("container %s, process %s (%s) seen from the host: Uid %q CapEff %q NoNewPrivs %q Seccomp %q, want Uid %s, no capabilities, NoNewPrivs, seccomp",
					container, st["Pid"], st["Name"], st["Uid"], st["CapEff"], st["NoNewPrivs"], st["Seccomp"], want)
			}
		}
	}
	return gw, srv
}

// assertMCPReady reads the gateway's status on loopback from the server container: the gateway
// completed its MCP handshake with the demo server and reports its serverInfo and tools.
func assertMCPReady(t *testing.T, ns, pod string) gateway.UpstreamStatus {
	t.Helper()
	var st gateway.Status
	deadline := time.Now().Add(30 * time.Second)
	for {
		out := execIn(t, ns, pod, "server", "/probe", "get", "http://127.0.0.1:8444/status")
		var r struct {
			Status int
			Body   string
		}
		if err := json.Unmarshal(out, &r); err != nil {
			t.Fatalf("probe get: %v: %s", err, out)
		}
		if r.Status == 200 && json.Unmarshal([]byte(r.Body), &st) == nil && st.Upstream.Initialized {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the gateway's status: %d %s", r.Status, r.Body)
		}
		time.Sleep(500 * time.Millisecond)
	}
	// The kubelet's readiness probe of the gateway (GET /readyz) says the same.
	var p corev1.Pod
	for ready := false; !ready; {
		if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: pod}, &p); err != nil {
			t.Fatal(err)
		}
		for _, cs := range p.Status.InitContainerStatuses {
			ready = ready || (cs.Name == "gateway" && cs.Ready)
		}
		if !ready && time.Now().After(deadline.Add(15*time.Second)) {
			t.Fatalf("the gateway sidecar is not ready though its handshake succeeded: %+v", p.Status.InitContainerStatuses)
		}
		time.Sleep(200 * time.Millisecond)
	}
	u := st.Upstream
	if u.ServerName != "mcp-files" || u.ServerVersion != "0.1.0" || u.ProtocolVersion == "" || u.ToolCount < 1 || len(st.Pins.Tools) != u.ToolCount {
		t.Errorf("the gateway's MCP handshake with the demo server: %+v, %d pins", u, len(st.Pins.Tools))
	}
	return u
}

// TestServerCannotTouchGateway: in the MCPServer's pod (streamable-http, the probe as the server), the
// gateway is a native sidecar running as another user. Observed from the server container: the
// gateway's processes are not in its PID namespace, the gateway's ports cannot be bound (with or
// without SO_REUSEPORT), its files are not there. And in a copy of the pod that shares its PID
// namespace (which the operator never writes, and reverts as drift), the second layer: the server's
// user cannot signal the gateway, read its environment or open its files through /proc.
func TestServerCannotTouchGateway(t *testing.T) {
	f := server(t)
	gw, _ := assertUsers(t, f.pod)
	if !gw["gateway"] {
		t.Errorf("the gateway container must run the gateway, saw %v", gw)
	}
	iso := observeIsolation(t, f.ns, f.pod.Name)
	t.Logf("observed in the server container: self %v, %d other process(es) visible, binds %+v, files %+v", iso.Self, len(iso.Processes), iso.Binds, iso.Files)
	assertServerCannotTouchGateway(t, iso)
	u := assertMCPReady(t, f.ns, f.pod.Name)
	t.Logf("the gateway's MCP handshake: %+v", u)

	// The control: the same pod spec with a shared PID namespace; the gateway is then visible.
	ctx := context.Background()
	ctl := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "shared-pid", Namespace: f.ns}, Spec: *f.pod.Spec.DeepCopy()}
	ctl.Spec.ShareProcessNamespace = ptrTo(true)
	ctl.Spec.TerminationGracePeriodSeconds = ptrTo(int64(1))
	// The copy is no gateway pod of the operator's, so the operator's signer denies its pod
	// certificate: it serves a certificate of the test's own from a Secret instead.
	controlCertificate(t, f.ns, ctl)
	if err := k8s.Create(ctx, ctl); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), ctl) })
	waitRunning(t, f.ns, ctl.Name, 60*time.Second)
	shared := observeIsolation(t, f.ns, ctl.Name)
	seen := false
	for _, p := range shared.Processes {
		if p.Name != "gateway" {
			continue
		}
		seen = true
		t.Logf("with a shared PID namespace, the server sees gateway pid %d (uid %s): kill -0: %q; environ: %q; /proc/%d/root/etc/mcp-warden/gateway.json: %q", p.Pid, p.UID, p.Kill0, p.Environ, p.Pid, p.RootFile)
		if p.UID != gatewayUIDs {
			t.Errorf("gateway uid %q", p.UID)
		}
		if !strings.Contains(p.Kill0, "operation not permitted") {
			t.Errorf("kill -0 of the gateway from the server's user: %q, want operation not permitted", p.Kill0)
		}
		if !strings.Contains(p.Environ, "permission denied") {
			t.Errorf("reading the gateway's environ: %q, want permission denied", p.Environ)
		}
		if !strings.Contains(p.RootFile, "permission denied") {
			t.Errorf("the gateway's config through /proc/%d/root: %q, want permission denied", p.Pid, p.RootFile)
		}
	}
	if !seen {
		t.Fatalf("control: with shareProcessNamespace the gateway must be visible to the server container: %+v", shared.Processes)
	}
}

// TestStdioServerInItsOwnContainer: a stdio server (the probe's MCP server on stdin/stdout) runs in its
// own container as the server's user, started by stdio-exec on the gateway's socket; the gateway runs
// in its sidecar as its own user. The same observations hold, and the gateway's handshake through the
// socket reports the server.
func TestStdioServerInItsOwnContainer(t *testing.T) {
	f := server(t)
	ctx := context.Background()
	s := &mcpv1alpha1.MCPServer{
		ObjectMeta: metav1.ObjectMeta{Name: "probe-stdio", Namespace: f.ns},
		Spec: mcpv1alpha1.MCPServerSpec{
			Image:     probeImage,
			Transport: mcpv1alpha1.TransportStdio,
			Command:   []string{"/probe", "serve", "--stdio"},
			Env:       []mcpv1alpha1.EnvVar{{Name: "SERVER_ONLY", Value: ptrTo("x")}},
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
	waitExecd(t, pod, "probe")
	gw, srv := assertUsers(t, pod)
	if !gw["gateway"] || gw["probe"] || !srv["probe"] || srv["gateway"] {
		t.Errorf("the gateway container must run the gateway alone and the server container the server alone: gateway %v, server %v", gw, srv)
	}
	iso := observeIsolation(t, f.ns, pod.Name)
	t.Logf("observed in the stdio server's container: self %v, %d other process(es), binds %+v, files %+v", iso.Self, len(iso.Processes), iso.Binds, iso.Files)
	assertServerCannotTouchGateway(t, iso)
	u := assertMCPReady(t, f.ns, pod.Name)
	t.Logf("the gateway's MCP handshake through the stdio socket: %+v", u)
	// spec.env reaches the server's process (PID 1 of its container), not the gateway's.
	procs, _ := containerProcesses(t, pod, "gateway")
	for _, st := range procs {
		if environ, err := readEnviron(st["Pid"]); err != nil || strings.Contains(environ, "SERVER_ONLY=") {
			t.Errorf("the gateway's process %s has spec.env (%v)", st["Pid"], err)
		}
	}
	srvProcs, _ := containerProcesses(t, pod, "server")
	found := false
	for _, st := range srvProcs {
		if environ, err := readEnviron(st["Pid"]); err == nil && strings.Contains(environ, "SERVER_ONLY=x") {
			found = true
		}
	}
	if !found {
		t.Error("spec.env does not reach the server's process")
	}
	fmt.Printf("real node: stdio server in its own container, gateway %v (uid 65533), server %v (uid 65532)\n", gw, srv)
}

// readEnviron reads a process's environment from the host's /proc.
func readEnviron(pid string) (string, error) {
	raw, err := os.ReadFile("/proc/" + pid + "/environ")
	return strings.ReplaceAll(string(raw), "\x00", "\n"), err
}

// controlCertificate swaps the pod's podCertificate volume for a Secret with a credential bundle and
// CA the test issues itself (a throwaway CA, for localhost).
func controlCertificate(t *testing.T, ns string, pod *corev1.Pod) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "control CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour)}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leafDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(2), DNSNames: []string{"localhost"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature,
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour)}, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	bundle := append(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER})...)
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: pod.Name + "-control-tls"},
		Data: map[string][]byte{gatewayconfig.TLSBundleFile: bundle, gatewayconfig.CABundleKey: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})}}
	if err := k8s.Create(context.Background(), sec); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), sec) })
	for i, v := range pod.Spec.Volumes {
		if v.Projected != nil && slices.ContainsFunc(v.Projected.Sources, func(p corev1.VolumeProjection) bool { return p.PodCertificate != nil }) {
			pod.Spec.Volumes[i].VolumeSource = corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: sec.Name, DefaultMode: v.Projected.DefaultMode}}
		}
	}
}
