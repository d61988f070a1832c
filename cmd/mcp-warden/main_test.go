package main

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
	"github.com/mcp-warden/mcp-warden/cli/inventory"
	"github.com/mcp-warden/mcp-warden/internal/localcluster"
	"github.com/mcp-warden/mcp-warden/operator"
)

const (
	digestA = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	digestB = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	toolH1  = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
	toolH2  = "sha256:2222222222222222222222222222222222222222222222222222222222222222"
)

// TestInventoryAgainstAnAPIServer lists MCPServers from a real API server, as a table and as JSON.
func TestInventoryAgainstAnAPIServer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	root, err := localcluster.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	cluster, err := localcluster.Start(ctx, localcluster.Options{CRDDirs: []string{filepath.Join(root, "config", "crd", "bases")}})
	if cluster != nil {
		defer func() { _ = cluster.Stop() }()
	}
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(cluster.Config, client.Options{Scheme: operator.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "tools"}}); err != nil {
		t.Fatal(err)
	}
	mk := func(name, digest string) *mcpv1alpha1.MCPServer {
		s := &mcpv1alpha1.MCPServer{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "tools"},
			Spec: mcpv1alpha1.MCPServerSpec{Image: "registry.example/acme/" + name + "@" + digest, Gateway: mcpv1alpha1.GatewaySpec{Auth: mcpv1alpha1.GatewayAuth{Issuer: "https://auth.example.com"}}}}
		if err := c.Create(ctx, s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	files := mk("files", digestA)
	files.Status = mcpv1alpha1.MCPServerStatus{
		Image: &mcpv1alpha1.VerifiedImage{Digest: digestA, Signers: []string{"prod/release-key"}, Attestations: []string{"https://slsa.dev/provenance/v1", "https://cyclonedx.org/bom"}},
		Conditions: []metav1.Condition{
			{Type: mcpv1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: "Available", LastTransitionTime: metav1.Now()},
			{Type: mcpv1alpha1.ConditionVerified, Status: metav1.ConditionTrue, Reason: "Verified", LastTransitionTime: metav1.Now()},
		},
		Tools: []mcpv1alpha1.ToolPin{
			{Name: "read_file", Status: "pinned", PinnedHash: toolH1, ObservedHash: toolH1},
			{Name: "write_file", Status: "changed", PinnedHash: toolH1, ObservedHash: toolH2},
		},
	}
	if err := c.Status().Update(ctx, files); err != nil {
		t.Fatal(err)
	}
	mail := mk("mail", digestB)
	mail.Spec.Gateway.PinnedTools = map[string]string{"send": toolH2}
	if err := c.Update(ctx, mail); err != nil {
		t.Fatal(err)
	}

	var out, errOut bytes.Buffer
	if code := runInventory([]string{"-A", "-o", "json"}, &out, &errOut, c); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	var got []inventory.Server
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if len(got) != 2 || got[0].Name != "files" || got[1].Name != "mail" {
		t.Fatalf("servers: %+v", got)
	}
	f := got[0]
	if f.Digest != digestA || !f.Verified || !f.Ready || len(f.Signers) != 1 || len(f.Attestations) != 2 || len(f.Tools) != 2 ||
		f.Tools[1].Status != "changed" || f.Tools[1].ObservedHash != toolH2 || f.Tools[0].ObservedHash != "" {
		t.Errorf("files: %+v", f)
	}
	m := got[1]
	if m.Digest != digestB || m.Verified || len(m.Tools) != 1 || m.Tools[0].Hash != toolH2 || m.Tools[0].Status != "approved-not-seen" {
		t.Errorf("mail: %+v", m)
	}

	out.Reset()
	if code := runInventory([]string{"-n", "tools"}, &out, &errOut, c); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	table := out.String()
	for _, want := range []string{"NAMESPACE", "files", "sha256:aaaaaaaaaaaa", "prod/release-key", "read_file", "sha256:111111111111", "changed (now sha256:222222222222)", "mail", "approved-not-seen"} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
	if code := runInventory([]string{"-o", "yaml"}, &out, &errOut, c); code != 2 {
		t.Errorf("-o yaml: exit %d", code)
	}
	if code := run([]string{"frobnicate"}, &out, &errOut); code != 2 {
		t.Errorf("unknown command: exit %d", code)
	}
}

func TestScanExitCodes(t *testing.T) {
	var out, errOut bytes.Buffer
	cases := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"scan", "../../cli/scan/testdata/good"}, 0, "2 object(s) scanned: 0 critical, 0 high, 0 medium, 0 low"},
		{[]string{"scan", "../../cli/scan/testdata/bad"}, 1, "MCPW001"},
		{[]string{"scan", "--fail-on", "critical", "../../cli/scan/testdata/bad/scopes.yaml"}, 0, "MCPW007"},
		{[]string{"scan", "--format", "sarif", "../../cli/scan/testdata/bad/tag.yaml"}, 1, `"version": "2.1.0"`},
		{[]string{"scan", "--format", "json", "../../cli/scan/testdata/bad/tag.yaml"}, 1, `"ruleId": "MCPW001"`},
		{[]string{"scan", "--fail-on", "severe", "x"}, 2, ""},
		{[]string{"scan"}, 2, ""},
		{[]string{"scan", "no/such/dir"}, 2, ""},
	}
	for _, tc := range cases {
		out.Reset()
		errOut.Reset()
		if code := run(tc.args, &out, &errOut); code != tc.code || !strings.Contains(out.String(), tc.want) {
			t.Errorf("%v: exit %d (want %d)\nstdout: %s\nstderr: %s", tc.args, code, tc.code, out.String(), errOut.String())
		}
	}
	stdin := strings.NewReader("apiVersion: mcp.warden.dev/v1alpha1\nkind: MCPServer\nmetadata: {name: s, namespace: n}\nspec:\n  image: a/b:1\n  gateway: {auth: {issuer: https://x}}\n")
	out.Reset()
	if code := runScan([]string{"-"}, stdin, &out, &errOut); code != 1 || !strings.Contains(out.String(), "<stdin>:5") {
		t.Errorf("stdin: exit %d: %s", code, out.String())
	}
}
