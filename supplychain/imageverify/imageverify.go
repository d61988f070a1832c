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
//
// ImageVerifier is what the admission webhooks and the controller ask; CosignVerifier implements it by
// mapping MCPServerPolicies onto Policy (keys, including those in Secrets, keyless roots, registry
// credentials). ParseDigest is the operator's one digest parser.
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
	"sync"
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
	"golang.org/x/time/rate"
)

// Check names the check an image failed.
type Check string

// The checks, in the order they run.
const (
	CheckNotDigest            Check = "NotDigest"
	CheckRateLimited          Check = "RateLimited"
	CheckRegistryRefused      Check = "RegistryRefused"
	CheckRegistryUnreachable  Check = "RegistryUnreachable"
	CheckTooLarge             Check = "TooLarge"
	CheckDigestNotFound       Check = "DigestNotFound"
	CheckNoSignature          Check = "NoSignature"
	CheckSignatureMismatch    Check = "SignatureMismatch"
	CheckAttestationMissing   Check = "AttestationMissing"
	CheckAttestationUntrusted Check = "AttestationUntrusted"
	CheckAttestationCopied    Check = "AttestationCopied"
	CheckAttestationWrongType Check = "AttestationWrongType"
	CheckPolicyInvalid        Check = "PolicyInvalid"
)

// Denial says which image failed which check of which policy, in a sentence a person can act on.
type Denial struct {
	Image, Policy, Authority string
	// Namespace is the namespace the verification was for, when it matters (rate limits).
	Namespace string
	Check     Check
	// Detail says more; for registry errors it holds the HTTP status and a category, never a response
	// body.
	Detail string
}

// Transient reports whether the same image may pass later without any change (the registry was
// unreachable, or the namespace's rate limit was exceeded).
func (d *Denial) Transient() bool {
	return d.Check == CheckRegistryUnreachable || d.Check == CheckRateLimited
}

func (d *Denial) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "image %s ", d.Image)
	switch d.Check {
	case CheckNotDigest:
		b.WriteString("is not pinned by digest")
	case CheckRateLimited:
		fmt.Fprintf(&b, "could not be verified for policy %q: namespace %s started too many new image verifications; retry in a minute", d.Policy, d.Namespace)
	case CheckRegistryRefused:
		fmt.Fprintf(&b, "could not be verified for policy %q: the operator does not contact this registry", d.Policy)
	case CheckRegistryUnreachable:
		fmt.Fprintf(&b, "could not be verified for policy %q: registry unreachable, denied (fail closed)", d.Policy)
	case CheckTooLarge:
		fmt.Fprintf(&b, "could not be verified for policy %q: its signatures or attestations exceed the verifier's limits", d.Policy)
	case CheckDigestNotFound:
		fmt.Fprintf(&b, "is not in the registry (policy %q): no manifest with this digest", d.Policy)
	case CheckNoSignature:
		fmt.Fprintf(&b, "has no signature from policy %q authority %q", d.Policy, d.Authority)
	case CheckSignatureMismatch:
		fmt.Fprintf(&b, "has no signature that verifies with policy %q authority %q", d.Policy, d.Authority)
	case CheckAttestationMissing:
		fmt.Fprintf(&b, "has no %s attestation required by policy %q", d.Authority, d.Policy)
	case CheckAttestationUntrusted:
		fmt.Fprintf(&b, "has no %s attestation signed by an authority of policy %q", d.Authority, d.Policy)
	case CheckAttestationCopied:
		fmt.Fprintf(&b, "has no %s attestation for this digest (policy %q)", d.Authority, d.Policy)
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
	// RootCerts and IntermediateCerts are the same certificates, as Sigstore bundles are verified
	// against them (without them, keyless bundles are not verified).
	RootCerts, IntermediateCerts []*x509.Certificate
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
	// Registries are the policy's allowedRegistries entries (registry host, optionally a path). A
	// registry named here is contacted even at a loopback, private or link-local address and over
	// plain HTTP; any other registry must be public and speak HTTPS.
	Registries []string
}

// explicitHosts are the registry hosts the policy names.
func (p Policy) explicitHosts() map[string]bool {
	out := map[string]bool{}
	for _, r := range p.Registries {
		host, _, _ := strings.Cut(strings.TrimSpace(r), "/")
		if host != "" && !strings.Contains(host, "*") {
			out[registryHost(host)] = true
		}
	}
	return out
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

// The defaults of Options, documented once here and in the README's table.
const (
	DefaultTimeout         = 8 * time.Second
	DefaultMaxResponse     = 1 << 20
	DefaultMaxEntries      = 32
	DefaultMaxBytes        = 4 << 20
	DefaultMaxConcurrent   = 4
	DefaultNamespaceBurst  = 20
	DefaultNamespacePerMin = 30
)

// Options configure a Verifier.
type Options struct {
	// Transport carries requests to registries a policy names explicitly in allowedRegistries
	// (default: an HTTP transport with 5s dial, TLS and header timeouts). Other registries are reached
	// through a guarded transport whose dialer refuses protected addresses. Every request is counted.
	Transport http.RoundTripper
	// RemoteOptions are extra go-containerregistry options (e.g. remote.WithAuthFromKeychain).
	RemoteOptions []remote.Option
	// Timeout bounds one verification (default 8s). A caller's earlier deadline ends its wait sooner.
	Timeout time.Duration
	// CacheSize bounds the number of cached decisions (default 1024).
	CacheSize int
	// TTL is how long a successful verification is trusted (default 10m).
	TTL time.Duration
	// NegativeTTL is how long a denial is remembered (default 10s), so a fixed image is admitted soon.
	NegativeTTL time.Duration
	// MaxResponseBytes bounds one registry response: a manifest, a signature or an attestation layer
	// (default 1 MiB).
	MaxResponseBytes int64
	// MaxEntries bounds the layers (signatures, attestations) of one signature or attestation manifest
	// (default 32).
	MaxEntries int
	// MaxBytesPerVerification bounds what one verification reads from registries (default 4 MiB).
	MaxBytesPerVerification int64
	// MaxConcurrent bounds the verifications that talk to registries at once (default 4); others wait,
	// within their deadline.
	MaxConcurrent int
	// NamespacePerMinute and NamespaceBurst bound the verifications a namespace may start that are not
	// answered from the cache (default 30 a minute, bursts of 20): admissions and dry runs of new
	// digests cost registry requests.
	NamespacePerMinute float64
	NamespaceBurst     int
	// Registerer receives the Prometheus metrics (nil: not registered).
	Registerer prometheus.Registerer
}

// Verifier verifies images against policies. It is safe for concurrent use.
type Verifier struct {
	o        Options
	remote   []remote.Option
	ok       *lru.LRU[string, *Result]
	denied   *lru.LRU[string, error]
	limits   *lru.LRU[string, *rate.Limiter]
	limitsMu sync.Mutex
	slots    chan struct{}
	group    singleflight.Group
	requests atomic.Int64
	m        metrics
}

// New returns a Verifier.
func New(o Options) *Verifier {
	def := func(v *int64, d int64) {
		if *v <= 0 {
			*v = d
		}
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
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
	def(&o.MaxResponseBytes, DefaultMaxResponse)
	def(&o.MaxBytesPerVerification, DefaultMaxBytes)
	if o.MaxEntries <= 0 {
		o.MaxEntries = DefaultMaxEntries
	}
	if o.MaxConcurrent <= 0 {
		o.MaxConcurrent = DefaultMaxConcurrent
	}
	if o.NamespacePerMinute <= 0 {
		o.NamespacePerMinute = DefaultNamespacePerMin
	}
	if o.NamespaceBurst <= 0 {
		o.NamespaceBurst = DefaultNamespaceBurst
	}
	v := &Verifier{o: o, m: newMetrics(o.Registerer), slots: make(chan struct{}, o.MaxConcurrent)}
	guarded := newGuardedTransport(o.Transport, o.MaxResponseBytes, o.MaxEntries)
	counting := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		v.requests.Add(1)
		v.m.requests.Inc()
		return guarded.RoundTrip(r)
	})
	v.remote = append([]remote.Option{remote.WithTransport(counting)}, o.RemoteOptions...)
	v.ok = lru.NewLRU[string, *Result](o.CacheSize, nil, o.TTL)
	v.denied = lru.NewLRU[string, error](o.CacheSize, nil, o.NegativeTTL)
	v.limits = lru.NewLRU[string, *rate.Limiter](4096, nil, 10*time.Minute)
	return v
}

// RegistryRequests returns how many HTTP requests the verifier has sent to registries.
func (v *Verifier) RegistryRequests() int64 { return v.requests.Load() }

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// ParseDigest parses an image reference that must be pinned by a sha256 digest; a reference with both a
// tag and a digest is accepted and the digest wins (nothing is resolved by tag). It is the one digest
// parser of the operator: admission, reconciliation and verification all call it.
func ParseDigest(image string) (name.Digest, error) {
	if !strings.Contains(image, "@") {
		return name.Digest{}, &Denial{Image: image, Check: CheckNotDigest, Detail: PinHint(image)}
	}
	d, err := name.NewDigest(image, name.StrictValidation)
	if err != nil {
		return name.Digest{}, &Denial{Image: image, Check: CheckNotDigest, Detail: err.Error()}
	}
	if !strings.HasPrefix(d.DigestStr(), "sha256:") {
		return name.Digest{}, &Denial{Image: image, Check: CheckNotDigest, Detail: "only sha256 digests are accepted; " + PinHint(image)}
	}
	return d, nil
}

// PinHint tells how to pin image: its repository, without a tag or a digest, followed by a sha256
// digest placeholder, e.g. "use ghcr.io/acme/files@sha256:<digest>".
func PinHint(image string) string {
	base, _, _ := strings.Cut(image, "@")
	if slash, colon := strings.LastIndex(base, "/"), strings.LastIndex(base, ":"); colon > slash {
		base = base[:colon]
	}
	return fmt.Sprintf("use %s@sha256:<digest>", base)
}

// Verify checks the image against every policy; all must pass. Decisions are cached per policy identity
// and digest. It is VerifyIn without a namespace (no rate limit).
func (v *Verifier) Verify(ctx context.Context, image string, policies []Policy) (*Result, error) {
	return v.VerifyIn(ctx, "", image, policies)
}

// VerifyIn checks the image against every policy, concurrently; all must pass. A verification not
// answered from the cache counts against the namespace's rate limit. The wait ends at ctx's deadline
// with a denial; a shared verification then goes on (within Options.Timeout) for the next caller.
func (v *Verifier) VerifyIn(ctx context.Context, namespace, image string, policies []Policy) (*Result, error) {
	start := time.Now()
	ref, err := ParseDigest(image)
	if err != nil {
		v.m.decision(err)
		return nil, err
	}
	results := make([]*Result, len(policies))
	errs := make([]error, len(policies))
	var wg sync.WaitGroup
	for i, p := range policies {
		wg.Go(func() { results[i], errs[i] = v.verifyCached(ctx, namespace, image, ref, p) })
	}
	wg.Wait()
	out := &Result{Digest: ref.DigestStr()}
	for i := range policies {
		if errs[i] != nil {
			v.m.decision(errs[i])
			return nil, errs[i]
		}
		out.merge(results[i])
	}
	v.m.latency.Observe(time.Since(start).Seconds())
	v.m.decision(nil)
	return out, nil
}

// verifyCached answers one policy from the cache, or joins or starts its verification.
func (v *Verifier) verifyCached(ctx context.Context, namespace, image string, ref name.Digest, p Policy) (*Result, error) {
	key := p.Identity + "|" + ref.String()
	if r, ok := v.ok.Get(key); ok {
		v.m.cache.WithLabelValues("hit").Inc()
		return r, nil
	}
	if err, ok := v.denied.Get(key); ok {
		v.m.cache.WithLabelValues("hit").Inc()
		return nil, err
	}
	v.m.cache.WithLabelValues("miss").Inc()
	if namespace != "" && !v.limiter(namespace).Allow() {
		return nil, &Denial{Image: image, Policy: p.Name, Namespace: namespace, Check: CheckRateLimited,
			Detail: fmt.Sprintf("limit %g a minute, bursts of %d; images already verified are not limited", v.o.NamespacePerMinute, v.o.NamespaceBurst)}
	}
	ch := v.group.DoChan(key, func() (any, error) {
		// The verification outlives a caller that gives up, within its own deadline, so the next
		// admission of the image finds the answer.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), v.o.Timeout)
		defer cancel()
		r, err := v.verifyBounded(ctx, image, ref, p)
		var d *Denial
		if err != nil && !(errors.As(err, &d) && d.Detail == busyDetail) {
			v.denied.Add(key, err) // a busy verifier says nothing about the image: not remembered
		}
		if err != nil {
			return nil, err
		}
		v.ok.Add(key, r)
		return r, nil
	})
	select {
	case res := <-ch:
		if res.Err != nil {
			return nil, res.Err
		}
		return res.Val.(*Result), nil
	case <-ctx.Done():
		return nil, &Denial{Image: image, Policy: p.Name, Check: CheckRegistryUnreachable, Detail: waitDetail(ctx)}
	}
}

func waitDetail(ctx context.Context) string {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return "timeout: no answer from the registry before the admission deadline; retry once the registry answers"
	}
	return "canceled"
}

func (v *Verifier) limiter(namespace string) *rate.Limiter {
	v.limitsMu.Lock()
	defer v.limitsMu.Unlock()
	l, ok := v.limits.Get(namespace)
	if !ok {
		l = rate.NewLimiter(rate.Limit(v.o.NamespacePerMinute/60), v.o.NamespaceBurst)
		v.limits.Add(namespace, l)
	}
	return l
}

const busyDetail = "timeout: the verifier was busy with other images; retry"

// verifyBounded runs one verification once a slot is free, with the verification's byte budget.
func (v *Verifier) verifyBounded(ctx context.Context, image string, ref name.Digest, p Policy) (*Result, error) {
	select {
	case v.slots <- struct{}{}:
		defer func() { <-v.slots }()
	case <-ctx.Done():
		return nil, &Denial{Image: image, Policy: p.Name, Check: CheckRegistryUnreachable, Detail: busyDetail}
	}
	ctx = withBudget(withExplicitHosts(ctx, p.explicitHosts()), v.o.MaxBytesPerVerification)
	return v.verifyPolicy(ctx, image, ref, p)
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
// with the policy's registry credentials when it has them, anonymous otherwise. The requests of one
// verification share a puller, so the registry's ping and token are fetched once.
func (v *Verifier) remoteOptions(ctx context.Context, p Policy) []remote.Option {
	opts := append(slices.Clone(v.remote), remote.WithContext(ctx))
	if p.Keychain != nil {
		opts = append(opts, remote.WithAuthFromKeychain(p.Keychain))
	}
	if puller, err := remote.NewPuller(opts...); err == nil {
		opts = append(opts, remote.Reuse(puller))
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
	bs := &bundleSet{}
	if len(p.Authorities) > 0 {
		if err := v.verifySignature(ctx, ro, ref, p, res, deny, bs); err != nil {
			return nil, err
		}
	}
	return res, v.verifyAttestations(ctx, ro, ref, p, res, deny, bs)
}

type denyFunc func(check Check, authority, detail string) error

// verifySignature needs a signature from one of the policy's authorities, in the legacy format (.sig
// tag) or as a Sigstore bundle.
func (v *Verifier) verifySignature(ctx context.Context, ro []remote.Option, ref name.Digest, p Policy, res *Result, deny denyFunc, bs *bundleSet) error {
	var firstErr error
	for _, a := range p.Authorities {
		co, err := v.checkOpts(ro, a, cosign.SimpleClaimVerifier)
		if err != nil {
			return deny(CheckPolicyInvalid, a.Name, "load key: "+err.Error())
		}
		sigs, _, err := cosign.VerifyImageSignatures(ctx, ref, co)
		if err == nil {
			res.Signers = append(res.Signers, p.Name+"/"+a.Name+certIdentity(sigs))
			return nil
		}
		if refused := refusal(ctx); refused != nil {
			return v.registryDenial(deny, a.Name, refused, ref)
		}
		d := v.classifySignature(deny, a.Name, err, ref)
		if check := d.(*Denial).Check; check != CheckNoSignature && check != CheckSignatureMismatch { //nolint:errorlint // classifySignature returns a *Denial, never wrapped
			return d
		}
		br, err := v.verifyBundles(ctx, ro, ref, a, bs)
		if err != nil {
			if refused := refusal(ctx); refused != nil {
				err = refused
			}
			return v.registryDenial(deny, a.Name, err, ref)
		}
		if br.signed {
			res.Signers = append(res.Signers, p.Name+"/"+a.Name+br.identity)
			return nil
		}
		if d.(*Denial).Check == CheckNoSignature && br.signatures > 0 { //nolint:errorlint // classifySignature returns a *Denial, never wrapped
			d = deny(CheckSignatureMismatch, a.Name, fmt.Sprintf("%d Sigstore bundle signatures found, none verifies with this authority for this digest", br.signatures))
		}
		if firstErr == nil {
			firstErr = d
		}
	}
	var d *Denial
	if errors.As(firstErr, &d) && d.Check == CheckNoSignature {
		// Only on this failure path: tell "no signatures" from "no such image".
		if herr := v.digestExists(ro, ref); herr != nil {
			return v.registryDenial(deny, d.Authority, herr, ref)
		}
	}
	return firstErr
}

// digestExists asks the registry for the manifest (HEAD: no body is read).
func (v *Verifier) digestExists(ro []remote.Option, ref name.Digest) error {
	_, err := remote.Head(ref, ro...)
	return err
}

// registryDenial classifies a registry error: refused by the verifier, too large, not found (for the
// image's own manifest), or unreachable; the detail holds the status and a category only.
func (v *Verifier) registryDenial(deny denyFunc, authority string, err error, ref name.Digest) error {
	var blocked *BlockedError
	var tooLarge *TooLargeError
	switch {
	case errors.As(err, &blocked):
		return deny(CheckRegistryRefused, authority, detail(err)+"; a registry at such an address, or over plain HTTP, must be named in the policy's allowedRegistries")
	case errors.As(err, &tooLarge):
		return deny(CheckTooLarge, authority, detail(err))
	case httpStatus(err) == http.StatusNotFound:
		return deny(CheckDigestNotFound, authority, fmt.Sprintf("HTTP 404 for %s in %s; push the image, or use the digest the registry has (`crane digest %s:TAG`)", ref.DigestStr(), ref.Context(), ref.Context()))
	case errors.Is(err, context.DeadlineExceeded) || isTimeout(err):
		return deny(CheckRegistryUnreachable, authority, fmt.Sprintf("timeout: no answer in time (verification deadline %s); retry once the registry answers", v.o.Timeout))
	}
	return deny(CheckRegistryUnreachable, authority, detail(err))
}

// verifyAttestations needs each required attestation, signed by an allowed authority, for this digest.
func (v *Verifier) verifyAttestations(ctx context.Context, ro []remote.Option, ref name.Digest, p Policy, res *Result, deny denyFunc, bs *bundleSet) error {
	s := &attestationSearch{
		v: v, ro: ro, ref: ref, authorities: p.Authorities, bs: bs,
		found: map[string]attestations{}, fetched: map[string]error{}, bundles: map[string]bundleResult{},
	}
	for _, req := range p.Attestations {
		e := s.gather(ctx, req)
		if slices.Contains(e.types, req.PredicateType) {
			res.Attestations = append(res.Attestations, req.PredicateType)
			continue
		}
		if refused := refusal(ctx); refused != nil {
			return v.registryDenial(deny, req.Name, refused, ref)
		}
		if e.bundled > 0 && len(e.types) == 0 && len(e.copied) == 0 && firstUnreachable(e.errs) == nil {
			return deny(CheckAttestationUntrusted, req.Name, fmt.Sprintf("%d Sigstore bundle attestations found, none verifies with a trusted authority", e.bundled))
		}
		if err := v.attestationDenial(ro, ref, req, e.types, e.copied, e.errs, deny); err != nil {
			return err
		}
	}
	return nil
}

// attestationSearch finds the verified attestations of one digest, per authority, each source
// fetched once for all requirements: found and fetched hold the legacy tag's attestations and errors,
// bundles the Sigstore bundles' results.
type attestationSearch struct {
	v           *Verifier
	ro          []remote.Option
	ref         name.Digest
	authorities []Authority
	bs          *bundleSet
	found       map[string]attestations
	fetched     map[string]error
	bundles     map[string]bundleResult
}

// evidence is what the authorities allowed for one requirement vouch for: the predicate types of
// attestations for this digest, the subjects of those for another digest, the errors met, the most
// bundle attestations one authority saw, and whether the bundles were looked at.
type evidence struct {
	types, copied []string
	errs          []error
	bundled       int
	triedBundles  bool
}

// authorityAllowed reports whether an authority may sign the attestation req requires.
func authorityAllowed(req AttestationRequirement, a Authority) bool {
	return len(req.Authorities) == 0 || slices.Contains(req.Authorities, a.Name)
}

// gather collects the evidence for req. Bundles already read for the signature are looked at first;
// otherwise the legacy tag first, and bundles only when it falls short (and no registry was
// unreachable and the deadline holds).
func (s *attestationSearch) gather(ctx context.Context, req AttestationRequirement) evidence {
	var e evidence
	if s.bs.hasAttestations() {
		s.fromBundles(ctx, req, &e)
	}
	if !slices.Contains(e.types, req.PredicateType) {
		s.fromTag(ctx, req, &e)
	}
	if !e.triedBundles && !slices.Contains(e.types, req.PredicateType) && firstUnreachable(e.errs) == nil && refusal(ctx) == nil {
		s.fromBundles(ctx, req, &e)
	}
	return e
}

// fromBundles adds what the Sigstore bundles of each allowed authority vouch for.
func (s *attestationSearch) fromBundles(ctx context.Context, req AttestationRequirement, e *evidence) {
	e.triedBundles = true
	for _, a := range s.authorities {
		if !authorityAllowed(req, a) {
			continue
		}
		br, ok := s.bundles[a.Name]
		if !ok {
			var err error
			if br, err = s.v.verifyBundles(ctx, s.ro, s.ref, a, s.bs); err != nil {
				e.errs = append(e.errs, err)
				continue
			}
			s.bundles[a.Name] = br
		}
		e.types = append(e.types, br.types...)
		e.copied = append(e.copied, br.copied...)
		e.bundled = max(e.bundled, br.attestations)
	}
}

// fromTag adds what the legacy attestation tag vouches for, per allowed authority.
func (s *attestationSearch) fromTag(ctx context.Context, req AttestationRequirement, e *evidence) {
	for _, a := range s.authorities {
		if !authorityAllowed(req, a) {
			continue
		}
		if _, done := s.fetched[a.Name]; !done {
			s.found[a.Name], s.fetched[a.Name] = s.v.attestationTypes(ctx, s.ro, s.ref, a)
		}
		e.copied = append(e.copied, s.found[a.Name].copied...)
		if err := s.fetched[a.Name]; err != nil {
			e.errs = append(e.errs, err)
			continue
		}
		e.types = append(e.types, s.found[a.Name].types...)
	}
}

func (v *Verifier) attestationDenial(ro []remote.Option, ref name.Digest, req AttestationRequirement, types, copied []string, errs []error, deny denyFunc) error {
	switch {
	case len(types) > 0:
		return deny(CheckAttestationWrongType, req.Name, fmt.Sprintf("want predicate type %s, found %s", req.PredicateType, strings.Join(types, ", ")))
	case firstUnreachable(errs) != nil:
		return v.registryDenial(deny, req.Name, firstUnreachable(errs), ref)
	case len(copied) > 0:
		return deny(CheckAttestationCopied, req.Name, fmt.Sprintf("an attestation signed by a trusted authority names another image (subject %s), as when it is copied from one; attest this digest: `cosign attest --key k.key --type <type> --predicate p.json %s`", strings.Join(copied, ", "), ref))
	}
	// Only on this failure path: count what is there, to tell "none" from "none trusted".
	n, err := v.countAttestations(ro, ref)
	switch {
	case err != nil:
		if herr := v.digestExists(ro, ref); herr != nil {
			return v.registryDenial(deny, req.Name, herr, ref)
		}
		return v.registryDenial(deny, req.Name, err, ref)
	case n > 0:
		return deny(CheckAttestationUntrusted, req.Name, fmt.Sprintf("%d attestations found, none verifies with a trusted authority", n))
	}
	if herr := v.digestExists(ro, ref); herr != nil {
		return v.registryDenial(deny, req.Name, herr, ref)
	}
	return deny(CheckAttestationMissing, req.Name, "registry reachable, 0 attestations found")
}

// attestations are what one authority's verified attestations say: their predicate types, and the
// subjects of those that verified but name another digest.
type attestations struct{ types, copied []string }

// attestationTypes returns the predicate types of the attestations that verify with the authority and
// whose subject is this digest, and the subjects of those that verify but are for another digest.
func (v *Verifier) attestationTypes(ctx context.Context, ro []remote.Option, ref name.Digest, a Authority) (attestations, error) {
	var out attestations
	var mu sync.Mutex
	claims := func(sig oci.Signature, h v1Hash, ann map[string]any) error {
		err := cosign.IntotoSubjectClaimVerifier(sig, h, ann)
		if err != nil {
			// cosign calls the claim verifier once the signature verified.
			mu.Lock()
			out.copied = append(out.copied, subjects(sig)...)
			mu.Unlock()
		}
		return err
	}
	co, err := v.checkOpts(ro, a, claims)
	if err != nil {
		return out, err
	}
	atts, _, err := cosign.VerifyImageAttestations(ctx, ref, co)
	if err != nil {
		return out, err
	}
	for _, att := range atts {
		if st, ok := statement(att); ok && st.PredicateType != "" {
			out.types = append(out.types, st.PredicateType)
		}
	}
	return out, nil
}

type inTotoStatement struct {
	PredicateType string `json:"predicateType"`
	Subject       []struct {
		Digest map[string]string `json:"digest"`
	} `json:"subject"`
}

// statement decodes the in-toto statement of a DSSE-enveloped attestation.
func statement(att oci.Signature) (inTotoStatement, bool) {
	var st inTotoStatement
	payload, err := att.Payload()
	if err != nil {
		return st, false
	}
	var env struct {
		Payload string `json:"payload"`
	}
	if json.Unmarshal(payload, &env) != nil {
		return st, false
	}
	body, err := base64.StdEncoding.DecodeString(env.Payload)
	if err != nil {
		return st, false
	}
	return st, json.Unmarshal(body, &st) == nil
}

// subjects lists the sha256 subjects an attestation names.
func subjects(att oci.Signature) []string {
	st, _ := statement(att)
	var out []string
	for _, s := range st.Subject {
		if d, ok := s.Digest["sha256"]; ok {
			out = append(out, "sha256:"+d)
		}
	}
	return out
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

func (v *Verifier) classifySignature(deny denyFunc, authority string, err error, ref name.Digest) error {
	var none *cosign.ErrNoSignaturesFound
	var mismatch *cosign.ErrNoMatchingSignatures
	switch {
	case errors.As(err, &none):
		return deny(CheckNoSignature, authority, "registry reachable, 0 signatures found")
	case errors.As(err, &mismatch):
		return deny(CheckSignatureMismatch, authority, "signatures found, none verifies with this authority for this digest")
	}
	return v.registryDenial(deny, authority, err, ref)
}

// firstUnreachable is the first error that is not "nothing verified".
func firstUnreachable(errs []error) error {
	for _, e := range errs {
		var m *cosign.ErrNoMatchingAttestations
		var n *cosign.ErrNoSignaturesFound
		if !errors.As(e, &m) && !errors.As(e, &n) {
			return e
		}
	}
	return nil
}
