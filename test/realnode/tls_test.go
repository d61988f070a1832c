package realnode

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/mcp-warden/mcp-warden/controllers"
	"github.com/mcp-warden/mcp-warden/gatewayconfig"
	"github.com/mcp-warden/mcp-warden/sandbox"
)

// gatewayURL is the https URL of the pod's gateway (by pod IP) and the probe mcp flags that trust the
// CA bundle the operator published in the namespace and verify the certificate for the server's
// Service name.
func gatewayURL(t *testing.T, ns, name string, pod *corev1.Pod) (string, []string) {
	t.Helper()
	cm := &corev1.ConfigMap{}
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: gatewayconfig.CABundleConfigMap}, cm); err != nil {
		t.Fatalf("the published CA bundle: %v", err)
	}
	url := fmt.Sprintf("https://%s:%d/mcp", pod.Status.PodIP, controllers.GatewayPort)
	return url, []string{"--ca-pem", cm.Data[gatewayconfig.CABundleKey], "--server-name", name + "." + ns + ".svc"}
}

// probeMCP is the probe mcp command line with the trust flags first.
func probeMCP(trust []string, args ...string) []string {
	return append(append([]string{"/probe", "mcp"}, trust...), args...)
}

// TestTLSClientTrustsPublishedCA: a go-sdk MCP client in a client pod that mounts the namespace's
// mcp-warden-ca ConfigMap connects to the gateway over HTTPS, verifying its certificate for the
// Service name, and lists the tools its token grants; the same client trusting only the system roots,
// or verifying another name, fails verification and gets nothing; plaintext HTTP to the port is not
// served.
func TestTLSClientTrustsPublishedCA(t *testing.T) {
	f := server(t)
	ctx := context.Background()
	vols, mounts := sandbox.Volumes()
	vols = append(vols, corev1.Volume{Name: "ca", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
		LocalObjectReference: corev1.LocalObjectReference{Name: gatewayconfig.CABundleConfigMap}}}})
	mounts = append(mounts, corev1.VolumeMount{Name: "ca", MountPath: "/etc/mcp-ca", ReadOnly: true})
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "tls-agent", Namespace: f.ns, Labels: map[string]string{"app": "agent"}},
		Spec: corev1.PodSpec{
			AutomountServiceAccountToken: ptrTo(false), SecurityContext: sandbox.PodSecurityContext(), Volumes: vols,
			TerminationGracePeriodSeconds: ptrTo(int64(1)),
			Containers: []corev1.Container{{Name: "probe", Image: probeImage, Args: []string{"sleep"},
				SecurityContext: sandbox.ContainerSecurityContext(), VolumeMounts: mounts}},
		},
	}
	if err := k8s.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), p) })
	agent := waitRunning(t, f.ns, p.Name, 60*time.Second)
	url := fmt.Sprintf("https://%s:%d/mcp", f.pod.Status.PodIP, controllers.GatewayPort)
	name := "probe." + f.ns + ".svc"
	run := func(args ...string) mcpResult {
		t.Helper()
		out := execIn(t, f.ns, agent.Name, "probe", append([]string{"/probe", "mcp"}, args...)...)
		var r mcpResult
		if err := json.Unmarshal(out, &r); err != nil {
			t.Fatalf("probe mcp: %v: %s", err, out)
		}
		return r
	}
	tok := token(t, f)
	// The ingress fence learns a new client pod's address within seconds (kube-router's sync).
	var trusted mcpResult
	deadline := time.Now().Add(30 * time.Second)
	for {
		trusted = run("--ca", "/etc/mcp-ca/ca.crt", "--server-name", name, url, tok)
		if trusted.ConnectError == "" && trusted.Status == 200 && len(trusted.Tools) > 0 {
			break
		}
		if time.Now().After(deadline) || !strings.Contains(trusted.ConnectError, "connection refused") {
			t.Fatalf("a client trusting the published CA: %+v", trusted)
		}
		time.Sleep(time.Second)
	}
	t.Logf("client trusting mcp-warden-ca over https: tools %v", trusted.Tools)

	untrusted := run("--server-name", name, url, tok)
	if len(untrusted.Tools) != 0 || !strings.Contains(untrusted.ConnectError, "certificate signed by unknown authority") || untrusted.Status != -1 {
		t.Errorf("a client trusting only the system roots must fail verification: %+v", untrusted)
	}
	wrongName := run("--ca", "/etc/mcp-ca/ca.crt", "--server-name", "other."+f.ns+".svc", url, tok)
	if len(wrongName.Tools) != 0 || !strings.Contains(wrongName.ConnectError, "certificate is valid for") {
		t.Errorf("a client verifying another server's name must fail: %+v", wrongName)
	}
	plain := run(strings.Replace(url, "https://", "http://", 1), tok)
	if len(plain.Tools) != 0 || plain.Status == 200 {
		t.Errorf("plaintext HTTP to the gateway port must not be served: %+v", plain)
	}
	t.Logf("untrusted: %s; wrong name: %s; plaintext: status %d", untrusted.ConnectError, wrongName.ConnectError, plain.Status)
}
