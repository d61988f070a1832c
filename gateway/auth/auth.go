// Package auth makes the gateway an OAuth 2.1 resource server: it verifies bearer JWTs against the
// issuer's JWKS (configured, or discovered from the issuer's metadata; cached; refreshed on an unknown
// key id; always fetched under a deadline), with an allow-list of asymmetric algorithms, and checks
// issuer, audience (this server's canonical resource URI), expiry and not-before with a small skew.
// It also serves RFC 9728 protected resource metadata and builds WWW-Authenticate challenges.
package auth

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/mcp-warden/mcp-warden/gateway/config"
)

// Asymmetric lists the signature algorithms the gateway accepts in its configuration; HMAC and "none"
// are never accepted. The configuration contract (package config) owns the list.
var Asymmetric = config.Asymmetric

// Options configure a Verifier.
type Options struct {
	// Issuer is the authorization server's issuer identifier; tokens must carry it as iss.
	Issuer string
	// JWKSURL is the issuer's key set; empty means discover it from the issuer's metadata.
	JWKSURL string
	// Audience is this server's canonical resource URI; tokens must carry it in aud.
	Audience string
	// Algorithms are the allowed signature algorithms, all asymmetric.
	Algorithms []string
	// ClockSkew is tolerated on exp and nbf.
	ClockSkew time.Duration
	// HTTPClient fetches metadata and keys; nil means a client without proxy.
	HTTPClient *http.Client
	// FetchTimeout bounds each metadata or key-set request; 0 means 5s.
	FetchTimeout time.Duration
	// CacheTTL is how long a key set is used before it is fetched again; 0 means 10m.
	CacheTTL time.Duration
	// MinRefreshInterval is the least time between fetches caused by unknown key ids; 0 means 10s.
	MinRefreshInterval time.Duration
	// KeysFile, when set, is a JWKS file the key set is read from instead of the network: in a cluster
	// the operator fetches the issuer's keys and delivers them into the gateway's ConfigMap, so the pod
	// needs no egress to the issuer. The file is read again when it is older than FileRecheck and at
	// once (at most every 100 ms) when a token names an unknown key id. Issuer and JWKSURL are then
	// not fetched.
	KeysFile string
	// FileRecheck is how often KeysFile is read again; 0 means 1s.
	FileRecheck time.Duration
}

// Principal is what a verified token says about its holder.
type Principal struct {
	// Subject is the sub claim (or client_id/azp when there is no sub).
	Subject string
	// TokenID is the jti claim.
	TokenID string
	// ClientID is the client_id or azp claim.
	ClientID string
	// Scopes are the token's scopes (scope or scp claim).
	Scopes []string
	// Expiry is the exp claim.
	Expiry time.Time
}

// HasScope reports whether the token carries a scope.
func (p *Principal) HasScope(s string) bool { return slices.Contains(p.Scopes, s) }

// Error is a token rejection; Code is an RFC 6750 error code.
type Error struct {
	// Code is invalid_request, invalid_token or insufficient_scope.
	Code string
	// Description is safe to return to the client.
	Description string
	// Err is the underlying cause, for logs only.
	Err error
}

// Error describes the rejection, with its cause.
func (e *Error) Error() string {
	if e.Err != nil {
		return e.Code + ": " + e.Description + ": " + e.Err.Error()
	}
	return e.Code + ": " + e.Description
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

func invalid(desc string, err error) *Error {
	return &Error{Code: "invalid_token", Description: desc, Err: err}
}

// Verifier verifies access tokens. It is safe for concurrent use.
type Verifier struct {
	opts Options
	algs []jose.SignatureAlgorithm

	mu      sync.RWMutex
	keys    *jose.JSONWebKeySet
	fetched time.Time
	// keysGen counts the key sets that replaced one another (a file read again unchanged does not);
	// a verified token is trusted from the cache only under the key set it was verified with.
	keysGen uint64
	// keysBody is the key set file as last read.
	keysBody []byte
	// lastRefresh is the last fetch caused by an unknown key id (rate-limited).
	lastRefresh time.Time
	jwksURL     string

	fetchMu sync.Mutex

	// verified caches principals of tokens that passed verification, by token, for at most
	// VerifiedCacheTTL and never past their expiry; this spares a signature check per request.
	cacheMu  sync.Mutex
	verified map[string]verifiedToken
}

type verifiedToken struct {
	p     Principal
	until time.Time
	gen   uint64
}

// VerifiedCacheTTL bounds how long a verified token is trusted without checking its signature again.
const VerifiedCacheTTL = time.Minute

const maxVerifiedCache = 10000

// NewVerifier checks the options and returns a Verifier; no network call is made until the first token.
func NewVerifier(opts Options) (*Verifier, error) {
	if opts.Issuer == "" {
		return nil, errors.New("auth: issuer is required")
	}
	if opts.Audience == "" {
		return nil, errors.New("auth: audience is required")
	}
	if len(opts.Algorithms) == 0 {
		return nil, errors.New("auth: at least one algorithm is required")
	}
	v := &Verifier{opts: opts, jwksURL: opts.JWKSURL}
	for _, a := range opts.Algorithms {
		if !slices.Contains(Asymmetric, a) {
			return nil, fmt.Errorf("auth: algorithm %q is not an asymmetric signature algorithm; use one of %s", a, strings.Join(Asymmetric, ", "))
		}
		v.algs = append(v.algs, jose.SignatureAlgorithm(a))
	}
	if v.opts.HTTPClient == nil {
		v.opts.HTTPClient = &http.Client{Transport: &http.Transport{Proxy: nil, TLSHandshakeTimeout: 5 * time.Second, ResponseHeaderTimeout: 5 * time.Second}}
	}
	if v.opts.FetchTimeout <= 0 {
		v.opts.FetchTimeout = 5 * time.Second
	}
	if v.opts.CacheTTL <= 0 {
		v.opts.CacheTTL = 10 * time.Minute
	}
	if v.opts.MinRefreshInterval <= 0 {
		v.opts.MinRefreshInterval = 10 * time.Second
	}
	if v.opts.FileRecheck <= 0 {
		v.opts.FileRecheck = time.Second
	}
	if v.opts.KeysFile != "" {
		// The CacheTTL and MinRefreshInterval of the network path stand for the file's recheck.
		v.opts.CacheTTL, v.opts.MinRefreshInterval = v.opts.FileRecheck, fileUnknownKidRecheck
	}
	return v, nil
}

type extraClaims struct {
	Scope    json.RawMessage `json:"scope"`
	Scp      json.RawMessage `json:"scp"`
	ClientID string          `json:"client_id"`
	Azp      string          `json:"azp"`
}

// Verify checks a compact JWS access token and returns its principal, or an *Error.
func (v *Verifier) Verify(ctx context.Context, token string) (*Principal, error) {
	now := time.Now()
	v.cacheMu.Lock()
	c, ok := v.verified[token]
	v.cacheMu.Unlock()
	if ok && now.Before(c.until) && v.currentKeys(ctx) == c.gen {
		p := c.p
		p.Scopes = slices.Clone(c.p.Scopes)
		return &p, nil
	}
	v.mu.RLock()
	gen := v.keysGen
	v.mu.RUnlock()
	p, err := v.verify(ctx, token)
	if err != nil {
		return nil, err
	}
	until := now.Add(VerifiedCacheTTL)
	if exp := p.Expiry.Add(v.opts.ClockSkew); exp.Before(until) {
		until = exp
	}
	v.cacheMu.Lock()
	if v.verified == nil || len(v.verified) >= maxVerifiedCache {
		v.verified = map[string]verifiedToken{}
	}
	v.verified[token] = verifiedToken{p: *p, until: until, gen: gen}
	v.cacheMu.Unlock()
	return p, nil
}

// currentKeys reads the key set again when it is stale (as a verification would) and returns its
// generation: a token verified under an earlier key set is verified again, so a key the issuer
// rotated out stops working when the gateway sees the new set, not up to VerifiedCacheTTL later. A
// failed read keeps the last good keys, and with them the cache.
func (v *Verifier) currentKeys(ctx context.Context) uint64 {
	v.mu.RLock()
	fetched, gen := v.fetched, v.keysGen
	v.mu.RUnlock()
	if time.Since(fetched) <= v.opts.CacheTTL {
		return gen
	}
	_ = v.refresh(ctx, false)
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.keysGen
}

func (v *Verifier) verify(ctx context.Context, token string) (*Principal, error) {
	tok, err := jwt.ParseSigned(token, v.algs)
	if err != nil {
		return nil, invalid("token is malformed or signed with an algorithm that is not allowed", err)
	}
	if len(tok.Headers) != 1 {
		return nil, invalid("token must have exactly one signature", nil)
	}
	h := tok.Headers[0]
	key, err := v.key(ctx, h.KeyID, h.Algorithm)
	if err != nil {
		return nil, invalid("no usable signing key for this token", err)
	}
	var std jwt.Claims
	var extra extraClaims
	if err := tok.Claims(key.Key, &std, &extra); err != nil {
		return nil, invalid("token signature is invalid", err)
	}
	if std.Expiry == nil {
		return nil, invalid("token has no exp claim", nil)
	}
	if std.Issuer != v.opts.Issuer {
		return nil, invalid("token issuer is not trusted by this server", fmt.Errorf("iss %q, want %q", std.Issuer, v.opts.Issuer))
	}
	if !std.Audience.Contains(v.opts.Audience) {
		return nil, invalid("token audience is not this server", fmt.Errorf("aud %q, want %q", std.Audience, v.opts.Audience))
	}
	err = std.ValidateWithLeeway(jwt.Expected{Time: time.Now()}, v.opts.ClockSkew)
	switch {
	case errors.Is(err, jwt.ErrExpired):
		return nil, invalid("token has expired", err)
	case errors.Is(err, jwt.ErrNotValidYet), errors.Is(err, jwt.ErrIssuedInTheFuture):
		return nil, invalid("token is not valid yet", err)
	case err != nil:
		return nil, invalid("token claims are invalid", err)
	}
	p := &Principal{Subject: std.Subject, TokenID: std.ID, Expiry: std.Expiry.Time(), ClientID: extra.ClientID}
	if p.ClientID == "" {
		p.ClientID = extra.Azp
	}
	if p.Subject == "" {
		p.Subject = p.ClientID
	}
	if p.Subject == "" {
		return nil, invalid("token has neither sub nor client_id", nil)
	}
	p.Scopes = parseScopes(extra.Scope)
	if len(p.Scopes) == 0 {
		p.Scopes = parseScopes(extra.Scp)
	}
	return p, nil
}

// parseScopes accepts a space-separated string or an array of strings.
func parseScopes(raw json.RawMessage) []string {
	if len(raw) == 0 {
		return nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return strings.Fields(s)
	}
	var list []string
	if json.Unmarshal(raw, &list) == nil {
		return list
	}
	return nil
}

// key finds the verification key for a token header, fetching the key set when it is missing, stale or
// does not know the key id.
func (v *Verifier) key(ctx context.Context, kid, alg string) (*jose.JSONWebKey, error) {
	v.mu.RLock()
	keys, fetched := v.keys, v.fetched
	v.mu.RUnlock()
	if keys == nil || time.Since(fetched) > v.opts.CacheTTL {
		if err := v.refresh(ctx, false); err != nil && keys == nil {
			return nil, err
		}
	} else if k := pick(keys, kid, alg); k == nil {
		_ = v.refresh(ctx, true) // unknown key id: the issuer may have rotated keys
	}
	v.mu.RLock()
	keys = v.keys
	v.mu.RUnlock()
	if k := pick(keys, kid, alg); k != nil {
		return k, nil
	}
	return nil, fmt.Errorf("no %s key with id %q in the issuer's key set", alg, kid)
}

// pick returns a public, asymmetric signing key matching the key id and algorithm.
func pick(set *jose.JSONWebKeySet, kid, alg string) *jose.JSONWebKey {
	if set == nil {
		return nil
	}
	for i := range set.Keys {
		k := &set.Keys[i]
		if kid != "" && k.KeyID != kid {
			continue
		}
		if k.Use != "" && k.Use != "sig" {
			continue
		}
		if k.Algorithm != "" && k.Algorithm != alg {
			continue
		}
		if !keyFits(k.Key, alg) {
			continue
		}
		return k
	}
	return nil
}

// keyFits refuses symmetric and private keys and keys of the wrong type for the algorithm, which is what
// defeats algorithm confusion (for example HS256 "signed" with an RSA public key).
func keyFits(key any, alg string) bool {
	switch key.(type) {
	case *rsa.PublicKey:
		return strings.HasPrefix(alg, "RS") || strings.HasPrefix(alg, "PS")
	case *ecdsa.PublicKey:
		return strings.HasPrefix(alg, "ES")
	case ed25519.PublicKey:
		return alg == "EdDSA"
	}
	return false
}

// refresh fetches the key set; unknownKid refreshes are rate-limited.
func (v *Verifier) refresh(ctx context.Context, unknownKid bool) error {
	v.fetchMu.Lock()
	defer v.fetchMu.Unlock()
	v.mu.RLock()
	last, fetched := v.lastRefresh, v.fetched
	v.mu.RUnlock()
	if unknownKid && !last.IsZero() && time.Since(last) < v.opts.MinRefreshInterval {
		return nil
	}
	if !unknownKid && !fetched.IsZero() && time.Since(fetched) < v.opts.CacheTTL {
		return nil // another goroutine refreshed while this one waited
	}
	v.mu.Lock()
	if unknownKid {
		v.lastRefresh = time.Now()
	}
	jwksURL := v.jwksURL
	v.mu.Unlock()
	if v.opts.KeysFile != "" {
		return v.readKeysFile()
	}
	if jwksURL == "" {
		u, err := v.discover(ctx)
		if err != nil {
			return err
		}
		jwksURL = u
	}
	var set jose.JSONWebKeySet
	if err := v.getJSON(ctx, jwksURL, &set); err != nil {
		return fmt.Errorf("fetch JWKS: %w", err)
	}
	v.mu.Lock()
	v.keys, v.fetched, v.jwksURL = &set, time.Now(), jwksURL
	v.keysGen++
	v.mu.Unlock()
	return nil
}

// fileUnknownKidRecheck is the least time between reads of KeysFile caused by unknown key ids.
const fileUnknownKidRecheck = 100 * time.Millisecond

// maxKeysFile bounds the key set file (the operator writes at most a few keys).
const maxKeysFile = 1 << 20

// readKeysFile loads the key set the operator delivered. A missing or empty file means the keys have
// not arrived yet: every token is refused until they do.
func (v *Verifier) readKeysFile() error {
	f, err := os.Open(v.opts.KeysFile)
	if err != nil {
		return fmt.Errorf("the issuer's signing keys are not delivered yet (%s): %w", v.opts.KeysFile, err)
	}
	defer f.Close()
	body, err := io.ReadAll(io.LimitReader(f, maxKeysFile+1))
	if err != nil {
		return fmt.Errorf("read %s: %w", v.opts.KeysFile, err)
	}
	if len(body) > maxKeysFile {
		return fmt.Errorf("%s is larger than %d bytes", v.opts.KeysFile, maxKeysFile)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(body, &set); err != nil {
		return fmt.Errorf("%s is not a JSON Web Key Set: %w", v.opts.KeysFile, err)
	}
	if len(set.Keys) == 0 {
		return fmt.Errorf("the issuer's signing keys are not delivered yet: %s has no keys", v.opts.KeysFile)
	}
	v.mu.Lock()
	v.keys, v.fetched = &set, time.Now()
	if !bytes.Equal(body, v.keysBody) {
		v.keysBody = body
		v.keysGen++
	}
	v.mu.Unlock()
	return nil
}

// discover reads jwks_uri from the issuer's OpenID Connect discovery document, or else from its RFC 8414
// authorization server metadata, and checks that the document names the same issuer.
func (v *Verifier) discover(ctx context.Context) (string, error) {
	iss, err := url.Parse(v.opts.Issuer)
	if err != nil {
		return "", fmt.Errorf("discover: issuer %q: %w", v.opts.Issuer, err)
	}
	path := strings.TrimSuffix(iss.Path, "/")
	candidates := []string{
		strings.TrimSuffix(v.opts.Issuer, "/") + "/.well-known/openid-configuration",
		iss.Scheme + "://" + iss.Host + "/.well-known/oauth-authorization-server" + path,
	}
	if path != "" {
		candidates = append(candidates, iss.Scheme+"://"+iss.Host+"/.well-known/openid-configuration"+path)
	}
	var errs []error
	for _, u := range candidates {
		var meta struct {
			Issuer  string `json:"issuer"`
			JWKSURI string `json:"jwks_uri"`
		}
		if err := v.getJSON(ctx, u, &meta); err != nil {
			errs = append(errs, err)
			continue
		}
		if meta.Issuer != v.opts.Issuer {
			errs = append(errs, fmt.Errorf("%s names issuer %q, want %q", u, meta.Issuer, v.opts.Issuer))
			continue
		}
		if meta.JWKSURI == "" {
			errs = append(errs, fmt.Errorf("%s has no jwks_uri", u))
			continue
		}
		return meta.JWKSURI, nil
	}
	return "", fmt.Errorf("discover JWKS of issuer %s: %w", v.opts.Issuer, errors.Join(errs...))
}

func (v *Verifier) getJSON(ctx context.Context, u string, dst any) error {
	ctx, cancel := context.WithTimeout(ctx, v.opts.FetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fmt.Errorf("GET %s: %w", u, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := v.opts.HTTPClient.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: status %d", u, resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("GET %s: %w", u, err)
	}
	if err := json.Unmarshal(body, dst); err != nil {
		return fmt.Errorf("GET %s: decode: %w", u, err)
	}
	return nil
}

// BearerToken returns the token of an "Authorization: Bearer" header.
func BearerToken(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	if len(h) < 7 || !strings.EqualFold(h[:7], "bearer ") {
		return "", false
	}
	tok := strings.TrimSpace(h[7:])
	return tok, tok != ""
}
