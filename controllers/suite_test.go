package controllers_test

import (
	"context"
	"flag"
	"fmt"
	"os"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
	"github.com/mcp-warden/mcp-warden/internal/localcluster"
	"github.com/mcp-warden/mcp-warden/internal/testenv"
	"github.com/mcp-warden/mcp-warden/operator"
)

// The suite runs against a real control plane: etcd, kube-apiserver (with Pod Security Admission),
// kube-controller-manager (Deployments create ReplicaSets and Pods, garbage collection), kube-scheduler
// and a KWOK node that runs the Pods, plus the operator itself.
var (
	k8s     client.Client
	clients *kubernetes.Clientset
	// issuer is the token issuer the operator fetches keys from (every https issuer name of the suite).
	issuer *testenv.Issuer
	// restConfig is the admin configuration of the control plane (the operator's rate limit).
	restConfig *rest.Config
	// kubeconfig is the path of the control plane's admin kubeconfig (for processes the tests run).
	kubeconfig string
)

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(run(m))
}

func run(m *testing.M) int {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	shared, stop, err := startSharedGateway(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer stop()
	testPins.fallback = shared
	env, err := testenv.Start(ctx, localcluster.Options{Controllers: true}, func(*localcluster.Cluster) operator.Options {
		return operator.Options{PinReader: testPins, IssuerKeysRefresh: time.Second, WrapTransport: operatorRequests.wrap}
	})
	defer env.Stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	k8s = env.Client
	issuer = env.Issuer
	clients = kubernetes.NewForConfigOrDie(env.Cluster.Config)
	restConfig = env.Cluster.Config
	kubeconfig = env.Cluster.Kubeconfig
	return m.Run()
}

// eventually polls cond until it returns nil or the timeout passes, then fails with cond's last error.
func eventually(t *testing.T, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = cond(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("after %s: %v", timeout, err)
}

// condition returns the MCPServer's condition of type t (nil if absent).
func condition(s *mcpv1alpha1.MCPServer, t string) *metav1.Condition {
	return meta.FindStatusCondition(s.Status.Conditions, t)
}
