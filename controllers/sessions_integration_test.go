package controllers_test

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
	"github.com/mcp-warden/mcp-warden/gateway"
)

// TestSessionKeyDeliveredAndSessionsKept: a server with three replicas gets one key that seals its
// gateways' session ids, in a Secret of its own, not the ConfigMap (mounted by the gateway container alone), kept
// across spec changes; each gateway learns its pod's IP for the ids it issues; the NetworkPolicy opens
// the peer port to the server's own pods only; and SessionsKept says that sessions are routed to the
// replica that holds them, turning False when the tool-chain rule cannot follow a principal across
// replicas.
func TestSessionKeyDeliveredAndSessionsKept(t *testing.T) {
	ctx := context.Background()
	ns := restrictedNamespace(t)
	s := newServer(ns, "sessions")
	s.Spec.Replicas = ptr.To(int32(3))
	if err := k8s.Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	key := client.ObjectKeyFromObject(s)
	got := waitReady(t, key)
	if c := condition(got, mcpv1alpha1.ConditionSessionsKept); c == nil || c.Status != metav1.ConditionTrue || c.Reason != "RoutedToOwner" || !strings.Contains(c.Message, "peer port (8445)") {
		t.Fatalf("SessionsKept with 3 replicas: %+v", c)
	}

	cm := &corev1.ConfigMap{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "sessions-gateway"}, cm); err != nil {
		t.Fatal(err)
	}
	// the key is in a Secret of its own: the ConfigMap, which namespace view reads, does not carry it
	if _, ok := cm.Data["session.key"]; ok {
		t.Fatal("the gateway's ConfigMap carries session.key: anyone with namespace view could seal session ids and relay tokens")
	}
	sec := &corev1.Secret{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "sessions-gateway-session"}, sec); err != nil {
		t.Fatalf("the session key Secret: %v", err)
	}
	if !metav1.IsControlledBy(sec, got) || sec.Labels["app.kubernetes.io/managed-by"] == "" {
		t.Fatalf("the session key Secret is not the server's own, labelled child: owners %+v, labels %v", sec.OwnerReferences, sec.Labels)
	}
	sessionKey := string(sec.Data["session.key"])
	if b, err := hex.DecodeString(sessionKey); err != nil || len(b) != 32 {
		t.Fatalf("session.key is not 32 bytes in hex: %q", sessionKey)
	}
	cfg := &gateway.Config{}
	if err := json.Unmarshal([]byte(cm.Data["gateway.json"]), cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Sessions.KeyPath != "/etc/mcp-warden-session/session.key" || cfg.Sessions.PeerListen != ":8445" || cfg.Sessions.Advertise != "" {
		t.Fatalf("gateway sessions config: %+v", cfg.Sessions)
	}

	dep := &appsv1.Deployment{}
	if err := k8s.Get(ctx, key, dep); err != nil {
		t.Fatal(err)
	}
	pod := dep.Spec.Template.Spec
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
	sessionVolume := ""
	for _, v := range pod.Volumes {
		if v.Secret != nil && v.Secret.SecretName == "sessions-gateway-session" {
			sessionVolume = v.Name
		}
	}
	mountsKey := false
	for _, m := range gw.VolumeMounts {
		mountsKey = mountsKey || (m.Name == sessionVolume && m.MountPath == "/etc/mcp-warden-session")
	}
	if sessionVolume == "" || !mountsKey {
		t.Fatalf("the gateway container does not mount the session key Secret: volumes %+v, mounts %+v", pod.Volumes, gw.VolumeMounts)
	}
	for _, c := range pod.Containers {
		for _, m := range c.VolumeMounts {
			if m.Name == "gateway" || m.Name == sessionVolume {
				t.Fatalf("container %s mounts the gateway's ConfigMap or the session key Secret", c.Name)
			}
		}
	}

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

	// A spec change that rolls the pods keeps the key: replicas old and new seal alike.
	hash := dep.Spec.Template.Annotations["mcp.warden.dev/gateway-config"]
	if err := k8s.Get(ctx, key, got); err != nil {
		t.Fatal(err)
	}
	got.Spec.Gateway.PrivateDataTools = []string{"read_file"}
	got.Spec.Gateway.ExternalWriteTools = []string{"send_email"}
	if err := k8s.Update(ctx, got); err != nil {
		t.Fatal(err)
	}
	got = waitReady(t, key) // SessionsKept=False only warns
	if c := condition(got, mcpv1alpha1.ConditionSessionsKept); c == nil || c.Status != metav1.ConditionFalse || c.Reason != "ChainRulePerReplica" {
		t.Fatalf("SessionsKept with the chain rule at 3 replicas: %+v", c)
	}
	if err := k8s.Get(ctx, key, dep); err != nil {
		t.Fatal(err)
	}
	if dep.Spec.Template.Annotations["mcp.warden.dev/gateway-config"] == hash {
		t.Fatal("the chain labels did not change the gateway configuration")
	}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "sessions-gateway-session"}, sec); err != nil {
		t.Fatal(err)
	}
	if string(sec.Data["session.key"]) != sessionKey {
		t.Fatal("the session key changed with the spec: ids the old replicas issued would not open on the new ones")
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
		return nil
	})
}
