// Package imageverify decides whether an image may run: it must be pinned by digest, carry a valid cosign
// signature from one of each policy's trusted authorities, and carry the attestations each policy
// requires, signed by a trusted authority, whose subject is this digest and whose predicate type is the
// one asked for. It verifies with the cosign library against the registry, caches decisions per
// (policy identity, digest) with a TTL, and runs one verification for concurrent admissions of the same
// image.
//
// Which digest must be signed: the one in the reference. For a multi-architecture image that is the index
// digest (what `cosign sign IMAGE@sha256:<index>` signs by default); a signature on a platform manifest
// does not cover the index, and the reverse.
package imageverify

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	lru "github.com/hashicorp/golang-lru/v2/expirable"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sigstore/cosign/v2/pkg/cosign"
	"github.com/sigstore/cosign/v2/pkg/oci"
	ociremote "github.com/sigstore/cosign/v2/pkg/oci/remote"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
	"golang.org/x/sync/singleflight"
)

// Check names the check an image failed.
type Check string

// The checks, in the order they run.
const (
	CheckNotDigest            Check = "NotDigest"
	CheckRegistryUnreachable  Check = "RegistryUnreachable"
	CheckNoSignature          Check = "NoSignature"
	CheckSignatureMismatch    Check = "SignatureMismatch"
	CheckAttestationMissing   Check = "AttestationMissing"
	CheckAttestationUntrusted Check = "AttestationUntrusted"
	CheckAttestationWrongType Check = "AttestationWrongType"
	CheckPolicyInvalid        Check = "PolicyInvalid"
)

// Denial says which image failed which check of which policy, in a sentence a person can act on.
type Denial struct {
	Image, Policy, Authority string
	Check                    Check
	Detail                   string
}

func (d *Denial) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "image %s ", d.Image)
	switch d.Check {
	case CheckNotDigest:
		b.WriteString("is not pinned by digest")
	case CheckRegistryUnreachable:
		fmt.Fprintf(&b, "could not be verified for policy %q: registry unreachable, denied (fail closed)", d.Policy)
	case CheckNoSignature:
		fmt.Fprintf(&b, "has no signature from policy %q authority %q", d.Policy, d.Authority)
	case CheckSignatureMismatch:
		fmt.Fprintf(&b, "has no signature that verifies with policy %q authority %q", d.Policy, d.Authority)
	case CheckAttestationMissing:
		fmt.Fprintf(&b, "has no %s attestation required by policy %q", d.Authority, d.Policy)
	case CheckAttestationUntrusted:
		fmt.Fprintf(&b, "has no %s attestation signed by an authority of policy %q", d.Authority, d.Policy)
	case CheckAttestationWrongType:
		fmt.Fprintf(&b, "has no %s attestation of the predicate type policy %q requires", d.Authority, d.Policy)
	case CheckPolicyInvalid:
		fmt.Fprintf(&b, "cannot be verified: policy %q is unusable", d.Policy)
	}
	if d.Detail != "" {
		fmt.Fprintf(&b, " (%s)", d.Detail)
	}
	return b.String()
}

// Authority is a trusted signer: a public key, or a keyless (certificate) identity.
type Authority struct {
	// Name identifies the authority in denials.
	Name string
	// PublicKey verifies signatures (ECDSA, Ed25519 or RSA).
	PublicKey crypto.PublicKey
	// Keyless trusts signatures whose certificate chains to a CA and names an identity.
	Keyless *Keyless
}

// Keyless is a certificate identity issued by a Fulcio-style CA.
type Keyless struct {
	// Roots and Intermediates are the CA certificates to verify the signing certificate against.
	Roots, Intermediates *x509.CertPool
	// Identity is the OIDC issuer and subject (exact or regular expressions) the certificate must name.
	Identity cosign.Identity
	// RequireSCT checks the certificate's transparency SCT against CTLogPubKeys.
	RequireSCT   bool
	CTLogPubKeys *cosign.TrustedTransparencyLogPubKeys
	// RequireTlog checks the bundled transparency-log inclusion proof against RekorPubKeys, offline.
	RequireTlog  bool
	RekorPubKeys *cosign.TrustedTransparencyLogPubKeys
}

// AttestationRequirement is an attestation an image must carry.
type AttestationRequirement struct {
	// Name identifies the requirement in denials, e.g. "provenance".
	Name string
	// PredicateType is the in-toto predicate type required.
	PredicateType string
	// Authorities are the names of the authorities that may sign it; empty means any of the policy's.
	Authorities []string
}

// Policy is what one MCPServerPolicy requires of an image.
type Policy struct {
	// Name is the policy's name, for denials.
	Name string
	// Identity changes whenever the policy does (e.g. UID and generation); cached decisions are keyed
	// by it.
	Identity string
	// Authorities are the trusted signers; an image needs a valid signature from at least one.
	Authorities []Authority
	// Attestations are required attestations.
	Attestations []AttestationRequirement
	// Keychain holds the registry credentials the policy names (nil: registries are read
	// anonymously). Identity must change when they do.
	Keychain authn.Keychain
}

// Result is what verification established for one image.
type Result struct {
	// Digest is the verified digest.
	Digest string
	// Signers are the authorities whose signatures verified, as "policy/authority".
	Signers []string
	// Attestations are the verified predicate types.
	Attestations []string
}

// Options configure a Verifier.
type Options struct {
	// Transport carries registry requests (default: a shared http.Transport); every request is counted.
	Transport http.RoundTripper
	// RemoteOptions are extra go-containerregistry options (e.g. remote.WithAuthFromKeychain).
	RemoteOptions []remote.Option
	// Timeout bounds one verification (default 5s).
	Timeout time.Duration
	// CacheSize bounds the number of cached decisions (default 1024).
	CacheSize int
	// TTL is how long a successful verification is trusted (default 10m).
	TTL time.Duration
	// NegativeTTL is how long a denial is remembered (default 10s), so a fixed image is admitted soon.
	NegativeTTL time.Duration
	// Registerer receives the Prometheus metrics (nil: not registered).
	Registerer prometheus.Registerer
}

// Verifier verifies images against policies. It is safe for concurrent use.
type Verifier struct {
	o        Options
	remote   []remote.Option
	ok       *lru.LRU[string, *Result]
	denied   *lru.LRU[string, error]
	group    singleflight.Group
	requests atomic.Int64
	m        metrics
}

// New returns a Verifier.
func New(o Options) *Verifier {
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Second
	}
	if o.CacheSize <= 0 {
		o.CacheSize = 1024
	}
	if o.TTL <= 0 {
		o.TTL = 10 * time.Minute
	}
	if o.NegativeTTL <= 0 {
		o.NegativeTTL = 10 * time.Second
	}
	if o.Transport == nil {
		o.Transport = remote.DefaultTransport
	}
	v := &Verifier{o: o, m: newMetrics(o.Registerer)}
	counting := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		v.requests.Add(1)
		v.m.requests.Inc()
		return o.Transport.RoundTrip(r)
	})
	v.remote = append([]remote.Option{remote.WithTransport(counting)}, o.RemoteOptions...)
	v.ok = lru.NewLRU[string, *Result](o.CacheSize, nil, o.TTL)
	v.denied = lru.NewLRU[string, error](o.CacheSize, nil, o.NegativeTTL)
	return v
}

// RegistryRequests returns how many HTTP requests the verifier has sent to registries.
func (v *Verifier) RegistryRequests() int64 { return v.requests.Load() }

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// ParseDigest parses an image reference that must be pinned by digest; a reference with both a tag and a
// digest is accepted and the digest wins (nothing is resolved by tag).
func ParseDigest(image string) (name.Digest, error) {
	if !strings.Contains(image, "@") {
		base := image
		if slash, colon := strings.LastIndex(base, "/"), strings.LastIndex(base, ":"); colon > slash {
			base = base[:colon]
		}
		return name.Digest{}, &Denial{Image: image, Check: CheckNotDigest, Detail: fmt.Sprintf("use %s@sha256:<digest>", base)}
	}
	d, err := name.NewDigest(image, name.StrictValidation)
	if err != nil {
		return name.Digest{}, &Denial{Image: image, Check: CheckNotDigest, Detail: err.Error()}
	}
	return d, nil
}

// Verify checks the image against every policy; all must pass. Decisions are cached per policy identity
// and digest.
func (v *Verifier) Verify(ctx context.Context, image string, policies []Policy) (*Result, error) {
	start := time.Now()
	ref, err := ParseDigest(image)
	if err != nil {
		v.m.decision(err)
		return nil, err
	}
	out := &Result{Digest: ref.DigestStr()}
	for _, p := range policies {
		key := p.Identity + "|" + ref.String()
		if r, ok := v.ok.Get(key); ok {
			v.m.cache.WithLabelValues("hit").Inc()
			out.merge(r)
			continue
		}
		if err, ok := v.denied.Get(key); ok {
			v.m.cache.WithLabelValues("hit").Inc()
			v.m.decision(err)
			return nil, err
		}
		v.m.cache.WithLabelValues("miss").Inc()
		r, err, _ := v.group.Do(key, func() (any, error) {
			ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), v.o.Timeout)
			defer cancel()
			r, err := v.verifyPolicy(ctx, image, ref, p)
			if err != nil {
				v.denied.Add(key, err)
				return nil, err
			}
			v.ok.Add(key, r)
			return r, nil
		})
		if err != nil {
			v.m.decision(err)
			return nil, err
		}
		out.merge(r.(*Result))
	}
	v.m.latency.Observe(time.Since(start).Seconds())
	v.m.decision(nil)
	return out, nil
}

func (r *Result) merge(o *Result) {
	r.Signers = append(r.Signers, o.Signers...)
	for _, a := range o.Attestations {
		if !slices.Contains(r.Attestations, a) {
			r.Attestations = append(r.Attestations, a)
		}
	}
}

// remoteOptions are the registry options for one verification under policy p, bound to its deadline:
// with the policy's registry credentials when it has them, anonymous otherwise.
func (v *Verifier) remoteOptions(ctx context.Context, p Policy) []remote.Option {
	opts := append(slices.Clone(v.remote), remote.WithContext(ctx))
	if p.Keychain != nil {
		opts = append(opts, remote.WithAuthFromKeychain(p.Keychain))
	}
	return opts
}

func (v *Verifier) checkOpts(ro []remote.Option, a Authority, claims func(oci.Signature, v1Hash, map[string]any) error) (*cosign.CheckOpts, error) {
	if k := a.Keyless; k != nil {
		if k.Roots == nil {
			return nil, errors.New("keyless authority without CA roots")
		}
		return &cosign.CheckOpts{
			RegistryClientOpts: []ociremote.Option{ociremote.WithRemoteOptions(ro...)},
			ClaimVerifier:      claims,
			RootCerts:          k.Roots,
			IntermediateCerts:  k.Intermediates,
			Identities:         []cosign.Identity{k.Identity},
			IgnoreSCT:          !k.RequireSCT,
			CTLogPubKeys:       k.CTLogPubKeys,
			IgnoreTlog:         !k.RequireTlog,
			RekorPubKeys:       k.RekorPubKeys,
			Offline:            true,
		}, nil
	}
	sv, err := signature.LoadVerifier(a.PublicKey, crypto.SHA256)
	if err != nil {
		return nil, err
	}
	return &cosign.CheckOpts{
		RegistryClientOpts: []ociremote.Option{ociremote.WithRemoteOptions(ro...)},
		SigVerifier:        sv,
		// Without a claim verifier a signature copied from another image would verify.
		ClaimVerifier: claims,
		// Key-based verification is offline: a key is trusted for what it signed, with no
		// transparency log in the loop.
		IgnoreTlog: true,
		IgnoreSCT:  true,
		Offline:    true,
	}, nil
}

// verifyPolicy runs one policy's checks.
func (v *Verifier) verifyPolicy(ctx context.Context, image string, ref name.Digest, p Policy) (*Result, error) {
	res := &Result{Digest: ref.DigestStr()}
	deny := func(check Check, authority, detail string) error {
		return &Denial{Image: image, Policy: p.Name, Authority: authority, Check: check, Detail: detail}
	}
	ro := v.remoteOptions(ctx, p)
	if len(p.Authorities) > 0 {
		var firstErr error
		for _, a := range p.Authorities {
			co, err := v.checkOpts(ro, a, cosign.SimpleClaimVerifier)
			if err != nil {
				return nil, deny(CheckPolicyInvalid, a.Name, "load key: "+err.Error())
			}
			sigs, _, err := cosign.VerifyImageSignatures(ctx, ref, co)
			if err == nil {
				res.Signers = append(res.Signers, p.Name+"/"+a.Name+certIdentity(sigs))
				break
			}
			if firstErr == nil {
				firstErr = classifySignature(deny, a.Name, err)
			}
			var d *Denial
			if errors.As(firstErr, &d) && d.Check == CheckRegistryUnreachable {
				return nil, firstErr
			}
		}
		if len(res.Signers) == 0 {
			return nil, firstErr
		}
	}
	// Verified attestations per authority, fetched once.
	found := map[string][]string{}
	fetched := map[string]error{}
	for _, req := range p.Attestations {
		var types []string
		var errs []error
		for _, a := range p.Authorities {
			if len(req.Authorities) > 0 && !slices.Contains(req.Authorities, a.Name) {
				continue
			}
			if _, done := fetched[a.Name]; !done {
				found[a.Name], fetched[a.Name] = v.attestationTypes(ctx, ro, ref, a)
			}
			if err := fetched[a.Name]; err != nil {
				errs = append(errs, err)
				continue
			}
			types = append(types, found[a.Name]...)
		}
		if slices.Contains(types, req.PredicateType) {
			res.Attestations = append(res.Attestations, req.PredicateType)
			continue
		}
		switch {
		case len(types) > 0:
			return nil, deny(CheckAttestationWrongType, req.Name, fmt.Sprintf("want predicate type %s, found %s", req.PredicateType, strings.Join(types, ", ")))
		case anyUnreachable(errs):
			return nil, deny(CheckRegistryUnreachable, req.Name, firstError(errs))
		default:
			// Only on this failure path: count what is there, to tell "none" from "none trusted".
			n, err := v.countAttestations(ro, ref)
			switch {
			case err != nil:
				return nil, deny(CheckRegistryUnreachable, req.Name, err.Error())
			case n > 0:
				return nil, deny(CheckAttestationUntrusted, req.Name, fmt.Sprintf("%d attestations found, none verifies with a trusted authority", n))
			default:
				return nil, deny(CheckAttestationMissing, req.Name, "registry reachable, 0 attestations found")
			}
		}
	}
	return res, nil
}

// attestationTypes returns the predicate types of the attestations that verify with the authority and
// whose subject is this digest.
func (v *Verifier) attestationTypes(ctx context.Context, ro []remote.Option, ref name.Digest, a Authority) ([]string, error) {
	co, err := v.checkOpts(ro, a, cosign.IntotoSubjectClaimVerifier)
	if err != nil {
		return nil, err
	}
	atts, _, err := cosign.VerifyImageAttestations(ctx, ref, co)
	if err != nil {
		return nil, err
	}
	var types []string
	for _, att := range atts {
		payload, err := att.Payload()
		if err != nil {
			continue
		}
		var env struct {
			Payload string `json:"payload"`
		}
		if json.Unmarshal(payload, &env) != nil {
			continue
		}
		body, err := base64.StdEncoding.DecodeString(env.Payload)
		if err != nil {
			continue
		}
		var stmt struct {
			PredicateType string `json:"predicateType"`
		}
		if json.Unmarshal(body, &stmt) == nil && stmt.PredicateType != "" {
			types = append(types, stmt.PredicateType)
		}
	}
	return types, nil
}

// certIdentity names the certificate identity of a keyless signature, e.g. " (dev@acme.example via
// https://issuer.example)"; empty for key signatures.
func certIdentity(sigs []oci.Signature) string {
	for _, sig := range sigs {
		cert, err := sig.Cert()
		if err != nil || cert == nil {
			continue
		}
		ext := cosign.CertExtensions{Cert: cert}
		return fmt.Sprintf(" (%s via %s)", strings.Join(cryptoutils.GetSubjectAlternateNames(cert), ","), ext.GetIssuer())
	}
	return ""
}

// countAttestations returns how many attestations are attached to the image, verified or not.
func (v *Verifier) countAttestations(ro []remote.Option, ref name.Digest) (int, error) {
	se, err := ociremote.SignedEntity(ref, ociremote.WithRemoteOptions(ro...))
	if err != nil {
		return 0, err
	}
	atts, err := se.Attestations()
	if err != nil {
		return 0, err
	}
	list, err := atts.Get()
	return len(list), err
}

func classifySignature(deny func(Check, string, string) error, authority string, err error) error {
	var none *cosign.ErrNoSignaturesFound
	var mismatch *cosign.ErrNoMatchingSignatures
	switch {
	case errors.As(err, &none):
		return deny(CheckNoSignature, authority, "registry reachable, 0 signatures found")
	case errors.As(err, &mismatch):
		return deny(CheckSignatureMismatch, authority, "signatures found, none verifies with this authority for this digest")
	default:
		return deny(CheckRegistryUnreachable, authority, err.Error())
	}
}

func anyUnreachable(errs []error) bool {
	for _, e := range errs {
		var m *cosign.ErrNoMatchingAttestations
		var n *cosign.ErrNoSignaturesFound
		if !errors.As(e, &m) && !errors.As(e, &n) {
			return true
		}
	}
	return false
}

func firstError(errs []error) string {
	if len(errs) == 0 {
		return ""
	}
	return errs[0].Error()
}
