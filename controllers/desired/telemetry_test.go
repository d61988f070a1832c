package desired

import (
	"encoding/json"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	gwconfig "github.com/mcp-warden/mcp-warden/gateway/config"
)

var testTelemetry = Telemetry{
	OTLPEndpoint: "http://otel-collector.observability.svc:4318/v1/traces",
	Collector:    Peer{Namespace: "observability", PodLabels: map[string]string{"app.kubernetes.io/name": "opentelemetry-collector"}},
}

// TestTelemetryRendersPlatformEndpoint: the collector endpoint in every gateway's configuration is the
// platform's (the operator's), and a spec has no way to set it.
func TestTelemetryRendersPlatformEndpoint(t *testing.T) {
	s := testServer()
	cm, hash, err := GatewayConfigMap(s, Options{ClusterDomain: "cluster.local", Telemetry: testTelemetry})
	if err != nil {
		t.Fatal(err)
	}
	cfg := &gwconfig.Config{}
	if err := json.Unmarshal([]byte(cm.Data["gateway.json"]), cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Telemetry.OTLPEndpoint != testTelemetry.OTLPEndpoint {
		t.Errorf("rendered telemetry.otlpEndpoint %q, want the operator's %q", cfg.Telemetry.OTLPEndpoint, testTelemetry.OTLPEndpoint)
	}
	off, hashOff, err := GatewayConfigMap(s, Options{ClusterDomain: "cluster.local"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(off.Data["gateway.json"], "otlpEndpoint") || hashOff == hash {
		t.Errorf("without an operator endpoint the configuration must export nothing (and hash differently): %s", off.Data["gateway.json"])
	}
}

// TestTelemetryEgressOnlyToCollector: the egress rule telemetry adds opens the collector's pods in its
// namespace on the endpoint's port, and nothing else; without an endpoint it adds none.
func TestTelemetryEgressOnlyToCollector(t *testing.T) {
	if (Telemetry{}).egressRule() != nil {
		t.Fatal("no endpoint must add no egress")
	}
	r := testTelemetry.egressRule()
	if r == nil || len(r.To) != 1 || len(r.Ports) != 1 {
		t.Fatalf("egress rule %+v, want one peer and one port", r)
	}
	peer := r.To[0]
	if peer.IPBlock != nil || peer.NamespaceSelector == nil || peer.PodSelector == nil ||
		peer.NamespaceSelector.MatchLabels[corev1.LabelMetadataName] != "observability" ||
		peer.PodSelector.MatchLabels["app.kubernetes.io/name"] != "opentelemetry-collector" || len(peer.PodSelector.MatchLabels) != 1 {
		t.Errorf("peer %+v, want exactly the collector's pods in namespace observability", peer)
	}
	if r.Ports[0].Port == nil || r.Ports[0].Port.IntValue() != 4318 || *r.Ports[0].Protocol != corev1.ProtocolTCP {
		t.Errorf("ports %+v, want TCP 4318 (the endpoint's)", r.Ports)
	}
	https := testTelemetry
	https.OTLPEndpoint = "https://collector.observability.svc/v1/traces"
	if p, err := https.CollectorPort(); err != nil || p != 443 {
		t.Errorf("https endpoint without a port: %d %v, want 443", p, err)
	}
}

// TestTelemetryValidate: an endpoint needs the collector's pods named (or the egress rule would be
// missing, or wider than the collector), and must be an http(s) URL without credentials.
func TestTelemetryValidate(t *testing.T) {
	if err := testTelemetry.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		tel  Telemetry
		want string
	}{
		{Telemetry{OTLPEndpoint: testTelemetry.OTLPEndpoint}, "name the collector's pods"},
		{Telemetry{OTLPEndpoint: testTelemetry.OTLPEndpoint, Collector: Peer{Namespace: "observability"}}, "name the collector's pods"},
		{Telemetry{OTLPEndpoint: "otel-collector:4318", Collector: testTelemetry.Collector}, "http:// or https://"},
		{Telemetry{OTLPEndpoint: "http://u:p@collector:4318", Collector: testTelemetry.Collector}, "without credentials"},
		{Telemetry{OTLPEndpoint: "http://collector:0/v1/traces", Collector: testTelemetry.Collector}, "not a TCP port"},
	} {
		if err := tc.tel.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want an error saying %q", tc.tel, err, tc.want)
		}
	}
}
