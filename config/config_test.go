// Package config_test renders the kustomize trees users apply and checks what they would install.
package config_test

import (
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/api/resmap"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

func render(t *testing.T, dir string) resmap.ResMap {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	m, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	return m
}

func TestDefaultInstallsOperatorUnderRestrictedPodSecurity(t *testing.T) {
	m := render(t, "default")
	kinds := map[string]int{}
	var manager *appsv1.Deployment
	for _, r := range m.Resources() {
		kinds[r.GetKind()]++
		if r.GetKind() == "Deployment" {
			body, err := r.AsYAML()
			if err != nil {
				t.Fatal(err)
			}
			manager = &appsv1.Deployment{}
			if err := yaml.Unmarshal(body, manager); err != nil {
				t.Fatal(err)
			}
		}
		if ns := r.GetNamespace(); ns != "" && ns != "mcp-warden-system" {
			t.Errorf("%s/%s is in namespace %q, want mcp-warden-system", r.GetKind(), r.GetName(), ns)
		}
	}
	for kind, want := range map[string]int{"CustomResourceDefinition": 2, "Namespace": 1, "Deployment": 1, "ServiceAccount": 1, "ClusterRole": 3, "ClusterRoleBinding": 2, "Role": 1, "RoleBinding": 1, "ValidatingWebhookConfiguration": 1, "Service": 1, "NetworkPolicy": 1} {
		if kinds[kind] < want {
			t.Errorf("config/default has %d %s, want at least %d (all: %v)", kinds[kind], kind, want, kinds)
		}
	}
	if manager == nil {
		t.Fatal("no manager Deployment")
	}
	// The operator's own pods must pass Pod Security "restricted", checked with the admission plugin's
	// own evaluator.
	eval, err := policy.NewEvaluator(policy.DefaultChecks(), nil)
	if err != nil {
		t.Fatal(err)
	}
	results := eval.EvaluatePod(api.LevelVersion{Level: api.LevelRestricted, Version: api.LatestVersion()}, &manager.Spec.Template.ObjectMeta, &manager.Spec.Template.Spec)
	for _, r := range results {
		if !r.Allowed {
			t.Errorf("manager pod violates restricted: %s: %s", r.ForbiddenReason, r.ForbiddenDetail)
		}
	}
	if !strings.Contains(strings.Join(manager.Spec.Template.Spec.Containers[0].Args, " "), "--leader-elect") {
		t.Error("manager runs without leader election")
	}
}

func TestSamplesDecode(t *testing.T) {
	m := render(t, "samples")
	if len(m.Resources()) < 2 {
		t.Fatalf("samples render %d objects", len(m.Resources()))
	}
	for _, r := range m.Resources() {
		if _, err := r.AsYAML(); err != nil {
			t.Fatal(err)
		}
	}
}
