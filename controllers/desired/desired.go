// Package desired builds the objects the operator keeps for each MCPServer: its ServiceAccount,
// Service, NetworkPolicy, CiliumNetworkPolicy, gateway ConfigMap, Deployment and cert-manager
// Certificate, each by a pure function of the MCPServer and the operator's Options, with the
// MCPServer's controller reference already set. Nothing here reads the cluster: the reconciler applies
// what these functions return, and the golden files in testdata pin every object.
package desired

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/utils/ptr"

	ciliumv2 "github.com/cilium/cilium/pkg/k8s/apis/cilium.io/v2"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
	"github.com/mcp-warden/mcp-warden/gateway/pin"
	"github.com/mcp-warden/mcp-warden/policy/fence"
	"github.com/mcp-warden/mcp-warden/policy/gatewayconfig"
	"github.com/mcp-warden/mcp-warden/policy/netpol"
	"github.com/mcp-warden/mcp-warden/policy/sandbox"
)

// Labels the operator puts on every child object.
const (
	LabelName      = fence.LabelName
	LabelInstance  = fence.LabelInstance
	LabelManagedBy = fence.LabelManagedBy
	LabelServer    = fence.LabelServer
	managerName    = fence.ManagerName
	serverAppName  = fence.ServerAppName
	portName       = "mcp"
	serverPortName = "server"
	containerName  = "server"
	gatewayName    = "gateway"
	// GatewayPort is where the gateway sidecar listens in every server pod; the Service and the
	// NetworkPolicy send clients there, never to the server's own port.
	GatewayPort = gatewayconfig.GatewayPort
	// PeerPort is where a gateway serves the sessions it holds to the other replicas of its server.
	PeerPort     = gatewayconfig.PeerPort
	peerPortName = "peer"
	// podIPEnv gives the gateway its pod's IP, which it names in the session ids it issues.
	podIPEnv = "MCP_WARDEN_POD_IP"
	// gatewayConfigDir is where the gateway's configuration is mounted.
	gatewayConfigDir = "/etc/mcp-warden"
	// gatewayBinDir is where a stdio server's container gets the gateway binary (for stdio-exec), and
	// gatewayInstallName the init container that copies it there.
	gatewayBinDir      = "/opt/mcp-warden"
	gatewayBinVolume   = "gateway-bin"
	gatewayInstallName = "gateway-install"
	// AnnotationGatewayConfig carries a hash of the gateway configuration so a change rolls the pods.
	AnnotationGatewayConfig = "mcp.warden.dev/gateway-config"
	// StatusPort is where every server pod's gateway serves its status (the pin state, the MCP
	// handshake, metrics) to the operator.
	StatusPort = gatewayconfig.StatusPort
	// statusPortName names the status port in the gateway container (its probes use it).
	statusPortName = "status"
)

// Peer selects pods by namespace name and labels, for a NetworkPolicy rule.
type Peer struct {
	// Namespace of the pods, e.g. kube-system.
	Namespace string
	// PodLabels select the pods, e.g. k8s-app=kube-dns.
	PodLabels map[string]string
}

// DefaultDNSPeer is kube-dns/CoreDNS as most distributions deploy it.
var DefaultDNSPeer = Peer{Namespace: "kube-system", PodLabels: map[string]string{"k8s-app": "kube-dns"}}

// Options are the operator's settings that shape every server's objects (its flags, never a spec).
type Options struct {
	// GatewayImage is the gateway sidecar's image (pinned by digest in releases).
	GatewayImage string
	// ClusterDomain is the cluster's DNS domain (cluster.local), for the gateway's resource and
	// certificate names.
	ClusterDomain string
	// DNS is where the cluster DNS pods run; every server may reach them on port 53.
	DNS Peer
	// Operator selects the operator's own pods, which alone (with MetricsScraper) reach the gateway's
	// status port. Empty: no ingress to the status port.
	Operator Peer
	// MetricsScraper selects the pods that scrape the gateways' metrics: the NetworkPolicy opens the
	// status port to them and the Service exposes it as port "metrics". Empty: neither.
	MetricsScraper Peer
	// Telemetry is the platform's trace collector: rendered into every gateway's configuration, and
	// the one destination it adds to every server's egress.
	Telemetry Telemetry
	// CertIssuer, when set, is the cert-manager issuer of the gateways' serving certificates.
	CertIssuer *CertIssuer
}

// OwnerReference is the controller reference every object built here carries: the MCPServer owns
// it, so the garbage collector removes it with the server and the operator refuses to take over an
// object of the same name that someone else controls.
func OwnerReference(s *mcpv1alpha1.MCPServer) metav1.OwnerReference {
	return *metav1.NewControllerRef(s, mcpv1alpha1.GroupVersion.WithKind("MCPServer"))
}

// Defaults for container resources when the spec leaves them out.
var (
	defaultRequests = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("50m"), corev1.ResourceMemory: resource.MustParse("64Mi")}
	defaultLimits   = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("500m"), corev1.ResourceMemory: resource.MustParse("256Mi")}
)

// SelectorLabels select the server's pods; they never change for the life of the MCPServer.
func SelectorLabels(s *mcpv1alpha1.MCPServer) map[string]string { return selectorLabels(s) }

func selectorLabels(s *mcpv1alpha1.MCPServer) map[string]string {
	return map[string]string{LabelName: serverAppName, LabelInstance: s.Name, LabelServer: s.Name}
}

// objectLabels are put on every child object.
func objectLabels(s *mcpv1alpha1.MCPServer) map[string]string {
	l := selectorLabels(s)
	l[LabelManagedBy] = managerName
	return l
}

// ObjectMeta is the metadata of a child object named after the server: its namespace, the operator's
// labels and the server's controller reference.
func ObjectMeta(s *mcpv1alpha1.MCPServer) metav1.ObjectMeta { return objectMeta(s) }

func objectMeta(s *mcpv1alpha1.MCPServer) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: s.Name, Namespace: s.Namespace, Labels: objectLabels(s), OwnerReferences: []metav1.OwnerReference{OwnerReference(s)}}
}

// ServiceAccount is the server's identity: it carries no API token.
func ServiceAccount(s *mcpv1alpha1.MCPServer) *corev1.ServiceAccount {
	return &corev1.ServiceAccount{
		TypeMeta:                     metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceAccount"},
		ObjectMeta:                   objectMeta(s),
		AutomountServiceAccountToken: ptr.To(false),
	}
}

// Service exposes the server's port (the gateway's) inside the cluster, and with a metrics scraper the
// gateway's status port as "metrics", for a Prometheus ServiceMonitor. With spec.gateway.tls.mode
// Disabled it keeps each client on one replica (sessionAffinity ClientIP).
func Service(s *mcpv1alpha1.MCPServer, o Options) *corev1.Service {
	metrics := o.MetricsScraper.Namespace != ""
	svc := &corev1.Service{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: objectMeta(s),
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeClusterIP,
			Selector: selectorLabels(s),
			Ports: []corev1.ServicePort{{
				// By number: the gateway is an init container (a native sidecar), whose named ports not every
				// NetworkPolicy engine or endpoints controller resolves.
				Name: portName, Port: port(s), TargetPort: intstr.FromInt32(GatewayPort), Protocol: corev1.ProtocolTCP,
			}},
		},
	}
	if !gatewayconfig.TLSEnabled(s) {
		// Without TLS the gateways do not relay sessions to each other (the relay is authenticated by
		// mutual TLS), so a client is kept on one replica by its address.
		svc.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
	}
	if metrics {
		svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{
			Name: MetricsPortName, Port: StatusPort, TargetPort: intstr.FromInt32(StatusPort), Protocol: corev1.ProtocolTCP,
		})
	}
	return svc
}

// PeersService is the headless Service of the server's ready pods (no cluster IP, not-ready addresses
// left out), for spec.replicas > 1 with TLS: its DNS name (the gateway's sessions.peersDNS) resolves
// to the live replicas, among which every gateway picks a principal's home replica. The gateways have
// no API access; DNS is how they learn the set.
func PeersService(s *mcpv1alpha1.MCPServer) *corev1.Service {
	om := objectMeta(s)
	om.Name = gatewayconfig.PeersServiceName(s)
	return &corev1.Service{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: om,
		Spec: corev1.ServiceSpec{
			Type:                     corev1.ServiceTypeClusterIP,
			ClusterIP:                corev1.ClusterIPNone,
			Selector:                 selectorLabels(s),
			PublishNotReadyAddresses: false,
			Ports: []corev1.ServicePort{{
				Name: peerPortName, Port: PeerPort, TargetPort: intstr.FromInt32(PeerPort), Protocol: corev1.ProtocolTCP,
			}},
		},
	}
}

// NeedsPeersService reports whether the server has the headless Service of its replicas: with more than
// one replica and TLS (without TLS the replicas do not relay to each other).
func NeedsPeersService(s *mcpv1alpha1.MCPServer) bool {
	return ptr.Deref(s.Spec.Replicas, 1) > 1 && gatewayconfig.TLSEnabled(s)
}

// MetricsPortName is the Service port of the gateway's metrics (its status port), when a metrics
// scraper is configured.
const MetricsPortName = "metrics"

// resources returns the spec's resources with requests and limits filled in where missing; a request above
// the default limit raises the limit to match so the pair stays valid.
func resources(s *mcpv1alpha1.MCPServer) corev1.ResourceRequirements {
	out := corev1.ResourceRequirements{Requests: corev1.ResourceList{}, Limits: corev1.ResourceList{}}
	for name, q := range s.Spec.Resources.Requests {
		out.Requests[name] = q
	}
	for name, q := range s.Spec.Resources.Limits {
		out.Limits[name] = q
	}
	for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if _, ok := out.Limits[name]; !ok {
			limit := defaultLimits[name]
			if req, ok := out.Requests[name]; ok && req.Cmp(limit) > 0 {
				limit = req
			}
			out.Limits[name] = limit
		}
		if _, ok := out.Requests[name]; !ok {
			req := defaultRequests[name]
			if limit := out.Limits[name]; req.Cmp(limit) > 0 {
				req = limit
			}
			out.Requests[name] = req
		}
	}
	return out
}

func env(s *mcpv1alpha1.MCPServer) []corev1.EnvVar {
	out := make([]corev1.EnvVar, 0, len(s.Spec.Env)+2)
	set := map[string]bool{}
	for _, e := range s.Spec.Env {
		set[e.Name] = true
		v := corev1.EnvVar{Name: e.Name, Value: ptr.Deref(e.Value, "")}
		if e.ValueFrom != nil {
			v.ValueFrom = &corev1.EnvVarSource{SecretKeyRef: e.ValueFrom.SecretKeyRef, ConfigMapKeyRef: e.ValueFrom.ConfigMapKeyRef}
		}
		out = append(out, v)
	}
	for _, d := range []corev1.EnvVar{{Name: "HOME", Value: sandbox.HomeDir}, {Name: "TMPDIR", Value: sandbox.TmpDir}} {
		if !set[d.Name] {
			out = append(out, d)
		}
	}
	return out
}

// GatewayConfigMap holds the gateway's configuration (gatewayconfig.Render) and the pins seen so far;
// it returns the configuration's hash too, for the Deployment's AnnotationGatewayConfig.
func GatewayConfigMap(s *mcpv1alpha1.MCPServer, o Options) (*corev1.ConfigMap, string, error) {
	cfg := gatewayconfig.Render(s, o.ClusterDomain)
	// The platform's collector, never the spec's.
	cfg.Telemetry.OTLPEndpoint = o.Telemetry.OTLPEndpoint
	cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, "", fmt.Errorf("spec.gateway: %w", err)
	}
	body, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return nil, "", err
	}
	sum := sha256.Sum256(body)
	meta := objectMeta(s)
	meta.Name = s.Name + "-gateway"
	pins, err := knownPins(s)
	if err != nil {
		return nil, "", err
	}
	return &corev1.ConfigMap{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: meta,
		// pins.json is outside the hash: a newly seen tool does not roll the pods, and a pod that starts
		// later (restart, rollout, new replica) loads every pin seen so far.
		Data: map[string]string{"gateway.json": string(body), knownPinsFile: string(pins)},
	}, hex.EncodeToString(sum[:8]), nil
}

// knownPinsFile is the ConfigMap key of the pins the operator has seen from the server's gateways.
const knownPinsFile = "pins.json"

// knownPins renders status.tools as a pin state file: for each tool the hash it is pinned to (first
// seen, or approved), which the gateway holds from its start.
func knownPins(s *mcpv1alpha1.MCPServer) ([]byte, error) {
	st := pin.State{Tools: []pin.Tool{}}
	for _, t := range s.Status.Tools {
		if t.Name == "" || t.PinnedHash == "" {
			continue
		}
		st.Tools = append(st.Tools, pin.Tool{Name: t.Name, Status: pin.Status(t.Status), PinnedHash: t.PinnedHash, ObservedHash: t.ObservedHash})
	}
	return json.MarshalIndent(st, "", "  ")
}

// Deployment runs the server sandboxed behind the gateway: nothing in the spec can change the
// security context, the volumes or the host settings (see desiredPodSpec for the pod's layout).
// configHash is GatewayConfigMap's hash: a changed configuration rolls the pods.
func Deployment(s *mcpv1alpha1.MCPServer, o Options, configHash string) *appsv1.Deployment {
	gatewayImage := o.GatewayImage
	return &appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: objectMeta(s),
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(ptr.Deref(s.Spec.Replicas, 1)),
			Selector: &metav1.LabelSelector{MatchLabels: selectorLabels(s)},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: objectLabels(s), Annotations: map[string]string{AnnotationGatewayConfig: configHash}},
				Spec:       desiredPodSpec(s, gatewayImage),
			},
		},
	}
}

// desiredPodSpec lays out a server's pod. The gateway is a native sidecar (an init container with
// restartPolicy Always, initContainers[0]): the kubelet starts the server container only once the
// gateway's startup probe has seen its ports bound, and stops the gateway after the server. The gateway
// runs as sandbox.GatewayUID, the server as sandbox.UID; the PID namespace is not shared. Only the
// server container gets spec.env; only the gateway container mounts the gateway's configuration, state
// and keys. A streamable-http server listens on loopback for the gateway; a stdio server's process is
// started in its own container by the gateway binary's stdio-exec, with its stdin and stdout on a unix
// socket in an emptyDir both containers mount, which the gateway listens on.
func desiredPodSpec(s *mcpv1alpha1.MCPServer, gatewayImage string) corev1.PodSpec {
	vols, mounts := sandbox.Volumes()
	vols = append(vols, gatewayVolumes(s)...)
	gw := gatewayContainer(s, gatewayImage)
	server := serverContainer(s, mounts)
	initContainers := []corev1.Container{gw}
	if s.Spec.Transport == mcpv1alpha1.TransportStdio {
		vols = append(vols, stdioVolumes()...)
		initContainers = append(initContainers, gatewayInstallContainer(gatewayImage))
		attachStdio(s, &initContainers[0], &server)
	}
	return corev1.PodSpec{
		ServiceAccountName:           s.Name,
		AutomountServiceAccountToken: ptr.To(false),
		EnableServiceLinks:           ptr.To(false),
		SecurityContext:              sandbox.PodSecurityContext(),
		Volumes:                      vols,
		InitContainers:               initContainers,
		Containers:                   []corev1.Container{server},
	}
}

// gatewayPorts are the gateway's MCP and status ports, and with TLS its peer port (the relay between
// replicas is authenticated by mutual TLS; without TLS there is none).
func gatewayPorts(s *mcpv1alpha1.MCPServer) []corev1.ContainerPort {
	ports := []corev1.ContainerPort{
		{Name: portName, ContainerPort: GatewayPort, Protocol: corev1.ProtocolTCP},
		{Name: statusPortName, ContainerPort: StatusPort, Protocol: corev1.ProtocolTCP},
	}
	if gatewayconfig.TLSEnabled(s) {
		ports = append(ports, corev1.ContainerPort{Name: peerPortName, ContainerPort: PeerPort, Protocol: corev1.ProtocolTCP})
	}
	return ports
}

// gatewayContainer is the gateway sidecar. Its startup probe passes once both its ports are bound
// (it binds the MCP port, then the status port), so the server cannot take them first; its readiness
// probe passes once the server answered the gateway's MCP initialize and tools/list (GET /readyz).
func gatewayContainer(s *mcpv1alpha1.MCPServer, image string) corev1.Container {
	return corev1.Container{
		Name:            gatewayName,
		Image:           image,
		ImagePullPolicy: corev1.PullIfNotPresent,
		RestartPolicy:   ptr.To(corev1.ContainerRestartPolicyAlways),
		Args:            []string{"--config=" + gatewayConfigDir + "/gateway.json"},
		Ports:           gatewayPorts(s),
		Env: []corev1.EnvVar{{Name: podIPEnv, ValueFrom: &corev1.EnvVarSource{
			FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "status.podIP"},
		}}},
		Resources:       gatewayResources,
		SecurityContext: sandbox.ContainerSecurityContextAs(sandbox.GatewayUID),
		VolumeMounts:    gatewayMounts(s, corev1.VolumeMount{Name: gatewayName, MountPath: gatewayConfigDir, ReadOnly: true}),
		StartupProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromString(statusPortName)}},
			PeriodSeconds: 1, FailureThreshold: 60},
		ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/readyz", Port: intstr.FromString(statusPortName)}},
			PeriodSeconds: 5, TimeoutSeconds: 3},
	}
}

// serverContainer runs the server's image as sandbox.UID with spec.env, listening on loopback.
func serverContainer(s *mcpv1alpha1.MCPServer, mounts []corev1.VolumeMount) corev1.Container {
	return corev1.Container{
		Name:            containerName,
		Image:           s.Spec.Image,
		ImagePullPolicy: corev1.PullIfNotPresent,
		Command:         s.Spec.Command,
		Args:            s.Spec.Args,
		Env:             env(s),
		Ports:           []corev1.ContainerPort{{Name: serverPortName, ContainerPort: port(s), Protocol: corev1.ProtocolTCP}},
		Resources:       resources(s),
		SecurityContext: sandbox.ContainerSecurityContext(),
		VolumeMounts:    mounts,
		ReadinessProbe:  &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromString(serverPortName)}}, PeriodSeconds: 10},
	}
}

// The stdio socket: an emptyDir mounted in the gateway and server containers (nothing else of the
// gateway's is in it), and the gateway binary's emptyDir for the server container's stdio-exec.
const (
	stdioVolume = "stdio"
	stdioDir    = "/run/mcp-warden"
	// StdioSocket is where the gateway listens for a stdio server's stdin and stdout.
	StdioSocket = stdioDir + "/stdio.sock"
)

func stdioVolumes() []corev1.Volume {
	small := func(q string) corev1.VolumeSource {
		return corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{SizeLimit: ptr.To(resource.MustParse(q))}}
	}
	return []corev1.Volume{{Name: stdioVolume, VolumeSource: small("1Mi")}, {Name: gatewayBinVolume, VolumeSource: small("256Mi")}}
}

// gatewayInstallContainer copies the gateway's static binary into an emptyDir, for stdio-exec in the
// server container (the gateway image has no shell; the binary copies itself).
func gatewayInstallContainer(image string) corev1.Container {
	return corev1.Container{
		Name:            gatewayInstallName,
		Image:           image,
		ImagePullPolicy: corev1.PullIfNotPresent,
		Args:            []string{"install", gatewayBinDir + "/gateway"},
		Resources:       gatewayResources,
		SecurityContext: sandbox.ContainerSecurityContextAs(sandbox.GatewayUID),
		VolumeMounts:    []corev1.VolumeMount{{Name: gatewayBinVolume, MountPath: gatewayBinDir}},
	}
}

// attachStdio makes the gateway listen on the stdio socket and the server container run the server
// command through stdio-exec, which connects to the socket and execs the command on it as stdin and
// stdout: the server process runs in its own container, as its own user, with nothing of the
// gateway's but the socket.
func attachStdio(s *mcpv1alpha1.MCPServer, gw, server *corev1.Container) {
	socket := corev1.VolumeMount{Name: stdioVolume, MountPath: stdioDir}
	gw.Args = append(gw.Args, "--stdio-socket="+StdioSocket)
	gw.VolumeMounts = append(gw.VolumeMounts, socket)
	server.Command = append([]string{gatewayBinDir + "/gateway", "stdio-exec", StdioSocket, "--"}, s.Spec.Command...)
	server.Ports, server.ReadinessProbe = nil, nil
	server.VolumeMounts = append(server.VolumeMounts, socket, corev1.VolumeMount{Name: gatewayBinVolume, MountPath: gatewayBinDir, ReadOnly: true})
}

// gatewayStateVolume is the gateway sidecar's own emptyDir (the audit head file, written 0600 by the
// gateway's user); the configuration and the audit key Secret, if any, are mounted beside it. None is
// mounted into the server's container.
const (
	gatewayStateVolume = "gateway-state"
	gatewayAuditKey    = "gateway-audit-key"
	// gatewayTLS is the gateway's serving key and certificate, mounted into the gateway container only:
	// a pod certificate (the kubelet generates the key on the node; see gatewayTLSVolume).
	gatewayTLS = "gateway-tls"
)

// gatewayFileMode is the mode of the gateway's ConfigMap and Secret files: owner root, group the pod's
// fsGroup (the kubelet's doing), no other users.
const gatewayFileMode int32 = 0o440

func gatewayVolumes(s *mcpv1alpha1.MCPServer) []corev1.Volume {
	vols := []corev1.Volume{
		{Name: gatewayName, VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: s.Name + "-gateway"}, DefaultMode: ptr.To(gatewayFileMode),
		}}},
		{Name: gatewayStateVolume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{SizeLimit: ptr.To(resource.MustParse("1Mi"))}}},
	}
	if gatewayconfig.TLSEnabled(s) {
		vols = append(vols, gatewayTLSVolume())
	}
	if name := s.Spec.Gateway.AuditKeySecretName; name != "" {
		vols = append(vols, corev1.Volume{Name: gatewayAuditKey, VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
			SecretName: name, Items: []corev1.KeyToPath{{Key: "key", Path: "key"}}, DefaultMode: ptr.To(gatewayFileMode),
		}}})
	}
	return vols
}

// gatewayTLSVolume holds the gateway's credential bundle (tls.pem: its private key, then its
// certificate chain) as a pod certificate: the kubelet generates the key on the node, asks the signer
// gatewayconfig.GatewaySigner (the operator) for a certificate with a PodCertificateRequest, and
// refreshes it before it expires; the key is never in the API. Beside it, ca.crt from the namespace's
// CA bundle ConfigMap, which the peer hop verifies replicas against.
func gatewayTLSVolume() corev1.Volume {
	return corev1.Volume{Name: gatewayTLS, VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
		DefaultMode: ptr.To(gatewayFileMode),
		Sources: []corev1.VolumeProjection{
			{PodCertificate: &corev1.PodCertificateProjection{
				SignerName: gatewayconfig.GatewaySigner, KeyType: gatewayconfig.GatewayKeyType,
				MaxExpirationSeconds: ptr.To(gatewayconfig.GatewayCertSeconds), CredentialBundlePath: gatewayconfig.TLSBundleFile,
			}},
			{ConfigMap: &corev1.ConfigMapProjection{
				LocalObjectReference: corev1.LocalObjectReference{Name: gatewayconfig.CABundleConfigMap},
				Items:                []corev1.KeyToPath{{Key: gatewayconfig.CABundleKey, Path: gatewayconfig.CABundleKey}},
			}},
		},
	}}}
}

func gatewayMounts(s *mcpv1alpha1.MCPServer, config corev1.VolumeMount) []corev1.VolumeMount {
	m := []corev1.VolumeMount{config, {Name: gatewayStateVolume, MountPath: gatewayconfig.StateDir}}
	if gatewayconfig.TLSEnabled(s) {
		m = append(m, corev1.VolumeMount{Name: gatewayTLS, MountPath: gatewayconfig.TLSDir, ReadOnly: true})
	}
	if s.Spec.Gateway.AuditKeySecretName != "" {
		m = append(m, corev1.VolumeMount{Name: gatewayAuditKey, MountPath: gatewayconfig.AuditKeyDir, ReadOnly: true})
	}
	return m
}

// gatewayResources are the gateway's requests and limits (sidecar or init container).
var gatewayResources = corev1.ResourceRequirements{
	Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("20m"), corev1.ResourceMemory: resource.MustParse("32Mi")},
	Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("500m"), corev1.ResourceMemory: resource.MustParse("128Mi")},
}

func egressPorts(e mcpv1alpha1.EgressRule) []netpol.Port {
	ports := make([]netpol.Port, 0, len(e.Ports))
	for _, p := range e.Ports {
		ports = append(ports, netpol.Port{Port: p.Port, Protocol: string(p.Protocol)})
	}
	return ports
}

// FQDNEgress lists the allow-list's DNS-name entries, which a NetworkPolicy cannot express.
func FQDNEgress(s *mcpv1alpha1.MCPServer) []string {
	var names []string
	for _, e := range s.Spec.Egress {
		if e.FQDN != nil {
			names = append(names, *e.FQDN)
		}
	}
	return names
}

// NetworkPolicy denies all ingress and egress except: ingress to the server port from the listed
// clients, egress to the cluster DNS, egress to the CIDR allow-list (protected ranges excluded, unless
// the governing policies' ceiling allows them) and to the trace collector. An allow-list entry the
// ceiling refuses is returned as a field error and the policy is not built. The status port (pin state
// and metrics) is opened to the operator and the metrics scraper.
func NetworkPolicy(s *mcpv1alpha1.MCPServer, o Options, ceiling netpol.Ceiling) (*networkingv1.NetworkPolicy, field.ErrorList) {
	dns, operator := o.DNS, o.Operator
	var errs field.ErrorList
	var allowed []networkingv1.NetworkPolicyEgressRule
	for i, e := range s.Spec.Egress {
		if e.CIDR == nil {
			continue
		}
		path := field.NewPath("spec", "egress").Index(i).Child("cidr")
		rule, err := netpol.EgressRule(path, netpol.Destination{CIDR: *e.CIDR, Ports: egressPorts(e)}, ceiling)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		allowed = append(allowed, rule)
	}
	if len(errs) > 0 {
		return nil, errs
	}
	udp, tcp := corev1.ProtocolUDP, corev1.ProtocolTCP
	dnsPort := intstr.FromInt32(53)
	egress := append([]networkingv1.NetworkPolicyEgressRule{{
		To: []networkingv1.NetworkPolicyPeer{{
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{corev1.LabelMetadataName: dns.Namespace}},
			PodSelector:       &metav1.LabelSelector{MatchLabels: dns.PodLabels},
		}},
		Ports: []networkingv1.NetworkPolicyPort{{Protocol: &udp, Port: &dnsPort}, {Protocol: &tcp, Port: &dnsPort}},
	}}, allowed...)

	ingress := []networkingv1.NetworkPolicyIngressRule{}
	if len(s.Spec.Clients) > 0 {
		serverPort := intstr.FromInt32(GatewayPort) // by number, see Service
		rule := networkingv1.NetworkPolicyIngressRule{Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &serverPort}}}
		for _, c := range s.Spec.Clients {
			rule.From = append(rule.From, networkingv1.NetworkPolicyPeer{NamespaceSelector: c.NamespaceSelector, PodSelector: c.PodSelector})
		}
		ingress = append(ingress, rule)
	}
	// The replicas of the server relay sessions to each other's peer port, and only to it; the pods of
	// other servers, and other pods of the namespace, cannot reach it. Without TLS there is no relay.
	if gatewayconfig.TLSEnabled(s) {
		peerPort := intstr.FromInt32(PeerPort)
		replicas := []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: selectorLabels(s)}}}
		peerPorts := []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &peerPort}}
		ingress = append(ingress, networkingv1.NetworkPolicyIngressRule{Ports: peerPorts, From: replicas})
		egress = append(egress, networkingv1.NetworkPolicyEgressRule{Ports: peerPorts, To: replicas})
	}
	for _, peer := range []Peer{operator, o.MetricsScraper} {
		if peer.Namespace == "" {
			continue
		}
		status := intstr.FromInt32(StatusPort)
		ingress = append(ingress, networkingv1.NetworkPolicyIngressRule{
			Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &status}},
			From: []networkingv1.NetworkPolicyPeer{{
				NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{corev1.LabelMetadataName: peer.Namespace}},
				PodSelector:       &metav1.LabelSelector{MatchLabels: peer.PodLabels},
			}},
		})
	}
	if rule := o.Telemetry.egressRule(); rule != nil {
		egress = append(egress, *rule)
	}
	return &networkingv1.NetworkPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: "networking.k8s.io/v1", Kind: "NetworkPolicy"},
		ObjectMeta: objectMeta(s),
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: selectorLabels(s)},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress},
			Ingress:     ingress,
			Egress:      egress,
		},
	}, nil
}

// CiliumNetworkPolicy enforces the allow-list's DNS-name entries (see ciliumPolicy).
func CiliumNetworkPolicy(s *mcpv1alpha1.MCPServer, o Options, ceiling netpol.Ceiling) *ciliumv2.CiliumNetworkPolicy {
	var entries []fqdnEntry
	for _, e := range s.Spec.Egress {
		if e.FQDN != nil {
			entries = append(entries, fqdnEntry{FQDN: *e.FQDN, Ports: egressPorts(e)})
		}
	}
	return ciliumPolicy(objectMeta(s), selectorLabels(s), entries, o.DNS, ceiling)
}

func port(s *mcpv1alpha1.MCPServer) int32 { return gatewayconfig.Port(s) }

// GatewayTLSVolume is the name of the gateway's credential-bundle volume, and GatewayFileMode the
// mode of its files, for the reconciler that swaps the pod certificate for cert-manager's Secret.
const (
	GatewayTLSVolume = gatewayTLS
	GatewayFileMode  = gatewayFileMode
)
