package desired

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/yaml"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
	"github.com/mcp-warden/mcp-warden/policy/netpol"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden.yaml from the builders' output")

// goldenOptions are a platform with every option set: a trace collector, a metrics scraper, the
// operator's pods and a cert-manager issuer.
var goldenOptions = Options{
	GatewayImage:   "ghcr.io/mcp-warden/gateway@sha256:" + "89abcdef0123456789abcdef0123456789abcdef0123456789abcdef01234567",
	ClusterDomain:  "cluster.local",
	DNS:            DefaultDNSPeer,
	Operator:       Peer{Namespace: "mcp-warden-system", PodLabels: map[string]string{"app.kubernetes.io/name": "mcp-warden"}},
	MetricsScraper: Peer{Namespace: "monitoring", PodLabels: map[string]string{"app.kubernetes.io/name": "prometheus"}},
	Telemetry:      testTelemetry,
	CertIssuer:     &CertIssuer{Kind: "ClusterIssuer", Name: "internal-ca"},
}

// TestGoldenObjects pins every object the operator builds for a streamable-http and a stdio server
// (both with egress by CIDR and DNS name, clients, and TLS on) as the applier sends it: without status
// and creationTimestamp, map keys sorted. A change to any builder shows here as a diff of the YAML;
// when the change is intended, rewrite the files with `go test ./controllers/desired -update` and
// review the diff.
func TestGoldenObjects(t *testing.T) {
	stdio := testServer()
	stdio.Name = "notes"
	stdio.Spec.Transport, stdio.Spec.Command, stdio.Spec.Args = mcpv1alpha1.TransportStdio, []string{"npx", "mcp-server-notes"}, []string{"/data"}
	for name, s := range map[string]*mcpv1alpha1.MCPServer{"streamable-http": testServer(), "stdio": stdio} {
		t.Run(name, func(t *testing.T) {
			s.UID = types.UID("0b5e7a1c-6b1a-4f7e-9c53-2a1d3c4e5f60")
			got := renderAll(t, s, goldenOptions)
			path := filepath.Join("testdata", name+".golden.yaml")
			if *update {
				if err := os.MkdirAll("testdata", 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v: generate it with `go test ./controllers/desired -update`", err)
			}
			if d := cmp.Diff(strings.Split(string(want), "\n"), strings.Split(string(got), "\n")); d != "" {
				t.Errorf("the objects built for the %s server differ from %s (-golden +built):\n%s\nIf the change is intended, run `go test ./controllers/desired -update` and review the diff.", name, path, d)
			}
		})
	}
}

// renderAll renders every object built for s as a YAML stream.
func renderAll(t *testing.T, s *mcpv1alpha1.MCPServer, o Options) []byte {
	t.Helper()
	cm, hash, err := GatewayConfigMap(s, o)
	if err != nil {
		t.Fatal(err)
	}
	np, errs := NetworkPolicy(s, o, netpol.Ceiling{})
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	objs := []runtime.Object{
		ServiceAccount(s), Service(s, o), PeersService(s), np, CiliumNetworkPolicy(s, o, netpol.Ceiling{}), cm, Deployment(s, o, hash),
		Certificate(s, o), CABundleConfigMap(s.Namespace, []byte("-----BEGIN CERTIFICATE-----\n...\n-----END CERTIFICATE-----\n")),
	}
	var out bytes.Buffer
	for i, obj := range objs {
		u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
		if err != nil {
			t.Fatal(err)
		}
		delete(u, "status")
		unstructured.RemoveNestedField(u, "metadata", "creationTimestamp")
		body, err := yaml.Marshal(u)
		if err != nil {
			t.Fatal(err)
		}
		if i > 0 {
			out.WriteString("---\n")
		}
		out.Write(body)
	}
	return out.Bytes()
}
