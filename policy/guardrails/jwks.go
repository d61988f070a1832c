package guardrails

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/util/validation/field"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
)

var jwksPath = field.NewPath("spec", "gateway", "auth", "jwksURL")

// CheckJWKSURL refuses a JWKS URL the server's own pod could answer: a loopback, link-local or
// unspecified address, localhost, or the server's own Service. Keys served from there would be the
// tenant's, and the gateway would accept tokens the tenant mints. It needs no network.
func CheckJWKSURL(s *mcpv1alpha1.MCPServer) field.ErrorList {
	raw := s.Spec.Gateway.Auth.JWKSURL
	if raw == "" || s.Spec.Gateway.Auth.Disabled {
		return nil
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Hostname() == "" {
		return field.ErrorList{field.Invalid(jwksPath, raw, "want an absolute http(s) URL of the issuer's keys, e.g. https://login.example.com/.well-known/jwks.json; or leave it out to use the issuer's")}
	}
	if why := localHost(u.Hostname(), s); why != "" {
		return field.ErrorList{field.Forbidden(jwksPath, fmt.Sprintf("%s is %s, which the server's own pod can answer: the gateway would accept tokens minted there. Use the issuer's own keys (leave jwksURL out)", raw, why))}
	}
	return nil
}

// localHost says why host is one the server's pod may answer itself ("" if it is not).
func localHost(host string, s *mcpv1alpha1.MCPServer) string {
	h := strings.TrimSuffix(strings.ToLower(host), ".")
	if a, err := netip.ParseAddr(h); err == nil {
		a = a.Unmap()
		switch {
		case a.IsLoopback():
			return "a loopback address"
		case a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast():
			return "a link-local address"
		case a.IsUnspecified():
			return "the unspecified address"
		}
		return ""
	}
	if h == "localhost" || strings.HasSuffix(h, ".localhost") {
		return "localhost"
	}
	for _, own := range []string{s.Name, s.Name + "." + s.Namespace, s.Name + "." + s.Namespace + ".svc"} {
		if h == own || strings.HasPrefix(h, s.Name+"."+s.Namespace+".svc.") {
			return "the server's own Service"
		}
	}
	return ""
}

// IssuerDiscovery finds an authorization server's signing keys URL (jwks_uri) from its metadata.
type IssuerDiscovery interface {
	JWKSURI(ctx context.Context, issuer string) (string, error)
}

// CheckIssuerJWKS holds the issuer ceiling: where a policy lists allowedIssuers, spec.gateway.auth.jwksURL
// must be absent or equal to the issuer's discovered jwks_uri, or tokens would be checked against keys
// the issuer never published. A discovery failure is returned as an error (not a field error): callers
// fail closed (the webhook) or retry (the controller).
func CheckIssuerJWKS(ctx context.Context, s *mcpv1alpha1.MCPServer, policies []mcpv1alpha1.MCPServerPolicy, d IssuerDiscovery) (field.ErrorList, error) {
	a := s.Spec.Gateway.Auth
	if a.Disabled || a.JWKSURL == "" {
		return nil, nil
	}
	var governing []string
	for _, p := range policies {
		if len(p.Spec.Gateway.AllowedIssuers) > 0 {
			governing = append(governing, p.Name)
		}
	}
	if len(governing) == 0 {
		return nil, nil
	}
	if d == nil {
		return nil, errors.New("the operator runs without issuer discovery, so jwksURL cannot be confirmed; leave it out to use the issuer's keys")
	}
	want, err := d.JWKSURI(ctx, a.Issuer)
	if err != nil {
		return nil, fmt.Errorf("confirm spec.gateway.auth.jwksURL against issuer %s: %w; leave jwksURL out to use the issuer's keys", a.Issuer, err)
	}
	if a.JWKSURL != want {
		return field.ErrorList{field.Forbidden(jwksPath, fmt.Sprintf("%s is not the signing keys URL issuer %s publishes (%s), and MCPServerPolicy %q allows only listed issuers; leave jwksURL out, or set it to %s",
			a.JWKSURL, a.Issuer, want, strings.Join(governing, ", "), want))}, nil
	}
	return nil, nil
}

// HTTPDiscovery reads an issuer's metadata (RFC 8414 /.well-known/oauth-authorization-server, then
// OpenID Connect /.well-known/openid-configuration) under a deadline, and remembers the answer for TTL.
type HTTPDiscovery struct {
	// Client makes the requests (default: 3 s timeout, no redirects).
	Client *http.Client
	// Timeout bounds one discovery (default 3 s).
	Timeout time.Duration
	// TTL is how long an answer is remembered (default 5 min).
	TTL time.Duration

	mu    sync.Mutex
	cache map[string]discovered
}

type discovered struct {
	uri string
	at  time.Time
}

// JWKSURI implements IssuerDiscovery.
func (h *HTTPDiscovery) JWKSURI(ctx context.Context, issuer string) (string, error) {
	ttl := h.TTL
	if ttl == 0 {
		ttl = 5 * time.Minute
	}
	h.mu.Lock()
	if c, ok := h.cache[issuer]; ok && time.Since(c.at) < ttl {
		h.mu.Unlock()
		return c.uri, nil
	}
	h.mu.Unlock()
	timeout := h.Timeout
	if timeout == 0 {
		timeout = 3 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	base := strings.TrimSuffix(issuer, "/")
	var errs []error
	for _, suffix := range []string{"/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"} {
		uri, err := h.fetch(ctx, base+suffix, issuer)
		if err == nil {
			h.mu.Lock()
			if h.cache == nil {
				h.cache = map[string]discovered{}
			}
			h.cache[issuer] = discovered{uri: uri, at: time.Now()}
			h.mu.Unlock()
			return uri, nil
		}
		errs = append(errs, err)
	}
	return "", errors.Join(errs...)
}

func (h *HTTPDiscovery) fetch(ctx context.Context, url, issuer string) (string, error) {
	c := h.Client
	if c == nil {
		c = defaultDiscoveryClient
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: HTTP %d", url, resp.StatusCode)
	}
	var meta struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&meta); err != nil {
		return "", fmt.Errorf("GET %s: %w", url, err)
	}
	if strings.TrimSuffix(meta.Issuer, "/") != strings.TrimSuffix(issuer, "/") || meta.JWKSURI == "" {
		return "", fmt.Errorf("GET %s: metadata names issuer %q and jwks_uri %q", url, meta.Issuer, meta.JWKSURI)
	}
	return meta.JWKSURI, nil
}

var defaultDiscoveryClient = &http.Client{
	Timeout:       3 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	Transport: &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		DialContext:         (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
		TLSHandshakeTimeout: 2 * time.Second,
	},
}
