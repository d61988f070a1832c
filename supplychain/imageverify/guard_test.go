package imageverify_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/mcp-warden/mcp-warden/supplychain/imageverify"
)

const zeroDigest = "@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// sink is a loopback HTTP server that counts what reaches it and answers with a secret in the body, as
// a cloud metadata service or an internal API would.
type sink struct {
	srv  *httptest.Server
	hits atomic.Int64
}

const secret = "AKIA-SECRET-FROM-THE-METADATA-SERVICE"

func newSink(t *testing.T, tls bool, status int) *sink {
	s := &sink{}
	h := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		s.hits.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = w.Write([]byte(`{"errors":[{"code":"UNKNOWN","message":"` + secret + `"}]} ` + secret))
	})
	if tls {
		s.srv = httptest.NewTLSServer(h)
	} else {
		s.srv = httptest.NewServer(h)
	}
	t.Cleanup(s.srv.Close)
	return s
}

func (s *sink) host() string { return s.srv.Listener.Addr().String() }

// TestVerifierCannotBeAimed: a tenant writes the image reference, so a registry at a loopback (or
// private, link-local) address is not contacted unless the policy names it, neither over HTTP nor over
// HTTPS, nor by a name that resolves there; a named one is, and what it answers never reaches the
// denial.
func TestVerifierCannotBeAimed(t *testing.T) {
	f := newFixture(t)
	v := imageverify.New(imageverify.Options{})
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		tls  bool
		host func(s *sink) string
	}{
		{"plain HTTP to a loopback address", false, (*sink).host},
		{"HTTPS to a loopback address", true, (*sink).host},
		{"HTTPS to a name that resolves to loopback", true, func(s *sink) string {
			return "localhost:" + s.srv.Listener.Addr().String()[strings.LastIndex(s.srv.Listener.Addr().String(), ":")+1:]
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSink(t, tc.tls, http.StatusOK)
			p := f.policy() // names only the test registry
			_, err := v.Verify(ctx, tc.host(s)+"/acme/x"+zeroDigest, []imageverify.Policy{p})
			denial(t, err, imageverify.CheckRegistryRefused, "must be named in the policy's allowedRegistries")
			if n := s.hits.Load(); n != 0 {
				t.Fatalf("the verifier sent %d requests to a registry the policy does not name", n)
			}
		})
	}
	t.Run("named explicitly: contacted, the body is not echoed", func(t *testing.T) {
		s := newSink(t, false, http.StatusForbidden)
		p := f.policy()
		p.Identity = "named"
		p.Registries = []string{s.host() + "/acme"}
		_, err := v.Verify(ctx, s.host()+"/acme/x"+zeroDigest, []imageverify.Policy{p})
		denial(t, err, imageverify.CheckRegistryUnreachable, "HTTP 403, forbidden")
		if s.hits.Load() == 0 {
			t.Fatal("a registry the policy names was not contacted")
		}
		if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), "UNKNOWN") {
			t.Fatalf("the denial carries the registry's response: %v", err)
		}
	})
	t.Run("a path prefix names the registry too, a different port does not", func(t *testing.T) {
		s := newSink(t, false, http.StatusOK)
		p := f.policy()
		p.Identity = "other-port"
		p.Registries = []string{"127.0.0.1:1/acme"}
		_, err := v.Verify(ctx, s.host()+"/acme/x"+zeroDigest, []imageverify.Policy{p})
		denial(t, err, imageverify.CheckRegistryRefused, "refused")
		if s.hits.Load() != 0 {
			t.Fatal("a registry on another port was contacted")
		}
	})
}

// TestRedirectsAreChecked: a registry the policy names redirects every request to a loopback host the
// policy does not name (over HTTP and over HTTPS): the target is never contacted.
func TestRedirectsAreChecked(t *testing.T) {
	f := newFixture(t)
	img, err := f.reg.PushSigned("acme/files", f.release, slsa)
	must(t, err)
	for _, tls := range []bool{false, true} {
		target := newSink(t, tls, http.StatusOK)
		front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, target.srv.URL+r.URL.Path, http.StatusTemporaryRedirect)
		}))
		t.Cleanup(front.Close)
		host := front.Listener.Addr().String()
		p := f.policy()
		p.Registries = []string{host}
		v := imageverify.New(imageverify.Options{})
		_, err := v.Verify(context.Background(), host+"/acme/files@"+img.DigestStr(), []imageverify.Policy{p})
		denial(t, err, imageverify.CheckRegistryRefused, "refused")
		if target.hits.Load() != 0 {
			t.Fatalf("tls=%v: a redirect reached a host the policy does not name (%d requests)", tls, target.hits.Load())
		}
	}
}

// TestTokenRealmIsChecked: a registry the policy names asks for a bearer token from a realm on a
// loopback host it does not name: the realm is never contacted.
func TestTokenRealmIsChecked(t *testing.T) {
	f := newFixture(t)
	realm := newSink(t, false, http.StatusOK)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="`+realm.srv.URL+`/token",service="registry"`)
		w.WriteHeader(http.StatusUnauthorized)
	}))
	t.Cleanup(front.Close)
	host := front.Listener.Addr().String()
	p := f.policy()
	p.Registries = []string{host}
	_, err := imageverify.New(imageverify.Options{}).Verify(context.Background(), host+"/acme/x"+zeroDigest, []imageverify.Policy{p})
	if err == nil {
		t.Fatal("admitted")
	}
	if realm.hits.Load() != 0 {
		t.Fatalf("the token realm on an unnamed loopback host was contacted (%d requests): %v", realm.hits.Load(), err)
	}
	t.Log(err)
}
