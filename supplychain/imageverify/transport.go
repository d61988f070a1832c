package imageverify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/mcp-warden/mcp-warden/policy/netpol"
)

// The verifier's registry client cannot be aimed at the operator's own network: a tenant writes the
// image reference, so the registry host (and any host a registry redirects to) is untrusted. Requests
// to a host a policy names explicitly in allowedRegistries go through a plain transport; every other
// request must be HTTPS and goes through a transport whose dialer refuses protected addresses after DNS
// resolution (so a name that resolves to 10.0.0.5 is refused too). Each response body is size-limited,
// each verification has a byte budget, and manifests with too many entries are refused before a layer
// is read.

// extraProtected are ranges a registry client must not reach beyond netpol.Protected: multicast,
// reserved, benchmarking, IETF protocol assignments, NAT64 and 6to4/Teredo spellings of IPv4.
var extraProtected = []netip.Prefix{
	netip.MustParsePrefix("192.0.0.0/24"),
	netip.MustParsePrefix("192.0.2.0/24"),
	netip.MustParsePrefix("198.18.0.0/15"),
	netip.MustParsePrefix("198.51.100.0/24"),
	netip.MustParsePrefix("203.0.113.0/24"),
	netip.MustParsePrefix("224.0.0.0/4"),
	netip.MustParsePrefix("240.0.0.0/4"),
	netip.MustParsePrefix("::/128"),
	netip.MustParsePrefix("64:ff9b::/96"),
	netip.MustParsePrefix("64:ff9b:1::/48"),
	netip.MustParsePrefix("2001::/32"),
	netip.MustParsePrefix("2002::/16"),
	netip.MustParsePrefix("ff00::/8"),
}

// protectedRange names the protected range addr lies in, or "" for a public address.
func protectedRange(addr netip.Addr) string {
	// A prefix never contains an address with an IPv6 zone (::1%lo), and the kernel connects to the
	// address whatever the zone: judge it without.
	addr = addr.WithZone("").Unmap()
	for _, r := range netpol.Protected {
		if r.Prefix.Contains(addr) {
			return r.Name
		}
	}
	for _, p := range extraProtected {
		if p.Contains(addr) {
			return "reserved (" + p.String() + ")"
		}
	}
	return ""
}

// BlockedError is a registry request the verifier refused to send.
type BlockedError struct {
	// Host is the host:port the request was for.
	Host string
	// Reason says why, e.g. "address in a protected range (loopback)".
	Reason string
}

func (e *BlockedError) Error() string {
	return fmt.Sprintf("request to %s refused: %s", e.Host, e.Reason)
}

// TooLargeError is a registry response beyond the verifier's limits.
type TooLargeError struct{ What string }

func (e *TooLargeError) Error() string { return e.What }

type ctxKey int

const (
	explicitKey ctxKey = iota
	budgetKey
)

// withExplicitHosts marks the registries a policy names explicitly for requests made under ctx.
func withExplicitHosts(ctx context.Context, hosts map[string]bool) context.Context {
	return context.WithValue(ctx, explicitKey, hosts)
}

// verification is what the requests of one verification share: a byte budget, and the first request
// the transport refused (cosign folds per-signature errors into strings, so it is kept here).
type verification struct {
	budget  atomic.Int64
	refused atomic.Pointer[error]
}

// withBudget gives requests made under ctx a shared byte budget.
func withBudget(ctx context.Context, n int64) context.Context {
	st := &verification{}
	st.budget.Store(n)
	return context.WithValue(ctx, budgetKey, st)
}

// refusal returns the first request the transport refused under ctx, if any.
func refusal(ctx context.Context) error {
	if st, ok := ctx.Value(budgetKey).(*verification); ok {
		if e := st.refused.Load(); e != nil {
			return *e
		}
	}
	return nil
}

func refuse(ctx context.Context, err error) error {
	if st, ok := ctx.Value(budgetKey).(*verification); ok {
		st.refused.CompareAndSwap(nil, &err)
	}
	return err
}

// registryHost normalizes a registry name as go-containerregistry addresses it (docker.io is
// index.docker.io).
func registryHost(host string) string {
	r, err := name.NewRegistry(host)
	if err != nil {
		return strings.ToLower(host)
	}
	return r.RegistryStr()
}

// guardedTransport routes each request by host, as described above.
type guardedTransport struct {
	open, guarded http.RoundTripper
	maxBody       int64
	maxEntries    int
}

func newGuardedTransport(open http.RoundTripper, maxBody int64, maxEntries int) *guardedTransport {
	dialer := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second, Control: refuseProtected}
	guarded := &http.Transport{
		// No proxy: the address dialled must be the registry's, so the check above means something.
		Proxy:                 nil,
		DialContext:           dialer.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          100,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   5 * time.Second,
		ResponseHeaderTimeout: 5 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
	if open == nil {
		openDialer := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
		open = &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           openDialer.DialContext,
			ForceAttemptHTTP2:     true,
			MaxIdleConns:          100,
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   5 * time.Second,
			ResponseHeaderTimeout: 5 * time.Second,
			ExpectContinueTimeout: time.Second,
		}
	}
	return &guardedTransport{open: open, guarded: guarded, maxBody: maxBody, maxEntries: maxEntries}
}

// refuseProtected is the guarded dialer's Control: it runs after name resolution, on the address about
// to be connected.
func refuseProtected(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return &BlockedError{Host: address, Reason: "unparsable address"}
	}
	if r := protectedRange(ap.Addr()); r != "" {
		return &BlockedError{Host: address, Reason: "address in a protected range (" + r + ")"}
	}
	return nil
}

func (t *guardedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.roundTrip(r)
	var blocked *BlockedError
	var tooLarge *TooLargeError
	if errors.As(err, &blocked) || errors.As(err, &tooLarge) {
		_ = refuse(r.Context(), err)
	}
	return resp, err
}

func (t *guardedTransport) roundTrip(r *http.Request) (*http.Response, error) {
	explicit, _ := r.Context().Value(explicitKey).(map[string]bool)
	rt := t.open
	if !explicit[registryHost(r.URL.Host)] {
		if r.URL.Scheme != "https" {
			return nil, &BlockedError{Host: r.URL.Host, Reason: "plain HTTP to a registry the policy does not name in allowedRegistries"}
		}
		// An IP literal is checked before anything is sent, names once resolved (by the dialer).
		if a, err := netip.ParseAddr(strings.Trim(r.URL.Hostname(), "[]")); err == nil {
			if rng := protectedRange(a); rng != "" {
				return nil, &BlockedError{Host: r.URL.Host, Reason: "address in a protected range (" + rng + ")"}
			}
		}
		rt = t.guarded
	}
	resp, err := rt.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	return t.limit(r, resp)
}

// limit bounds a response: its size, the verification's byte budget, and the entries of a manifest.
func (t *guardedTransport) limit(r *http.Request, resp *http.Response) (*http.Response, error) {
	if resp.ContentLength > t.maxBody {
		resp.Body.Close()
		return nil, &TooLargeError{What: fmt.Sprintf("registry response of %d bytes exceeds the %d-byte limit", resp.ContentLength, t.maxBody)}
	}
	st, _ := r.Context().Value(budgetKey).(*verification)
	resp.Body = &limitedBody{ctx: r.Context(), rc: resp.Body, left: t.maxBody, st: st, max: t.maxBody}
	if r.Method != http.MethodGet || resp.StatusCode != http.StatusOK || !strings.Contains(r.URL.Path, "/manifests/") {
		return resp, nil
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	var m struct {
		Layers    []json.RawMessage `json:"layers"`
		Manifests []json.RawMessage `json:"manifests"`
	}
	if json.Unmarshal(body, &m) == nil && (len(m.Layers) > t.maxEntries || len(m.Manifests) > t.maxEntries) {
		return nil, &TooLargeError{What: fmt.Sprintf("manifest with %d layers and %d manifests exceeds the %d-entry limit", len(m.Layers), len(m.Manifests), t.maxEntries)}
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return resp, nil
}

// limitedBody fails a read once the response or the verification's budget is exhausted.
type limitedBody struct {
	ctx  context.Context
	rc   io.ReadCloser
	left int64
	max  int64
	st   *verification
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if int64(len(p)) > b.left+1 {
		p = p[:b.left+1]
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	if b.left < 0 {
		return 0, refuse(b.ctx, &TooLargeError{What: fmt.Sprintf("registry response exceeds the %d-byte limit", b.max)})
	}
	if b.st != nil && b.st.budget.Add(-int64(n)) < 0 {
		return 0, refuse(b.ctx, &TooLargeError{What: "registry responses exceed the verification's byte budget"})
	}
	return n, err
}

func (b *limitedBody) Close() error { return b.rc.Close() }

// describe turns a registry error into what a denial may say: the HTTP status and a category, never
// the response body (a registry the tenant names could otherwise echo anything into a denial, a
// condition or an event).
func describe(err error) (category string, status int) {
	var blocked *BlockedError
	var tooLarge *TooLargeError
	switch {
	case errors.As(err, &blocked):
		return "refused: " + blocked.Reason, 0
	case errors.As(err, &tooLarge):
		return "too large: " + tooLarge.What, 0
	case errors.Is(err, context.DeadlineExceeded) || isTimeout(err):
		return "timeout", 0
	case errors.Is(err, context.Canceled):
		return "canceled", 0
	}
	if s := httpStatus(err); s != 0 {
		return statusCategory(s), s
	}
	var nerr net.Error
	var operr *net.OpError
	if errors.As(err, &operr) || errors.As(err, &nerr) {
		return "network error", 0
	}
	if strings.Contains(err.Error(), "x509:") || strings.Contains(err.Error(), "tls:") {
		return "TLS error", 0
	}
	return "registry error", 0
}

// detail is describe as a phrase: "HTTP 401, unauthorized" or "timeout".
func detail(err error) string {
	category, status := describe(err)
	if status != 0 {
		return fmt.Sprintf("HTTP %d, %s", status, category)
	}
	return category
}

func httpStatus(err error) int {
	var terr *transport.Error
	if errors.As(err, &terr) {
		return terr.StatusCode
	}
	return 0
}

func isTimeout(err error) bool {
	var nerr net.Error
	return errors.As(err, &nerr) && nerr.Timeout()
}

func statusCategory(s int) string {
	switch {
	case s == http.StatusUnauthorized:
		return "unauthorized"
	case s == http.StatusForbidden:
		return "forbidden"
	case s == http.StatusNotFound:
		return "not found"
	case s == http.StatusTooManyRequests:
		return "rate limited by the registry"
	case s >= 500:
		return "registry server error"
	default:
		return "unexpected status"
	}
}
