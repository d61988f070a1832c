package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Principal is an authenticated caller.
type Principal struct {
	Subject string
	TokenID string
	Scopes  []string
}

// authError is a request that fails authentication (401) or authorization (403).
type authError struct {
	status int
	code   string // invalid_token, insufficient_scope
	msg    string
	scope  string
}

func (e *authError) Error() string { return e.msg }

// verifier checks bearer JWTs against the issuer's JWKS.
type verifier struct {
	cfg    AuthConfig
	aud    string
	algs   []jose.SignatureAlgorithm
	client *http.Client

	mu      sync.Mutex
	keys    jose.JSONWebKeySet
	fetched time.Time
}

func newVerifier(cfg AuthConfig, audience string) *verifier {
	v := &verifier{cfg: cfg, aud: audience, client: &http.Client{Timeout: 5 * time.Second}}
	for _, a := range cfg.Algorithms {
		v.algs = append(v.algs, jose.SignatureAlgorithm(a))
	}
	return v
}

// key returns the key with the id, refreshing the JWKS (at most every 10s) when it is unknown.
func (v *verifier) key(ctx context.Context, kid string) (*jose.JSONWebKey, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if ks := v.keys.Key(kid); len(ks) > 0 {
		return &ks[0], nil
	}
	if time.Since(v.fetched) < 10*time.Second && !v.fetched.IsZero() {
		return nil, fmt.Errorf("unknown key id %q", kid)
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, v.cfg.JWKSURL, nil)
	if err != nil {
		return nil, err
	}
	resp, err := v.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch JWKS: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch JWKS: %s", resp.Status)
	}
	var set jose.JSONWebKeySet
	if err := json.NewDecoder(http.MaxBytesReader(nil, resp.Body, 1<<20)).Decode(&set); err != nil {
		return nil, fmt.Errorf("decode JWKS: %w", err)
	}
	v.keys, v.fetched = set, time.Now()
	if ks := v.keys.Key(kid); len(ks) > 0 {
		return &ks[0], nil
	}
	return nil, fmt.Errorf("unknown key id %q", kid)
}

// verify validates signature (allowed asymmetric algorithms only), issuer, audience, expiry and
// not-before on every request.
func (v *verifier) verify(ctx context.Context, header string) (*Principal, error) {
	raw, ok := strings.CutPrefix(header, "Bearer ")
	if !ok || raw == "" {
		return nil, &authError{status: http.StatusUnauthorized, code: "invalid_request", msg: "a bearer token is required"}
	}
	bad := func(format string, args ...any) error {
		return &authError{status: http.StatusUnauthorized, code: "invalid_token", msg: fmt.Sprintf(format, args...)}
	}
	tok, err := jwt.ParseSigned(raw, v.algs)
	if err != nil {
		return nil, bad("token rejected: %v", err)
	}
	if len(tok.Headers) != 1 {
		return nil, bad("token must carry exactly one signature")
	}
	key, err := v.key(ctx, tok.Headers[0].KeyID)
	if err != nil {
		return nil, bad("token rejected: %v", err)
	}
	if !key.Valid() || !key.IsPublic() {
		return nil, bad("token rejected: signing key is not a public key")
	}
	var claims jwt.Claims
	var extra struct {
		Scope string `json:"scope"`
	}
	if err := tok.Claims(key.Key, &claims, &extra); err != nil {
		return nil, bad("token signature invalid: %v", err)
	}
	if claims.Expiry == nil || claims.Issuer == "" || len(claims.Audience) == 0 {
		return nil, bad("token must carry exp, iss and aud")
	}
	if err := claims.ValidateWithLeeway(jwt.Expected{Issuer: v.cfg.Issuer, AnyAudience: jwt.Audience{v.aud}, Time: time.Now()}, v.cfg.ClockSkew.Duration); err != nil {
		if errors.Is(err, jwt.ErrInvalidAudience) {
			return nil, bad("token audience is not this server (%s)", v.aud)
		}
		return nil, bad("token rejected: %v", err)
	}
	return &Principal{Subject: claims.Subject, TokenID: claims.ID, Scopes: strings.Fields(extra.Scope)}, nil
}
