package controllers

import (
	"github.com/mcp-warden/mcp-warden/controllers/desired"
	"github.com/mcp-warden/mcp-warden/policy/fence"
)

// The objects the reconciler applies are built by package desired; these are its names as the
// reconciler's API speaks them.

// Labels the operator puts on every child object.
const (
	LabelName      = fence.LabelName
	LabelInstance  = fence.LabelInstance
	LabelManagedBy = fence.LabelManagedBy
	LabelServer    = fence.LabelServer
	managerName    = fence.ManagerName
	// GatewayPort is where the gateway sidecar listens in every server pod; the Service and the
	// NetworkPolicy send clients there, never to the server's own port.
	GatewayPort = desired.GatewayPort
	// PeerPort is where a gateway serves the sessions it holds to the other replicas of its server.
	PeerPort = desired.PeerPort
	// AnnotationGatewayConfig carries a hash of the gateway configuration so a change rolls the pods.
	AnnotationGatewayConfig = desired.AnnotationGatewayConfig
	// MetricsPortName is the Service port of the gateway's metrics (its status port), when a metrics
	// scraper is configured.
	MetricsPortName = desired.MetricsPortName
)

// Peer selects pods by namespace name and labels, for a NetworkPolicy rule.
type Peer = desired.Peer

// DefaultDNSPeer is kube-dns/CoreDNS as most distributions deploy it.
var DefaultDNSPeer = desired.DefaultDNSPeer

// Telemetry is the platform's trace collector (see desired.Telemetry).
type Telemetry = desired.Telemetry

// options are the reconciler's settings as the builders take them.
func (r *MCPServerReconciler) options() desired.Options {
	return desired.Options{
		GatewayImage: r.GatewayImage, ClusterDomain: r.ClusterDomain, DNS: r.DNS, Operator: r.Operator,
		MetricsScraper: r.MetricsScraper, Telemetry: r.Telemetry, CertIssuer: r.CertIssuer,
	}
}
