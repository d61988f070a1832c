package controllers_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
	"github.com/mcp-warden/mcp-warden/controllers"
	"github.com/mcp-warden/mcp-warden/policy/sandbox"
)

// TestPodLayoutAsStored: the pods the API server (v1.37) admits at Pod Security "restricted" for both
// transports have the gateway as a native sidecar (initContainers[0], restartPolicy Always) as
// sandbox.GatewayUID, the server as sandbox.UID with spec.env, the gateway's volumes in the gateway
// container only, and no shared PID namespace; the operator's drift check sees nothing to revert.
func TestPodLayoutAsStored(t *testing.T) {
	ctx := context.Background()
	ns := restrictedNamespace(t)
	for _, transport := range []mcpv1alpha1.Transport{mcpv1alpha1.TransportStreamableHTTP, mcpv1alpha1.TransportStdio} {
		s := newServer(ns, "layout-"+string(transport))
		s.Spec.Transport, s.Spec.Command = transport, []string{"/usr/bin/mcp-files"}
		s.Spec.Env = []mcpv1alpha1.EnvVar{{Name: "SERVER_ONLY", Value: ptr.To("x")}}
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
		if v := sandbox.Violations(&pod); len(v) > 0 || ptr.Deref(pod.ShareProcessNamespace, false) {
			t.Fatalf("%s: sandbox %v, shareProcessNamespace %v", transport, v, pod.ShareProcessNamespace)
		}
		gw, srv := pod.InitContainers[0], pod.Containers[0]
		if gw.Name != "gateway" || ptr.Deref(gw.RestartPolicy, "") != corev1.ContainerRestartPolicyAlways || gw.StartupProbe == nil {
			t.Fatalf("%s: initContainers[0] = %s, restartPolicy %v, startupProbe %v", transport, gw.Name, gw.RestartPolicy, gw.StartupProbe)
		}
		if *gw.SecurityContext.RunAsUser != sandbox.GatewayUID || *srv.SecurityContext.RunAsUser != sandbox.UID || len(gw.Env) != 1 || gw.Env[0].Name != "MCP_WARDEN_POD_IP" || gw.Env[0].ValueFrom == nil || srv.Env[0].Name != "SERVER_ONLY" {
			t.Fatalf("%s: gateway uid %d env %v, server uid %d env %v", transport, *gw.SecurityContext.RunAsUser, gw.Env, *srv.SecurityContext.RunAsUser, srv.Env)
		}
		for _, m := range srv.VolumeMounts {
			if m.Name == "gateway" || m.Name == "gateway-state" {
				t.Fatalf("%s: the server container mounts %s", transport, m.Name)
			}
		}
	}
	evs, err := clients.EventsV1().Events(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs.Items {
		if e.Reason == controllers.ReasonDriftReverted {
			t.Fatalf("the operator reverted its own layout as drift: %s", e.Note)
		}
	}
}
