// Package testenv starts what the integration suites and the demo share: a local control plane with the
// project's CRDs and the operator running against it.
package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/go-logr/logr"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/mcp-warden/mcp-warden/internal/localcluster"
	"github.com/mcp-warden/mcp-warden/operator"
)

// Env is a running control plane and operator.
type Env struct {
	// Cluster is the control plane; stop it with Stop.
	Cluster *localcluster.Cluster
	// Client talks to the API server with the operator's scheme.
	Client client.Client
	// Root is the repository root.
	Root string
	// Issuer is the in-process token issuer the operator fetches keys from, unless opts set IssuerKeys.
	Issuer *Issuer
}

// Start starts the control plane with config/crd/bases (plus whatever o adds) and the operator with the
// options opts returns for it (metrics and probes off unless set). The operator stops with ctx. On error
// the returned Env may still hold a cluster to stop.
func Start(ctx context.Context, o localcluster.Options, opts func(*localcluster.Cluster) operator.Options) (*Env, error) {
	ctrl.SetLogger(logr.Discard())
	root, err := localcluster.ModuleRoot()
	if err != nil {
		return nil, err
	}
	o.CRDDirs = append([]string{filepath.Join(root, "config", "crd", "bases")}, o.CRDDirs...)
	cluster, err := localcluster.Start(ctx, o)
	env := &Env{Cluster: cluster, Root: root}
	if err != nil {
		return env, fmt.Errorf("start control plane: %w", err)
	}
	oo := operator.Options{}
	if opts != nil {
		oo = opts(cluster)
	}
	env.Issuer = StartIssuer()
	if oo.IssuerKeys == nil {
		oo.IssuerKeys = env.Issuer.Fetcher(oo.IssuerKeysRefresh)
	}
	if oo.MetricsAddr == "" {
		oo.MetricsAddr = "0"
	}
	if oo.ProbeAddr == "" {
		oo.ProbeAddr = "0"
	}
	mgr, err := operator.New(cluster.Config, oo)
	if err != nil {
		return env, err
	}
	go func() { _ = mgr.Start(ctx) }()
	if env.Client, err = client.New(cluster.Config, client.Options{Scheme: operator.Scheme()}); err != nil {
		return env, err
	}
	return env, nil
}

// Stop stops the control plane.
func (e *Env) Stop() {
	if e != nil && e.Cluster != nil {
		_ = e.Cluster.Stop()
	}
	if e != nil && e.Issuer != nil {
		e.Issuer.Close()
	}
}

// WebhookOptions points the operator's webhook server at the endpoint envtest registered.
func WebhookOptions(c *localcluster.Cluster) operator.Options {
	wh := c.Env.WebhookInstallOptions
	return operator.Options{Webhooks: true, WebhookHost: wh.LocalServingHost, WebhookPort: wh.LocalServingPort, WebhookCertDir: wh.LocalServingCertDir}
}

// ModuleCRD reads a CRD that another project publishes in its Go module (at the version go.mod pins),
// e.g. ModuleCRD("github.com/cilium/cilium", "pkg/k8s/apis/cilium.io/client/crds/v2/ciliumnetworkpolicies.yaml").
func ModuleCRD(module, file string) (*apiextensionsv1.CustomResourceDefinition, error) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", module).Output()
	if err != nil {
		return nil, fmt.Errorf("locate the %s module: %w", module, err)
	}
	path := filepath.Join(strings.TrimSpace(string(out)), filepath.FromSlash(file))
	body, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	crd := &apiextensionsv1.CustomResourceDefinition{}
	if err := yaml.Unmarshal(body, crd); err != nil {
		return nil, fmt.Errorf("decode %s: %w", path, err)
	}
	return crd, nil
}

// CiliumPolicyCRD is Cilium's CiliumNetworkPolicy CRD.
func CiliumPolicyCRD() (*apiextensionsv1.CustomResourceDefinition, error) {
	return ModuleCRD("github.com/cilium/cilium", "pkg/k8s/apis/cilium.io/client/crds/v2/ciliumnetworkpolicies.yaml")
}
