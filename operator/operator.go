// Package operator wires the mcp-warden manager: scheme, cache, controllers, probes and metrics. The
// manager binary, the demo and the integration tests all start the operator through New, so they run
// the same code.
package operator

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	goruntime "runtime"
	"time"

	ciliumv2 "github.com/cilium/cilium/pkg/k8s/apis/cilium.io/v2"
	"github.com/open-policy-agent/cert-controller/pkg/rotator"
	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	policyv1beta1 "sigs.k8s.io/network-policy-api/apis/v1beta1"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
	"github.com/mcp-warden/mcp-warden/controllers"
	"github.com/mcp-warden/mcp-warden/policy/guardrails"
	"github.com/mcp-warden/mcp-warden/supplychain/imageverify"
	"github.com/mcp-warden/mcp-warden/trust/issuerkeys"
	"github.com/mcp-warden/mcp-warden/trust/servingcert"
	"github.com/mcp-warden/mcp-warden/webhooks"
)

// Options configure the operator.
type Options struct {
	// MetricsAddr is the metrics endpoint address; "0" disables it.
	MetricsAddr string
	// SecureMetrics serves metrics over HTTPS, authenticated and authorized through the API server.
	SecureMetrics bool
	// ProbeAddr is the /healthz and /readyz address; "0" disables it.
	ProbeAddr string
	// LeaderElection makes replicas elect one active manager.
	LeaderElection bool
	// LeaderElectionNamespace is where the lease lives (default: the pod's namespace).
	LeaderElectionNamespace string
	// LeaseDuration, RenewDeadline and RetryPeriod tune leader election (defaults 15s, 10s, 2s). The
	// leader releases the lease when it stops, so a replacement takes over at once.
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
	// SeveralInProcess allows more than one manager in one process (tests of restarts and handovers),
	// which controller-runtime otherwise refuses by controller name.
	SeveralInProcess bool
	// ClusterDomain is the cluster's DNS domain (default cluster.local).
	ClusterDomain string
	// DNS is where the cluster DNS pods run (default kube-system, k8s-app=kube-dns).
	DNS controllers.Peer

	// Webhooks serves the admission webhooks (MCPServer and opted-in workloads).
	Webhooks bool
	// WebhookHost and WebhookPort are where the webhook server listens (default all addresses, 9443).
	WebhookHost string
	WebhookPort int
	// WebhookCertDir holds tls.crt and tls.key for the webhook server.
	WebhookCertDir string
	// CertRotation makes the operator create and rotate its own webhook CA and serving certificate
	// (stored in Secret CertSecret), and inject the CA into the ValidatingWebhookConfiguration.
	CertRotation bool
	// CertSecret, WebhookService and WebhookConfiguration name the objects certificate rotation manages.
	CertSecret           types.NamespacedName
	WebhookService       string
	WebhookConfiguration string
	// WebhookExtraDNSNames are further names for the serving certificate (e.g. localhost for a webhook
	// reached by URL).
	WebhookExtraDNSNames []string
	// GatewayImage is the MCP gateway sidecar image.
	GatewayImage string
	// PinReader reads each server pod's gateway status port (tool pins, MCP handshake), for
	// status.tools, the ToolsPinned condition, status.serverInfo, status.toolCount and an MCP-ready
	// Ready (nil: not read).
	PinReader controllers.StatusReader
	// PinPollInterval is how often pin state is read (default 30s).
	PinPollInterval time.Duration
	// OperatorPodLabels select the operator's own pods in Namespace; server NetworkPolicies open the
	// gateway status port to them alone (empty: the status port is closed).
	OperatorPodLabels map[string]string
	// Namespace is the operator's own namespace, where key Secrets referenced by policies live.
	Namespace string
	// Verifier checks image signatures and attestations for the webhooks (default: cosign against the
	// registries, with a cache).
	Verifier imageverify.ImageVerifier
	// VerifyTimeout bounds one whole admission, every policy and image (default
	// webhooks.DefaultVerifyTimeout, 8s, below the 10s webhook timeout), and one verification.
	VerifyTimeout time.Duration
	// FenceExemptUsers and FenceExemptGroups may write NetworkPolicies that select MCP server pods and
	// allow traffic (see webhooks.NetworkPolicyValidator); the operator's own identity, learnt from the
	// API server at start, is always exempt. FenceExemptGroups defaults to system:masters.
	FenceExemptUsers, FenceExemptGroups []string
	// Discovery reads issuers' metadata to confirm jwksURLs (default: HTTPS with a 3 s deadline).
	Discovery guardrails.IssuerDiscovery
	// MetricsScraper selects the pods that scrape the gateways' metrics (e.g. Prometheus); empty:
	// only the operator reaches the gateways' status port.
	MetricsScraper controllers.Peer
	// Telemetry is the platform's OpenTelemetry collector the gateways export spans to (empty endpoint:
	// none); server NetworkPolicies open egress to its pods.
	Telemetry controllers.Telemetry
	// IssuerKeys fetches the token issuers' signing keys for the gateways (default: a fetcher with the
	// guarded HTTPS client, trusting the system roots and IssuerCAs).
	IssuerKeys *issuerkeys.Fetcher
	// IssuerCABundle is PEM certificates trusted for issuers besides the system roots (e.g. an
	// in-cluster issuer's private CA).
	IssuerCABundle []byte
	// IssuerKeysRefresh is how often each issuer's keys are fetched again (default 1m).
	IssuerKeysRefresh time.Duration

	// GatewayCASecret is the Secret holding the operator's CA for the gateways' serving certificates
	// (default mcp-warden-gateway-ca in Namespace, or in "default" when Namespace is empty); it is created
	// on first use and rotated before expiry.
	GatewayCASecret types.NamespacedName
	// GatewayCertIssuer, when set, has cert-manager issue the gateways' certificates: the API server must
	// serve cert-manager.io/v1 Certificate, or New fails.
	GatewayCertIssuer *controllers.CertIssuer

	// MaxConcurrentReconciles is how many MCPServers reconcile at once (0:
	// DefaultMaxConcurrentReconciles). A reconcile mostly waits on the API server, so several per core
	// keep a burst of creates moving.
	MaxConcurrentReconciles int
	// KubeAPIQPS and KubeAPIBurst are the manager's client-side rate limit towards the API server, in
	// requests per second and the burst above it (0: keep the rest.Config's own).
	KubeAPIQPS   float32
	KubeAPIBurst int
	// WrapTransport, when set, wraps the transport of every request the manager sends to the API
	// server (e.g. to count them).
	WrapTransport func(http.RoundTripper) http.RoundTripper
}

// DefaultMaxConcurrentReconciles is 16 workers per CPU the process may use (GOMAXPROCS, which follows
// the container's CPU limit), at least 4. A reconcile mostly waits on the API server: with 8 per CPU, a
// burst of 500 new servers kept every worker busy for as long as the burst took (1554 reconciles of
// 1.0 s on 16 workers, 97 s of a 99.5 s run); with 16, the same burst took 69.7 s.
// At most 64: more workers than that share the same client rate limit (--kube-api-qps) and only add
// memory on a large node without a CPU limit.
func DefaultMaxConcurrentReconciles() int {
	return min(64, max(4, 16*goruntime.GOMAXPROCS(0)))
}

// Validate reports options that cannot work, naming the option and what it needs.
func (o Options) Validate() error {
	var errs []error
	if err := o.Telemetry.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("telemetry: %w", err))
	}
	if o.MaxConcurrentReconciles < 0 {
		errs = append(errs, fmt.Errorf("MaxConcurrentReconciles is %d: expected at least 1 (or 0 for the default, %d)", o.MaxConcurrentReconciles, DefaultMaxConcurrentReconciles()))
	}
	if o.KubeAPIQPS < 0 {
		errs = append(errs, fmt.Errorf("KubeAPIQPS is %g: expected a positive rate (or 0 to keep the client configuration's)", o.KubeAPIQPS))
	}
	if o.KubeAPIBurst < 0 {
		errs = append(errs, fmt.Errorf("KubeAPIBurst is %d: expected a positive burst (or 0 to keep the client configuration's)", o.KubeAPIBurst))
	}
	if o.KubeAPIQPS > 0 && o.KubeAPIBurst > 0 && float32(o.KubeAPIBurst) < o.KubeAPIQPS {
		errs = append(errs, fmt.Errorf("KubeAPIBurst (%d) is below KubeAPIQPS (%g): the burst must be at least the rate", o.KubeAPIBurst, o.KubeAPIQPS))
	}
	return errors.Join(errs...)
}

// clientConfig is cfg with the options' rate limit and transport wrapper (a copy; cfg is not changed).
func clientConfig(cfg *rest.Config, o Options) *rest.Config {
	cfg = rest.CopyConfig(cfg)
	if o.KubeAPIQPS > 0 {
		cfg.QPS = o.KubeAPIQPS
	}
	if o.KubeAPIBurst > 0 {
		cfg.Burst = o.KubeAPIBurst
	}
	if o.WrapTransport != nil {
		cfg.Wrap(o.WrapTransport)
	}
	return cfg
}

func durationOrNil(d time.Duration) *time.Duration {
	if d == 0 {
		return nil
	}
	return &d
}

// Scheme returns a scheme with the Kubernetes built-in types and the mcp-warden API.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(mcpv1alpha1.AddToScheme(s))
	utilruntime.Must(ciliumv2.AddToScheme(s))
	utilruntime.Must(policyv1beta1.Install(s))
	return s
}

// LeaderElectionID is the name of the leader-election lease.
const LeaderElectionID = "mcp-warden.mcp.warden.dev"

// New returns a manager with the MCPServer controller, probes and metrics registered; start it with
// Start. It runs before the manager does: controller-runtime's setup (SetupWithManager, the field
// indexes) takes no context, and the start-up reads to the API server have deadlines of their own.
//
//nolint:contextcheck // construction precedes the manager's context; its reads carry their own deadlines.
func New(cfg *rest.Config, o Options) (ctrl.Manager, error) {
	if err := o.Validate(); err != nil {
		return nil, fmt.Errorf("operator options: %w", err)
	}
	cfg = clientConfig(cfg, o)
	eng, err := discoverEngines(cfg, o)
	if err != nil {
		return nil, err
	}
	mgr, err := newManager(cfg, o, eng)
	if err != nil {
		return nil, err
	}
	if err := withDefaultDependencies(mgr, &o); err != nil {
		return nil, err
	}
	if err := setupControllers(mgr, o, eng); err != nil {
		return nil, err
	}
	mgr.GetLogger().Info("network policy engines", "kubernetes", true, "cilium", eng.cilium, "clusterNetworkPolicy", eng.clusterPolicies)
	if !eng.clusterPolicies {
		mgr.GetLogger().Info("the API server does not serve policy.networking.k8s.io/v1beta1 ClusterNetworkPolicy: no cluster-wide denial of the protected ranges; the fence relies on the operator's NetworkPolicies and the NetworkPolicy webhook")
	}
	if o.Webhooks {
		if err := setupWebhooks(mgr, o); err != nil {
			return nil, err
		}
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return nil, fmt.Errorf("add health check: %w", err)
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return nil, fmt.Errorf("add ready check: %w", err)
	}
	return mgr, nil
}

// engines are the optional APIs the API server serves: CiliumNetworkPolicy and ClusterNetworkPolicy.
type engines struct {
	cilium, clusterPolicies bool
}

// discoverEngines asks the API server which policy engines it serves, and refuses a cert-manager
// issuer for the gateways where cert-manager's Certificate is not served.
func discoverEngines(cfg *rest.Config, o Options) (engines, error) {
	var eng engines
	var err error
	if eng.cilium, err = servesCiliumPolicies(cfg); err != nil {
		return eng, err
	}
	if eng.clusterPolicies, err = servesClusterNetworkPolicies(cfg); err != nil {
		return eng, err
	}
	if o.GatewayCertIssuer == nil {
		return eng, nil
	}
	served, err := servesKind(cfg, controllers.CertificateGVK)
	if err != nil {
		return eng, err
	}
	if !served {
		return eng, fmt.Errorf("a cert-manager issuer (%s/%s) is configured for the gateways, but the API server does not serve cert-manager.io/v1 Certificate: install cert-manager, or leave the issuer unset to have the operator issue the certificates from its own CA", o.GatewayCertIssuer.Kind, o.GatewayCertIssuer.Name)
	}
	return eng, nil
}

// cacheByObject limits the cache to the operator's children (and, where served, its own
// ClusterNetworkPolicy).
func cacheByObject(eng engines) map[client.Object]cache.ByObject {
	managed := labels.SelectorFromSet(controllers.ManagedObjectsSelector())
	byObject := map[client.Object]cache.ByObject{
		&appsv1.Deployment{}:     {Label: managed},
		&corev1.Service{}:        {Label: managed},
		&corev1.ServiceAccount{}: {Label: managed},
		&corev1.ConfigMap{}:      {Label: managed},
		// The pods of the operator's Deployments, whose gateways report their tool pins.
		&corev1.Pod{}: {Label: managed},
		// The metadata of those Deployments' ReplicaSets (they carry the pod template's labels): a
		// pod's gateway speaks for a server only if its owner chain leads to the MCPServer.
		controllers.ReplicaSetMetadata(): {Label: managed, Transform: cache.TransformStripManagedFields()},
	}
	if eng.clusterPolicies {
		// Only the operator's own ClusterNetworkPolicy: its RBAC names it.
		byObject[&policyv1beta1.ClusterNetworkPolicy{}] = cache.ByObject{Field: fields.OneTermEqualSelector("metadata.name", controllers.ClusterFenceName)}
	}
	return byObject
}

// newManager creates the manager: webhook server, metrics, probes, leader election and cache.
func newManager(cfg *rest.Config, o Options, eng engines) (ctrl.Manager, error) {
	metrics := metricsserver.Options{BindAddress: o.MetricsAddr, SecureServing: o.SecureMetrics}
	if o.SecureMetrics {
		metrics.FilterProvider = filters.WithAuthenticationAndAuthorization
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                  Scheme(),
		WebhookServer:           webhook.NewServer(webhook.Options{Host: o.WebhookHost, Port: o.WebhookPort, CertDir: o.WebhookCertDir}),
		Metrics:                 metrics,
		HealthProbeBindAddress:  o.ProbeAddr,
		LeaderElection:          o.LeaderElection,
		LeaderElectionID:        LeaderElectionID,
		LeaderElectionNamespace: o.LeaderElectionNamespace,
		// The manager stops only after its controllers have, so releasing the lease is safe and lets a
		// replacement lead without waiting out the lease.
		LeaderElectionReleaseOnCancel: true,
		LeaseDuration:                 durationOrNil(o.LeaseDuration),
		RenewDeadline:                 durationOrNil(o.RenewDeadline),
		RetryPeriod:                   durationOrNil(o.RetryPeriod),
		Controller:                    config.Controller{SkipNameValidation: ptr.To(o.SeveralInProcess)},
		// The operator's children are the only Deployments, Services, ServiceAccounts and ConfigMaps
		// it needs to see; caching only them keeps memory flat on large clusters. NetworkPolicies are
		// all cached: a tenant's own policy selecting server pods would widen their fence, and the
		// controller reports it. CiliumNetworkPolicies likewise, where Cilium is installed.
		Cache: cache.Options{ByObject: cacheByObject(eng)},
	})
	if err != nil {
		return nil, fmt.Errorf("create manager: %w", err)
	}
	return mgr, nil
}

// withDefaultDependencies sets the verifier, OIDC discovery and issuer key fetcher the options leave
// unset.
func withDefaultDependencies(mgr ctrl.Manager, o *Options) error {
	if o.Verifier == nil {
		// One verifier (and cache) for the webhooks and the controller: the controller's check right
		// after an admission is a cache hit.
		o.Verifier = &imageverify.CosignVerifier{
			Verifier:        imageverify.New(imageverify.Options{Timeout: o.VerifyTimeout, Registerer: ctrlmetrics.Registry}),
			Reader:          mgr.GetAPIReader(),
			SecretNamespace: o.Namespace,
		}
	}
	if o.Discovery == nil {
		o.Discovery = &guardrails.HTTPDiscovery{}
	}
	if o.IssuerKeys != nil {
		return nil
	}
	roots, err := x509.SystemCertPool()
	if err != nil || roots == nil {
		roots = x509.NewCertPool()
	}
	if len(o.IssuerCABundle) > 0 && !roots.AppendCertsFromPEM(o.IssuerCABundle) {
		return errors.New("the issuer CA bundle holds no PEM certificate")
	}
	o.IssuerKeys = &issuerkeys.Fetcher{Client: issuerkeys.NewClient(roots), Refresh: o.IssuerKeysRefresh}
	return nil
}

// setupControllers registers the MCPServer controller, the gateway signer (with the operator's own
// CA), the MCPServerPolicy controller and, where served, the cluster fence controller.
func setupControllers(mgr ctrl.Manager, o Options, eng engines) error {
	r := &controllers.MCPServerReconciler{
		Keys:            o.IssuerKeys,
		MetricsScraper:  o.MetricsScraper,
		Telemetry:       o.Telemetry,
		Discovery:       o.Discovery,
		Client:          mgr.GetClient(),
		APIReader:       mgr.GetAPIReader(),
		Scheme:          mgr.GetScheme(),
		Recorder:        mgr.GetEventRecorder("mcp-warden"),
		ClusterDomain:   o.ClusterDomain,
		DNS:             o.DNS,
		Cilium:          eng.cilium,
		GatewayImage:    o.GatewayImage,
		Verifier:        o.Verifier,
		Pins:            o.PinReader,
		PinPollInterval: o.PinPollInterval,
		CertIssuer:      o.GatewayCertIssuer,

		MaxConcurrentReconciles: o.MaxConcurrentReconciles,
	}
	if o.GatewayCertIssuer == nil {
		r.CA = &servingcert.Authority{Client: mgr.GetClient(), Reader: mgr.GetAPIReader(), Secret: gatewayCASecret(o)}
	}
	if r.MaxConcurrentReconciles == 0 {
		r.MaxConcurrentReconciles = DefaultMaxConcurrentReconciles()
	}
	if len(o.OperatorPodLabels) > 0 && o.Namespace != "" {
		r.Operator = controllers.Peer{Namespace: o.Namespace, PodLabels: o.OperatorPodLabels}
	}
	if err := r.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("set up MCPServer controller: %w", err)
	}
	if r.CA != nil {
		signer := &controllers.PodCertSigner{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), CA: r.CA, GatewayImage: o.GatewayImage, ClusterDomain: o.ClusterDomain}
		if err := signer.SetupWithManager(mgr); err != nil {
			return fmt.Errorf("set up the gateway signer: %w", err)
		}
	}
	pr := &controllers.MCPServerPolicyReconciler{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorder("mcp-warden")}
	if checker, ok := o.Verifier.(controllers.PolicyChecker); ok {
		pr.Checker = checker
	}
	if err := pr.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("set up MCPServerPolicy controller: %w", err)
	}
	if !eng.clusterPolicies {
		return nil
	}
	if err := (&controllers.ClusterFenceReconciler{Client: mgr.GetClient(), DNS: o.DNS}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("set up the cluster fence controller: %w", err)
	}
	return nil
}

// identity asks the API server who the operator is (a SelfSubjectReview), so that the NetworkPolicy
// webhook admits the operator's own writes.
func identity(cfg *rest.Config) (string, error) {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return "", fmt.Errorf("client: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := cs.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("learn the operator's own identity (SelfSubjectReview): %w", err)
	}
	return r.Status.UserInfo.Username, nil
}

// servesCiliumPolicies asks the API server's discovery whether cilium.io/v2 CiliumNetworkPolicy exists.
// It is read once at start: install Cilium before the operator, or restart the operator after.
func servesCiliumPolicies(cfg *rest.Config) (bool, error) {
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return false, fmt.Errorf("discovery client: %w", err)
	}
	list, err := dc.ServerResourcesForGroupVersion("cilium.io/v2")
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("discover cilium.io/v2: %w", err)
	}
	for _, r := range list.APIResources {
		if r.Kind == "CiliumNetworkPolicy" {
			return true, nil
		}
	}
	return false, nil
}

// servesClusterNetworkPolicies asks the API server (through a discovery-backed RESTMapper) whether it
// serves policy.networking.k8s.io/v1beta1 ClusterNetworkPolicy (sigs.k8s.io/network-policy-api). Like
// Cilium, it is read once at start: install the CRD before the operator, or restart the operator after.
func servesClusterNetworkPolicies(cfg *rest.Config) (bool, error) {
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return false, fmt.Errorf("HTTP client: %w", err)
	}
	mapper, err := apiutil.NewDynamicRESTMapper(cfg, hc)
	if err != nil {
		return false, fmt.Errorf("REST mapper: %w", err)
	}
	_, err = mapper.RESTMapping(schema.GroupKind{Group: policyv1beta1.GroupVersion.Group, Kind: "ClusterNetworkPolicy"}, policyv1beta1.GroupVersion.Version)
	if meta.IsNoMatchError(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("discover %s ClusterNetworkPolicy: %w", policyv1beta1.GroupVersion, err)
	}
	return true, nil
}

// gatewayCASecret is where the gateways' CA lives.
func gatewayCASecret(o Options) types.NamespacedName {
	key := o.GatewayCASecret
	if key.Namespace == "" {
		key.Namespace = o.Namespace
	}
	if key.Namespace == "" {
		key.Namespace = "default"
	}
	if key.Name == "" {
		key.Name = DefaultGatewayCASecret
	}
	return key
}

// DefaultGatewayCASecret is the name of the Secret holding the gateways' CA.
const DefaultGatewayCASecret = "mcp-warden-gateway-ca"

// servesKind asks the API server (through a discovery-backed RESTMapper) whether it serves the kind.
func servesKind(cfg *rest.Config, gvk schema.GroupVersionKind) (bool, error) {
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return false, fmt.Errorf("HTTP client: %w", err)
	}
	mapper, err := apiutil.NewDynamicRESTMapper(cfg, hc)
	if err != nil {
		return false, fmt.Errorf("REST mapper: %w", err)
	}
	_, err = mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if meta.IsNoMatchError(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("discover %s: %w", gvk, err)
	}
	return true, nil
}

// gatewayImage is the gateway image the controller puts in server pods.
func gatewayImage(o Options) string {
	if o.GatewayImage == "" {
		return controllers.DefaultGatewayImage
	}
	return o.GatewayImage
}

// setupWebhooks registers the admission webhooks and, when asked, the certificate rotator. The webhook
// server only starts serving once a certificate exists; the readiness probe waits for it.
func setupWebhooks(mgr ctrl.Manager, o Options) error {
	self, err := identity(mgr.GetConfig())
	if err != nil {
		return err
	}
	ready := make(chan struct{})
	if o.CertRotation {
		if err := rotator.AddRotator(mgr, &rotator.CertRotator{
			SecretKey:      o.CertSecret,
			CertDir:        o.WebhookCertDir,
			CAName:         "mcp-warden-ca",
			CAOrganization: "mcp-warden",
			DNSName:        fmt.Sprintf("%s.%s.svc", o.WebhookService, o.CertSecret.Namespace),
			ExtraDNSNames:  append([]string{fmt.Sprintf("%s.%s.svc.cluster.local", o.WebhookService, o.CertSecret.Namespace)}, o.WebhookExtraDNSNames...),
			IsReady:        ready,
			Webhooks:       []rotator.WebhookInfo{{Name: o.WebhookConfiguration, Type: rotator.Validating}},
			FieldOwner:     controllers.FieldOwner,
		}); err != nil {
			return fmt.Errorf("set up certificate rotation: %w", err)
		}
	} else {
		close(ready)
	}
	register := func() error {
		if err := (&webhooks.MCPServerValidator{Reader: mgr.GetClient(), Verifier: o.Verifier, Timeout: o.VerifyTimeout, Discovery: o.Discovery}).SetupWithManager(mgr); err != nil {
			return fmt.Errorf("set up MCPServer webhook: %w", err)
		}
		if err := (webhooks.PolicyValidator{}).SetupWithManager(mgr); err != nil {
			return fmt.Errorf("set up MCPServerPolicy webhook: %w", err)
		}
		fenceHook := &webhooks.NetworkPolicyValidator{Reader: mgr.GetClient(), ExemptUsers: append([]string{self}, o.FenceExemptUsers...), ExemptGroups: o.FenceExemptGroups}
		if fenceHook.ExemptGroups == nil {
			fenceHook.ExemptGroups = []string{"system:masters"}
		}
		mgr.GetWebhookServer().Register(webhooks.NetworkPolicyPath, &webhook.Admission{Handler: fenceHook})
		mgr.GetWebhookServer().Register(webhooks.WorkloadPath, &webhook.Admission{Handler: &webhooks.WorkloadValidator{Reader: mgr.GetClient(), Verifier: o.Verifier, Timeout: o.VerifyTimeout, GatewayImage: gatewayImage(o)}})
		return nil
	}
	if o.CertRotation {
		// Handlers are registered once the certificate is in place, so the server never serves
		// without one.
		go func() {
			<-ready
			if err := register(); err != nil {
				mgr.GetLogger().Error(err, "register webhooks")
			}
		}()
	} else if err := register(); err != nil {
		return err
	}
	return mgr.AddReadyzCheck("webhook", func(req *http.Request) error {
		select {
		case <-ready:
			return mgr.GetWebhookServer().StartedChecker()(req)
		default:
			return fmt.Errorf("webhook certificate not ready")
		}
	})
}
