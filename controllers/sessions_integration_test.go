package controllers_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
	"github.com/mcp-warden/mcp-warden/gateway"
)

// TestSessionsNeedNoKeyAndSessionsKept: a server with three replicas gets no session key at all (no
// Secret, no Secret volume: each replica keeps the handles of the ids it issues, and the replicas
// authenticate each other by mutual TLS with their pod certificates); each gateway learns its pod's IP
// for the ids it issues and is configured to verify its peers against the CA bundle for the Service's
// name; the NetworkPolicy opens the peer port to the server's own pods only; the headless Service
// <name>-peers of the server's ready pods, which the gateways resolve (sessions.peersDNS) for the live
// replicas, exists at 3 replicas and goes away at 1; and SessionsKept says that every principal's
// sessions are routed to its home replica, the tool-chain rule included (before: ChainRulePerReplica).
func TestSessionsNeedNoKeyAndSessionsKept(t *testing.T) {
	ctx := context.Background()
	ns := restrictedNamespace(t)
	s := newServer(ns, "sessions")
	s.Spec.Replicas = ptr.To(int32(3))
	if err := k8s.Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	key := client.ObjectKeyFromObject(s)
	got := waitReady(t, key)
	if c := condition(got, mcpv1alpha1.ConditionSessionsKept); c == nil || c.Status != metav1.ConditionTrue || c.Reason != "RoutedToPrincipalHome" || !strings.Contains(c.Message, "peer port (8445)") || !strings.Contains(c.Message, "sessions-peers") {
		t.Fatalf("SessionsKept with 3 replicas: %+v", c)
	}

	noSessionKey(ctx, t, ns)

	peers, main := &corev1.Service{}, &corev1.Service{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "sessions-peers"}, peers); err != nil {
		t.Fatalf("the replicas' headless Service at 3 replicas: %v", err)
	}
	if err := k8s.Get(ctx, key, main); err != nil {
		t.Fatal(err)
	}
	if sp := peers.Spec; sp.ClusterIP != corev1.ClusterIPNone || sp.PublishNotReadyAddresses || len(sp.Selector) == 0 || fmt.Sprint(sp.Selector) != fmt.Sprint(main.Spec.Selector) ||
		len(sp.Ports) != 1 || sp.Ports[0].Port != 8445 || !metav1.IsControlledBy(peers, got) {
		t.Fatalf("the replicas' headless Service: %+v %+v", peers.Spec, peers.OwnerReferences)
	}

	dep := &appsv1.Deployment{}
	if err := k8s.Get(ctx, key, dep); err != nil {
		t.Fatal(err)
	}
	peerPodLayout(t, &dep.Spec.Template.Spec)

	peerPortOwnPodsOnly(ctx, t, key)

	// A spec change that rolls the pods.
	hash := dep.Spec.Template.Annotations["mcp.warden.dev/gateway-config"]
	if err := k8s.Get(ctx, key, got); err != nil {
		t.Fatal(err)
	}
	got.Spec.Gateway.PrivateDataTools = []string{"read_file"}
	got.Spec.Gateway.ExternalWriteTools = []string{"send_email"}
	if err := k8s.Update(ctx, got); err != nil {
		t.Fatal(err)
	}
	got = waitReady(t, key)
	if c := condition(got, mcpv1alpha1.ConditionSessionsKept); c == nil || c.Status != metav1.ConditionTrue || c.Reason != "RoutedToPrincipalHome" || !strings.Contains(c.Message, "tool-chain rule") {
		t.Fatalf("SessionsKept with the chain rule at 3 replicas: %+v", c)
	}
	if err := k8s.Get(ctx, key, dep); err != nil {
		t.Fatal(err)
	}
	if dep.Spec.Template.Annotations["mcp.warden.dev/gateway-config"] == hash {
		t.Fatal("the chain labels did not change the gateway configuration")
	}

	// One replica: nothing to route.
	got.Spec.Replicas = ptr.To(int32(1))
	if err := k8s.Update(ctx, got); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, func() error {
		if err := k8s.Get(ctx, key, got); err != nil {
			return err
		}
		if c := condition(got, mcpv1alpha1.ConditionSessionsKept); got.Status.ObservedGeneration != got.Generation || c == nil || c.Status != metav1.ConditionTrue || c.Reason != "SingleReplica" {
			return fmt.Errorf("SessionsKept with 1 replica: %+v", c)
		}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "sessions-peers"}, &corev1.Service{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("the replicas' headless Service at 1 replica: %w, want not found", err)
		}
		return nil
	})
}

// TestPlaintextReplicasDoNotRelay: with spec.gateway.tls.mode Disabled (allowed by a policy) there is
// no mutual TLS to authenticate a relay, so the gateways get no peer port (configuration, container
// port, NetworkPolicy rules), the Service keeps a client on one replica by its address, and
// SessionsKept says so at several replicas (NotRelayedWithoutTLS), naming the fixes. Before, the
// replicas relayed to each other in plaintext, authenticated by a key in a Secret.
func TestPlaintextReplicasDoNotRelay(t *testing.T) {
	ctx := context.Background()
	ns := restrictedNamespace(t)
	pol := &mcpv1alpha1.MCPServerPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "mesh-" + ns},
		Spec: mcpv1alpha1.MCPServerPolicySpec{
			NamespaceSelector: metav1.LabelSelector{MatchLabels: map[string]string{corev1.LabelMetadataName: ns}},
			Gateway:           mcpv1alpha1.GatewayCeiling{AllowPlaintext: true},
		},
	}
	if err := k8s.Create(ctx, pol); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(ctx, pol) })
	s := newServer(ns, "plain")
	s.Spec.Gateway.TLS.Mode = mcpv1alpha1.TLSDisabled
	s.Spec.Replicas = ptr.To(int32(3))
	if err := k8s.Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	key := client.ObjectKeyFromObject(s)
	var got *mcpv1alpha1.MCPServer
	eventually(t, 60*time.Second, func() error {
		got = &mcpv1alpha1.MCPServer{}
		if err := k8s.Get(ctx, key, got); err != nil {
			return err
		}
		if c := condition(got, mcpv1alpha1.ConditionSessionsKept); c == nil || c.Status != metav1.ConditionFalse || c.Reason != "NotRelayedWithoutTLS" ||
			!strings.Contains(c.Message, "sessionAffinity ClientIP") || !strings.Contains(c.Message, "spec.replicas") {
			return fmt.Errorf("SessionsKept for 3 plaintext replicas: %+v", c)
		}
		return nil
	})
	cm := &corev1.ConfigMap{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "plain-gateway"}, cm); err != nil {
		t.Fatal(err)
	}
	cfg := &gateway.Config{}
	if err := json.Unmarshal([]byte(cm.Data["gateway.json"]), cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Sessions.PeerListen != "" || cfg.Sessions.PeersDNS != "" {
		t.Fatalf("a plaintext gateway serves a peer port: %+v", cfg.Sessions)
	}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "plain-peers"}, &corev1.Service{}); !apierrors.IsNotFound(err) {
		t.Fatalf("the replicas' headless Service of plaintext replicas (which do not relay): %v, want not found", err)
	}
	svc := &corev1.Service{}
	if err := k8s.Get(ctx, key, svc); err != nil {
		t.Fatal(err)
	}
	if svc.Spec.SessionAffinity != corev1.ServiceAffinityClientIP {
		t.Fatalf("Service sessionAffinity %q, want ClientIP", svc.Spec.SessionAffinity)
	}
	noPeerPort(ctx, t, key)
}

// noSessionKey: neither a Secret of its own nor a line of the gateway's ConfigMap holds a session
// key, and the gateway is configured to verify its peers against the CA bundle for the Service's name.
func noSessionKey(ctx context.Context, t *testing.T, ns string) {
	t.Helper()
	cm := &corev1.ConfigMap{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "sessions-gateway"}, cm); err != nil {
		t.Fatal(err)
	}
	// no key anywhere: neither a Secret of its own nor a line of the ConfigMap
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "sessions-gateway-session"}, &corev1.Secret{}); !apierrors.IsNotFound(err) {
		t.Fatalf("the session key Secret: %v, want not found (session ids need no shared key)", err)
	}
	if strings.Contains(cm.Data["gateway.json"], "mcp-warden-session") {
		t.Fatalf("the gateway is configured with a session key: %s", cm.Data["gateway.json"])
	}
	cfg := &gateway.Config{}
	if err := json.Unmarshal([]byte(cm.Data["gateway.json"]), cfg); err != nil {
		t.Fatal(err)
	}
	if want := (gateway.SessionsConfig{PeerListen: ":8445", PeerCAFile: "/etc/mcp-warden-tls/ca.crt", PeerServerName: "sessions." + ns + ".svc.cluster.local",
		PeersDNS: "sessions-peers." + ns + ".svc.cluster.local."}); fmt.Sprint(cfg.Sessions) != fmt.Sprint(want) {
		t.Fatalf("gateway sessions config: %+v, want %+v", cfg.Sessions, want)
	}
}

// peerPodLayout: the gateway learns its pod's IP and declares the peer port; the pod mounts no Secret
// and the server's containers neither the gateway's ConfigMap nor its certificate.
func peerPodLayout(t *testing.T, pod *corev1.PodSpec) {
	t.Helper()
	gw := pod.InitContainers[0]
	hasPodIP, hasPeerPort := false, false
	for _, e := range gw.Env {
		hasPodIP = hasPodIP || (e.Name == "MCP_WARDEN_POD_IP" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "status.podIP")
	}
	for _, p := range gw.Ports {
		hasPeerPort = hasPeerPort || (p.Name == "peer" && p.ContainerPort == 8445)
	}
	if !hasPodIP || !hasPeerPort {
		t.Fatalf("gateway container: pod IP env %v, peer port %v: %+v %+v", hasPodIP, hasPeerPort, gw.Env, gw.Ports)
	}
	for _, v := range pod.Volumes {
		if v.Secret != nil {
			t.Fatalf("the pod mounts Secret %s (volume %s); with pod certificates and no session key it needs none", v.Secret.SecretName, v.Name)
		}
	}
	for _, c := range pod.Containers {
		for _, m := range c.VolumeMounts {
			if m.Name == "gateway" || m.Name == "gateway-tls" {
				t.Fatalf("container %s mounts the gateway's ConfigMap or its certificate", c.Name)
			}
		}
	}
}

// peerPortOwnPodsOnly: the NetworkPolicy opens the peer port, in and out, to the server's own pods
// only, in one rule each way.
func peerPortOwnPodsOnly(ctx context.Context, t *testing.T, key client.ObjectKey) {
	t.Helper()
	np := &networkingv1.NetworkPolicy{}
	if err := k8s.Get(ctx, key, np); err != nil {
		t.Fatal(err)
	}
	ownPods := func(peers []networkingv1.NetworkPolicyPeer, ports []networkingv1.NetworkPolicyPort) bool {
		return len(peers) == 1 && peers[0].NamespaceSelector == nil && peers[0].IPBlock == nil && peers[0].PodSelector != nil &&
			fmt.Sprint(peers[0].PodSelector.MatchLabels) == fmt.Sprint(np.Spec.PodSelector.MatchLabels) &&
			len(ports) == 1 && ports[0].Port != nil && ports[0].Port.IntValue() == 8445
	}
	in, out := 0, 0
	for _, r := range np.Spec.Ingress {
		for _, p := range r.Ports {
			if p.Port != nil && p.Port.IntValue() == 8445 {
				if !ownPods(r.From, r.Ports) {
					t.Fatalf("ingress to the peer port is open beyond the server's own pods: %+v", r)
				}
				in++
			}
		}
	}
	for _, r := range np.Spec.Egress {
		for _, p := range r.Ports {
			if p.Port != nil && p.Port.IntValue() == 8445 {
				if !ownPods(r.To, r.Ports) {
					t.Fatalf("egress to port 8445 is open beyond the server's own pods: %+v", r)
				}
				out++
			}
		}
	}
	if in != 1 || out != 1 {
		t.Fatalf("peer port rules: %d ingress, %d egress; want one each", in, out)
	}
}

// noPeerPort: a plaintext gateway declares no peer port and the NetworkPolicy opens none, in or out.
func noPeerPort(ctx context.Context, t *testing.T, key client.ObjectKey) {
	t.Helper()
	dep := &appsv1.Deployment{}
	if err := k8s.Get(ctx, key, dep); err != nil {
		t.Fatal(err)
	}
	for _, p := range dep.Spec.Template.Spec.InitContainers[0].Ports {
		if p.ContainerPort == 8445 {
			t.Fatalf("a plaintext gateway declares the peer port: %+v", p)
		}
	}
	np := &networkingv1.NetworkPolicy{}
	if err := k8s.Get(ctx, key, np); err != nil {
		t.Fatal(err)
	}
	for _, r := range np.Spec.Ingress {
		for _, p := range r.Ports {
			if p.Port != nil && p.Port.IntValue() == 8445 {
				t.Fatalf("the NetworkPolicy opens the peer port of plaintext gateways: %+v", r)
			}
		}
	}
	for _, r := range np.Spec.Egress {
		for _, p := range r.Ports {
			if p.Port != nil && p.Port.IntValue() == 8445 {
				t.Fatalf("the NetworkPolicy opens egress to the peer port of plaintext gateways: %+v", r)
			}
		}
	}
}
