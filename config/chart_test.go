package config_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"reflect"
	"strings"
	"testing"

	"k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"
	"sigs.k8s.io/yaml"

	appsv1 "k8s.io/api/apps/v1"
)

// helmBinary is the helm CLI: $HELM (set by `make test`), else the one the Makefile installs into bin/.
func helmBinary(t *testing.T) string {
	t.Helper()
	if helm := os.Getenv("HELM"); helm != "" {
		return helm
	}
	if _, err := os.Stat("../bin/helm"); err == nil {
		return "../bin/helm"
	}
	t.Fatal("no helm CLI: run the tests with `make test` (or `make helm` first), which installs helm into bin/")
	return ""
}

// helmRender renders the chart with the helm CLI and returns its objects, or helm's error output.
func helmRender(t *testing.T, args ...string) ([]map[string]any, string, error) {
	t.Helper()
	cmd := exec.Command(helmBinary(t), append([]string{"template", "mcp-warden", "../charts/mcp-warden", "--namespace", "mcp-warden-system", "--include-crds"}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, stderr.String(), fmt.Errorf("helm template %s: %w", strings.Join(args, " "), err)
	}
	var objs []map[string]any
	for _, doc := range strings.Split(string(out), "\n---") {
		var obj map[string]any
		if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
			return nil, "", fmt.Errorf("parse helm output: %w", err)
		}
		if obj != nil {
			objs = append(objs, obj)
		}
	}
	return objs, "", nil
}

// helmTemplate renders the chart with the helm CLI and fails the test on any error.
func helmTemplate(t *testing.T, args ...string) []map[string]any {
	t.Helper()
	objs, stderr, err := helmRender(t, args...)
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	return objs
}

func byKind(objs []map[string]any, kind, nameSuffix string) map[string]any {
	for _, o := range objs {
		name, _ := o["metadata"].(map[string]any)["name"].(string)
		if o["kind"] == kind && strings.HasSuffix(name, nameSuffix) {
			return o
		}
	}
	return nil
}

// TestChartMatchesConfig renders the chart with helm and config/default with kustomize and requires the
// same CRDs, manager ClusterRole rules and webhook rules.
func TestChartMatchesConfig(t *testing.T) {
	chart := helmTemplate(t)
	var kust []map[string]any
	for _, r := range render(t, "default").Resources() {
		m, err := r.Map()
		if err != nil {
			t.Fatal(err)
		}
		body, _ := yaml.Marshal(m)
		var obj map[string]any
		_ = yaml.Unmarshal(body, &obj) // normalise number types
		kust = append(kust, obj)
	}
	for _, crd := range []string{"mcpservers.mcp.warden.dev", "mcpserverpolicies.mcp.warden.dev"} {
		c, k := byKind(chart, "CustomResourceDefinition", crd), byKind(kust, "CustomResourceDefinition", crd)
		if c == nil || k == nil || !reflect.DeepEqual(c["spec"], k["spec"]) {
			t.Errorf("CRD %s differs between the chart and config/", crd)
		}
	}
	c, k := byKind(chart, "ClusterRole", "manager-role"), byKind(kust, "ClusterRole", "manager-role")
	if c == nil || k == nil || !reflect.DeepEqual(c["rules"], k["rules"]) {
		t.Error("manager ClusterRole rules differ between the chart and config/")
	}
	c, k = byKind(chart, "ValidatingWebhookConfiguration", ""), byKind(kust, "ValidatingWebhookConfiguration", "")
	if c == nil || k == nil {
		t.Fatal("a ValidatingWebhookConfiguration is missing")
	}
	ch, kh := c["webhooks"].([]any), k["webhooks"].([]any)
	if len(ch) != len(kh) {
		t.Fatalf("webhooks: chart %d, config %d", len(ch), len(kh))
	}
	for i := range ch {
		for _, field := range []string{"name", "rules", "failurePolicy", "sideEffects", "timeoutSeconds", "namespaceSelector"} {
			if !reflect.DeepEqual(ch[i].(map[string]any)[field], kh[i].(map[string]any)[field]) {
				t.Errorf("webhook %d field %s differs between the chart and config/", i, field)
			}
		}
	}
}

func TestChartManagerIsRestricted(t *testing.T) {
	for _, args := range [][]string{nil, allToggles} {
		d := byKind(helmTemplate(t, args...), "Deployment", "controller-manager")
		if d == nil {
			t.Fatal("no manager Deployment")
		}
		body, _ := yaml.Marshal(d)
		dep := &appsv1.Deployment{}
		if err := yaml.Unmarshal(body, dep); err != nil {
			t.Fatal(err)
		}
		eval, err := policy.NewEvaluator(policy.DefaultChecks(), nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range eval.EvaluatePod(api.LevelVersion{Level: api.LevelRestricted, Version: api.LatestVersion()}, &dep.Spec.Template.ObjectMeta, &dep.Spec.Template.Spec) {
			if !r.Allowed {
				t.Errorf("chart manager pod violates restricted: %s: %s", r.ForbiddenReason, r.ForbiddenDetail)
			}
		}
	}
}

// allToggles turns every optional part of the chart on.
var allToggles = []string{"--set", "certManager.enabled=true", "--set", "serviceMonitor.enabled=true", "--set", "argocd.healthCheck=true"}

func count(objs []map[string]any, kind string) int {
	n := 0
	for _, o := range objs {
		if o["kind"] == kind {
			n++
		}
	}
	return n
}

func managerArgs(t *testing.T, objs []map[string]any) string {
	t.Helper()
	d := byKind(objs, "Deployment", "controller-manager")
	if d == nil {
		t.Fatal("no manager Deployment")
	}
	body, _ := yaml.Marshal(d)
	dep := &appsv1.Deployment{}
	if err := yaml.Unmarshal(body, dep); err != nil {
		t.Fatal(err)
	}
	return strings.Join(dep.Spec.Template.Spec.Containers[0].Args, " ")
}

// TestChartValuesSchemaRejectsMistakes checks that values.schema.json (additionalProperties: false) and
// the chart's own checks turn typos and contradictions into errors instead of silently ignored values.
func TestChartValuesSchemaRejectsMistakes(t *testing.T) {
	for _, tc := range []struct {
		set, want string
	}{
		{"replicas=3", "additional properties 'replicas' not allowed"},
		{"image.digests=sha256:0", "additional properties 'digests' not allowed"},
		{"serviceMonitor.enable=true", "additional properties 'enable' not allowed"},
		{"argocd.healthcheck=true", "additional properties 'healthcheck' not allowed"},
		{"image.digest=latest", "/image/digest"},
		{"logLevel=verbose", "/logLevel"},
		{"webhook.timeoutSeconds=31", "/webhook/timeoutSeconds"},
		{"webhook.verifyTimeout=10s", "must be below webhook.timeoutSeconds"},
		{"scale.maxConcurrentReconciles=-1", "/scale/maxConcurrentReconciles"},
		{"scale.kubeAPIQPS=0", "/scale/kubeAPIQPS"},
		{"scale.kubeAPIBurst=0", "/scale/kubeAPIBurst"},
		{"scale.kubeAPIBurst=100", "scale.kubeAPIBurst (100) must be at least scale.kubeAPIQPS (500)"},
		{"scale.workers=8", "additional properties 'workers' not allowed"},
	} {
		t.Run(tc.set, func(t *testing.T) {
			_, stderr, err := helmRender(t, "--set", tc.set)
			if err == nil {
				t.Fatalf("--set %s rendered; want an error", tc.set)
			}
			if !strings.Contains(stderr, tc.want) {
				t.Fatalf("--set %s: error %q does not mention %q", tc.set, stderr, tc.want)
			}
		})
	}
}

// TestChartToggles checks what each values toggle adds or removes.
func TestChartToggles(t *testing.T) {
	def := helmTemplate(t)
	checkDefaultRender(t, def)
	checkEveryToggleOn(t)
	checkWebhookAndMetricsOff(t)

	// Dogfooding: the workload webhook may cover the operator's own namespace; the MCPServer webhook and
	// the default never do.
	if got := ownNamespaceExcluded(def); !got["vworkloads.mcp.warden.dev"] || !got["vmcpserver.mcp.warden.dev"] {
		t.Errorf("by default the operator's namespace is excluded from both webhooks: %v", got)
	}
	if got := ownNamespaceExcluded(helmTemplate(t, "--set", "webhook.enforceOwnNamespace=true")); got["vworkloads.mcp.warden.dev"] || !got["vmcpserver.mcp.warden.dev"] {
		t.Errorf("webhook.enforceOwnNamespace=true: excluded from %v, want only the MCPServer webhook", got)
	}

	pinned := helmTemplate(t, "--set", "image.digest=sha256:"+strings.Repeat("ab", 32))
	d := byKind(pinned, "Deployment", "controller-manager")
	body, _ := yaml.Marshal(d)
	if !strings.Contains(string(body), "mcp-warden/manager@sha256:"+strings.Repeat("ab", 32)) {
		t.Error("image.digest does not pin the manager image")
	}
}

// checkDefaultRender checks the chart rendered with its default values (def): the objects, the
// manager's arguments, the scale values and the CRDs' sync wave.
func checkDefaultRender(t *testing.T, def []map[string]any) {
	t.Helper()
	for kind, want := range map[string]int{"CustomResourceDefinition": 2, "Deployment": 1, "ServiceAccount": 1, "ValidatingWebhookConfiguration": 1, "Service": 2, "Secret": 1, "ServiceMonitor": 0, "ConfigMap": 0, "Certificate": 0, "Role": 2, "RoleBinding": 2} {
		if got := count(def, kind); got != want {
			t.Errorf("default values: %d %s, want %d", got, kind, want)
		}
	}
	if args := managerArgs(t, def); !strings.Contains(args, "--leader-elect") || !strings.Contains(args, "--metrics-bind-address=:8443") || !strings.Contains(args, "--cert-rotation=true") {
		t.Errorf("default manager args: %s", args)
	}
	// The worker count is the manager's own default (per CPU) unless set; the rate limit is always set.
	if args := managerArgs(t, def); strings.Contains(args, "--max-concurrent-reconciles") || !strings.Contains(args, "--kube-api-qps=500 --kube-api-burst=1000") {
		t.Errorf("default scale args: %s", args)
	}
	if args := managerArgs(t, helmTemplate(t, "--set", "scale.maxConcurrentReconciles=24", "--set", "scale.kubeAPIQPS=800", "--set", "scale.kubeAPIBurst=1600")); !strings.Contains(args, "--max-concurrent-reconciles=24 --kube-api-qps=800 --kube-api-burst=1600") {
		t.Errorf("scale values do not reach the manager args: %s", args)
	}
	for _, crd := range []string{"mcpservers.mcp.warden.dev", "mcpserverpolicies.mcp.warden.dev"} {
		c := byKind(def, "CustomResourceDefinition", crd)
		if ann, _ := c["metadata"].(map[string]any)["annotations"].(map[string]any); ann["argocd.argoproj.io/sync-wave"] != "-2" {
			t.Errorf("CRD %s has no Argo CD sync wave -2 (annotations %v)", crd, ann)
		}
	}

}

// checkEveryToggleOn checks the chart rendered with every toggle on: ServiceMonitor, Argo CD health
// ConfigMap and cert-manager certificates.
func checkEveryToggleOn(t *testing.T) {
	t.Helper()
	all := helmTemplate(t, allToggles...)
	for kind, want := range map[string]int{"ServiceMonitor": 1, "ConfigMap": 1, "Certificate": 1, "Issuer": 1, "Secret": 0} {
		if got := count(all, kind); got != want {
			t.Errorf("every toggle on: %d %s, want %d", got, kind, want)
		}
	}
	if args := managerArgs(t, all); !strings.Contains(args, "--cert-rotation=false") {
		t.Errorf("with cert-manager the operator must not rotate certificates: %s", args)
	}
	vwc := byKind(all, "ValidatingWebhookConfiguration", "")
	if ann, _ := vwc["metadata"].(map[string]any)["annotations"].(map[string]any); ann["cert-manager.io/inject-ca-from"] != "mcp-warden-system/mcp-warden-webhook-cert" {
		t.Errorf("webhook configuration annotations %v, want cert-manager CA injection", ann)
	}
	cm := byKind(all, "ConfigMap", "argocd-health")
	for kind, file := range map[string]string{"MCPServer": "mcpserver-health.lua", "MCPServerPolicy": "mcpserverpolicy-health.lua"} {
		lua, err := os.ReadFile("../integrations/argocd/" + file)
		if err != nil {
			t.Fatal(err)
		}
		if got, _ := cm["data"].(map[string]any)["resource.customizations.health.mcp.warden.dev_"+kind].(string); strings.TrimSpace(got) != strings.TrimSpace(string(lua)) {
			t.Errorf("the Argo CD health ConfigMap does not carry argocd/%s", file)
		}
	}

}

// checkWebhookAndMetricsOff checks the chart rendered with the webhooks and metrics off.
func checkWebhookAndMetricsOff(t *testing.T) {
	t.Helper()
	off := helmTemplate(t, "--set", "webhook.enabled=false", "--set", "metrics.enabled=false")
	for kind, want := range map[string]int{"ValidatingWebhookConfiguration": 0, "Service": 0, "ClusterRole": 1} {
		if got := count(off, kind); got != want {
			t.Errorf("webhook and metrics off: %d %s, want %d", got, kind, want)
		}
	}
	if args := managerArgs(t, off); !strings.Contains(args, "--webhooks=false") || !strings.Contains(args, "--metrics-bind-address=0") {
		t.Errorf("webhook and metrics off: manager args %s", args)
	}

}

// ownNamespaceExcluded returns the names of the webhooks whose namespace selector excludes the
// operator's namespace (mcp-warden-system).
func ownNamespaceExcluded(objs []map[string]any) map[string]bool {
	out := map[string]bool{}
	vwc := byKind(objs, "ValidatingWebhookConfiguration", "")
	for _, w := range vwc["webhooks"].([]any) {
		wh := w.(map[string]any)
		sel, _ := wh["namespaceSelector"].(map[string]any) // a cluster-scoped kind's webhook has none
		exprs, _ := sel["matchExpressions"].([]any)
		for _, e := range exprs {
			ex := e.(map[string]any)
			if ex["operator"] == "NotIn" {
				for _, v := range ex["values"].([]any) {
					if v == "mcp-warden-system" {
						out[wh["name"].(string)] = true
					}
				}
			}
		}
	}
	return out
}
