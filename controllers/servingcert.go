package controllers

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
	"github.com/mcp-warden/mcp-warden/controllers/desired"
	"github.com/mcp-warden/mcp-warden/gatewayconfig"
	"github.com/mcp-warden/mcp-warden/servingcert"
)

// CertIssuer is the cert-manager issuer the gateways' Certificates name, where the operator leaves
// issuance to cert-manager.
type CertIssuer = desired.CertIssuer

// CertificateGVK is cert-manager's Certificate.
var CertificateGVK = desired.CertificateGVK

// ReasonTLSUnavailable is the Ready reason (a stall) when the gateway's certificate cannot be issued
// because the operator has no CA.
const ReasonTLSUnavailable = "TLSUnavailable"

// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch;create;update;patch
// +kubebuilder:rbac:groups=cert-manager.io,resources=certificates,verbs=get;list;watch;create;update;patch;delete

// reconcileTLS gives the gateway its serving certificate, in the Secret <name>-gateway-tls that only
// the gateway container mounts: issued by cert-manager (a Certificate) where the operator names an
// issuer, otherwise by the operator's CA, renewed at two thirds of its life; and publishes the CA
// bundle in the namespace's ConfigMap mcp-warden-ca.
func (r *MCPServerReconciler) reconcileTLS(ctx context.Context, s *mcpv1alpha1.MCPServer, st *reconcileState) error {
	if !gatewayconfig.TLSEnabled(s) {
		return nil
	}
	names := gatewayconfig.DNSNames(s, r.ClusterDomain)
	if r.CertIssuer != nil {
		return r.reconcileCertificate(ctx, s)
	}
	if r.CA == nil {
		return stalling(ReasonTLSUnavailable, errors.New("the operator runs without a gateway CA, so it cannot issue the gateway's serving certificate; set spec.gateway.tls.mode: Disabled where a policy allows plaintext, or run the operator with its CA"))
	}
	ca, err := r.CA.Current(ctx)
	if err != nil {
		return err
	}
	if err := r.publishCABundle(ctx, s, ca.Bundle); err != nil {
		return err
	}
	live := &corev1.Secret{}
	key := types.NamespacedName{Namespace: s.Namespace, Name: gatewayconfig.TLSSecretName(s)}
	if err := r.Client.Get(ctx, key, live); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("get Secret %s: %w", key.Name, err)
	}
	var certPEM, keyPEM []byte
	if metav1.IsControlledBy(live, s) {
		certPEM, keyPEM = live.Data[corev1.TLSCertKey], live.Data[corev1.TLSPrivateKeyKey]
	}
	if why := r.CA.Renewal(ca, certPEM, keyPEM, names); why != "" {
		log.FromContext(ctx).Info("issuing the gateway's serving certificate", "why", why)
		if certPEM, keyPEM, err = r.CA.Issue(ca, names); err != nil {
			return err
		}
	}
	st.tlsRenewAt = servingcert.RenewAt(certPEM)
	meta := objectMeta(s)
	meta.Name = key.Name
	desired := &corev1.Secret{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: meta,
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{corev1.TLSCertKey: certPEM, corev1.TLSPrivateKeyKey: keyPEM, gatewayconfig.CABundleKey: ca.Bundle},
	}
	return r.applyChild(ctx, s, desired, &corev1.Secret{})
}

// reconcileCertificate asks cert-manager for the certificate: a Certificate owned by the server whose
// Secret, of the same name as the operator's own, carries the operator's labels (so the operator sees
// it) and is mounted by the gateway alone. Its ca.crt, once issued, is published as the bundle.
func (r *MCPServerReconciler) reconcileCertificate(ctx context.Context, s *mcpv1alpha1.MCPServer) error {
	cert := desired.Certificate(s, r.options())
	live := &unstructured.Unstructured{}
	live.SetGroupVersionKind(CertificateGVK)
	if err := r.applyChild(ctx, s, cert, live); err != nil {
		return err
	}
	sec := &corev1.Secret{}
	err := r.Client.Get(ctx, types.NamespacedName{Namespace: s.Namespace, Name: gatewayconfig.TLSSecretName(s)}, sec)
	if apierrors.IsNotFound(err) {
		return nil // not issued yet: the pod waits for its volume
	}
	if err != nil {
		return fmt.Errorf("get the Certificate's Secret: %w", err)
	}
	if ca := sec.Data[gatewayconfig.CABundleKey]; len(ca) > 0 {
		return r.publishCABundle(ctx, s, ca)
	}
	return nil
}

// publishCABundle writes the bundle into the namespace's ConfigMap mcp-warden-ca (key ca.crt), for
// clients to mount. It belongs to no one server (it stays when the last one goes: it holds public
// certificates only); a ConfigMap of that name the operator did not write is left alone and reported.
func (r *MCPServerReconciler) publishCABundle(ctx context.Context, s *mcpv1alpha1.MCPServer, bundle []byte) error {
	key := types.NamespacedName{Namespace: s.Namespace, Name: gatewayconfig.CABundleConfigMap}
	live := &corev1.ConfigMap{}
	err := r.Client.Get(ctx, key, live)
	switch {
	case err == nil && live.Data[gatewayconfig.CABundleKey] == string(bundle):
		return nil
	case apierrors.IsNotFound(err):
		probe := &metav1.PartialObjectMetadata{}
		probe.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("ConfigMap"))
		if perr := r.APIReader.Get(ctx, key, probe); perr == nil {
			return stalling(ReasonChildConflict, fmt.Errorf("a ConfigMap named %q exists in namespace %s that the operator does not manage; the operator publishes the gateways' CA bundle there: delete or rename it", key.Name, key.Namespace))
		}
	case err != nil:
		return fmt.Errorf("get ConfigMap %s: %w", key.Name, err)
	}
	u, err := toUnstructured(desired.CABundleConfigMap(key.Namespace, bundle))
	if err != nil {
		return err
	}
	if err := r.Client.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(FieldOwner), client.ForceOwnership); err != nil {
		return fmt.Errorf("publish the CA bundle in ConfigMap %s: %w", key.Name, err)
	}
	return nil
}

// renewIn is how long until the serving certificate is due (0: not self-issued).
func renewIn(st *reconcileState, now time.Time) time.Duration {
	if st.tlsRenewAt.IsZero() {
		return 0
	}
	return max(st.tlsRenewAt.Sub(now), time.Second)
}

func toUnstructured(o client.Object) (*unstructured.Unstructured, error) {
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(o)
	if err != nil {
		return nil, fmt.Errorf("convert %s: %w", o.GetName(), err)
	}
	return &unstructured.Unstructured{Object: m}, nil
}
