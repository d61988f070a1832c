// Package issuerkeys fetches OAuth issuers' signing keys in the operator and keeps them fresh, so that
// every server pod's gateway can verify tokens without any egress to the issuer: the operator writes
// the keys into the gateway's ConfigMap (jwks.json) and the gateway reads them from its mounted file.
// The server process shares the pod's network, so a fence that opened the issuer for the gateway would
// open it for the server too; delivering the keys keeps the issuer out of the fence altogether.
//
// A tenant writes the issuer and jwksURL, so the fetch is an outbound request from the operator's
// network position that a tenant aims: the default client refuses plain HTTP, redirects, proxies, and
// loopback, link-local, unspecified and reserved addresses (after name resolution, in every IPv6
// spelling that embeds an IPv4 address); private addresses stay allowed for in-cluster issuers. Every
// fetch has a deadline and a size bound, and only the public signing keys of the answer are kept and
// re-encoded: nothing else of what the issuer answered reaches the ConfigMap.
package issuerkeys

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"k8s.io/apimachinery/pkg/types"

	"github.com/mcp-warden/mcp-warden/policy/netpol"
)

// Defaults.
const (
	// DefaultRefresh is how often each issuer's keys are fetched again.
	DefaultRefresh = time.Minute
	// DefaultTimeout bounds one fetch: discovery and key set together.
	DefaultTimeout = 5 * time.Second
	// DefaultMaxBytes bounds each response.
	DefaultMaxBytes = 256 << 10
	// MaxKeys bounds how many keys are delivered.
	MaxKeys = 64
	// minRetry is the first retry delay after a failed fetch; it doubles up to the refresh interval.
	minRetry = 2 * time.Second
	// maxKeyID bounds a delivered key id (issuers use thumbprints or short names), so that the
	// delivered set stays small whatever the issuer answers.
	maxKeyID = 256
	// maxSkipped is how many refused keys an error names.
	maxSkipped = 4
	// maxFetches is how many issuers are fetched at once.
	maxFetches = 8
)

// Source is where a server's keys come from: the issuer, and the key set URL when the spec names one
// (empty: discovered from the issuer's metadata).
type Source struct {
	Issuer  string
	JWKSURL string
}

// Keys is what the operator knows of a source's keys.
type Keys struct {
	// JSON is the key set delivered to the gateway: the public signing keys only, re-encoded. Nil
	// until a fetch succeeded.
	JSON []byte
	// Count is how many keys JSON holds.
	Count int
	// URL is the key set URL the keys came from.
	URL string
	// Fetched is when the keys were last fetched successfully.
	Fetched time.Time
	// Err is the last fetch's error; nil when the last fetch succeeded. Keys already fetched are kept
	// (and delivered) while refreshes fail.
	Err error
}

// Fetcher fetches and refreshes the keys of every source a server uses, off the reconcile path: Get
// answers from memory at once, a background loop fetches new sources immediately and known ones every
// Refresh, and Notify names the servers whose keys (or fetch error) changed, to reconcile them again.
type Fetcher struct {
	// Client makes the requests (default: NewClient(nil)).
	Client *http.Client
	// Timeout bounds one fetch (default DefaultTimeout).
	Timeout time.Duration
	// Refresh is how often keys are fetched again (default DefaultRefresh). A key the issuer rotates
	// in reaches the ConfigMap within Refresh.
	Refresh time.Duration
	// MaxBytes bounds each response body (default DefaultMaxBytes).
	MaxBytes int64
	// Notify is called, outside any lock, with each server whose source's keys or error changed.
	Notify func(types.NamespacedName)

	mu      sync.Mutex
	entries map[Source]*entry
	subOf   map[types.NamespacedName]Source
	wake    chan struct{}
	once    sync.Once
	// running counts the fetches under way, in all and by the namespace each is charged to.
	running   int
	runningNS map[string]int
}

type entry struct {
	keys     Keys
	due      time.Time
	failures int
	inflight bool
	subs     map[types.NamespacedName]struct{}
}

func (f *Fetcher) init() {
	f.once.Do(func() {
		f.entries = map[Source]*entry{}
		f.subOf = map[types.NamespacedName]Source{}
		f.runningNS = map[string]int{}
		f.wake = make(chan struct{}, 1)
	})
}

// Get returns what is known of src's keys and records that server uses src (and no other source). A
// source seen for the first time is fetched by the background loop right away; until then the Keys
// are empty.
func (f *Fetcher) Get(src Source, server types.NamespacedName) Keys {
	f.init()
	f.mu.Lock()
	defer f.mu.Unlock()
	if old, ok := f.subOf[server]; ok && old != src {
		f.unsubscribe(server, old)
	}
	e := f.entries[src]
	if e == nil {
		e = &entry{subs: map[types.NamespacedName]struct{}{}, due: time.Now()}
		f.entries[src] = e
		select {
		case f.wake <- struct{}{}:
		default:
		}
	}
	e.subs[server] = struct{}{}
	f.subOf[server] = src
	return e.keys
}

// Forget drops the server's use of its source (deleted, or authentication turned off); a source no
// server uses is no longer fetched.
func (f *Fetcher) Forget(server types.NamespacedName) {
	f.init()
	f.mu.Lock()
	defer f.mu.Unlock()
	if src, ok := f.subOf[server]; ok {
		f.unsubscribe(server, src)
	}
}

func (f *Fetcher) unsubscribe(server types.NamespacedName, src Source) {
	delete(f.subOf, server)
	if e := f.entries[src]; e != nil {
		delete(e.subs, server)
		if len(e.subs) == 0 && !e.inflight {
			delete(f.entries, src)
		}
	}
}

// Start runs the fetch loop until ctx ends (a manager Runnable).
func (f *Fetcher) Start(ctx context.Context) error {
	f.init()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		f.dispatch(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case <-f.wake:
		}
	}
}

// NeedLeaderElection is true: only the leader reconciles, so only it needs keys.
func (f *Fetcher) NeedLeaderElection() bool { return true }

// dispatch starts due fetches in the free slots (at most maxFetches under way) and never waits for a
// slot: a fetch that ends wakes the loop. Tenants write the issuers, so one tenant's many slow issuers
// must not hold back another's keys: each free slot goes to the due source whose least busy
// subscribing namespace has the fewest fetches under way, then to sources that did not fail last time,
// then to the longest due. Another namespace's source so waits at most about one fetch deadline.
func (f *Fetcher) dispatch(ctx context.Context) {
	if ctx.Err() != nil {
		return
	}
	now := time.Now()
	f.mu.Lock()
	type candidate struct {
		src Source
		e   *entry
	}
	var due []candidate
	for src, e := range f.entries {
		if !e.inflight && !now.Before(e.due) {
			due = append(due, candidate{src, e})
		}
	}
	type started struct {
		src Source
		ns  string
	}
	var start []started
	for f.running < maxFetches && len(due) > 0 {
		best, bestNS, bestLoad := -1, "", 0
		for i, c := range due {
			ns, load := f.idlestNamespace(c.e)
			if best < 0 || load < bestLoad || load == bestLoad && earlier(c.e, due[best].e) {
				best, bestNS, bestLoad = i, ns, load
			}
		}
		c := due[best]
		due[best] = due[len(due)-1]
		due = due[:len(due)-1]
		c.e.inflight = true
		f.running++
		f.runningNS[bestNS]++
		start = append(start, started{c.src, bestNS})
	}
	f.mu.Unlock()
	for _, c := range start {
		go f.refresh(ctx, c.src, c.ns)
	}
}

// idlestNamespace is the namespace among e's subscribers with the fewest fetches under way (f.mu held).
func (f *Fetcher) idlestNamespace(e *entry) (string, int) {
	ns, load := "", -1
	for s := range e.subs {
		if l := f.runningNS[s.Namespace]; load < 0 || l < load || l == load && s.Namespace < ns {
			ns, load = s.Namespace, l
		}
	}
	return ns, max(load, 0)
}

// earlier orders two due sources: the one that did not fail last time first, then the longest due.
func earlier(a, b *entry) bool {
	if (a.failures == 0) != (b.failures == 0) {
		return a.failures == 0
	}
	return a.due.Before(b.due)
}

// refresh fetches src in a slot charged to ns; the slot is freed once the servers are notified, so
// that no more than maxFetches of these goroutines exist even if Notify is slow.
func (f *Fetcher) refresh(ctx context.Context, src Source, ns string) {
	defer f.release(ns)
	body, n, u, err := f.Fetch(ctx, src)
	refresh := f.Refresh
	if refresh <= 0 {
		refresh = DefaultRefresh
	}
	now := time.Now()
	f.mu.Lock()
	e := f.entries[src]
	if e == nil {
		f.mu.Unlock()
		return
	}
	e.inflight = false
	before := e.keys
	if err != nil {
		e.keys.Err = err
		e.failures++
		e.due = now.Add(min(refresh, minRetry<<min(e.failures-1, 10)))
	} else {
		e.keys = Keys{JSON: body, Count: n, URL: u, Fetched: now}
		e.failures = 0
		e.due = now.Add(refresh)
	}
	changed := !bytes.Equal(before.JSON, e.keys.JSON) || errText(before.Err) != errText(e.keys.Err)
	var subs []types.NamespacedName
	if changed {
		for s := range e.subs {
			subs = append(subs, s)
		}
	}
	if len(e.subs) == 0 {
		delete(f.entries, src)
	}
	f.mu.Unlock()
	if f.Notify != nil {
		for _, s := range subs {
			f.Notify(s)
		}
	}
}

// release frees a fetch slot charged to ns and lets the loop hand it out at once.
func (f *Fetcher) release(ns string) {
	f.mu.Lock()
	f.running--
	if f.runningNS[ns]--; f.runningNS[ns] <= 0 {
		delete(f.runningNS, ns)
	}
	f.mu.Unlock()
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// Fetch fetches src's key set once, under the Timeout: from src.JWKSURL, or from the jwks_uri of the
// issuer's metadata (OpenID Connect discovery, then RFC 8414). It returns the public signing keys
// re-encoded as a key set, how many there are, and the URL they came from.
func (f *Fetcher) Fetch(ctx context.Context, src Source) ([]byte, int, string, error) {
	timeout := f.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	u := src.JWKSURL
	if u == "" {
		var err error
		if u, err = f.discover(ctx, src.Issuer); err != nil {
			return nil, 0, "", err
		}
	}
	body, err := f.get(ctx, u)
	if err != nil {
		return nil, 0, u, fmt.Errorf("fetch the signing keys of issuer %s: %w", src.Issuer, err)
	}
	out, n, err := PublicSigningKeys(body)
	if err != nil {
		return nil, 0, u, fmt.Errorf("the key set of issuer %s at %s: %w", src.Issuer, u, err)
	}
	return out, n, u, nil
}

// PublicSigningKeys parses a JSON Web Key Set and re-encodes only its usable public signing keys
// (RSA of at least 2048 bits, ECDSA, Ed25519; "use" absent or "sig"; the public half of any private
// key), each with its key id, algorithm and use only. It fails when none is left.
func PublicSigningKeys(body []byte) ([]byte, int, error) {
	var raw struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &raw); err != nil {
		// The parser's error can quote the answer: it is not passed on.
		return nil, 0, errors.New(`not a JSON Web Key Set (want a JSON object with a "keys" array)`)
	}
	var out jose.JSONWebKeySet
	var skipped []string
	skip := func(i int, why string) {
		// Keys are named by their place in the set: a key id is the issuer's text, and nothing the
		// issuer answered is quoted (the answer may be an internal service's a tenant aimed at).
		skipped = append(skipped, fmt.Sprintf("key %d: %s", i, why))
	}
	for i, r := range raw.Keys {
		var k jose.JSONWebKey
		if err := k.UnmarshalJSON(r); err != nil {
			skip(i, "not a valid JSON Web Key")
			continue
		}
		if k.Use != "" && k.Use != "sig" {
			continue
		}
		if len(k.KeyID) > maxKeyID {
			skip(i, fmt.Sprintf("key id longer than %d bytes", maxKeyID))
			continue
		}
		pub := k.Public()
		if !pub.Valid() {
			skip(i, "not an asymmetric key")
			continue
		}
		switch key := pub.Key.(type) {
		case *rsa.PublicKey:
			if key.N.BitLen() < 2048 {
				skip(i, fmt.Sprintf("RSA key of %d bits, fewer than 2048", key.N.BitLen()))
				continue
			}
		case *ecdsa.PublicKey, ed25519.PublicKey:
		default:
			skip(i, "not an RSA, ECDSA or Ed25519 key")
			continue
		}
		if len(out.Keys) == MaxKeys {
			return nil, 0, fmt.Errorf("more than %d signing keys", MaxKeys)
		}
		// Only what verification uses is delivered: no certificate chains (x5c) or thumbprints, which
		// the gateway never reads and which would let an issuer fill the size bound per server.
		out.Keys = append(out.Keys, jose.JSONWebKey{Key: pub.Key, KeyID: pub.KeyID, Algorithm: pub.Algorithm, Use: pub.Use})
	}
	if len(out.Keys) == 0 {
		msg := "no usable public signing key"
		if n := len(skipped); n > maxSkipped {
			skipped = append(skipped[:maxSkipped], fmt.Sprintf("%d more", n-maxSkipped))
		}
		if len(skipped) > 0 {
			msg += " (" + strings.Join(skipped, "; ") + ")"
		}
		return nil, 0, errors.New(msg)
	}
	sort.SliceStable(out.Keys, func(i, j int) bool { return out.Keys[i].KeyID < out.Keys[j].KeyID })
	b, err := json.Marshal(out)
	if err != nil {
		return nil, 0, err
	}
	return b, len(out.Keys), nil
}

// discover reads jwks_uri from the issuer's metadata and checks that it names the same issuer.
func (f *Fetcher) discover(ctx context.Context, issuer string) (string, error) {
	iss, err := url.Parse(issuer)
	if err != nil || iss.Host == "" {
		return "", fmt.Errorf("issuer %q is not a URL", issuer)
	}
	path := strings.TrimSuffix(iss.Path, "/")
	candidates := []string{
		strings.TrimSuffix(issuer, "/") + "/.well-known/openid-configuration",
		iss.Scheme + "://" + iss.Host + "/.well-known/oauth-authorization-server" + path,
	}
	var errs []error
	for _, u := range candidates {
		body, err := f.get(ctx, u)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		var meta struct {
			Issuer  string `json:"issuer"`
			JWKSURI string `json:"jwks_uri"`
		}
		if err := json.Unmarshal(body, &meta); err != nil {
			errs = append(errs, fmt.Errorf("%s: not JSON metadata", u))
			continue
		}
		if meta.Issuer != issuer {
			// The issuer it names is not quoted: nothing of an answer reaches the status.
			errs = append(errs, fmt.Errorf("%s names another issuer than %q (compare them exactly, a trailing slash too)", u, issuer))
			continue
		}
		if meta.JWKSURI == "" {
			errs = append(errs, fmt.Errorf("%s has no jwks_uri", u))
			continue
		}
		return meta.JWKSURI, nil
	}
	return "", fmt.Errorf("discover the signing keys URL of issuer %s: %w", issuer, errors.Join(errs...))
}

// get GETs u and returns its body (HTTP 200, at most MaxBytes). The body is never quoted in errors.
func (f *Fetcher) get(ctx context.Context, u string) ([]byte, error) {
	c := f.Client
	if c == nil {
		c = defaultClient
	}
	limit := f.MaxBytes
	if limit <= 0 {
		limit = DefaultMaxBytes
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: HTTP %d (redirects are not followed)", u, resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	if int64(len(body)) > limit {
		return nil, fmt.Errorf("GET %s: the answer is larger than %d bytes", u, limit)
	}
	return body, nil
}

var defaultClient = NewClient(nil)

// NewClient returns the guarded client issuers are fetched with: HTTPS only, trusting roots (nil: the
// system's), no proxy, no redirects, 2 s to connect and 3 s for the response headers, and a dialer that
// refuses protected addresses other than private ones after name resolution.
func NewClient(roots *x509.CertPool) *http.Client {
	dialer := &net.Dialer{Timeout: 2 * time.Second, Control: refuse}
	return &http.Client{
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Transport: httpsOnly{&http.Transport{
			Proxy:                 nil,
			DialContext:           dialer.DialContext,
			TLSClientConfig:       &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
			TLSHandshakeTimeout:   3 * time.Second,
			ResponseHeaderTimeout: 3 * time.Second,
			MaxIdleConnsPerHost:   2,
			IdleConnTimeout:       90 * time.Second,
		}},
	}
}

// httpsOnly refuses plain HTTP: keys fetched in the clear could be swapped on the way.
type httpsOnly struct{ rt http.RoundTripper }

func (h httpsOnly) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Scheme != "https" {
		return nil, fmt.Errorf("refused: %s is not https; issuers' keys are fetched over HTTPS only", r.URL.Redacted())
	}
	return h.rt.RoundTrip(r)
}

// BlockedError is a connection the guarded dialer refused.
type BlockedError struct {
	Address, Range string
}

func (e *BlockedError) Error() string {
	return fmt.Sprintf("refused to connect to %s: %s is never an issuer's address", e.Address, e.Range)
}

// refuse is the dialer's Control: it runs after name resolution, on the address about to be connected.
func refuse(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return &BlockedError{Address: address, Range: "an unparsable address"}
	}
	if r := Refused(ap.Addr()); r != "" {
		return &BlockedError{Address: address, Range: r}
	}
	return nil
}

// Refused names the protected range addr lies in when an issuer may not be there (loopback,
// link-local and cloud metadata, unspecified, reserved, in any spelling), or "" when it may (public
// and private addresses). An IPv6 zone (::1%lo) is dropped first: a prefix never contains a zoned
// address, and the kernel connects to the address whatever the zone.
func Refused(addr netip.Addr) string {
	addr = addr.WithZone("").Unmap()
	for _, r := range netpol.Protected {
		if r.Class != netpol.ClassPrivate && r.Prefix.Contains(addr) {
			return r.Name
		}
	}
	return ""
}
