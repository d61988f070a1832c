package desired

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
	"github.com/mcp-warden/mcp-warden/policy/gatewayconfig"
)

// CertIssuer is the cert-manager issuer the gateways' Certificates name, where the operator leaves
// issuance to cert-manager.
type CertIssuer struct {
	// Kind is Issuer (in each server's namespace) or ClusterIssuer.
	Kind string
	// Name is the issuer's name.
	Name string
}

// CertificateGVK is cert-manager's Certificate.
var CertificateGVK = schema.GroupVersionKind{Group: "cert-manager.io", Version: "v1", Kind: "Certificate"}

// Certificate lifetimes asked of cert-manager: as the operator's own (30 days, renewed at day 20).
const (
	certManagerDuration    = "720h"
	certManagerRenewBefore = "240h"
)

// Certificate is the cert-manager Certificate for the gateway's Service names (gatewayconfig.DNSNames),
// issued by o.CertIssuer into the Secret gatewayconfig.TLSSecretName, which carries the operator's
// labels (so the operator sees it) and is mounted by the gateway alone. Nil without a CertIssuer.
func Certificate(s *mcpv1alpha1.MCPServer, o Options) *unstructured.Unstructured {
	if o.CertIssuer == nil {
		return nil
	}
	names := gatewayconfig.DNSNames(s, o.ClusterDomain)
	dns := make([]any, len(names))
	for i, n := range names {
		dns[i] = n
	}
	labels := map[string]any{}
	for k, v := range objectLabels(s) {
		labels[k] = v
	}
	u := &unstructured.Unstructured{Object: map[string]any{
		"spec": map[string]any{
			"secretName":     gatewayconfig.TLSSecretName(s),
			"secretTemplate": map[string]any{"labels": labels},
			"commonName":     names[0],
			"dnsNames":       dns,
			"duration":       certManagerDuration,
			"renewBefore":    certManagerRenewBefore,
			// the gateway serves with it and presents it to the other replicas (mutual TLS on the peer port)
			"usages":     []any{"digital signature", "server auth", "client auth"},
			"privateKey": map[string]any{"algorithm": "ECDSA", "size": int64(256), "rotationPolicy": "Always"},
			// the key and chain in one file, which the gateway reads as its credential bundle
			"additionalOutputFormats": []any{map[string]any{"type": "CombinedPEM"}},
			"issuerRef":               map[string]any{"group": "cert-manager.io", "kind": o.CertIssuer.Kind, "name": o.CertIssuer.Name},
		},
	}}
	u.SetGroupVersionKind(CertificateGVK)
	u.SetNamespace(s.Namespace)
	u.SetName(gatewayconfig.TLSSecretName(s))
	u.SetLabels(objectLabels(s))
	u.SetOwnerReferences([]metav1.OwnerReference{OwnerReference(s)})
	return u
}

// CABundleConfigMap is the namespace's ConfigMap gatewayconfig.CABundleConfigMap, whose key
// gatewayconfig.CABundleKey holds the CA certificates the gateways' serving certificates chain to, for
// clients to mount. It is the one object here without an owner: it belongs to no one server (it stays
// when the last one goes; it holds public certificates only).
func CABundleConfigMap(namespace string, bundle []byte) *corev1.ConfigMap {
	return &corev1.ConfigMap{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: gatewayconfig.CABundleConfigMap, Labels: map[string]string{LabelManagedBy: managerName}},
		Data:       map[string]string{gatewayconfig.CABundleKey: string(bundle)},
	}
}
