package realnode

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
)

// The third-party server's image (hack/everything.sh's tree): Node.js from the npm package
// node-linux-<arch>, and @modelcontextprotocol/server-everything with its dependencies from npm.
const (
	everythingNode = "/usr/local/bin/node"
	everythingMain = "/app/node_modules/@modelcontextprotocol/server-everything/dist/index.js"
)

// nodeWrites is a Node.js script that tries to write /, $HOME and the temporary directory (what npx and
// npm servers do: caches under HOME, temp files) and prints the errors ("" where it worked).
const nodeWrites = `const fs = require("fs"), os = require("os"), path = require("path");
const out = {};
for (const [k, d] of [["writeRoot", "/"], ["writeHome", os.homedir()], ["writeTmp", os.tmpdir()]]) {
  const p = path.join(d, ".node-probe-" + process.pid);
  const c = path.join(d, ".cache-probe-" + process.pid);
  try { fs.writeFileSync(p, "x"); fs.rmSync(p); fs.mkdirSync(path.join(c, "npm"), {recursive: true}); fs.writeFileSync(path.join(c, "npm", "x"), "x"); fs.rmSync(c, {recursive: true}); out[k] = ""; }
  catch (e) { out[k] = e.code + " " + d; }
}
out.uid = process.getuid(); out.home = os.homedir(); out.tmp = os.tmpdir();
console.log(JSON.stringify(out));`

// TestThirdPartyServerEverything runs the MCP reference server @modelcontextprotocol/server-everything
// (npm), on Node.js from npm, as transport stdio and as streamable HTTP, under the operator's sandbox
// (read-only root, UID 65532, no capabilities, seccomp): a go-sdk MCP client in the listed client pod
// reaches it through the gateway, lists its tools and calls echo. Observed from the host: every process
// of the container sandboxed on a read-only root; from inside, node writes HOME and /tmp but not /.
//
// The client authenticates with a token from the test issuer whose scope grants every tool; the
// gateway verifies it with the keys the operator delivered.
func TestThirdPartyServerEverything(t *testing.T) {
	f := server(t)
	if everythingImage == "" {
		t.Skip("SKIPPED: " + everythingSkip)
	}
	for _, tc := range []struct {
		name      string
		transport mcpv1alpha1.Transport
		arg       string
		port      int32
	}{
		{"stdio", mcpv1alpha1.TransportStdio, "stdio", 0},
		{"streamable-http", mcpv1alpha1.TransportStreamableHTTP, "streamableHttp", 3001},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			s := &mcpv1alpha1.MCPServer{
				ObjectMeta: metav1.ObjectMeta{Name: "everything-" + tc.name, Namespace: f.ns},
				Spec: mcpv1alpha1.MCPServerSpec{
					Image:     everythingImage,
					Transport: tc.transport,
					Command:   []string{everythingNode, everythingMain, tc.arg},
					Clients:   []mcpv1alpha1.ClientSelector{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "agent"}}}},
					Gateway: mcpv1alpha1.GatewaySpec{
						Auth:   mcpv1alpha1.GatewayAuth{Issuer: issuerURL},
						Scopes: []mcpv1alpha1.ScopeGrant{{Scope: "everything", Tools: []string{"*"}}},
					},
				},
			}
			if tc.port != 0 {
				s.Spec.Port = tc.port
				s.Spec.Env = []mcpv1alpha1.EnvVar{{Name: "PORT", Value: ptrTo(fmt.Sprint(tc.port))}}
			}
			created := time.Now()
			if err := k8s.Create(ctx, s); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = k8s.Delete(context.Background(), s) })
			pod, err := waitServerPod(ctx, s)
			if err != nil {
				t.Fatal(err)
			}
			ready := time.Since(created)
			// Through the gateway from the listed client pod, with a real MCP client (go-sdk).
			r := everythingThroughGateway(t, f, s, pod, tc.name)
			serving := time.Since(created)
			for _, want := range []string{"echo", "get-sum", "get-env"} {
				if !slices.Contains(r.Tools, want) {
					t.Errorf("tools/list through the gateway lacks %q: %v", want, r.Tools)
				}
			}
			if r.CallError != "" || r.CallText != "Echo: hello from the real node" {
				t.Errorf("tools/call echo through the gateway: error %q, text %q; want the text \"Echo: hello from the real node\"", r.CallError, r.CallText)
			}
			t.Logf("server-everything (%s): MCPServer created -> pod Running and ready %s, -> serving through the gateway %s; %d tools; echo said %q",
				tc.name, ready.Round(10*time.Millisecond), serving.Round(10*time.Millisecond), len(r.Tools), r.CallText)

			serverContainerSandboxed(t, pod)
			nodeWritesHomeAndTmpOnly(t, f.ns, pod)
		})
	}
}

// everythingThroughGateway is what a go-sdk MCP client in the listed client pod sees through the
// server's gateway (its tools, and calling echo), once it connects and lists tools (within 30s).
func everythingThroughGateway(t *testing.T, f *serverFixture, s *mcpv1alpha1.MCPServer, pod *corev1.Pod, name string) mcpResult {
	t.Helper()
	ctx := context.Background()
	url, trust := gatewayURL(t, f.ns, s.Name, pod)
	tok := tokenFor(t, f.ns, s.Name, "everything")
	var r mcpResult
	var out []byte
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		out = execIn(t, f.ns, f.agent.Name, "probe", probeMCP(trust, "--call", "echo", "--arguments", `{"message":"hello from the real node"}`, url, tok)...)
		r = mcpResult{}
		if err := json.Unmarshal(out, &r); err != nil {
			return false, fmt.Errorf("probe mcp: %w: %s", err, out)
		}
		return r.ConnectError == "" && len(r.Tools) > 0, nil
	})
	if err != nil {
		t.Fatalf("server-everything (%s) through the gateway at %s: %v; last result %s\nserver log:\n%s", name, url, err, out, podLogs(f.ns, pod.Name, "server"))
	}
	return r
}

// serverContainerSandboxed: seen from the host, every process of the server's container runs as
// 65532 without capabilities, with no_new_privs and seccomp, on a read-only root; it runs node and not
// the gateway.
func serverContainerSandboxed(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	var cid string
	for _, c := range pod.Status.ContainerStatuses {
		if c.Name == "server" {
			cid = c.ContainerID
		}
	}
	procs, err := env.Cluster.ContainerProcessStatus(cid)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, st := range procs {
		names[st["Name"]] = true
		for k, v := range map[string]string{"Uid": "65532 65532 65532 65532", "CapEff": "0000000000000000", "CapBnd": "0000000000000000", "CapPrm": "0000000000000000", "NoNewPrivs": "1", "Seccomp": "2"} {
			if st[k] != v {
				t.Errorf("process %s (%s): %s = %q, want %q", st["Pid"], st["Name"], k, st[k], v)
			}
		}
		if !strings.HasPrefix(st["RootMountOptions"], "ro") {
			t.Errorf("process %s (%s): its root mount is %q, want read-only", st["Pid"], st["Name"], st["RootMountOptions"])
		}
	}
	if !names["node"] || names["gateway"] {
		t.Errorf("the server container must run node and not the gateway (a sidecar of its own), saw %v", names)
	}
}

// nodeWritesHomeAndTmpOnly: from inside, as the server's user, node writes HOME and /tmp, not /.
func nodeWritesHomeAndTmpOnly(t *testing.T, ns string, pod *corev1.Pod) {
	t.Helper()
	out := execIn(t, ns, pod.Name, "server", everythingNode, "-e", nodeWrites)
	var w struct {
		WriteRoot, WriteHome, WriteTmp string
		Home, Tmp                      string
		UID                            int
	}
	if err := json.Unmarshal(out, &w); err != nil {
		t.Fatalf("node write probe: %v: %s", err, out)
	}
	if !strings.HasPrefix(w.WriteRoot, "EROFS") || w.WriteHome != "" || w.WriteTmp != "" || w.UID != 65532 || w.Home == "/" {
		t.Errorf("node in the server container: write / %q (want EROFS), HOME %s %q and tmp %s %q (want writable), uid %d (want 65532)", w.WriteRoot, w.Home, w.WriteHome, w.Tmp, w.WriteTmp, w.UID)
	}
	t.Logf("node in the server container: %s", strings.TrimSpace(string(out)))
}

// podLogs returns a container's log, or the error reading it.
func podLogs(ns, pod, container string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	raw, err := cs.CoreV1().Pods(ns).GetLogs(pod, &corev1.PodLogOptions{Container: container}).DoRaw(ctx)
	if err != nil {
		return err.Error()
	}
	return string(raw)
}
