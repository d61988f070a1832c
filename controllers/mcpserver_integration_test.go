package controllers_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
	"github.com/mcp-warden/mcp-warden/controllers"
	"github.com/mcp-warden/mcp-warden/integrations/argocd"
	"github.com/mcp-warden/mcp-warden/policy/sandbox"
	"github.com/mcp-warden/mcp-warden/supplychain/imageverify/imagetest"
)

const digestImage = "registry.example/acme/files@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// restrictedNamespace creates a namespace that enforces Pod Security "restricted".
func restrictedNamespace(t *testing.T) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		GenerateName: "mcp-",
		Labels: map[string]string{
			"pod-security.kubernetes.io/enforce":         "restricted",
			"pod-security.kubernetes.io/enforce-version": "latest",
		},
	}}
	if err := k8s.Create(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
	return ns.Name
}

func newServer(ns, name string) *mcpv1alpha1.MCPServer {
	return &mcpv1alpha1.MCPServer{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: mcpv1alpha1.MCPServerSpec{
			Image:   digestImage,
			Args:    []string{"--root", "/data"},
			Gateway: mcpv1alpha1.GatewaySpec{Auth: mcpv1alpha1.GatewayAuth{Issuer: "https://auth.example.com"}, Scopes: []mcpv1alpha1.ScopeGrant{{Scope: "files:read", Tools: []string{"read_file"}}}},
			Clients: []mcpv1alpha1.ClientSelector{{
				PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "agent"}},
			}},
			Egress: []mcpv1alpha1.EgressRule{{CIDR: ptr.To("140.82.112.0/20"), Ports: []mcpv1alpha1.EgressPort{{Port: 443}}}},
		},
	}
}

// dumpOnFailure logs the namespace's pods, ReplicaSets and events when the test failed, so a failure
// says what the cluster saw.
func dumpOnFailure(t *testing.T, ns string) {
	t.Helper()
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		ctx := context.Background()
		pods := &corev1.PodList{}
		_ = k8s.List(ctx, pods, client.InNamespace(ns))
		for _, p := range pods.Items {
			t.Logf("pod %s: phase=%s node=%q conditions=%+v", p.Name, p.Status.Phase, p.Spec.NodeName, p.Status.Conditions)
		}
		rss := &appsv1.ReplicaSetList{}
		_ = k8s.List(ctx, rss, client.InNamespace(ns))
		for _, rs := range rss.Items {
			t.Logf("replicaset %s: %+v", rs.Name, rs.Status)
		}
		evs := &corev1.EventList{}
		_ = k8s.List(ctx, evs, client.InNamespace(ns))
		for _, e := range evs.Items {
			t.Logf("event %s %s/%s: %s %s", e.Type, e.InvolvedObject.Kind, e.InvolvedObject.Name, e.Reason, e.Message)
		}
	})
}

func waitReady(t *testing.T, key client.ObjectKey) *mcpv1alpha1.MCPServer {
	t.Helper()
	dumpOnFailure(t, key.Namespace)
	s := &mcpv1alpha1.MCPServer{}
	eventually(t, 60*time.Second, func() error {
		if err := k8s.Get(context.Background(), key, s); err != nil {
			return err
		}
		c := condition(s, mcpv1alpha1.ConditionReady)
		if c == nil || c.Status != metav1.ConditionTrue || s.Status.ObservedGeneration != s.Generation {
			return fmt.Errorf("not ready: generation %d observed %d, conditions %+v", s.Generation, s.Status.ObservedGeneration, s.Status.Conditions)
		}
		return nil
	})
	return s
}

func TestServerBecomesReadyWithRestrictedPods(t *testing.T) {
	ctx := context.Background()
	ns := restrictedNamespace(t)
	start := time.Now()
	if err := k8s.Create(ctx, newServer(ns, "files")); err != nil {
		t.Fatal(err)
	}
	s := waitReady(t, client.ObjectKey{Namespace: ns, Name: "files"})
	t.Logf("MCPServer Ready after %s", time.Since(start).Round(time.Millisecond))

	assertArgoHealth(t, s, argocd.Healthy)
	if err := kstatusIs(s, status.CurrentStatus); err != nil {
		t.Fatal(err)
	}
	if want := "https://files." + ns + ".svc.cluster.local:8080/mcp"; s.Status.Endpoint != want {
		t.Errorf("endpoint = %q, want %q", s.Status.Endpoint, want)
	}
	if c := condition(s, mcpv1alpha1.ConditionReconciling); c != nil {
		t.Errorf("Reconciling still set on a Ready server: %+v", c)
	}
	if c := condition(s, mcpv1alpha1.ConditionEgressEnforced); c == nil || c.Status != metav1.ConditionTrue {
		t.Errorf("EgressEnforced = %+v", c)
	}

	sa := &corev1.ServiceAccount{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "files"}, sa); err != nil || sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken {
		t.Errorf("service account: %v %+v", err, sa.AutomountServiceAccountToken)
	}
	np := &networkingv1.NetworkPolicy{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "files"}, np); err != nil || len(np.Spec.PolicyTypes) != 2 {
		t.Errorf("network policy: %v %+v", err, np.Spec.PolicyTypes)
	}
	if !metav1.IsControlledBy(np, s) {
		t.Errorf("network policy is not controlled by the MCPServer: %+v", np.OwnerReferences)
	}

	// The Pods were created by the real Deployment and ReplicaSet controllers, admitted by Pod Security
	// Admission at "restricted", scheduled, and run by the simulated node.
	pods := &corev1.PodList{}
	eventually(t, 30*time.Second, func() error {
		if err := k8s.List(ctx, pods, client.InNamespace(ns), client.MatchingLabels{controllers.LabelServer: "files"}); err != nil {
			return err
		}
		if len(pods.Items) != 1 || pods.Items[0].Status.Phase != corev1.PodRunning {
			return fmt.Errorf("pods: %d", len(pods.Items))
		}
		return nil
	})
	pod := pods.Items[0]
	if v := sandbox.Violations(&pod.Spec); len(v) != 0 {
		t.Errorf("running pod violates the sandbox: %v", v)
	}
	if pod.Spec.NodeName == "" {
		t.Error("pod was not scheduled")
	}
}

// TestStdioServerBecomesReady runs a stdio server: one container running the gateway with the server as
// its child, the gateway binary installed by a sandboxed init container, admitted at "restricted".
func TestStdioServerBecomesReady(t *testing.T) {
	ctx := context.Background()
	ns := restrictedNamespace(t)
	s := newServer(ns, "stdio-files")
	s.Spec.Transport = mcpv1alpha1.TransportStdio
	s.Spec.Command = []string{"/usr/bin/mcp-files"}
	if err := k8s.Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	waitReady(t, client.ObjectKeyFromObject(s))
	pods := &corev1.PodList{}
	eventually(t, 30*time.Second, func() error {
		if err := k8s.List(ctx, pods, client.InNamespace(ns), client.MatchingLabels{controllers.LabelServer: s.Name}); err != nil {
			return err
		}
		if len(pods.Items) != 1 || pods.Items[0].Status.Phase != corev1.PodRunning {
			return fmt.Errorf("pods: %d", len(pods.Items))
		}
		return nil
	})
	pod := pods.Items[0].Spec
	if v := sandbox.Violations(&pod); len(v) != 0 {
		t.Errorf("stdio pod violates the sandbox: %v", v)
	}
	if len(pod.InitContainers) != 2 || len(pod.Containers) != 1 {
		t.Fatalf("want two init containers (the gateway sidecar, the install step) and one container, got %d and %d", len(pod.InitContainers), len(pod.Containers))
	}
	if cmd := strings.Join(pod.Containers[0].Command, " "); !strings.HasSuffix(cmd, "stdio-exec /run/mcp-warden/stdio.sock -- /usr/bin/mcp-files") {
		t.Errorf("server command = %q", cmd)
	}
}

// assertArgoHealth runs the Argo CD health check on the live object.
func assertArgoHealth(t *testing.T, s *mcpv1alpha1.MCPServer, want string) {
	t.Helper()
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(s)
	if err != nil {
		t.Fatal(err)
	}
	status, msg, err := argocd.Health(obj)
	if err != nil || status != want {
		t.Fatalf("Argo CD health = %s %q (%v), want %s", status, msg, err, want)
	}
}

func TestPodSecurityAdmissionIsLive(t *testing.T) {
	ns := restrictedNamespace(t)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "insecure", Namespace: ns},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "c", Image: digestImage,
			SecurityContext: &corev1.SecurityContext{Privileged: ptr.To(true)},
		}}},
	}
	err := k8s.Create(context.Background(), pod)
	if err == nil || !strings.Contains(err.Error(), "violates PodSecurity \"restricted") {
		t.Fatalf("an insecure pod was not refused by Pod Security Admission: %v", err)
	}
}

func TestSchemaRefusesBadSpecs(t *testing.T) {
	ns := restrictedNamespace(t)
	cases := map[string]struct {
		mutate func(*mcpv1alpha1.MCPServer)
		want   string
	}{
		"tag instead of digest": {func(s *mcpv1alpha1.MCPServer) { s.Spec.Image = "ghcr.io/acme/files:1.2" }, "spec.image must be pinned by digest"},
		"short digest":          {func(s *mcpv1alpha1.MCPServer) { s.Spec.Image = "ghcr.io/acme/files@sha256:abc" }, "spec.image must be pinned by digest"},
		"secret-named literal": {func(s *mcpv1alpha1.MCPServer) {
			s.Spec.Env = []mcpv1alpha1.EnvVar{{Name: "API_TOKEN", Value: ptr.To("hunter2")}}
		}, "use valueFrom.secretKeyRef"},
		"cloud key literal": {func(s *mcpv1alpha1.MCPServer) {
			s.Spec.Env = []mcpv1alpha1.EnvVar{{Name: "CONFIG", Value: ptr.To("AKIAIOSFODNN7EXAMPLE")}}
		}, "looks like a credential"},
		"value and valueFrom": {func(s *mcpv1alpha1.MCPServer) {
			s.Spec.Env = []mcpv1alpha1.EnvVar{{Name: "X", Value: ptr.To("1"), ValueFrom: &mcpv1alpha1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{Key: "k"}}}}
		}, "exactly one of value or valueFrom"},
		"bad cidr": {func(s *mcpv1alpha1.MCPServer) {
			s.Spec.Egress = []mcpv1alpha1.EgressRule{{CIDR: ptr.To("300.1.1.1/8"), Ports: []mcpv1alpha1.EgressPort{{Port: 443}}}}
		}, "egress.cidr must be a CIDR"},
		"no ports": {func(s *mcpv1alpha1.MCPServer) {
			s.Spec.Egress = []mcpv1alpha1.EgressRule{{CIDR: ptr.To("1.1.1.1/32")}}
		}, "spec.egress[0].ports"},
		"cidr and fqdn": {func(s *mcpv1alpha1.MCPServer) {
			s.Spec.Egress = []mcpv1alpha1.EgressRule{{CIDR: ptr.To("1.1.1.1/32"), FQDN: ptr.To("api.github.com"), Ports: []mcpv1alpha1.EgressPort{{Port: 443}}}}
		}, "exactly one of cidr or fqdn"},
		"privileged port":                {func(s *mcpv1alpha1.MCPServer) { s.Spec.Port = 80 }, "spec.port"},
		"the gateway's port":             {func(s *mcpv1alpha1.MCPServer) { s.Spec.Port = 8443 }, "8443, 8444 and 8445 are the gateway's own ports"},
		"the gateway's status port":      {func(s *mcpv1alpha1.MCPServer) { s.Spec.Port = 8444 }, "8443, 8444 and 8445 are the gateway's own ports"},
		"the gateway's peer port":        {func(s *mcpv1alpha1.MCPServer) { s.Spec.Port = 8445 }, "8443, 8444 and 8445 are the gateway's own ports"},
		"gateway auth without an issuer": {func(s *mcpv1alpha1.MCPServer) { s.Spec.Gateway = mcpv1alpha1.GatewaySpec{} }, "gateway.auth.issuer is required unless gateway.auth.disabled"},
		"stdio without a command":        {func(s *mcpv1alpha1.MCPServer) { s.Spec.Transport = mcpv1alpha1.TransportStdio }, "spec.command is required with transport stdio"},
		// Server files-peers would own the Service that server files needs for its replicas' peers.
		"a name another server's peers Service has": {func(s *mcpv1alpha1.MCPServer) { s.Name = "files-peers" }, "metadata.name must not end in -peers"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			s := newServer(ns, "bad")
			tc.mutate(s)
			err := k8s.Create(context.Background(), s)
			if err == nil || !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("create error = %v, want Invalid containing %q", err, tc.want)
			}
		})
	}
}

func TestPrivateEgressStallsUntilFixed(t *testing.T) {
	ctx := context.Background()
	ns := restrictedNamespace(t)
	s := newServer(ns, "db-tool")
	s.Spec.Egress = append(s.Spec.Egress, mcpv1alpha1.EgressRule{CIDR: ptr.To("10.0.0.0/8"), Ports: []mcpv1alpha1.EgressPort{{Port: 5432}}})
	if err := k8s.Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	key := client.ObjectKeyFromObject(s)
	eventually(t, 30*time.Second, func() error {
		if err := k8s.Get(ctx, key, s); err != nil {
			return err
		}
		c := condition(s, mcpv1alpha1.ConditionStalled)
		if c == nil || c.Status != metav1.ConditionTrue || c.Reason != controllers.ReasonInvalidSpec || s.Status.ObservedGeneration != s.Generation {
			return fmt.Errorf("not stalled: %+v", s.Status.Conditions)
		}
		if !strings.Contains(c.Message, "spec.egress[1].cidr") || !strings.Contains(c.Message, "private") {
			return fmt.Errorf("stall message does not name the field: %q", c.Message)
		}
		return nil
	})
	assertArgoHealth(t, s, argocd.Degraded)
	// Nothing was applied for a spec that cannot be honoured.
	if err := k8s.Get(ctx, key, &appsv1.Deployment{}); !apierrors.IsNotFound(err) {
		t.Fatalf("a Deployment exists for a stalled server: %v", err)
	}
	s.Spec.Egress = s.Spec.Egress[:1]
	if err := k8s.Update(ctx, s); err != nil {
		t.Fatal(err)
	}
	s = waitReady(t, key)
	if c := condition(s, mcpv1alpha1.ConditionStalled); c != nil {
		t.Fatalf("Stalled still set after the fix: %+v", c)
	}
}

func TestFQDNEgressIsReportedNotOpened(t *testing.T) {
	ctx := context.Background()
	ns := restrictedNamespace(t)
	s := newServer(ns, "gh")
	s.Spec.Egress = append(s.Spec.Egress, mcpv1alpha1.EgressRule{FQDN: ptr.To("api.github.com"), Ports: []mcpv1alpha1.EgressPort{{Port: 443}}})
	if err := k8s.Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	s = waitReady(t, client.ObjectKeyFromObject(s))
	c := condition(s, mcpv1alpha1.ConditionEgressEnforced)
	if c == nil || c.Status != metav1.ConditionFalse || !strings.Contains(c.Message, "api.github.com") {
		t.Fatalf("EgressEnforced = %+v", c)
	}
	np := &networkingv1.NetworkPolicy{}
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(s), np); err != nil {
		t.Fatal(err)
	}
	if len(np.Spec.Egress) != 3 { // DNS + the one CIDR entry + the replicas' peer port; nothing for the name
		t.Fatalf("egress rules = %+v", np.Spec.Egress)
	}
}

func TestDriftIsReverted(t *testing.T) {
	ctx := context.Background()
	ns := restrictedNamespace(t)
	if err := k8s.Create(ctx, newServer(ns, "drift")); err != nil {
		t.Fatal(err)
	}
	key := client.ObjectKey{Namespace: ns, Name: "drift"}
	waitReady(t, key)

	// Someone grants the server a capability with their own field manager.
	d := &appsv1.Deployment{}
	if err := k8s.Get(ctx, key, d); err != nil {
		t.Fatal(err)
	}
	d.Spec.Template.Spec.Containers[0].SecurityContext.Capabilities.Add = []corev1.Capability{"NET_ADMIN"}
	d.Spec.Template.Spec.HostNetwork = true
	if err := k8s.Update(ctx, d, client.FieldOwner("someone")); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, func() error {
		if err := k8s.Get(ctx, key, d); err != nil {
			return err
		}
		if v := sandbox.Violations(&d.Spec.Template.Spec); len(v) > 0 {
			return fmt.Errorf("still weakened: %v", v)
		}
		return nil
	})

	// Someone opens the egress policy to the world.
	np := &networkingv1.NetworkPolicy{}
	if err := k8s.Get(ctx, key, np); err != nil {
		t.Fatal(err)
	}
	wantEgress := len(np.Spec.Egress)
	np.Spec.Egress = append(np.Spec.Egress, networkingv1.NetworkPolicyEgressRule{To: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "0.0.0.0/0"}}}})
	if err := k8s.Update(ctx, np, client.FieldOwner("someone")); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, func() error {
		if err := k8s.Get(ctx, key, np); err != nil {
			return err
		}
		if len(np.Spec.Egress) != wantEgress {
			return fmt.Errorf("egress has %d rules, want %d", len(np.Spec.Egress), wantEgress)
		}
		return nil
	})

	// Someone deletes the NetworkPolicy.
	if err := k8s.Delete(ctx, np); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, func() error {
		fresh := &networkingv1.NetworkPolicy{}
		if err := k8s.Get(ctx, key, fresh); err != nil {
			return err
		}
		if fresh.UID == np.UID {
			return errors.New("old policy still there")
		}
		return nil
	})
	// Events are written asynchronously by the recorder.
	eventually(t, 15*time.Second, func() error {
		events, err := clients.EventsV1().Events(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		reasons := map[string]bool{}
		for _, e := range events.Items {
			reasons[e.Reason] = true
		}
		if !reasons[controllers.ReasonDriftReverted] || !reasons[controllers.ReasonRecreated] {
			return fmt.Errorf("events %v lack %s and %s", reasons, controllers.ReasonDriftReverted, controllers.ReasonRecreated)
		}
		return nil
	})
}

func TestSteadyStateWritesNothing(t *testing.T) {
	ctx := context.Background()
	ns := restrictedNamespace(t)
	if err := k8s.Create(ctx, newServer(ns, "steady")); err != nil {
		t.Fatal(err)
	}
	key := client.ObjectKey{Namespace: ns, Name: "steady"}
	s := waitReady(t, key)
	versions := func() map[string]string {
		out := map[string]string{}
		for name, obj := range map[string]client.Object{"deployment": &appsv1.Deployment{}, "service": &corev1.Service{}, "sa": &corev1.ServiceAccount{}, "netpol": &networkingv1.NetworkPolicy{}, "server": &mcpv1alpha1.MCPServer{}} {
			if err := k8s.Get(ctx, key, obj); err != nil {
				t.Fatal(err)
			}
			out[name] = obj.GetResourceVersion()
		}
		return out
	}
	before := versions()
	// A label change triggers a reconcile without changing the spec.
	s.Labels = map[string]string{"touched": "yes"}
	if err := k8s.Update(ctx, s); err != nil {
		t.Fatal(err)
	}
	before["server"] = s.ResourceVersion
	time.Sleep(2 * time.Second)
	after := versions()
	for name, rv := range before {
		if after[name] != rv {
			t.Errorf("%s was written in steady state (resourceVersion %s -> %s)", name, rv, after[name])
		}
	}
}

func TestUpdateRollsOutAndDeleteCascades(t *testing.T) {
	ctx := context.Background()
	ns := restrictedNamespace(t)
	s := newServer(ns, "roll")
	if err := k8s.Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	key := client.ObjectKeyFromObject(s)
	s = waitReady(t, key)
	s.Spec.Args = []string{"--root", "/other"}
	s.Spec.Replicas = ptr.To[int32](2)
	if err := k8s.Update(ctx, s); err != nil {
		t.Fatal(err)
	}
	s = waitReady(t, key)
	if s.Status.ReadyReplicas != 2 {
		t.Errorf("readyReplicas = %d, want 2", s.Status.ReadyReplicas)
	}
	d := &appsv1.Deployment{}
	if err := k8s.Get(ctx, key, d); err != nil || d.Spec.Template.Spec.Containers[0].Args[1] != "/other" {
		t.Fatalf("deployment not updated: %v %v", err, d.Spec.Template.Spec.Containers[0].Args)
	}
	if err := k8s.Delete(ctx, s); err != nil {
		t.Fatal(err)
	}
	// Owner references let the garbage collector remove every child; no finalizer is involved.
	eventually(t, 30*time.Second, func() error {
		for _, obj := range []client.Object{&appsv1.Deployment{}, &corev1.Service{}, &corev1.ServiceAccount{}, &networkingv1.NetworkPolicy{}} {
			if err := k8s.Get(ctx, key, obj); !apierrors.IsNotFound(err) {
				return fmt.Errorf("%T still exists (%v)", obj, err) //nolint:errorlint // err is nil when the object exists
			}
		}
		return nil
	})
}

func TestNameConflictStalls(t *testing.T) {
	ctx := context.Background()
	ns := restrictedNamespace(t)
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "taken", Namespace: ns},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}},
	}
	if err := k8s.Create(ctx, svc); err != nil {
		t.Fatal(err)
	}
	s := newServer(ns, "taken")
	if err := k8s.Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, func() error {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(s), s); err != nil {
			return err
		}
		c := condition(s, mcpv1alpha1.ConditionStalled)
		if c == nil || c.Reason != controllers.ReasonChildConflict || !strings.Contains(c.Message, `a Service named "taken" already exists`) {
			return fmt.Errorf("conditions: %+v", s.Status.Conditions)
		}
		return nil
	})
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(svc), svc); err != nil || len(svc.OwnerReferences) != 0 || svc.Spec.Ports[0].Port != 80 {
		t.Fatalf("the user's Service was modified: %v %+v", err, svc)
	}
}

func TestPolicyCeilingAndRegistries(t *testing.T) {
	ctx := context.Background()
	ns := restrictedNamespace(t)
	nsObj := &corev1.Namespace{}
	if err := k8s.Get(ctx, client.ObjectKey{Name: ns}, nsObj); err != nil {
		t.Fatal(err)
	}
	nsObj.Labels["team"] = ns
	if err := k8s.Update(ctx, nsObj); err != nil {
		t.Fatal(err)
	}
	s := newServer(ns, "db-tool")
	s.Spec.Egress = append(s.Spec.Egress, mcpv1alpha1.EgressRule{CIDR: ptr.To("10.20.0.0/16"), Ports: []mcpv1alpha1.EgressPort{{Port: 5432}}})
	if err := k8s.Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	key := client.ObjectKeyFromObject(s)
	stalledWith := func(reason, text string) func() error {
		return func() error {
			if err := k8s.Get(ctx, key, s); err != nil {
				return err
			}
			c := condition(s, mcpv1alpha1.ConditionStalled)
			if c == nil || c.Reason != reason || !strings.Contains(c.Message, text) {
				return fmt.Errorf("conditions: %+v", s.Status.Conditions)
			}
			return kstatusIs(s, status.FailedStatus)
		}
	}
	eventually(t, 30*time.Second, stalledWith(controllers.ReasonInvalidSpec, "spec.egress[1].cidr"))

	// The platform team allows private ranges for this namespace: the server reconciles, and the policy
	// opens exactly that range.
	policy := &mcpv1alpha1.MCPServerPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "private-" + ns},
		Spec: mcpv1alpha1.MCPServerPolicySpec{
			NamespaceSelector: metav1.LabelSelector{MatchLabels: map[string]string{"team": ns}},
			Egress:            mcpv1alpha1.EgressCeiling{AllowedAddressClasses: []mcpv1alpha1.AddressClass{"private"}},
		},
	}
	if err := k8s.Create(ctx, policy); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), policy) })
	waitReady(t, key)
	np := &networkingv1.NetworkPolicy{}
	if err := k8s.Get(ctx, key, np); err != nil {
		t.Fatal(err)
	}
	if got := np.Spec.Egress[len(np.Spec.Egress)-2].To[0].IPBlock.CIDR; got != "10.20.0.0/16" { // the last is the peer port
		t.Fatalf("last egress rule opens %s, want 10.20.0.0/16", got)
	}

	// Now it also restricts registries: the running server stalls with the policy's name in the reason.
	updatePolicy(t, policy, func(s *mcpv1alpha1.MCPServerPolicySpec) { s.AllowedRegistries = []string{"ghcr.io/acme/"} })
	eventually(t, 30*time.Second, stalledWith(controllers.ReasonPolicyViolation, `MCPServerPolicy "private-`+ns+`" allows (ghcr.io/acme/)`))

	// Then it names the only authorization server tokens may come from, which is not the server's.
	updatePolicy(t, policy, func(s *mcpv1alpha1.MCPServerPolicySpec) {
		s.AllowedRegistries = nil
		s.Gateway.AllowedIssuers = []string{"https://login.platform.example"}
	})
	eventually(t, 30*time.Second, stalledWith(controllers.ReasonPolicyViolation, `spec.gateway.auth.issuer: Forbidden`))
}

func TestVerifiedStatus(t *testing.T) {
	ctx := context.Background()
	reg := imagetest.StartRegistry()
	t.Cleanup(reg.Close)
	key, err := imagetest.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	signed, err := reg.PushSigned("acme/files", key, "https://slsa.dev/provenance/v1")
	if err != nil {
		t.Fatal(err)
	}
	unsigned, err := reg.PushRandom("acme/unsigned")
	if err != nil {
		t.Fatal(err)
	}
	ns := restrictedNamespace(t)
	policy := &mcpv1alpha1.MCPServerPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "signed-" + ns},
		Spec: mcpv1alpha1.MCPServerPolicySpec{
			NamespaceSelector: metav1.LabelSelector{MatchLabels: map[string]string{corev1.LabelMetadataName: ns}},
			AllowedRegistries: []string{reg.Host}, // a loopback registry must be named
			Authorities:       []mcpv1alpha1.Authority{{Name: "release-key", Key: &mcpv1alpha1.KeyAuthority{Data: string(key.PublicPEM())}}},
			Attestations:      []mcpv1alpha1.AttestationRequirement{{Name: "provenance", PredicateType: "https://slsa.dev/provenance/v1"}},
		},
	}
	if err := k8s.Create(ctx, policy); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), policy) })

	good := newServer(ns, "signed")
	good.Spec.Image = signed.String()
	bad := newServer(ns, "unsigned")
	bad.Spec.Image = unsigned.String()
	for _, s := range []*mcpv1alpha1.MCPServer{good, bad} {
		if err := k8s.Create(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	s := waitReady(t, client.ObjectKeyFromObject(good))
	if c := condition(s, mcpv1alpha1.ConditionVerified); c == nil || c.Status != metav1.ConditionTrue {
		t.Fatalf("Verified = %+v", c)
	}
	if s.Status.Image == nil || s.Status.Image.Digest != signed.DigestStr() || s.Status.Image.Signers[0] != "signed-"+ns+"/release-key" || s.Status.Image.Attestations[0] != "https://slsa.dev/provenance/v1" {
		t.Fatalf("status.image = %+v", s.Status.Image)
	}
	eventually(t, 30*time.Second, func() error {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(bad), bad); err != nil {
			return err
		}
		v, st := condition(bad, mcpv1alpha1.ConditionVerified), condition(bad, mcpv1alpha1.ConditionStalled)
		if v == nil || v.Status != metav1.ConditionFalse || v.Reason != "NoSignature" || st == nil || st.Reason != controllers.ReasonVerificationFailed {
			return fmt.Errorf("conditions: %+v", bad.Status.Conditions)
		}
		return nil
	})
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(bad), &appsv1.Deployment{}); !apierrors.IsNotFound(err) {
		t.Fatalf("an unverified image got a Deployment: %v", err)
	}
}

// TestWholeInternetEgressIsAccepted: ::/0 and 0.0.0.0/0 get every protected range as an except entry,
// in a spelling the API server accepts (it refuses ::ffff:0.0.0.0/96 inside an IPv6 cidr).
func TestWholeInternetEgressIsAccepted(t *testing.T) {
	ctx := context.Background()
	ns := restrictedNamespace(t)
	s := newServer(ns, "internet")
	s.Spec.Egress = []mcpv1alpha1.EgressRule{
		{CIDR: ptr.To("::/0"), Ports: []mcpv1alpha1.EgressPort{{Port: 443}}},
		{CIDR: ptr.To("0.0.0.0/0"), Ports: []mcpv1alpha1.EgressPort{{Port: 443}}},
	}
	if err := k8s.Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	waitReady(t, client.ObjectKeyFromObject(s))
	np := &networkingv1.NetworkPolicy{}
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(s), np); err != nil {
		t.Fatal(err)
	}
	except := strings.Join(np.Spec.Egress[1].To[0].IPBlock.Except, " ")
	for _, want := range []string{"::fffe:0:0/95", "64:ff9b::a9fe:0/112", "2002:a9fe::/32", "::a9fe:0/112"} {
		if !strings.Contains(except, want) {
			t.Errorf("::/0 excepts %s, want %s among them", except, want)
		}
	}
}

// TestForeignNetworkPolicyIsReported: NetworkPolicies add up, so a policy the operator did not write that
// selects the server's pods and allows traffic reopens the fence. (The webhook refuses it; this suite
// runs without webhooks, as when one is created while the webhook is down.) The server then says
// EgressEnforced=False naming the policy, until the policy goes.
func TestForeignNetworkPolicyIsReported(t *testing.T) {
	ctx := context.Background()
	ns := restrictedNamespace(t)
	if err := k8s.Create(ctx, newServer(ns, "files")); err != nil {
		t.Fatal(err)
	}
	key := client.ObjectKey{Namespace: ns, Name: "files"}
	waitReady(t, key)
	open := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "tenant-open", Namespace: ns},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{controllers.LabelServer: "files"}},
			Ingress:     []networkingv1.NetworkPolicyIngressRule{{}},
			Egress:      []networkingv1.NetworkPolicyEgressRule{{}},
		},
	}
	deny := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "tenant-deny", Namespace: ns},
		Spec:       networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}},
	}
	for _, np := range []*networkingv1.NetworkPolicy{open, deny} {
		if err := k8s.Create(ctx, np); err != nil {
			t.Fatal(err)
		}
	}
	egress := func(want metav1.ConditionStatus, msg string) {
		t.Helper()
		eventually(t, 15*time.Second, func() error {
			s := &mcpv1alpha1.MCPServer{}
			if err := k8s.Get(ctx, key, s); err != nil {
				return err
			}
			c := condition(s, mcpv1alpha1.ConditionEgressEnforced)
			if c == nil || c.Status != want || !strings.Contains(c.Message, msg) {
				return fmt.Errorf("EgressEnforced = %+v, want %s with %q", c, want, msg)
			}
			return nil
		})
	}
	egress(metav1.ConditionFalse, "NetworkPolicy "+ns+"/tenant-open was not written by the operator")
	s := &mcpv1alpha1.MCPServer{}
	if err := k8s.Get(ctx, key, s); err != nil {
		t.Fatal(err)
	}
	if c := condition(s, mcpv1alpha1.ConditionEgressEnforced); strings.Contains(c.Message, "tenant-deny") || c.Reason != controllers.ReasonFenceWidened {
		t.Errorf("EgressEnforced = %+v: want reason %s naming only tenant-open", c, controllers.ReasonFenceWidened)
	}
	if err := k8s.Delete(ctx, open); err != nil {
		t.Fatal(err)
	}
	egress(metav1.ConditionTrue, "every egress entry is enforced")
}
