package issuerkeys

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"k8s.io/apimachinery/pkg/types"
)

// issuer is a TLS OAuth issuer publishing RFC 8414 metadata and a key set that a test can rotate.
type issuer struct {
	srv  *httptest.Server
	mu   sync.Mutex
	keys []jose.JSONWebKey
	hits map[string]int
}

func newIssuer(t *testing.T) *issuer {
	is := &issuer{hits: map[string]int{}}
	is.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		is.mu.Lock()
		is.hits[r.URL.Path]++
		keys := is.keys
		is.mu.Unlock()
		switch r.URL.Path {
		case "/.well-known/oauth-authorization-server":
			_ = json.NewEncoder(w).Encode(map[string]string{"issuer": is.srv.URL, "jwks_uri": is.srv.URL + "/keys"})
		case "/keys":
			_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: keys})
		case "/big":
			_, _ = w.Write([]byte(`{"keys":[` + strings.Repeat(" ", DefaultMaxBytes) + `]}`))
		case "/hang":
			<-r.Context().Done()
		case "/redirect":
			http.Redirect(w, r, "/keys", http.StatusFound)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(is.srv.Close)
	return is
}

func (is *issuer) set(keys ...jose.JSONWebKey) {
	is.mu.Lock()
	is.keys = keys
	is.mu.Unlock()
}

func ecKey(t *testing.T, kid string) (*ecdsa.PrivateKey, jose.JSONWebKey) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k, jose.JSONWebKey{Key: &k.PublicKey, KeyID: kid, Algorithm: "ES256", Use: "sig"}
}

func kids(t *testing.T, body []byte) []string {
	t.Helper()
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(body, &set); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, k := range set.Keys {
		out = append(out, k.KeyID)
	}
	return out
}

// TestFetchDiscoversAndRefreshes follows the issuer's metadata to its keys, notifies the servers using
// the issuer when the keys rotate, and keeps the last good keys while the issuer fails.
func TestFetchDiscoversAndRefreshes(t *testing.T) {
	is := newIssuer(t)
	_, k1 := ecKey(t, "k1")
	is.set(k1)
	notified := make(chan types.NamespacedName, 10)
	f := &Fetcher{Client: is.srv.Client(), Refresh: 200 * time.Millisecond, Notify: func(n types.NamespacedName) { notified <- n }}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = f.Start(ctx) }()
	srv := types.NamespacedName{Namespace: "t", Name: "files"}
	src := Source{Issuer: is.srv.URL}
	if k := f.Get(src, srv); k.JSON != nil {
		t.Fatalf("keys before any fetch: %s", k.JSON)
	}
	wait := func(what string) {
		t.Helper()
		select {
		case n := <-notified:
			if n != srv {
				t.Fatalf("notified %v, want %v", n, srv)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("not notified: %s", what)
		}
	}
	wait("first fetch")
	k := f.Get(src, srv)
	if got := kids(t, k.JSON); len(got) != 1 || got[0] != "k1" || k.URL != is.srv.URL+"/keys" || k.Err != nil {
		t.Fatalf("after the first fetch: kids %v, url %s, err %v", got, k.URL, k.Err)
	}
	_, k2 := ecKey(t, "k2")
	is.set(k2)
	start := time.Now()
	wait("rotation")
	if got := kids(t, f.Get(src, srv).JSON); len(got) != 1 || got[0] != "k2" {
		t.Fatalf("after the rotation: kids %v", got)
	}
	t.Logf("rotation reached the fetcher in %s (refresh 200ms)", time.Since(start).Round(time.Millisecond))
	is.set() // the issuer now publishes nothing usable
	wait("failure")
	k = f.Get(src, srv)
	if k.Err == nil || !strings.Contains(k.Err.Error(), "no usable public signing key") {
		t.Fatalf("a failing refresh must be reported: %v", k.Err)
	}
	if got := kids(t, k.JSON); len(got) != 1 || got[0] != "k2" {
		t.Fatalf("a failing refresh must keep the last good keys: %v", got)
	}
	// A forgotten server's source is no longer fetched.
	f.Forget(srv)
	time.Sleep(300 * time.Millisecond)
	is.mu.Lock()
	before := is.hits["/keys"]
	is.mu.Unlock()
	time.Sleep(600 * time.Millisecond)
	is.mu.Lock()
	after := is.hits["/keys"]
	is.mu.Unlock()
	if after != before {
		t.Fatalf("a source no server uses was fetched %d more times", after-before)
	}
}

// TestOnlyPublicSigningKeysAreDelivered: private key material, symmetric keys, encryption keys and weak
// RSA keys never reach the gateway; what is delivered is a re-encoding, not the issuer's bytes.
func TestOnlyPublicSigningKeysAreDelivered(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	weak, _ := rsa.GenerateKey(rand.Reader, 1024) //nolint:gosec // the weak key the test expects to be refused
	strong, _ := rsa.GenerateKey(rand.Reader, 2048)
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{
		{Key: ec, KeyID: "private-ec", Algorithm: "ES256"}, // a private key: only its public half may go
		{Key: []byte("0123456789abcdef0123456789abcdef"), KeyID: "hmac", Algorithm: "HS256"},
		{Key: &strong.PublicKey, KeyID: "enc", Use: "enc"},
		{Key: &weak.PublicKey, KeyID: "weak", Algorithm: "RS256"},
		{Key: &strong.PublicKey, KeyID: "rsa", Algorithm: "RS256", Use: "sig"},
	}}
	body, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	var withExtra map[string]any
	_ = json.Unmarshal(body, &withExtra)
	withExtra["tenant_note"] = "not a key"
	body, _ = json.Marshal(withExtra)
	out, n, err := PublicSigningKeys(body)
	if err != nil {
		t.Fatal(err)
	}
	if got := kids(t, out); n != 2 || strings.Join(got, ",") != "private-ec,rsa" {
		t.Fatalf("delivered %v (%d), want private-ec (public half) and rsa", got, n)
	}
	for _, bad := range []string{`"d"`, `"k"`, "tenant_note", "hmac", "weak"} {
		if strings.Contains(string(out), bad) {
			t.Errorf("the delivered key set contains %s: %s", bad, out)
		}
	}
	if _, _, err := PublicSigningKeys([]byte(`{"keys":[]}`)); err == nil {
		t.Error("an empty key set must be an error")
	}
	many := jose.JSONWebKeySet{}
	for i := 0; i <= MaxKeys; i++ {
		many.Keys = append(many.Keys, jose.JSONWebKey{Key: &ec.PublicKey, KeyID: strings.Repeat("k", i+1)})
	}
	b, _ := json.Marshal(many)
	if _, _, err := PublicSigningKeys(b); err == nil || !strings.Contains(err.Error(), "more than") {
		t.Errorf("more than %d keys: %v", MaxKeys, err)
	}
}

// TestGuardedClientRefusesInternalTargets aims the fetch, as a tenant may through issuer or jwksURL,
// at the operator's own network: loopback (the test issuer itself), metadata, and plain HTTP.
func TestGuardedClientRefusesInternalTargets(t *testing.T) {
	is := newIssuer(t)
	_, k1 := ecKey(t, "k1")
	is.set(k1)
	guarded := &Fetcher{Client: NewClient(is.srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs)}
	ctx := context.Background()
	_, _, _, err := guarded.Fetch(ctx, Source{Issuer: is.srv.URL, JWKSURL: is.srv.URL + "/keys"})
	var blocked *BlockedError
	if !errors.As(err, &blocked) || !strings.Contains(err.Error(), "loopback") {
		t.Fatalf("loopback issuer: want a BlockedError naming loopback, got %v", err)
	}
	for _, u := range []string{"http://203.0.113.7/keys", "http://169.254.169.254/latest/meta-data"} {
		if _, _, _, err := guarded.Fetch(ctx, Source{Issuer: "https://login.example.com", JWKSURL: u}); err == nil || !strings.Contains(err.Error(), "not https") {
			t.Errorf("%s: want refused as not https, got %v", u, err)
		}
	}
	for addr, want := range map[string]string{
		"127.0.0.1": "loopback", "::1": "loopback", "169.254.169.254": "metadata", "64:ff9b::a9fe:a9fe": "NAT64",
		"::ffff:127.0.0.1": "loopback", "0.0.0.0": "this network", "224.0.0.1": "multicast", "2002:7f00:1::": "6to4",
		"10.0.0.5": "", "192.168.1.1": "", "203.0.113.7": "", "2001:db8::1": "",
	} {
		got := Refused(netip.MustParseAddr(addr))
		if (want == "") != (got == "") || (want != "" && !strings.Contains(got, want)) {
			t.Errorf("Refused(%s) = %q, want %q", addr, got, want)
		}
	}
	// Bounded: redirects are not followed, a large answer and a hanging issuer fail within the deadline.
	open := &Fetcher{Client: is.srv.Client(), Timeout: 500 * time.Millisecond}
	open.Client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	for path, want := range map[string]string{"/redirect": "HTTP 302", "/big": "larger than", "/hang": "deadline"} {
		start := time.Now()
		_, _, _, err := open.Fetch(ctx, Source{Issuer: is.srv.URL, JWKSURL: is.srv.URL + path})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: want %q, got %v", path, want, err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("%s took %s, past the 500ms deadline", path, d)
		}
	}
}
