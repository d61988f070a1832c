package realnode

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
	"github.com/mcp-warden/mcp-warden/internal/localcluster"
)

// This file sorts first so that its tests run before TestOperatorPodOnRealNode, whose second manager
// (the pod's) reconciles the shared fixture too while it runs.

// TestGatewayValidatesTokensWithDeliveredKeys: the gateway in the server's pod verifies tokens with
// the issuer's keys the operator delivered (jwks.json in its ConfigMap) while the pod, the server
// process included, still cannot reach the issuer. A go-sdk client from the listed pod with a valid
// token lists only the tools its scope grants and calls one; a tool outside the scope is refused. Then
// the issuer rotates its key: the new key is accepted in the pod within the stated bound (the operator's
// refresh plus the kubelet's ConfigMap sync), and a token signed with the old key is refused.
func TestGatewayValidatesTokensWithDeliveredKeys(t *testing.T) {
	f := server(t)
	ctx := context.Background()
	issuerAddr := localcluster.PrivateHostIP + ":443"
	if got := dialFrom(t, f.ns, f.pod.Name, "server", issuerAddr); !blocked(got[issuerAddr]) {
		t.Fatalf("the server's pod reaches the issuer %s: %s; the fence must not open it", issuerAddr, got[issuerAddr])
	}
	if got := dialFrom(t, f.ns, f.agent.Name, "probe", issuerAddr); got[issuerAddr] != "connected" {
		t.Fatalf("control: the issuer %s must be reachable from an unselected pod: %s", issuerAddr, got[issuerAddr])
	}
	s := &mcpv1alpha1.MCPServer{}
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: "probe"}, s); err != nil {
			return false, nil
		}
		c := meta.FindStatusCondition(s.Status.Conditions, mcpv1alpha1.ConditionIssuerKeysDelivered)
		r := meta.FindStatusCondition(s.Status.Conditions, mcpv1alpha1.ConditionReady)
		return c != nil && c.Status == metav1.ConditionTrue && r != nil && r.Status == metav1.ConditionTrue, nil
	})
	if err != nil {
		t.Fatalf("IssuerKeysDelivered and Ready: %+v", s.Status.Conditions)
	}
	if issuer.Fetches() == 0 {
		t.Fatal("the operator never fetched the issuer's keys")
	}
	url, trust := gatewayURL(t, f.ns, "probe", f.pod)
	call := func(tok string, tools ...string) mcpResult {
		t.Helper()
		out := execIn(t, f.ns, f.agent.Name, "probe", probeMCP(trust, append([]string{url, tok}, tools...)...)...)
		var r mcpResult
		if err := json.Unmarshal(out, &r); err != nil {
			t.Fatalf("probe mcp: %v: %s", err, out)
		}
		return r
	}
	r := call(token(t, f), "list_directory", `write_file={"path":"x","content":"y"}`)
	if r.Status != 200 || r.ConnectError != "" {
		t.Fatalf("a valid token must be accepted: %+v", r)
	}
	if strings.Join(r.Tools, ",") != "list_directory,read_file" {
		t.Errorf("scope files:read lists %v, want only list_directory and read_file", r.Tools)
	}
	if strings.HasPrefix(r.Calls["list_directory"], "error:") || r.Calls["list_directory"] == "" {
		t.Errorf("list_directory with scope files:read: %q, want the listing", r.Calls["list_directory"])
	}
	if !strings.HasPrefix(r.Calls["write_file"], "error:") {
		t.Errorf("write_file is outside scope files:read and must be refused: %q", r.Calls["write_file"])
	}
	t.Logf("valid token: status %d, tools %v, calls %v", r.Status, r.Tools, r.Calls)

	// Rotation: a token signed with the old key, not yet seen by the gateway, is refused once the new
	// key is delivered; a token with the new key is accepted.
	oldTok := token(t, f)
	issuer.Rotate()
	rotated := time.Now()
	var newOK time.Duration
	err = wait.PollUntilContextTimeout(ctx, time.Second, 90*time.Second, true, func(context.Context) (bool, error) {
		if call(token(t, f)).Status == 200 {
			newOK = time.Since(rotated)
			return true, nil
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("a token signed with the rotated-in key is still refused 90s after the rotation")
	}
	if got := call(oldTok); got.Status == 200 {
		t.Errorf("a token signed with the rotated-out key was accepted after the rotation: %+v", got)
	}
	fmt.Printf("real node: issuer key rotation -> new key accepted by the gateway in the pod after %s (operator refresh 2s, kubelet sync 5s)\n", newOK.Round(100*time.Millisecond))
}
