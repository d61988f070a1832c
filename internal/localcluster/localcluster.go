// Package localcluster starts a real Kubernetes control plane on this machine: etcd and kube-apiserver
// (through controller-runtime's envtest), kube-controller-manager and kube-scheduler, and KWOK, which
// simulates a node so Deployments roll out and Pods are admitted by Pod Security Admission as on a real
// cluster. The binaries come from hack/control-plane.sh (KUBEBUILDER_ASSETS). Everything listens on
// loopback.
package localcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// NodeName is the simulated node pods are scheduled on.
const NodeName = "kwok-node-0"

// Options choose what runs besides etcd and kube-apiserver.
type Options struct {
	// CRDDirs are directories of CRD manifests installed before Start returns.
	CRDDirs []string
	// CRDs are further CRDs to install (e.g. another project's, built into its Go module).
	CRDs []*apiextensionsv1.CustomResourceDefinition
	// Controllers starts kube-controller-manager, kube-scheduler and KWOK with one simulated node.
	Controllers bool
	// WebhookInstall registers admission webhooks (see envtest.WebhookInstallOptions).
	WebhookInstall envtest.WebhookInstallOptions
	// LogDir receives each process's output (default: a temporary directory).
	LogDir string
	// Out receives progress lines (nil: none).
	Out func(format string, args ...any)

	// RealNode runs a real node instead of KWOK's simulated one (implies Controllers): containerd,
	// runc, the kubelet, kube-router (NetworkPolicy enforcement) and kube-proxy, with the control plane,
	// in a network namespace the harness creates. Linux and root only; see RealNodePrerequisites.
	RealNode bool
	// Registries are plain-HTTP registries on this machine's loopback (host:port) the real node pulls
	// from; more can be added with AddRegistry.
	Registries []string
	// SandboxImage is the real node's pod sandbox image (see PushSandboxImage).
	SandboxImage string
	// DNSImage runs the real node's cluster DNS (kube-system/kube-dns at ClusterDNSIP; see
	// PushClusterDNSImage), answering for DNSRecords (name -> IPv4) only. Empty: no cluster DNS.
	DNSImage   string
	DNSRecords map[string]string
}

// Cluster is a running local control plane.
type Cluster struct {
	// Config is an admin client configuration.
	Config *rest.Config
	// Kubeconfig is the path of an admin kubeconfig for kubectl and the helper processes.
	Kubeconfig string
	// Env is the envtest environment (etcd and kube-apiserver).
	Env *envtest.Environment
	// LogDir holds each process's output.
	LogDir string

	procs []*process
	node  *realNode
}

// process is a helper process; done closes when it exits.
type process struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
}

// AssetsDir returns the directory of the control-plane binaries, from KUBEBUILDER_ASSETS, with a clear
// error saying how to build them when it is not set.
func AssetsDir() (string, error) {
	dir := os.Getenv("KUBEBUILDER_ASSETS")
	if dir == "" {
		return "", errors.New("KUBEBUILDER_ASSETS is not set: run the tests with `make test`, or export KUBEBUILDER_ASSETS=$(hack/control-plane.sh)")
	}
	for _, b := range []string{"etcd", "kube-apiserver"} {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			return "", fmt.Errorf("KUBEBUILDER_ASSETS=%s has no %s: rebuild with hack/control-plane.sh", dir, b)
		}
	}
	return dir, nil
}

// Start starts the control plane. Call Stop when done, also after an error.
func Start(ctx context.Context, o Options) (*Cluster, error) {
	assets, err := AssetsDir()
	if err != nil {
		return nil, err
	}
	say := o.Out
	if say == nil {
		say = func(string, ...any) {}
	}
	c := &Cluster{LogDir: o.LogDir}
	if c.LogDir == "" {
		if c.LogDir, err = os.MkdirTemp("", "mcp-warden-cluster-"); err != nil {
			return nil, err
		}
	}
	if o.RealNode {
		o.Out = say
		return c, startRealNode(ctx, c, o, assets)
	}
	c.Env = &envtest.Environment{
		CRDDirectoryPaths:     o.CRDDirs,
		CRDs:                  o.CRDs,
		ErrorIfCRDPathMissing: true,
		BinaryAssetsDirectory: assets,
		WebhookInstallOptions: o.WebhookInstall,
	}
	// envtest's default Service range is a /24 (about 250 Services); make room for fleets of servers.
	c.Env.ControlPlane.GetAPIServer().Configure().Set("service-cluster-ip-range", "10.96.0.0/16")
	say("starting etcd and kube-apiserver")
	if c.Config, err = c.Env.Start(); err != nil {
		return c, fmt.Errorf("start kube-apiserver and etcd: %w", err)
	}
	if err := c.adminKubeconfig(); err != nil {
		return c, err
	}
	if !o.Controllers {
		return c, nil
	}
	say("starting kube-controller-manager, kube-scheduler and KWOK (simulated node %s)", NodeName)
	saKey := filepath.Join(c.Env.ControlPlane.APIServer.CertDir, "sa-signer.key")
	kcmPort, err := freePort()
	if err != nil {
		return c, err
	}
	schedPort, err := freePort()
	if err != nil {
		return c, err
	}
	if _, err := c.spawn(assets, "kube-controller-manager",
		"--kubeconfig="+c.Kubeconfig, "--authentication-kubeconfig="+c.Kubeconfig, "--authorization-kubeconfig="+c.Kubeconfig,
		"--leader-elect=false", "--bind-address=127.0.0.1", "--secure-port="+strconv.Itoa(kcmPort),
		"--service-account-private-key-file="+saKey, "--root-ca-file="+filepath.Join(c.Env.ControlPlane.APIServer.CertDir, "apiserver.crt"),
		"--use-service-account-credentials=false", "--controllers=*,-nodeipam,-persistentvolume-binder,-attachdetach,-ttl",
		"--concurrent-deployment-syncs=10", "--concurrent-replicaset-syncs=10", "--kube-api-qps=200", "--kube-api-burst=400",
	); err != nil {
		return c, err
	}
	if _, err := c.spawn(assets, "kube-scheduler",
		"--kubeconfig="+c.Kubeconfig, "--authentication-kubeconfig="+c.Kubeconfig, "--authorization-kubeconfig="+c.Kubeconfig,
		"--leader-elect=false", "--bind-address=127.0.0.1", "--secure-port="+strconv.Itoa(schedPort),
		"--kube-api-qps=200", "--kube-api-burst=400",
	); err != nil {
		return c, err
	}
	if _, err := c.spawn(assets, "kwok",
		"--kubeconfig="+c.Kubeconfig, "--config="+filepath.Join(assets, "kwok-stages.yaml"), "--manage-all-nodes=false",
		"--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
		"--cidr=10.244.0.0/16", "--node-ip=127.0.0.1", "--node-lease-duration-seconds=40",
	); err != nil {
		return c, err
	}
	cl, err := client.New(c.Config, client.Options{})
	if err != nil {
		return c, err
	}
	if err := cl.Create(ctx, fakeNode()); err != nil && !apierrors.IsAlreadyExists(err) {
		return c, fmt.Errorf("create node %s: %w", NodeName, err)
	}
	say("waiting for the node to be Ready and the controllers to run")
	if err := c.waitReady(ctx, cl); err != nil {
		return c, err
	}
	return c, nil
}

// adminKubeconfig writes the kubeconfig of a system:masters user to c.Kubeconfig.
func (c *Cluster) adminKubeconfig() error {
	admin, err := c.Env.AddUser(envtest.User{Name: "local-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return fmt.Errorf("create admin user: %w", err)
	}
	kc, err := admin.KubeConfig()
	if err != nil {
		return fmt.Errorf("admin kubeconfig: %w", err)
	}
	c.Kubeconfig = filepath.Join(c.LogDir, "kubeconfig")
	return os.WriteFile(c.Kubeconfig, kc, 0o600)
}

// waitReady waits for the simulated node to be Ready (KWOK runs) and for the default ServiceAccount of
// the default namespace (kube-controller-manager runs).
func (c *Cluster) waitReady(ctx context.Context, cl client.Client) error {
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		if err := c.exited(); err != nil {
			return false, err
		}
		node := &corev1.Node{}
		if err := cl.Get(ctx, client.ObjectKey{Name: NodeName}, node); err != nil {
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
		return fmt.Errorf("control plane not ready (logs in %s): %w", c.LogDir, err)
	}
	return nil
}

func fakeNode() *corev1.Node {
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("1000"),
		corev1.ResourceMemory: resource.MustParse("4Ti"),
		corev1.ResourcePods:   resource.MustParse("5000"),
	}
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name:        NodeName,
			Annotations: map[string]string{"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
			Labels:      map[string]string{"type": "kwok", corev1.LabelHostname: NodeName, corev1.LabelOSStable: "linux", corev1.LabelArchStable: "amd64"},
		},
		Status: corev1.NodeStatus{Capacity: capacity, Allocatable: capacity},
	}
}

// spawn starts a helper process, appends it to c.procs and returns it.
func (c *Cluster) spawn(assets, name string, args ...string) (*process, error) {
	return c.spawnCmd(name, filepath.Join(assets, name), args...)
}

// spawnCmd starts bin as the helper process name (its log is name.log).
func (c *Cluster) spawnCmd(name, bin string, args ...string) (*process, error) {
	logf, err := os.Create(filepath.Join(c.LogDir, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	c.procs = append(c.procs, p)
	return p, nil
}

// exited reports a helper process that died, with the end of its log.
func (c *Cluster) exited() error {
	for _, p := range c.procs {
		select {
		case <-p.done:
			tail, _ := os.ReadFile(filepath.Join(c.LogDir, p.name+".log"))
			if len(tail) > 2000 {
				tail = tail[len(tail)-2000:]
			}
			return fmt.Errorf("%s exited:\n%s", p.name, bytes.TrimSpace(tail))
		default:
		}
	}
	return nil
}

// Stop stops every process and removes the control plane's state.
func (c *Cluster) Stop() error {
	if c.node != nil {
		return c.stopRealNode()
	}
	c.stopProcs(nil)
	if c.Env != nil {
		return c.Env.Stop()
	}
	return nil
}

// stopProcs stops the helper processes that match (nil: all), newest first: SIGTERM, then SIGKILL
// after 10 s.
func (c *Cluster) stopProcs(match func(*process) bool) {
	var keep []*process
	for i := len(c.procs) - 1; i >= 0; i-- {
		p := c.procs[i]
		if match != nil && !match(p) {
			keep = append([]*process{p}, keep...)
			continue
		}
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
	c.procs = keep
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// ModuleRoot returns the repository root (the directory holding go.mod) above the working directory, so
// tests in any package find config/.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found above the working directory")
		}
		dir = parent
	}
}
