package config_test

import (
	"bytes"
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

// helmTemplate renders the chart with the helm CLI (installed by the Makefile into bin/).
func helmTemplate(t *testing.T, args ...string) []map[string]any {
	t.Helper()
	helm := os.Getenv("HELM")
	if helm == "" {
		t.Fatal("HELM is not set: run the tests with `make test`, which installs helm into bin/")
	}
	cmd := exec.Command(helm, append([]string{"template", "mcp-warden", "../charts/mcp-warden", "--namespace", "mcp-warden-system", "--include-crds"}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helm template: %v\n%s", err, stderr.String())
	}
	var objs []map[string]any
	for _, doc := range strings.Split(string(out), "\n---") {
		var obj map[string]any
		if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
			t.Fatal(err)
		}
		if obj != nil {
			objs = append(objs, obj)
		}
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
	for _, args := range [][]string{nil, {"--set", "certManager.enabled=true", "--set", "serviceMonitor.enabled=true", "--set", "argocd.healthCheck=true"}} {
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
