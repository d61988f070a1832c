package desired

import (
	"fmt"
	"net/url"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Telemetry is the platform's OpenTelemetry collector, set by the operator's flags (never by an
// MCPServer): every gateway exports its spans there over OTLP/HTTP, and every server's NetworkPolicy
// opens egress to the collector's pods on the endpoint's port. The NetworkPolicy selects the pod, so
// the MCP server process in the same pod can reach the collector too.
type Telemetry struct {
	// OTLPEndpoint is the collector's OTLP/HTTP traces URL, e.g.
	// http://otel-collector.observability.svc:4318/v1/traces. Empty: no export, no egress.
	OTLPEndpoint string
	// Collector selects the collector's pods, which the egress rule opens.
	Collector Peer
}

// CollectorPort is the TCP port the endpoint names (the scheme's default when it names none): the
// collector pods' port, which the NetworkPolicy opens (a Service in front must map it to itself).
func (t Telemetry) CollectorPort() (int32, error) {
	u, err := url.Parse(t.OTLPEndpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
		return 0, fmt.Errorf("OTLP endpoint %q: want an http:// or https:// URL without credentials, e.g. http://otel-collector.observability.svc:4318/v1/traces", t.OTLPEndpoint)
	}
	p := u.Port()
	if p == "" {
		p = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("OTLP endpoint %q: port %q is not a TCP port", t.OTLPEndpoint, p)
	}
	return int32(n), nil
}

// Validate checks the endpoint and that the collector's pods are named, for the egress rule.
func (t Telemetry) Validate() error {
	if t.OTLPEndpoint == "" {
		return nil
	}
	if _, err := t.CollectorPort(); err != nil {
		return err
	}
	if t.Collector.Namespace == "" || len(t.Collector.PodLabels) == 0 {
		return fmt.Errorf("OTLP endpoint %q: name the collector's pods (namespace and pod labels, e.g. observability and app.kubernetes.io/name=opentelemetry-collector) so that server NetworkPolicies open egress to them and nothing else", t.OTLPEndpoint)
	}
	return nil
}

// egressRule is the NetworkPolicy egress rule to the collector's pods on the endpoint's port (nil: no
// telemetry).
func (t Telemetry) egressRule() *networkingv1.NetworkPolicyEgressRule {
	if t.OTLPEndpoint == "" || t.Collector.Namespace == "" || len(t.Collector.PodLabels) == 0 {
		return nil
	}
	port, err := t.CollectorPort()
	if err != nil {
		return nil
	}
	tcp, p := corev1.ProtocolTCP, intstr.FromInt32(port)
	return &networkingv1.NetworkPolicyEgressRule{
		To: []networkingv1.NetworkPolicyPeer{{
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{corev1.LabelMetadataName: t.Collector.Namespace}},
			PodSelector:       &metav1.LabelSelector{MatchLabels: t.Collector.PodLabels},
		}},
		Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &p}},
	}
}
