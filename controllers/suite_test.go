package controllers_test

import (
	"context"

	"flag"
	"fmt"
	"github.com/go-logr/logr"
	"os"
	"path/filepath"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
	"github.com/mcp-warden/mcp-warden/internal/localcluster"
	"github.com/mcp-warden/mcp-warden/operator"
)

// The suite runs against a real control plane: etcd, kube-apiserver (with Pod Security Admission),
// kube-controller-manager (Deployments create ReplicaSets and Pods, garbage collection), kube-scheduler
// and a KWOK node that runs the Pods, plus the operator itself.
var (
	k8s     client.Client
	clients *kubernetes.Clientset
)

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(run(m))
}

func run(m *testing.M) int {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	root, err := localcluster.ModuleRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	cluster, err := localcluster.Start(ctx, localcluster.Options{
		CRDDirs:     []string{filepath.Join(root, "config", "crd", "bases")},
		Controllers: true,
	})
	defer func() {
		if cluster != nil {
			_ = cluster.Stop()
		}
	}()
	if err != nil {
		fmt.Fprintln(os.Stderr, "start control plane:", err)
		return 1
	}
	if testing.Verbose() {
		ctrl.SetLogger(zap.New(zap.UseDevMode(true), zap.WriteTo(os.Stderr)))
	} else {
		ctrl.SetLogger(logr.Discard())
	}
	mgr, err := operator.New(cluster.Config, operator.Options{MetricsAddr: "0", ProbeAddr: "0"})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	go func() {
		if err := mgr.Start(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "manager:", err)
		}
	}()
	if k8s, err = client.New(cluster.Config, client.Options{Scheme: operator.Scheme()}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	clients = kubernetes.NewForConfigOrDie(cluster.Config)
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
