package localcluster

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// The real node's fixed names and addresses. Everything lives in network namespaces the harness
// creates, so nothing in this machine's own network changes: the node namespace holds the bridge cni0
// (the node's IP and the pods' gateway), every Kubernetes process, containerd and the pods' veths; the
// hosts namespace holds test hosts the fence must (or may) let pods reach.
const (
	// RealNodeName is the real node's name.
	RealNodeName = "mcp-warden-node"
	// NodeIP is the node's address, on the bridge cni0 in the node namespace.
	NodeIP = "10.244.0.1"
	// PodCIDR is where pods get their addresses.
	PodCIDR = "10.244.0.0/24"
	// ServiceCIDR is the Service cluster IP range.
	ServiceCIDR = "10.96.0.0/16"
	// MetadataIP is the cloud metadata address a test host answers on (port 80), in the hosts namespace.
	MetadataIP = "169.254.169.254"
	// PrivateHostIP is a test host on a private address.
	PrivateHostIP = "10.250.1.2"
	// PublicHostIP is a test host on a public-looking address (TEST-NET-3) a sample may allow-list.
	PublicHostIP = "203.0.113.10"

	nodeNetns  = "mcp-warden-node"
	hostsNetns = "mcp-warden-hosts"
	linkNode   = "10.250.0.1"
	linkHosts  = "10.250.0.2"
	// lockPath serializes real nodes on this machine: some of their state has fixed paths.
	lockPath = "/run/mcp-warden-node.lock"
	// currentPath records the running node's state directory, so a run that was killed is cleaned up
	// by the next one.
	currentPath = "/run/mcp-warden-node.dir"
	// sysctlsPath records the settings the kubelet changes, as they were before it started.
	sysctlsPath = "/run/mcp-warden-node.sysctls"
)

// kubeletSysctls are the kernel settings the kubelet changes at start; Stop restores them.
var kubeletSysctls = []string{"vm/overcommit_memory", "kernel/panic", "kernel/panic_on_oops"}

// realNode is the state of a real node: namespaces, forwarders, saved settings.
type realNode struct {
	dir        string
	node       Netns
	hosts      Netns
	forwarders []io.Closer
	sysctls    map[string]string
	lock       *os.File
	containerd string // the containerd socket
}

// NodeDir returns the directory holding kube-router (hack/node.sh's output, MCP_WARDEN_NODE), with a
// clear error saying how to build it.
func NodeDir() (string, error) {
	dir := os.Getenv("MCP_WARDEN_NODE")
	if dir == "" {
		return "", errors.New("MCP_WARDEN_NODE is not set: run the tests with `make test`, or export MCP_WARDEN_NODE=$(hack/node.sh)")
	}
	if _, err := os.Stat(filepath.Join(dir, "kube-router")); err != nil {
		return "", fmt.Errorf("MCP_WARDEN_NODE=%s has no kube-router: rebuild with hack/node.sh", dir)
	}
	return dir, nil
}

// ErrRealNodeImpossible marks a machine that cannot run a real node at all (not Linux, not root): the
// tests skip then, loudly. Every other missing prerequisite is an error that says how to fix it.
var ErrRealNodeImpossible = errors.New("a real node cannot run on this machine")

// RealNodePrerequisites reports the first missing prerequisite of a real node, with how to fix it.
func RealNodePrerequisites() error {
	if runtime.GOOS != "linux" {
		return fmt.Errorf("%w: it needs Linux (this is %s)", ErrRealNodeImpossible, runtime.GOOS)
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w: it needs root (network namespaces, mounts, cgroups); run as root", ErrRealNodeImpossible)
	}
	assets, err := AssetsDir()
	if err != nil {
		return err
	}
	for _, b := range []string{"kubelet", "kube-proxy"} {
		if _, err := os.Stat(filepath.Join(assets, b)); err != nil {
			return fmt.Errorf("KUBEBUILDER_ASSETS=%s has no %s: rebuild with hack/control-plane.sh", assets, b)
		}
	}
	if _, err := NodeDir(); err != nil {
		return err
	}
	for _, b := range []string{"containerd", "containerd-shim-runc-v2", "runc", "nsenter", "ip", "iptables", "ipset"} {
		if _, err := exec.LookPath(b); err != nil {
			return fmt.Errorf("%s is not installed: run hack/node.sh (it installs the Debian packages containerd runc containernetworking-plugins iptables ipset conntrack socat iproute2)", b)
		}
	}
	for _, p := range []string{"bridge", "host-local", "portmap", "loopback"} {
		if _, err := os.Stat(filepath.Join(cniBinDir, p)); err != nil {
			return fmt.Errorf("CNI plugin %s is missing from %s: run hack/node.sh (Debian package containernetworking-plugins)", p, cniBinDir)
		}
	}
	fs, _ := os.ReadFile("/proc/filesystems")
	if !strings.Contains(string(fs), "overlay") {
		return errors.New("the kernel has no overlay filesystem (CONFIG_OVERLAY_FS), which containerd's snapshotter needs")
	}
	if _, err := os.Stat("/proc/sys/net/bridge/bridge-nf-call-iptables"); err != nil {
		return errors.New("the kernel has no bridge netfilter (br_netfilter): NetworkPolicies between pods on the bridge cannot be enforced; load it with `modprobe br_netfilter`")
	}
	return nil
}

const cniBinDir = "/usr/lib/cni"

// startRealNode starts the control plane, containerd, the kubelet, kube-router and kube-proxy in the
// node namespace; see Options.RealNode.
func startRealNode(ctx context.Context, c *Cluster, o Options, assets string) error {
	if err := RealNodePrerequisites(); err != nil {
		return err
	}
	nodeDir, _ := NodeDir()
	say := o.Out
	rn := &realNode{dir: filepath.Join(c.LogDir, "node"), sysctls: map[string]string{}}
	lock, err := lockNode(ctx)
	if err != nil {
		return err
	}
	// From here on Stop undoes everything, also after an error.
	rn.lock, c.node = lock, rn
	cleanupStale()
	if err := os.MkdirAll(rn.dir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(currentPath, []byte(rn.dir), 0o644); err != nil {
		return err
	}
	var saved strings.Builder
	for _, s := range kubeletSysctls {
		v, err := os.ReadFile(filepath.Join("/proc/sys", s))
		if err != nil {
			return fmt.Errorf("read sysctl %s: %w", s, err)
		}
		rn.sysctls[s] = strings.TrimSpace(string(v))
		fmt.Fprintf(&saved, "%s=%s\n", s, rn.sysctls[s])
	}
	// Kept until Stop, so the next run restores them if this one is killed.
	if err := os.WriteFile(sysctlsPath, []byte(saved.String()), 0o644); err != nil {
		return err
	}
	say("creating network namespaces %s (bridge cni0 %s/24) and %s (test hosts %s, %s, %s)", nodeNetns, NodeIP, hostsNetns, MetadataIP, PrivateHostIP, PublicHostIP)
	if err := rn.network(); err != nil {
		return err
	}
	pki, err := newNodePKI(filepath.Join(rn.dir, "pki"))
	if err != nil {
		return err
	}
	say("starting etcd and kube-apiserver in %s", nodeNetns)
	if err := rn.controlPlane(c, o, assets, pki); err != nil {
		return err
	}
	if err := c.adminKubeconfig(); err != nil {
		return err
	}
	for _, r := range o.Registries {
		if err := c.AddRegistry(r); err != nil {
			return err
		}
	}
	say("starting containerd, kube-controller-manager, kube-scheduler, kubelet, kube-router (NetworkPolicy firewall) and kube-proxy")
	if err := rn.startContainerd(ctx, c, o); err != nil {
		return err
	}
	if err := rn.startControllers(c, assets); err != nil {
		return err
	}
	if err := rn.startKubelet(c, assets, pki); err != nil {
		return err
	}
	say("waiting for node %s to be Ready", RealNodeName)
	cl, err := client.New(c.Config, client.Options{})
	if err != nil {
		return err
	}
	if err := c.waitNodeReady(ctx, cl, RealNodeName); err != nil {
		return err
	}
	// Both find their node by name: started once the kubelet registered it.
	if _, err := c.spawnIn(rn.node, filepath.Join(nodeDir, "kube-router"), "kube-router",
		"--kubeconfig="+c.Kubeconfig, "--hostname-override="+RealNodeName,
		"--run-firewall=true", "--run-router=false", "--run-service-proxy=false", "--enable-cni=false",
		"--metrics-port=0", "--health-port=0", "--service-cluster-ip-range="+ServiceCIDR, "-v=1",
	); err != nil {
		return err
	}
	if err := rn.startKubeProxy(c, assets); err != nil {
		return err
	}
	if err := c.waitNodeReady(ctx, cl, RealNodeName); err != nil {
		return err
	}
	if o.DNSImage == "" {
		return nil
	}
	say("starting the cluster DNS (kube-system/kube-dns, %s)", ClusterDNSIP)
	return startClusterDNS(ctx, cl, o.DNSImage, o.DNSRecords)
}

// APIServerPort is the real node's API server port, on this machine's loopback and in the node
// namespace (0.0.0.0): the kubernetes Service's endpoint is NodeIP:APIServerPort.
const APIServerPort = 6443

// KubernetesServiceIP is the kubernetes Service's cluster IP (the first of ServiceCIDR).
const KubernetesServiceIP = "10.96.0.1"

// ClusterDNSIP is the kube-dns Service's address, the pods' nameserver.
const ClusterDNSIP = "10.96.0.10"

// StartClusterDNS starts the real node's cluster DNS (see Options.DNSImage) on a running cluster: for a
// caller whose admission webhooks, registered with the cluster, must be serving before a pod is
// created.
func (c *Cluster) StartClusterDNS(ctx context.Context, image string, records map[string]string) error {
	if c.node == nil {
		return errors.New("the cluster has no real node")
	}
	cl, err := client.New(c.Config, client.Options{})
	if err != nil {
		return err
	}
	return startClusterDNS(ctx, cl, image, records)
}

// startClusterDNS runs ./clusterdns as kube-system's kube-dns (the labels a NetworkPolicy's DNS rule
// selects), behind the Service the kubelet's clusterDNS names, and waits for it to answer. Its service
// account may list EndpointSlices and nothing else: it answers for headless Services as kube-dns does.
func startClusterDNS(ctx context.Context, cl client.Client, image string, records map[string]string) error {
	labels := map[string]string{"k8s-app": "kube-dns"}
	args := make([]string, 0, len(records))
	for n, a := range records {
		args = append(args, n+"="+a)
	}
	slices.Sort(args)
	no, yes := false, true
	uid := int64(65532)
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "cluster-dns", Namespace: "kube-system"}}
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "local-cluster-dns"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"list"}}}}
	binding := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "local-cluster-dns"},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: sa.Name, Namespace: sa.Namespace}}}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "cluster-dns", Namespace: "kube-system", Labels: labels},
		Spec: corev1.PodSpec{
			ServiceAccountName:           sa.Name,
			AutomountServiceAccountToken: &yes,
			SecurityContext: &corev1.PodSecurityContext{
				RunAsNonRoot: &yes, RunAsUser: &uid, RunAsGroup: &uid,
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
				// Port 53 without a capability.
				Sysctls: []corev1.Sysctl{{Name: "net.ipv4.ip_unprivileged_port_start", Value: "53"}},
			},
			Containers: []corev1.Container{{
				Name: "dns", Image: image, Args: args,
				Ports: []corev1.ContainerPort{{Name: "dns", ContainerPort: 53, Protocol: corev1.ProtocolUDP}},
				SecurityContext: &corev1.SecurityContext{
					AllowPrivilegeEscalation: &no, ReadOnlyRootFilesystem: &yes,
					Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
				},
			}},
		},
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-dns", Namespace: "kube-system", Labels: labels},
		Spec: corev1.ServiceSpec{
			ClusterIP: ClusterDNSIP, Selector: labels,
			Ports: []corev1.ServicePort{{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP, TargetPort: intstr.FromInt32(53)}},
		},
	}
	for _, obj := range []client.Object{sa, role, binding, svc, pod} {
		// Already there: a retry after a webhook that was not serving yet refused the pod.
		if err := cl.Create(ctx, obj); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create the cluster DNS %s: %w", obj.GetName(), err)
		}
	}
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		p := &corev1.Pod{}
		if err := cl.Get(ctx, client.ObjectKeyFromObject(pod), p); err != nil {
			return false, nil
		}
		return p.Status.Phase == corev1.PodRunning, nil
	})
	if err != nil {
		return fmt.Errorf("the cluster DNS pod kube-system/cluster-dns is not running: %w", err)
	}
	return nil
}

// lockNode takes the machine-wide real-node lock, waiting up to 5 minutes for another run to finish.
func lockNode(ctx context.Context) (*os.File, error) {
	f, err := os.OpenFile(lockPath, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", lockPath, err)
	}
	err = wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 5*time.Minute, true, func(context.Context) (bool, error) {
		return syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil, nil
	})
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("another real node holds %s (one runs at a time on a machine): %w", lockPath, err)
	}
	return f, nil
}

// network creates the node and hosts namespaces, the bridge, and the veth link between them.
func (rn *realNode) network() error {
	var err error
	if rn.node, err = createNetns(nodeNetns); err != nil {
		return err
	}
	if rn.hosts, err = createNetns(hostsNetns); err != nil {
		return err
	}
	n, h := rn.node.Name, rn.hosts.Name
	steps := [][]string{
		{"-n", n, "link", "add", "cni0", "type", "bridge"},
		{"-n", n, "addr", "add", NodeIP + "/24", "dev", "cni0"},
		{"-n", n, "link", "set", "cni0", "up"},
		// A route for the Service range, as a node's default route would give: the API server calls
		// webhooks at their Service's cluster IP, which kube-proxy rewrites only after routing.
		{"-n", n, "route", "add", ServiceCIDR, "dev", "cni0", "src", NodeIP},
		{"-n", n, "link", "add", "hosts0", "type", "veth", "peer", "name", "eth0", "netns", h},
		{"-n", n, "addr", "add", linkNode + "/30", "dev", "hosts0"},
		{"-n", n, "link", "set", "hosts0", "up"},
		{"-n", h, "addr", "add", linkHosts + "/30", "dev", "eth0"},
		{"-n", h, "link", "set", "eth0", "up"},
		{"-n", h, "route", "add", "default", "via", linkNode},
	}
	for _, a := range []string{MetadataIP, PrivateHostIP, PublicHostIP} {
		steps = append(steps,
			[]string{"-n", h, "addr", "add", a + "/32", "dev", "eth0"},
			[]string{"-n", n, "route", "add", a + "/32", "via", linkHosts})
	}
	for _, s := range steps {
		if err := ip(s...); err != nil {
			return err
		}
	}
	// net.* settings are per namespace: these change nothing outside the node's.
	for _, s := range []string{"net.ipv4.ip_forward=1", "net.bridge.bridge-nf-call-iptables=1", "net.ipv4.conf.all.route_localnet=1"} {
		if err := rn.node.Run("sysctl", "-q", "-w", s); err != nil {
			return err
		}
	}
	return nil
}

// Hosts is the namespace of the test hosts (MetadataIP, PrivateHostIP, PublicHostIP); listen there
// with Hosts().Listen. Nil for a simulated node.
func (c *Cluster) Hosts() *Netns {
	if c.node == nil {
		return nil
	}
	return &c.node.hosts
}

// Node is the node's network namespace (where the API server, the kubelet and the pods' bridge are).
// Nil for a simulated node.
func (c *Cluster) Node() *Netns {
	if c.node == nil {
		return nil
	}
	return &c.node.node
}

// controlPlane starts etcd and kube-apiserver through envtest, each in the node namespace (through a
// wrapper that enters it), with their ports forwarded from this machine's loopback so envtest, the
// tests and kubectl reach them at the same addresses as the processes in the namespace.
func (rn *realNode) controlPlane(c *Cluster, o Options, assets string, pki *nodePKI) error {
	wrappers := filepath.Join(rn.dir, "bin")
	if err := os.MkdirAll(wrappers, 0o755); err != nil {
		return err
	}
	for _, b := range []string{"etcd", "kube-apiserver"} {
		script := fmt.Sprintf("#!/bin/sh\nexec nsenter --net=%s -- %s \"$@\"\n", rn.node.Path(), filepath.Join(assets, b))
		if err := os.WriteFile(filepath.Join(wrappers, b), []byte(script), 0o755); err != nil {
			return err
		}
	}
	etcdPort, err := freePort()
	if err != nil {
		return err
	}
	// The API server's port is fixed (kubeadm's 6443): pods reach it through the kubernetes Service,
	// whose endpoint is NodeIP:6443, and a NetworkPolicy (the operator's own) opens 443 and 6443 only.
	apiPort := APIServerPort
	for _, p := range []int{etcdPort, apiPort} {
		f, err := rn.node.ForwardIn("127.0.0.1:" + strconv.Itoa(p))
		if err != nil {
			if p == apiPort {
				return fmt.Errorf("the real node's API server listens on port %d, forwarded from this machine's loopback, which must be free: %w", apiPort, err)
			}
			return err
		}
		rn.forwarders = append(rn.forwarders, f)
	}
	certDir := filepath.Join(rn.dir, "apiserver-pki")
	caPEM, err := writeAPIServerPKI(certDir)
	if err != nil {
		return err
	}
	c.Env = &envtest.Environment{
		CRDDirectoryPaths:     o.CRDDirs,
		CRDs:                  o.CRDs,
		ErrorIfCRDPathMissing: true,
		BinaryAssetsDirectory: wrappers,
		WebhookInstallOptions: o.WebhookInstall,
	}
	etcdLog, err := os.Create(filepath.Join(c.LogDir, "etcd.log"))
	if err != nil {
		return err
	}
	apiLog, err := os.Create(filepath.Join(c.LogDir, "kube-apiserver.log"))
	if err != nil {
		return err
	}
	c.Env.ControlPlane.Etcd = &envtest.Etcd{URL: &url.URL{Scheme: "http", Host: "127.0.0.1:" + strconv.Itoa(etcdPort)}, Out: etcdLog, Err: etcdLog,
		Path: filepath.Join(wrappers, "etcd")}
	api := c.Env.ControlPlane.GetAPIServer()
	// Explicit paths: envtest prefers KUBEBUILDER_ASSETS over BinaryAssetsDirectory.
	api.Out, api.Err, api.Path = apiLog, apiLog, filepath.Join(wrappers, "kube-apiserver")
	api.SecureServing.Address, api.SecureServing.Port = "127.0.0.1", strconv.Itoa(apiPort)
	// The serving certificate names the kubernetes Service and the node's address too, so pods use
	// the in-cluster configuration as on any cluster (envtest's names localhost only).
	api.CertDir, api.SecureServing.CA = certDir, caPEM
	args := api.Configure()
	// The ServiceAccount admission plugin (envtest turns it off) mounts the API token into pods that
	// do not opt out, as on a real cluster: the operator's own pod needs it, server pods must not get it.
	args.Disable("disable-admission-plugins")
	args.Set("service-cluster-ip-range", ServiceCIDR)
	args.Set("bind-address", "0.0.0.0")
	args.Set("advertise-address", NodeIP)
	args.Set("kubelet-client-certificate", pki.clientCert)
	args.Set("kubelet-client-key", pki.clientKey)
	args.Set("kubelet-preferred-address-types", "InternalIP")
	if c.Config, err = c.Env.Start(); err != nil {
		return fmt.Errorf("start kube-apiserver and etcd in %s: %w", rn.node.Name, err)
	}
	// Admission webhooks served on this machine's loopback (the operator in the tests' process) are
	// called by the API server from inside the namespace.
	if wh := c.Env.WebhookInstallOptions; len(wh.Paths) > 0 || len(wh.ValidatingWebhooks) > 0 || len(wh.MutatingWebhooks) > 0 {
		f, err := rn.node.ForwardOut(net.JoinHostPort(wh.LocalServingHost, strconv.Itoa(wh.LocalServingPort)))
		if err != nil {
			return err
		}
		rn.forwarders = append(rn.forwarders, f)
	}
	return nil
}

// AddRegistry lets the node's containerd pull from a plain-HTTP registry on this machine's loopback
// (host:port): the port is forwarded into the node namespace and containerd gets a hosts.toml for it.
func (c *Cluster) AddRegistry(hostport string) error {
	if c.node == nil {
		return errors.New("AddRegistry: the cluster has no real node")
	}
	host, _, err := net.SplitHostPort(hostport)
	if err != nil || (host != "127.0.0.1" && host != "localhost") {
		return fmt.Errorf("registry %q: want a loopback host:port, e.g. 127.0.0.1:5000", hostport)
	}
	f, err := c.node.node.ForwardOut("127.0.0.1:" + hostport[len(host)+1:])
	if err != nil {
		return err
	}
	c.node.forwarders = append(c.node.forwarders, f)
	dir := filepath.Join(c.node.dir, "certs.d", hostport)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	hosts := fmt.Sprintf("server = \"http://%[1]s\"\n\n[host.\"http://%[1]s\"]\n  capabilities = [\"pull\", \"resolve\"]\n", hostport)
	return os.WriteFile(filepath.Join(dir, "hosts.toml"), []byte(hosts), 0o644)
}

// NodeRegistryAddr is where pods and the node's containerd reach the registry ServeRegistryToPods
// serves: the node's address, port 443 (plain HTTP: go-containerregistry and containerd speak HTTP to a
// private address they are told to), which a NetworkPolicy opening HTTPS lets through.
const NodeRegistryAddr = NodeIP + ":443"

// ServeRegistryToPods makes a plain-HTTP registry on this machine's loopback (host:port) reachable from
// pods, as NodeRegistryAddr: images referenced as NodeRegistryAddr/REPOSITORY@DIGEST are pulled by
// containerd from it, and a pod (the operator verifying signatures) can fetch from it. One registry per
// node.
func (c *Cluster) ServeRegistryToPods(hostport string) (string, error) {
	if c.node == nil {
		return "", errors.New("ServeRegistryToPods: the cluster has no real node")
	}
	if host, _, err := net.SplitHostPort(hostport); err != nil || (host != "127.0.0.1" && host != "localhost") {
		return "", fmt.Errorf("registry %q: want a loopback host:port, e.g. 127.0.0.1:5000", hostport)
	}
	f, err := c.node.node.ForwardOutTo(NodeRegistryAddr, hostport)
	if err != nil {
		return "", err
	}
	c.node.forwarders = append(c.node.forwarders, f)
	dir := filepath.Join(c.node.dir, "certs.d", NodeRegistryAddr)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	hosts := fmt.Sprintf("server = \"http://%[1]s\"\n\n[host.\"http://%[1]s\"]\n  capabilities = [\"pull\", \"resolve\"]\n", NodeRegistryAddr)
	if err := os.WriteFile(filepath.Join(dir, "hosts.toml"), []byte(hosts), 0o644); err != nil {
		return "", err
	}
	return NodeRegistryAddr, nil
}

func (rn *realNode) startContainerd(ctx context.Context, c *Cluster, o Options) error {
	if o.SandboxImage == "" {
		return errors.New("a real node needs Options.SandboxImage (the pod sandbox image, e.g. from PushSandboxImage)")
	}
	rn.containerd = filepath.Join(rn.dir, "containerd.sock")
	cni := filepath.Join(rn.dir, "cni")
	if err := os.MkdirAll(cni, 0o755); err != nil {
		return err
	}
	conflist := fmt.Sprintf(`{"cniVersion": "1.0.0", "name": "mcp-warden", "plugins": [
  {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "dataDir": %q, "ranges": [[{"subnet": %q, "rangeStart": "10.244.0.10", "gateway": %q}]], "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "portmap", "capabilities": {"portMappings": true}}
]}
`, filepath.Join(rn.dir, "ipam"), PodCIDR, NodeIP)
	if err := os.WriteFile(filepath.Join(cni, "10-mcp-warden.conflist"), []byte(conflist), 0o644); err != nil {
		return err
	}
	// restrict_oom_score_adj: root here cannot lower oom_score_adj, and runc fails every container
	// otherwise. cgroupfs (SystemdCgroup false) as the kubelet; overlayfs, built into the kernel.
	config := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = %q

[ttrpc]
  address = %q

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = %q
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %q
    conf_dir = %q
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = %q
`, filepath.Join(rn.dir, "containerd", "root"), filepath.Join(rn.dir, "containerd", "state"), rn.containerd, rn.containerd+".ttrpc",
		o.SandboxImage, filepath.Join(rn.dir, "runc"), cniBinDir, cni, filepath.Join(rn.dir, "certs.d"))
	path := filepath.Join(rn.dir, "containerd.toml")
	if err := os.WriteFile(path, []byte(config), 0o644); err != nil {
		return err
	}
	bin, _ := exec.LookPath("containerd")
	if _, err := c.spawnIn(rn.node, bin, "containerd", "--config="+path); err != nil {
		return err
	}
	return wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		if err := c.exited(); err != nil {
			return false, err
		}
		_, err := os.Stat(rn.containerd)
		return err == nil, nil
	})
}

func (rn *realNode) startControllers(c *Cluster, assets string) error {
	saKey := filepath.Join(c.Env.ControlPlane.APIServer.CertDir, "sa-signer.key")
	if _, err := c.spawnIn(rn.node, filepath.Join(assets, "kube-controller-manager"), "kube-controller-manager",
		"--kubeconfig="+c.Kubeconfig, "--authentication-kubeconfig="+c.Kubeconfig, "--authorization-kubeconfig="+c.Kubeconfig,
		"--leader-elect=false", "--bind-address=127.0.0.1", "--secure-port=10257",
		"--service-account-private-key-file="+saKey, "--root-ca-file="+filepath.Join(c.Env.ControlPlane.APIServer.CertDir, "ca.crt"),
		"--use-service-account-credentials=false", "--controllers=*,-persistentvolume-binder,-attachdetach,-ttl",
		"--allocate-node-cidrs=true", "--cluster-cidr=10.244.0.0/16", "--node-cidr-mask-size=24", "--service-cluster-ip-range="+ServiceCIDR,
	); err != nil {
		return err
	}
	_, err := c.spawnIn(rn.node, filepath.Join(assets, "kube-scheduler"), "kube-scheduler",
		"--kubeconfig="+c.Kubeconfig, "--authentication-kubeconfig="+c.Kubeconfig, "--authorization-kubeconfig="+c.Kubeconfig,
		"--leader-elect=false", "--bind-address=127.0.0.1", "--secure-port=10259",
	)
	return err
}

func (rn *realNode) startKubelet(c *Cluster, assets string, pki *nodePKI) error {
	// The kubelet accepts only the API server's client certificate (signed by the node's own CA) and
	// authorizes every request it authenticates.
	config := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
failSwapOn: false
containerRuntimeEndpoint: unix://%s
address: %s
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: %s}
authorization:
  mode: AlwaysAllow
podLogsDir: %s
resolvConf: ""
clusterDomain: cluster.local
clusterDNS: [10.96.0.10]
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "50Mi", nodefs.available: "1%%", imagefs.available: "1%%", nodefs.inodesFree: "1%%"}
maxPods: 50
syncFrequency: 5s
fileCheckFrequency: 5s
nodeStatusUpdateFrequency: 5s
`, rn.containerd, NodeIP, pki.caCert, filepath.Join(rn.dir, "pod-logs"))
	path := filepath.Join(rn.dir, "kubelet.yaml")
	if err := os.WriteFile(path, []byte(config), 0o644); err != nil {
		return err
	}
	_, err := c.spawnIn(rn.node, filepath.Join(assets, "kubelet"), "kubelet",
		"--config="+path, "--kubeconfig="+c.Kubeconfig, "--root-dir="+filepath.Join(rn.dir, "kubelet"),
		"--cert-dir="+filepath.Join(rn.dir, "kubelet-pki"), "--node-ip="+NodeIP, "--hostname-override="+RealNodeName, "-v=1",
	)
	return err
}

func (rn *realNode) startKubeProxy(c *Cluster, assets string) error {
	// conntrack settings left alone (0): they are this machine's, not the namespace's.
	config := fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: %s}
hostnameOverride: %s
mode: iptables
clusterCIDR: 10.244.0.0/16
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
`, c.Kubeconfig, RealNodeName)
	path := filepath.Join(rn.dir, "kube-proxy.yaml")
	if err := os.WriteFile(path, []byte(config), 0o644); err != nil {
		return err
	}
	_, err := c.spawnIn(rn.node, filepath.Join(assets, "kube-proxy"), "kube-proxy", "--config="+path, "-v=1")
	return err
}

// waitNodeReady waits for the node to be Ready and the default ServiceAccount to exist.
func (c *Cluster) waitNodeReady(ctx context.Context, cl client.Client, name string) error {
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 90*time.Second, true, func(ctx context.Context) (bool, error) {
		if err := c.exited(); err != nil {
			return false, err
		}
		node := &corev1.Node{}
		if err := cl.Get(ctx, client.ObjectKey{Name: name}, node); err != nil {
			return false, nil
		}
		ready := false
		for _, cond := range node.Status.Conditions {
			if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
				ready = true
			}
		}
		sa := &corev1.ServiceAccount{}
		return ready && cl.Get(ctx, client.ObjectKey{Namespace: "default", Name: "default"}, sa) == nil, nil
	})
	if err != nil {
		return fmt.Errorf("node %s not Ready (logs in %s): %w", name, c.LogDir, err)
	}
	return nil
}

// spawnIn starts a helper process in a network namespace (nsenter --net, which keeps this machine's
// /sys and cgroup mounts in view, unlike ip netns exec).
func (c *Cluster) spawnIn(n Netns, bin, name string, args ...string) (*process, error) {
	return c.spawnCmd(name, "nsenter", append([]string{"--net=" + n.Path(), "--", bin}, args...)...)
}

// stopRealNode stops what startRealNode started, in reverse, and leaves the machine as it was.
func (c *Cluster) stopRealNode() error {
	rn := c.node
	var errs []error
	c.stopProcs(func(p *process) bool { return p.name != "containerd" })
	killCgroup("kubepods")
	if rn.containerd != "" {
		killMatching("containerd-shim", rn.containerd)
	}
	c.stopProcs(nil)
	if c.Env != nil {
		if err := c.Env.Stop(); err != nil {
			errs = append(errs, err)
		}
	}
	for _, f := range rn.forwarders {
		_ = f.Close()
	}
	errs = append(errs, cleanupNode(rn.dir))
	for s, v := range rn.sysctls {
		if err := os.WriteFile(filepath.Join("/proc/sys", s), []byte(v), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("restore sysctl %s=%s: %w", s, v, err))
		}
	}
	_ = os.Remove(currentPath)
	_ = os.Remove(sysctlsPath)
	if rn.lock != nil {
		rn.lock.Close()
	}
	return errors.Join(errs...)
}

// cleanupStale cleans up after a real node whose run was killed (its processes, mounts, namespaces).
// Each step has a deadline of its own, as in Stop, which shares them.
//
//nolint:contextcheck // cleanup steps are bounded by their own deadlines, as when Stop runs them.
func cleanupStale() {
	dir, err := os.ReadFile(currentPath)
	if err != nil && !errorsIsNotExist(err) {
		return
	}
	n := Netns{Name: nodeNetns}
	if _, err := os.Stat(n.Path()); err == nil {
		killInNetns(n)
	}
	killCgroup("kubepods")
	if len(dir) > 0 {
		killMatching("containerd-shim", filepath.Join(string(dir), "containerd.sock"))
	}
	_ = cleanupNode(string(dir))
	// The settings as they were before the killed run's kubelet changed them.
	if saved, err := os.ReadFile(sysctlsPath); err == nil {
		for _, line := range strings.Split(strings.TrimSpace(string(saved)), "\n") {
			if k, v, ok := strings.Cut(line, "="); ok && slices.Contains(kubeletSysctls, k) {
				_ = os.WriteFile(filepath.Join("/proc/sys", k), []byte(v), 0o644)
			}
		}
	}
}

func errorsIsNotExist(err error) bool { return errors.Is(err, os.ErrNotExist) }

// cleanupNode unmounts what containerd and the kubelet mounted under dir, removes the pods' network
// namespaces and the CNI results cache, the node's cgroups, and the harness's namespaces.
func cleanupNode(dir string) error {
	var errs []error
	var prefixes []string
	if dir != "" {
		prefixes = append(prefixes, dir+"/")
	}
	prefixes = append(prefixes, "/run/netns/cni-", "/run/containerd/")
	unmountUnder(prefixes)
	if ents, err := os.ReadDir("/run/netns"); err == nil {
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), "cni-") {
				_ = os.Remove(filepath.Join("/run/netns", e.Name()))
			}
		}
	}
	for _, p := range []string{"/var/lib/cni/results", "/run/containerd", "/var/lib/kubelet/device-plugins"} {
		_ = os.RemoveAll(p)
	}
	removeCgroup("kubepods")
	for _, name := range []string{nodeNetns, hostsNetns} {
		if err := (Netns{Name: name}).Delete(); err != nil {
			errs = append(errs, err)
		}
	}
	if dir != "" {
		// Container filesystems may still be busy for a moment after their processes die.
		_ = wait.PollUntilContextTimeout(context.Background(), 200*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
			unmountUnder([]string{dir + "/"})
			return os.RemoveAll(dir) == nil, nil
		})
	}
	return errors.Join(errs...)
}

// unmountUnder lazily unmounts every mount point under the prefixes, deepest first.
func unmountUnder(prefixes []string) {
	raw, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var points []string
	for _, line := range strings.Split(string(raw), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		mp := unescapeMount(f[4])
		for _, p := range prefixes {
			if strings.HasPrefix(mp, p) {
				points = append(points, mp)
				break
			}
		}
	}
	for i := len(points) - 1; i >= 0; i-- {
		_ = syscall.Unmount(points[i], syscall.MNT_DETACH)
	}
}

func unescapeMount(s string) string {
	return strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`).Replace(s)
}

// cgroupHierarchies lists the mounted cgroup v1 hierarchies (and the v2 one, if any).
func cgroupHierarchies() []string {
	ents, err := os.ReadDir("/sys/fs/cgroup")
	if err != nil {
		return nil
	}
	var dirs []string
	for _, e := range ents {
		if e.IsDir() {
			dirs = append(dirs, filepath.Join("/sys/fs/cgroup", e.Name()))
		}
	}
	return dirs
}

// killCgroup kills every process in the named top-level cgroup (the kubelet's kubepods) and its children.
func killCgroup(name string) {
	for _, h := range cgroupHierarchies() {
		_ = filepath.WalkDir(filepath.Join(h, name), func(p string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() || d.Name() != "cgroup.procs" {
				return nil
			}
			raw, _ := os.ReadFile(p) //nolint:gosec // root-owned host directory of the local node, not attacker-writable
			for _, f := range strings.Fields(string(raw)) {
				if pid, err := strconv.Atoi(f); err == nil && pid > 1 {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
			return nil
		})
	}
}

// removeCgroup removes the named top-level cgroup tree, deepest first, once its processes are gone.
func removeCgroup(name string) {
	for _, h := range cgroupHierarchies() {
		var dirs []string
		_ = filepath.WalkDir(filepath.Join(h, name), func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			_ = wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, 5*time.Second, true, func(context.Context) (bool, error) {
				err := syscall.Rmdir(dirs[i])
				return err == nil || errors.Is(err, syscall.ENOENT), nil
			})
		}
	}
}

// killMatching kills processes whose binary name starts with prefix and whose command line holds arg
// (the shims of this node's containerd, which outlive it).
func killMatching(prefix, arg string) {
	for _, pid := range pids() {
		argv := cmdline(pid)
		if len(argv) == 0 || !strings.HasPrefix(filepath.Base(argv[0]), prefix) {
			continue
		}
		for _, a := range argv {
			if a == arg || strings.HasSuffix(a, "="+arg) {
				_ = syscall.Kill(pid, syscall.SIGKILL)
				break
			}
		}
	}
}

// killInNetns kills every process in the namespace (a killed run's node processes).
func killInNetns(n Netns) {
	var st syscall.Stat_t
	if err := syscall.Stat(n.Path(), &st); err != nil {
		return
	}
	want := fmt.Sprintf("net:[%d]", st.Ino)
	for _, pid := range pids() {
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid)); err == nil && l == want {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

func pids() []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil && pid != os.Getpid() {
			out = append(out, pid)
		}
	}
	return out
}

func cmdline(pid int) []string {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || len(raw) == 0 {
		return nil
	}
	return strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
}

// nodePKI is the node's own CA and the client certificate kube-apiserver presents to the kubelet.
type nodePKI struct {
	caCert, clientCert, clientKey string
}

func newNodePKI(dir string) (*nodePKI, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "mcp-warden-node-ca"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "kube-apiserver-kubelet-client", Organization: []string{"system:masters"}},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	p := &nodePKI{caCert: filepath.Join(dir, "ca.crt"), clientCert: filepath.Join(dir, "apiserver-kubelet-client.crt"), clientKey: filepath.Join(dir, "apiserver-kubelet-client.key")}
	files := map[string][]byte{
		p.caCert:     pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		p.clientCert: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		p.clientKey:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
	}
	for path, data := range files {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// writeAPIServerPKI writes what envtest would into the API server's certificate directory, with a
// serving certificate for the names a pod uses (the kubernetes Service, NodeIP) as well as localhost:
// ca.crt, apiserver.crt and .key, and the service-account signing key pair. It returns the CA's PEM.
func writeAPIServerPKI(dir string) ([]byte, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "mcp-warden-node-apiserver-ca"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(7 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "kube-apiserver"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(7 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:    []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP(NodeIP), net.ParseIP(KubernetesServiceIP)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	saDER, err := x509.MarshalECPrivateKey(saKey)
	if err != nil {
		return nil, err
	}
	saPub, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		return nil, err
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	files := map[string][]byte{
		"ca.crt":        caPEM,
		"apiserver.crt": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		"apiserver.key": pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
		"sa-signer.key": pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: saDER}),
		"sa-signer.crt": pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: saPub}),
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			return nil, err
		}
	}
	return caPEM, nil
}

// ContainerProcessStatus reads, from this machine's /proc, the status of a running container's
// processes on the real node (found through the kubelet's cgroups): the kernel's own view of them, e.g.
// Uid, CapEff, NoNewPrivs, Seccomp. It returns one map per process.
func (c *Cluster) ContainerProcessStatus(containerID string) ([]map[string]string, error) {
	if c.node == nil {
		return nil, errors.New("the cluster has no real node")
	}
	_, id, ok := strings.Cut(containerID, "://")
	if !ok || id == "" {
		return nil, fmt.Errorf("container ID %q: want runtime://id", containerID)
	}
	var procs string
	_ = filepath.WalkDir("/sys/fs/cgroup/pids/kubepods", func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() && d.Name() == id {
			procs = filepath.Join(p, "cgroup.procs")
			return filepath.SkipAll
		}
		return nil
	})
	if procs == "" {
		return nil, fmt.Errorf("container %s has no cgroup under /sys/fs/cgroup/pids/kubepods", id)
	}
	raw, err := os.ReadFile(procs)
	if err != nil {
		return nil, err
	}
	var out []map[string]string
	for _, f := range strings.Fields(string(raw)) {
		st, err := os.ReadFile(filepath.Join("/proc", f, "status"))
		if err != nil {
			continue
		}
		m := map[string]string{"Pid": f}
		for _, line := range strings.Split(string(st), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok {
				m[k] = strings.Join(strings.Fields(v), " ")
			}
		}
		// The options of the process's root mount (its container's root filesystem): "ro" when read-only.
		if mi, err := os.ReadFile(filepath.Join("/proc", f, "mountinfo")); err == nil {
			for _, line := range strings.Split(string(mi), "\n") {
				if fs := strings.Fields(line); len(fs) > 5 && fs[4] == "/" {
					m["RootMountOptions"] = fs[5]
				}
			}
		}
		out = append(out, m)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("container %s has no processes", id)
	}
	return out, nil
}
