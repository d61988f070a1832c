// Command manager runs the mcp-warden operator: the MCPServer controller, with leader election, health
// and readiness probes and a Prometheus metrics endpoint.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/mcp-warden/mcp-warden/controllers"
	"github.com/mcp-warden/mcp-warden/operator"
	"github.com/mcp-warden/mcp-warden/trust/issuerkeys"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "manager:", err)
		os.Exit(1)
	}
}

func run() error {
	var o operator.Options
	var dnsLabels string
	flag.StringVar(&o.MetricsAddr, "metrics-bind-address", ":8443", "Address of the Prometheus metrics endpoint; \"0\" disables it.")
	flag.BoolVar(&o.SecureMetrics, "metrics-secure", true, "Serve metrics over HTTPS, authenticated and authorized through the Kubernetes API (TokenReview/SubjectAccessReview).")
	flag.StringVar(&o.ProbeAddr, "health-probe-bind-address", ":8081", "Address of the /healthz and /readyz probes.")
	flag.BoolVar(&o.LeaderElection, "leader-elect", false, "Elect a leader so only one of several manager replicas reconciles at a time.")
	flag.StringVar(&o.LeaderElectionNamespace, "leader-election-namespace", "", "Namespace of the leader-election lease (default: the manager's namespace).")
	flag.StringVar(&o.ClusterDomain, "cluster-domain", "cluster.local", "The cluster's DNS domain, used in MCPServer status endpoints.")
	flag.StringVar(&o.DNS.Namespace, "dns-namespace", controllers.DefaultDNSPeer.Namespace, "Namespace of the cluster DNS pods every MCP server may reach on port 53.")
	flag.StringVar(&dnsLabels, "dns-pod-labels", "k8s-app=kube-dns", "Labels (k=v,...) selecting the cluster DNS pods.")
	var namespace, certSecret string
	flag.BoolVar(&o.Webhooks, "webhooks", true, "Serve the admission webhooks (MCPServer, and raw workloads in namespaces labelled mcp.warden.dev/image-policy=enforce).")
	flag.IntVar(&o.WebhookPort, "webhook-port", 9443, "Port of the webhook server.")
	flag.StringVar(&o.WebhookCertDir, "webhook-cert-dir", "/tmp/k8s-webhook-server/serving-certs", "Directory of the webhook server's tls.crt and tls.key.")
	flag.BoolVar(&o.CertRotation, "cert-rotation", true, "Create and rotate the webhook CA and serving certificate, and inject the CA into the webhook configuration. Turn off when cert-manager provides the certificate.")
	flag.StringVar(&namespace, "namespace", os.Getenv("POD_NAMESPACE"), "The operator's namespace (default: $POD_NAMESPACE).")
	flag.StringVar(&certSecret, "cert-secret", "mcp-warden-webhook-server-cert", "Secret (in --namespace) holding the rotated webhook certificate.")
	flag.StringVar(&o.WebhookService, "webhook-service", "mcp-warden-webhook-service", "Service in front of the webhook server, named in the certificate.")
	flag.StringVar(&o.WebhookConfiguration, "webhook-configuration", "mcp-warden-validating-webhook-configuration", "ValidatingWebhookConfiguration whose CA bundle rotation keeps current.")
	flag.DurationVar(&o.VerifyTimeout, "verify-timeout", 8*time.Second, "Deadline for one admission's image verification; keep it below the webhook timeout (10s).")
	flag.StringVar(&o.GatewayImage, "gateway-image", controllers.DefaultGatewayImage, "Image of the MCP gateway sidecar put in front of every server (pin it by digest).")
	var readPins bool
	var operatorLabels string
	flag.BoolVar(&readPins, "read-tool-pins", true, "Read each server pod's tool pin state from its gateway (port 8444, opened to the operator's pods) into status.tools and the ToolsPinned condition, and its MCP handshake with the server into status.serverInfo, status.toolCount and Ready.")
	flag.DurationVar(&o.PinPollInterval, "tool-pin-interval", controllers.DefaultPinPollInterval, "How often each server's tool pin state is read.")
	flag.StringVar(&operatorLabels, "operator-pod-labels", "app.kubernetes.io/name=mcp-warden,app.kubernetes.io/component=manager", "Labels (k=v,...) of the operator's own pods, which server NetworkPolicies let reach the gateway status port.")
	var fenceUsers, fenceGroups string
	flag.StringVar(&fenceUsers, "fence-exempt-users", "", "Users (comma-separated) that may write NetworkPolicies selecting MCP server pods that allow traffic, e.g. a platform GitOps controller's ServiceAccount (system:serviceaccount:NS:NAME). The operator itself is always exempt.")
	flag.StringVar(&fenceGroups, "fence-exempt-groups", "system:masters", "Groups (comma-separated) that may write such NetworkPolicies.")
	scaleFlags(flag.CommandLine, &o)
	zapOpts := zap.Options{}
	var issuerCAFile, scraperLabels, collectorLabels string
	flag.StringVar(&o.MetricsScraper.Namespace, "gateway-metrics-scraper-namespace", "", "Namespace of the pods that scrape the gateways' metrics (e.g. monitoring); with --gateway-metrics-scraper-pod-labels, server NetworkPolicies open the gateway's status port (8444) to them and Services expose it as port \"metrics\". Empty: only the operator reaches it.")
	flag.StringVar(&o.Telemetry.OTLPEndpoint, "otlp-endpoint", "", "OTLP/HTTP traces URL of the platform's OpenTelemetry collector (e.g. http://otel-collector.observability.svc:4318/v1/traces): every gateway exports a span per request there, and server NetworkPolicies open egress to the collector's pods (--otlp-collector-namespace, --otlp-collector-pod-labels) on its port. Empty: no trace export.")
	flag.StringVar(&o.Telemetry.Collector.Namespace, "otlp-collector-namespace", "", "Namespace of the OpenTelemetry collector's pods (with --otlp-endpoint).")
	flag.StringVar(&collectorLabels, "otlp-collector-pod-labels", "", "Labels (k=v,...) of the OpenTelemetry collector's pods (with --otlp-endpoint), e.g. app.kubernetes.io/name=opentelemetry-collector.")
	flag.StringVar(&scraperLabels, "gateway-metrics-scraper-pod-labels", "", "Labels (k=v,...) of the metrics scraper's pods, e.g. app.kubernetes.io/name=prometheus.")
	flag.StringVar(&issuerCAFile, "issuer-ca-file", "", "PEM file of CA certificates trusted for token issuers besides the system roots (e.g. an in-cluster issuer's private CA).")
	flag.DurationVar(&o.IssuerKeysRefresh, "issuer-keys-refresh", issuerkeys.DefaultRefresh, "How often each token issuer's signing keys are fetched again and delivered to the gateways; a key the issuer rotates in is used within this interval plus the kubelet's ConfigMap sync period.")
	var certIssuer, caSecret string
	flag.StringVar(&certIssuer, "gateway-cert-issuer", "", "cert-manager issuer of the gateways' serving certificates, as Issuer/NAME (in each server's namespace) or ClusterIssuer/NAME; the API server must serve cert-manager.io/v1 Certificate. Empty: the operator issues them from its own CA (--gateway-ca-secret).")
	flag.StringVar(&caSecret, "gateway-ca-secret", operator.DefaultGatewayCASecret, "Secret (in --namespace) holding the operator's CA for the gateways' serving certificates; created on first use and rotated before expiry.")
	zapOpts.BindFlags(flag.CommandLine)
	flag.Parse()
	if certIssuer != "" {
		kind, name, ok := strings.Cut(certIssuer, "/")
		if !ok || name == "" || (kind != "Issuer" && kind != "ClusterIssuer") {
			return fmt.Errorf("--gateway-cert-issuer %q: expected Issuer/NAME or ClusterIssuer/NAME, e.g. ClusterIssuer/cluster-ca", certIssuer)
		}
		o.GatewayCertIssuer = &controllers.CertIssuer{Kind: kind, Name: name}
	} else if namespace == "" {
		return fmt.Errorf("--namespace (or $POD_NAMESPACE) is required: the gateways' CA lives in Secret --gateway-ca-secret there")
	}
	if err := checkScaleFlags(o); err != nil {
		return err
	}
	o.FenceExemptUsers, o.FenceExemptGroups = splitList(fenceUsers), splitList(fenceGroups)
	if o.FenceExemptGroups == nil {
		o.FenceExemptGroups = []string{}
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))

	if err := podSelectors(&o, dnsLabels, scraperLabels, collectorLabels); err != nil {
		return err
	}
	var err error
	if issuerCAFile != "" {
		if o.IssuerCABundle, err = os.ReadFile(issuerCAFile); err != nil {
			return fmt.Errorf("--issuer-ca-file: %w", err)
		}
	}
	if o.IssuerKeysRefresh < 5*time.Second {
		return fmt.Errorf("--issuer-keys-refresh %s: want at least 5s (default %s)", o.IssuerKeysRefresh, issuerkeys.DefaultRefresh)
	}
	o.Namespace = namespace
	o.GatewayCASecret = types.NamespacedName{Namespace: namespace, Name: caSecret}
	if readPins {
		o.PinReader = &controllers.HTTPStatusReader{}
		if o.OperatorPodLabels, err = labels.ConvertSelectorToLabelsMap(operatorLabels); err != nil || len(o.OperatorPodLabels) == 0 || namespace == "" {
			return fmt.Errorf("--read-tool-pins needs --namespace and --operator-pod-labels (k=v[,k=v...]) so server NetworkPolicies open the status port to the operator: %q", operatorLabels)
		}
	}
	if o.Webhooks && o.CertRotation {
		if namespace == "" {
			return fmt.Errorf("--namespace (or $POD_NAMESPACE) is required for webhook certificate rotation")
		}
		o.CertSecret = types.NamespacedName{Namespace: namespace, Name: certSecret}
	}

	cfg, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("load kubeconfig: %w", err)
	}
	mgr, err := operator.New(cfg, o)
	if err != nil {
		return err
	}
	ctrl.Log.WithName("setup").Info("starting manager")
	return mgr.Start(ctrl.SetupSignalHandler())
}

// podSelectors parses the label flags of the pods the server NetworkPolicies open to (cluster DNS, the
// metrics scraper, the OpenTelemetry collector) into o and checks the flags that go with them.
func podSelectors(o *operator.Options, dnsLabels, scraperLabels, collectorLabels string) error {
	set, err := labels.ConvertSelectorToLabelsMap(dnsLabels)
	if err != nil || len(set) == 0 {
		return fmt.Errorf("--dns-pod-labels %q: expected k=v[,k=v...], e.g. k8s-app=kube-dns", dnsLabels)
	}
	if strings.TrimSpace(o.DNS.Namespace) == "" {
		return fmt.Errorf("--dns-namespace must not be empty")
	}
	o.DNS.PodLabels = set
	if (o.MetricsScraper.Namespace == "") != (scraperLabels == "") {
		return fmt.Errorf("--gateway-metrics-scraper-namespace and --gateway-metrics-scraper-pod-labels go together: set both (e.g. monitoring and app.kubernetes.io/name=prometheus) or neither")
	}
	if scraperLabels != "" {
		if o.MetricsScraper.PodLabels, err = labels.ConvertSelectorToLabelsMap(scraperLabels); err != nil || len(o.MetricsScraper.PodLabels) == 0 {
			return fmt.Errorf("--gateway-metrics-scraper-pod-labels %q: expected k=v[,k=v...], e.g. app.kubernetes.io/name=prometheus", scraperLabels)
		}
	}
	if collectorLabels != "" {
		if o.Telemetry.Collector.PodLabels, err = labels.ConvertSelectorToLabelsMap(collectorLabels); err != nil || len(o.Telemetry.Collector.PodLabels) == 0 {
			return fmt.Errorf("--otlp-collector-pod-labels %q: expected k=v[,k=v...], e.g. app.kubernetes.io/name=opentelemetry-collector", collectorLabels)
		}
	}
	if err := o.Telemetry.Validate(); err != nil {
		return fmt.Errorf("--otlp-endpoint: %w", err)
	}
	return nil
}

// Default client-side rate limit towards the API server: a burst of a thousand new servers (about
// thirteen requests each, see the README's "Scale" section) is sent in well under half a minute, and a
// runaway loop still cannot flood the API server.
const (
	defaultKubeAPIQPS   = 500
	defaultKubeAPIBurst = 1000
)

// scaleFlags registers the flags that size the manager for a fleet.
func scaleFlags(fs *flag.FlagSet, o *operator.Options) {
	fs.IntVar(&o.MaxConcurrentReconciles, "max-concurrent-reconciles", operator.DefaultMaxConcurrentReconciles(),
		"How many MCPServers reconcile at once; the default is 16 per CPU the manager may use (GOMAXPROCS, which follows the container's CPU limit), at least 4, at most 64.")
	o.KubeAPIQPS = defaultKubeAPIQPS
	fs.Var((*float32Value)(&o.KubeAPIQPS), "kube-api-qps", "Requests per second the manager may send to the Kubernetes API server (a client-side limit).")
	fs.IntVar(&o.KubeAPIBurst, "kube-api-burst", defaultKubeAPIBurst, "Requests the manager may send at once above --kube-api-qps.")
}

// float32Value is a flag.Value of a float32.
type float32Value float32

func (f *float32Value) String() string { return strconv.FormatFloat(float64(*f), 'g', -1, 32) }

func (f *float32Value) Set(v string) error {
	n, err := strconv.ParseFloat(v, 32)
	if err != nil {
		return fmt.Errorf("expected a number, e.g. 200")
	}
	*f = float32Value(n)
	return nil
}

// checkScaleFlags refuses a zero or negative worker count, rate or burst, and a burst below the rate.
func checkScaleFlags(o operator.Options) error {
	var errs []error
	if o.MaxConcurrentReconciles < 1 {
		errs = append(errs, fmt.Errorf("--max-concurrent-reconciles=%d: expected at least 1 worker (default %d)", o.MaxConcurrentReconciles, operator.DefaultMaxConcurrentReconciles()))
	}
	if !(o.KubeAPIQPS > 0) {
		errs = append(errs, fmt.Errorf("--kube-api-qps=%g: expected a positive number of requests per second (default %d)", o.KubeAPIQPS, defaultKubeAPIQPS))
	}
	if o.KubeAPIBurst < 1 {
		errs = append(errs, fmt.Errorf("--kube-api-burst=%d: expected at least 1 request (default %d)", o.KubeAPIBurst, defaultKubeAPIBurst))
	} else if o.KubeAPIQPS > 0 && float32(o.KubeAPIBurst) < o.KubeAPIQPS {
		errs = append(errs, fmt.Errorf("--kube-api-burst=%d is below --kube-api-qps=%g: the burst must be at least the rate", o.KubeAPIBurst, o.KubeAPIQPS))
	}
	return errors.Join(errs...)
}

// splitList splits a comma-separated flag value, dropping empty entries.
func splitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}
