package imageverify

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"strconv"
	"sync"

	kauth "github.com/google/go-containerregistry/pkg/authn/kubernetes"
	"github.com/sigstore/cosign/v2/pkg/cosign"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/tuf"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
)

// ImageVerifier checks an image's cosign signatures and attestations against the policies that govern it.
// Implementations must bound every registry call by ctx and fail closed: an unreachable registry is a
// denial.
type ImageVerifier interface {
	// VerifyImage returns what was verified, or an error whose message is the denial a person reads
	// (which image, which policy and authority, which check failed).
	VerifyImage(ctx context.Context, req ImageRequest) (*ImageVerdict, error)
}

// ImageRequest is one image to verify.
type ImageRequest struct {
	// Image is the reference as written in the object.
	Image string
	// Namespace is the workload's namespace; pull secrets are read there.
	Namespace string
	// PullSecrets are the workload's imagePullSecrets (and its service account's).
	PullSecrets []corev1.LocalObjectReference
	// Policies are the MCPServerPolicies that govern the namespace; each must be satisfied.
	Policies []mcpv1alpha1.MCPServerPolicy
}

// ImageVerdict is what a successful verification established.
type ImageVerdict struct {
	// Digest is the verified manifest digest.
	Digest string
	// Signers are the identities whose signatures verified (key authority names or certificate
	// subject and issuer).
	Signers []string
	// Attestations are the predicate types verified.
	Attestations []string
}

// NeedsVerification reports whether any policy asks for signatures or attestations.
func NeedsVerification(policies []mcpv1alpha1.MCPServerPolicy) bool {
	for _, p := range policies {
		if len(p.Spec.Authorities) > 0 || len(p.Spec.Attestations) > 0 {
			return true
		}
	}
	return false
}

// CosignVerifier verifies images with the cosign library against MCPServerPolicy authorities.
type CosignVerifier struct {
	// Verifier does the verification and caching.
	Verifier *Verifier
	// Reader reads Secrets holding public keys.
	Reader client.Reader
	// SecretNamespace is where key Secrets live (the operator's namespace).
	SecretNamespace string

	// converted holds policies already mapped (keys parsed), by UID and generation, so an admission
	// does no parsing; policies with Secret-held keys are mapped each time, since the Secret may change.
	converted sync.Map
}

var _ ImageVerifier = &CosignVerifier{}

// VerifyImage maps the policies onto the verifier's and verifies the image.
func (c *CosignVerifier) VerifyImage(ctx context.Context, req ImageRequest) (*ImageVerdict, error) {
	policies := make([]Policy, 0, len(req.Policies))
	for _, p := range req.Policies {
		key := string(p.UID) + "/" + strconv.FormatInt(p.Generation, 10)
		if ip, ok := c.converted.Load(key); ok && p.UID != "" {
			policies = append(policies, ip.(Policy))
			continue
		}
		ip, err := c.policy(ctx, p)
		if err != nil {
			return nil, &Denial{Image: req.Image, Policy: p.Name, Check: CheckPolicyInvalid, Detail: err.Error()}
		}
		if p.UID != "" && !usesSecrets(p) {
			c.converted.Store(key, ip)
		}
		policies = append(policies, ip)
	}
	r, err := c.Verifier.VerifyIn(ctx, req.Namespace, req.Image, policies)
	if err != nil {
		return nil, err
	}
	return &ImageVerdict{Digest: r.Digest, Signers: r.Signers, Attestations: r.Attestations}, nil
}

// CheckPolicy loads what verification would need of the policy (keys, including those in Secrets,
// keyless roots and transparency-log keys, registry credentials) and reports the first problem, as the
// denial of every image the policy governs would.
func (c *CosignVerifier) CheckPolicy(ctx context.Context, p mcpv1alpha1.MCPServerPolicy) error {
	_, err := c.policy(ctx, p)
	return err
}

// UsesSecrets reports whether the policy reads Secrets (keys or registry credentials), which can change
// without the policy changing.
func UsesSecrets(p mcpv1alpha1.MCPServerPolicy) bool { return usesSecrets(p) }

func usesSecrets(p mcpv1alpha1.MCPServerPolicy) bool {
	if len(p.Spec.RegistryCredentials) > 0 {
		return true
	}
	for _, a := range p.Spec.Authorities {
		if a.Key != nil && a.Key.SecretRef != nil {
			return true
		}
	}
	return false
}

func (c *CosignVerifier) policy(ctx context.Context, p mcpv1alpha1.MCPServerPolicy) (Policy, error) {
	out := Policy{Name: p.Name, Identity: string(p.UID) + "/" + strconv.FormatInt(p.Generation, 10), Registries: p.Spec.AllowedRegistries}
	for _, a := range p.Spec.Authorities {
		if a.Keyless != nil {
			k, err := keyless(a.Keyless)
			if err != nil {
				return out, fmt.Errorf("authority %q: %w", a.Name, err)
			}
			out.Authorities = append(out.Authorities, Authority{Name: a.Name, Keyless: k})
			continue
		}
		if a.Key == nil {
			return out, fmt.Errorf("authority %q: set key", a.Name)
		}
		data := []byte(a.Key.Data)
		if ref := a.Key.SecretRef; ref != nil {
			// Secret-held keys change the identity when their content does (resourceVersion).
			s := &corev1.Secret{}
			if err := c.Reader.Get(ctx, client.ObjectKey{Namespace: c.SecretNamespace, Name: ref.Name}, s); err != nil {
				return out, fmt.Errorf("authority %q: read Secret %s/%s: %w", a.Name, c.SecretNamespace, ref.Name, err)
			}
			data = s.Data[ref.Key]
			out.Identity += "/" + s.ResourceVersion
		}
		pub, err := cryptoutils.UnmarshalPEMToPublicKey(data)
		if err != nil {
			return out, fmt.Errorf("authority %q: not a PEM public key: %w", a.Name, err)
		}
		out.Authorities = append(out.Authorities, Authority{Name: a.Name, PublicKey: pub})
	}
	for _, att := range p.Spec.Attestations {
		out.Attestations = append(out.Attestations, AttestationRequirement{Name: att.Name, PredicateType: att.PredicateType, Authorities: att.Authorities})
	}
	if len(p.Spec.RegistryCredentials) > 0 {
		secrets := make([]corev1.Secret, 0, len(p.Spec.RegistryCredentials))
		for _, ref := range p.Spec.RegistryCredentials {
			s := corev1.Secret{}
			if err := c.Reader.Get(ctx, client.ObjectKey{Namespace: c.SecretNamespace, Name: ref.Name}, &s); err != nil {
				return out, fmt.Errorf("registryCredentials: read Secret %s/%s: %w", c.SecretNamespace, ref.Name, err)
			}
			if s.Type != corev1.SecretTypeDockerConfigJson && s.Type != corev1.SecretTypeDockercfg {
				return out, fmt.Errorf("registryCredentials: Secret %s/%s has type %q; create it with `kubectl create secret docker-registry` (type %s)",
					c.SecretNamespace, ref.Name, s.Type, corev1.SecretTypeDockerConfigJson)
			}
			secrets = append(secrets, s)
			// New credentials change the identity, so decisions made without them are not reused.
			out.Identity += "/" + s.ResourceVersion
		}
		kc, err := kauth.NewFromPullSecrets(ctx, secrets)
		if err != nil {
			return out, fmt.Errorf("registryCredentials: %w", err)
		}
		out.Keychain = kc
	}
	return out, nil
}

// keyless maps a keyless authority: self-signed certificates in roots are trust anchors, the others
// intermediates. Transparency checks need their public keys, since verification runs offline.
func keyless(k *mcpv1alpha1.KeylessAuthority) (*Keyless, error) {
	certs, err := cryptoutils.UnmarshalCertificatesFromPEM([]byte(k.Roots))
	if err != nil || len(certs) == 0 {
		return nil, fmt.Errorf("keyless.roots: no PEM certificates (%v)", err) //nolint:errorlint // err is nil when the PEM holds no certificate
	}
	out := &Keyless{
		Roots: x509.NewCertPool(), Intermediates: x509.NewCertPool(),
		Identity:    cosign.Identity{Issuer: k.Issuer, IssuerRegExp: k.IssuerRegExp, Subject: k.Subject, SubjectRegExp: k.SubjectRegExp},
		RequireSCT:  k.RequireSCT == nil || *k.RequireSCT,
		RequireTlog: k.RequireTlog == nil || *k.RequireTlog,
	}
	for _, c := range certs {
		if bytes.Equal(c.RawIssuer, c.RawSubject) && c.CheckSignatureFrom(c) == nil {
			out.Roots.AddCert(c)
			out.RootCerts = append(out.RootCerts, c)
		} else {
			out.Intermediates.AddCert(c)
			out.IntermediateCerts = append(out.IntermediateCerts, c)
		}
	}
	logKeys := func(field, pemKeys string) (*cosign.TrustedTransparencyLogPubKeys, error) {
		if pemKeys == "" {
			return nil, fmt.Errorf("keyless.%s is required when the check is on (verification runs offline); set it, or turn the check off", field)
		}
		keys := cosign.NewTrustedTransparencyLogPubKeys()
		if err := keys.AddTransparencyLogPubKey([]byte(pemKeys), tuf.Active); err != nil {
			return nil, fmt.Errorf("keyless.%s: %w", field, err)
		}
		return &keys, nil
	}
	if out.RequireSCT {
		if out.CTLogPubKeys, err = logKeys("ctLogPublicKeys", k.CTLogPublicKeys); err != nil {
			return nil, err
		}
	}
	if out.RequireTlog {
		if out.RekorPubKeys, err = logKeys("rekorPublicKeys", k.RekorPublicKeys); err != nil {
			return nil, err
		}
	}
	return out, nil
}
