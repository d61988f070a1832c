package controllers

import (
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
	"github.com/mcp-warden/mcp-warden/controllers/desired"
)

// The server the reconciler's unit tests build children of (the builders' tests have the same one).
const testImage = "ghcr.io/acme/files@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func testServer() *mcpv1alpha1.MCPServer {
	return &mcpv1alpha1.MCPServer{
		ObjectMeta: metav1.ObjectMeta{Name: "files", Namespace: "tools"},
		Spec: mcpv1alpha1.MCPServerSpec{
			Image:   testImage,
			Port:    8080,
			Gateway: mcpv1alpha1.GatewaySpec{Auth: mcpv1alpha1.GatewayAuth{Issuer: "https://auth.example.com"}, Scopes: []mcpv1alpha1.ScopeGrant{{Scope: "files:read", Tools: []string{"read_file"}}}},
			Env: []mcpv1alpha1.EnvVar{
				{Name: "LOG_LEVEL", Value: ptr.To("debug")},
				{Name: "GITHUB_TOKEN", ValueFrom: &mcpv1alpha1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "gh"}, Key: "token"}}},
			},
			Clients: []mcpv1alpha1.ClientSelector{{
				NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": "agents"}},
				PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"app": "agent"}},
			}},
			Egress: []mcpv1alpha1.EgressRule{
				{CIDR: ptr.To("140.82.112.0/20"), Ports: []mcpv1alpha1.EgressPort{{Port: 443, Protocol: mcpv1alpha1.ProtocolTCP}}},
				{FQDN: ptr.To("api.github.com"), Ports: []mcpv1alpha1.EgressPort{{Port: 443}}},
			},
		},
	}
}

// testDeployment is the Deployment the operator builds for s with the default gateway image.
func testDeployment(s *mcpv1alpha1.MCPServer, configHash string) *appsv1.Deployment {
	return desired.Deployment(s, desired.Options{GatewayImage: DefaultGatewayImage}, configHash)
}
