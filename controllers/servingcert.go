package controllers

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
	"github.com/mcp-warden/mcp-warden/controllers/desired"
	"github.com/mcp-warden/mcp-warden/policy/gatewayconfig"
)

// CertIssuer is the cert-manager issuer the gateways' Certificates name, where the operator leaves
// issuance to cert-manager.
type CertIssuer = desired.CertIssuer

// CertificateGVK is cert-manager's Certificate.
var CertificateGVK = desired.CertificateGVK

// ReasonTLSUnavailable is the Ready reason (a stall) when the gateway's certificate cannot be issued
// because the operator has no CA.
const ReasonTLSUnavailable = "TLSUnavailable"

// +kubebuilder:rbac:groups=cert-manager.io,resources=certificates,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=cert-manager.io,resources=certificaterequests,verbs=list

// reconcileTLS publishes the CA bundle the gateway's serving certificate chains to in the namespace's
// ConfigMap mcp-warden-ca. The certificate itself is a pod certificate: the kubelet generates the key
// on the node and the operator signs it (PodCertSigner), so neither the key nor the certificate is in
// a Secret. Where the operator names a cert-manager issuer, cert-manager issues it instead (a
// Certificate whose Secret cert-manager writes).
func (r *MCPServerReconciler) reconcileTLS(ctx context.Context, s *mcpv1alpha1.MCPServer, st *reconcileState) error {
	if !gatewayconfig.TLSEnabled(s) {
		return nil
	}
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
	st.caDueAt = ca.RotateAt()
	return r.publishCABundle(ctx, s, ca.Bundle)
}

// renewIn is how long until the CA is due (0: not the operator's CA).
func renewIn(st *reconcileState, now time.Time) time.Duration {
	if st.caDueAt.IsZero() {
		return 0
	}
	return max(st.caDueAt.Sub(now), time.Second)
}

// withCertSource mounts cert-manager's Secret in place of the pod certificate where cert-manager
// issues the gateways' certificates: its tls-combined.pem (key, then chain) as the credential bundle
// and its ca.crt, at the same paths, so the gateway's configuration is the same in both modes.
func (r *MCPServerReconciler) withCertSource(d *appsv1.Deployment, s *mcpv1alpha1.MCPServer) *appsv1.Deployment {
	if r.CertIssuer == nil {
		return d
	}
	vols := d.Spec.Template.Spec.Volumes
	for i := range vols {
		if vols[i].Name != desired.GatewayTLSVolume {
			continue
		}
		vols[i].VolumeSource = corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
			SecretName: gatewayconfig.TLSSecretName(s), DefaultMode: ptr.To(desired.GatewayFileMode),
			Items: []corev1.KeyToPath{{Key: certManagerCombinedPEM, Path: gatewayconfig.TLSBundleFile}, {Key: gatewayconfig.CABundleKey, Path: gatewayconfig.CABundleKey}},
		}}
	}
	return d
}

// certManagerCombinedPEM is the Secret key of cert-manager's CombinedPEM output format: the private
// key, then the certificate chain.
const certManagerCombinedPEM = "tls-combined.pem"

// CertificateRequestGVK is cert-manager's CertificateRequest, whose status carries the issuer's CA.
var CertificateRequestGVK = schema.GroupVersionKind{Group: "cert-manager.io", Version: "v1", Kind: "CertificateRequest"}

const (
	// maxCertificateRequests bounds the CertificateRequests of a namespace read for the issuer's CA.
	maxCertificateRequests = 500
	// maxCABundleBytes bounds the CA a CertificateRequest carries.
	maxCABundleBytes = 64 << 10
	// certificateRevision is the annotation cert-manager numbers a Certificate's requests with.
	certificateRevision = "cert-manager.io/certificate-revision"
)

// reconcileCertificate asks cert-manager for the certificate: a Certificate owned by the server whose
// Secret, of the same name as the operator's own, is mounted by the gateway alone. The operator never
// reads that Secret (it has no access to Secrets outside its own namespace): the CA it publishes as the
// bundle is the one cert-manager records, once issued, in the status of the Certificate's latest
// CertificateRequest (public certificates only).
func (r *MCPServerReconciler) reconcileCertificate(ctx context.Context, s *mcpv1alpha1.MCPServer) error {
	cert := desired.Certificate(s, r.options())
	live := &unstructured.Unstructured{}
	live.SetGroupVersionKind(CertificateGVK)
	if err := r.applyChild(ctx, s, cert, live); err != nil {
		return err
	}
	ca, err := r.issuedCA(ctx, live)
	if err != nil || ca == nil {
		return err // nil: not issued yet; the pod waits for its volume, the Certificate's status change brings us back
	}
	return r.publishCABundle(ctx, s, ca)
}

// issuedCA is status.ca of the latest CertificateRequest the Certificate controls that carries one
// (nil if none does yet), checked to be PEM certificates.
func (r *MCPServerReconciler) issuedCA(ctx context.Context, cert *unstructured.Unstructured) ([]byte, error) {
	list := &unstructured.UnstructuredList{}
	list.SetGroupVersionKind(CertificateRequestGVK.GroupVersion().WithKind("CertificateRequestList"))
	if err := r.APIReader.List(ctx, list, client.InNamespace(cert.GetNamespace()), client.Limit(maxCertificateRequests)); err != nil {
		return nil, fmt.Errorf("list the CertificateRequests of Certificate %s for the issuer's CA: %w", cert.GetName(), err)
	}
	var best []byte
	bestRev, bestAt := -1, time.Time{}
	for i := range list.Items {
		cr := &list.Items[i]
		if ref := metav1.GetControllerOf(cr); ref == nil || ref.UID != cert.GetUID() || ref.Kind != CertificateGVK.Kind {
			continue
		}
		enc, _, _ := unstructured.NestedString(cr.Object, "status", "ca")
		ca, err := base64.StdEncoding.DecodeString(enc)
		if enc == "" || err != nil || len(ca) > maxCABundleBytes || !onlyCertificates(ca) {
			continue
		}
		rev, _ := strconv.Atoi(cr.GetAnnotations()[certificateRevision])
		if at := cr.GetCreationTimestamp().Time; rev > bestRev || (rev == bestRev && at.After(bestAt)) {
			best, bestRev, bestAt = ca, rev, at
		}
	}
	return best, nil
}

// onlyCertificates reports whether b is one or more PEM certificates and nothing else.
func onlyCertificates(b []byte) bool {
	n := 0
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			return n > 0 && len(bytes.TrimSpace(b)) == 0
		}
		if block.Type != "CERTIFICATE" {
			return false
		}
		if _, err := x509.ParseCertificate(block.Bytes); err != nil {
			return false
		}
		n++
	}
}

// publishCABundle writes the bundle into the namespace's ConfigMap mcp-warden-ca (key ca.crt), for
// clients to mount. It belongs to no one server (it stays when the last one goes: it holds public
// certificates only); a ConfigMap of that name the operator did not write is left alone and reported.
func (r *MCPServerReconciler) publishCABundle(ctx context.Context, s *mcpv1alpha1.MCPServer, bundle []byte) error {
	key := types.NamespacedName{Namespace: s.Namespace, Name: gatewayconfig.CABundleConfigMap}
	live := &corev1.ConfigMap{}
	err := r.Client.Get(ctx, key, live)
	notFound := apierrors.IsNotFound(err)
	switch {
	case err == nil && live.Data[gatewayconfig.CABundleKey] == string(bundle):
		return nil
	case notFound && r.bundles.inFlight(key.Namespace, bundle):
		return nil
	case err != nil && !notFound:
		return fmt.Errorf("get ConfigMap %s: %w", key.Name, err)
	}
	// The servers of a burst reconcile at once: one of them publishes, the others share its outcome
	// (each builds its own stall from it: a stall's message is its server's).
	h := sha256.Sum256(bundle)
	foreign, err, _ := r.bundles.flight.Do(fmt.Sprintf("%s/%x/%t", key.Namespace, h, notFound), func() (any, error) {
		if notFound && r.bundles.inFlight(key.Namespace, bundle) {
			return false, nil
		}
		if notFound {
			probe := &metav1.PartialObjectMetadata{}
			probe.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("ConfigMap"))
			// The cache may not have seen the bundle another reconcile of this namespace wrote a
			// moment ago: one the operator wrote (its field manager) is its own, anything else is a
			// conflict.
			if perr := r.APIReader.Get(ctx, key, probe); perr == nil && !writtenByOperator(probe) {
				return true, nil
			}
		}
		u, err := toUnstructured(desired.CABundleConfigMap(key.Namespace, bundle))
		if err != nil {
			return false, err
		}
		if err := r.Client.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(FieldOwner), client.ForceOwnership); err != nil {
			return false, fmt.Errorf("publish the CA bundle in ConfigMap %s: %w", key.Name, err)
		}
		r.bundles.published(key.Namespace, bundle)
		return false, nil
	})
	if err != nil {
		return err
	}
	if foreign.(bool) {
		return stalling(ReasonChildConflict, fmt.Errorf("a ConfigMap named %q exists in namespace %s that the operator does not manage; the operator publishes the gateways' CA bundle there: delete or rename it", key.Name, key.Namespace))
	}
	return nil
}

// bundleInFlight is how long after publishing a namespace's CA bundle the operator takes a cache that
// does not show it yet as one that has yet to deliver the write: the servers of a burst in a new
// namespace then publish it once, not each until the cache catches up. A bundle someone deletes in that
// time is published again by the first reconcile after it; one someone changes (the cache shows other
// data) is published again at once.
const bundleInFlight = 10 * time.Second

// publishedBundles remembers the CA bundle last published in each namespace, and when.
type publishedBundles struct {
	flight singleflight.Group
	mu     sync.Mutex
	last   map[string]publishedBundle
}

type publishedBundle struct {
	hash [32]byte
	at   time.Time
}

func (b *publishedBundles) published(namespace string, bundle []byte) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.last == nil {
		b.last = map[string]publishedBundle{}
	}
	b.last[namespace] = publishedBundle{hash: sha256.Sum256(bundle), at: time.Now()}
}

// inFlight reports whether this bundle was published in the namespace less than bundleInFlight ago.
func (b *publishedBundles) inFlight(namespace string, bundle []byte) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	p, ok := b.last[namespace]
	return ok && p.hash == sha256.Sum256(bundle) && time.Since(p.at) < bundleInFlight
}

// writtenByOperator reports whether the operator's field manager wrote the object.
func writtenByOperator(o metav1.Object) bool {
	for _, m := range o.GetManagedFields() {
		if m.Manager == FieldOwner {
			return true
		}
	}
	return false
}

func toUnstructured(o client.Object) (*unstructured.Unstructured, error) {
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(o)
	if err != nil {
		return nil, fmt.Errorf("convert %s: %w", o.GetName(), err)
	}
	return &unstructured.Unstructured{Object: m}, nil
}
