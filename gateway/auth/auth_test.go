package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

const aud = "https://files.mcp.example/mcp"

type issuerServer struct {
	srv  *httptest.Server
	keys jose.JSONWebKeySet
	hang chan struct{}
}

func newIssuerServer(t *testing.T, metaPath string) *issuerServer {
	is := &issuerServer{hang: make(chan struct{})}
	is.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case metaPath:
			_ = json.NewEncoder(w).Encode(map[string]string{"issuer": is.srv.URL, "jwks_uri": is.srv.URL + "/keys"})
		case "/keys":
			_ = json.NewEncoder(w).Encode(is.keys)
		case "/slow-keys":
			select {
			case <-is.hang:
			case <-r.Context().Done():
			}
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(func() { close(is.hang); is.srv.Close() })
	return is
}

func sign(t *testing.T, alg jose.SignatureAlgorithm, key any, kid string, claims any) string {
	t.Helper()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", kid))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Signed(s).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

type scpClaims struct {
	jwt.Claims
	Scp []string `json:"scp"`
}

func TestES256WithRFC8414Discovery(t *testing.T) {
	is := newIssuerServer(t, "/.well-known/oauth-authorization-server")
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	is.keys = jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "e1", Algorithm: "ES256", Use: "sig"}}}
	v, err := NewVerifier(Options{Issuer: is.srv.URL, Audience: aud, Algorithms: []string{"ES256"}})
	if err != nil {
		t.Fatal(err)
	}
	c := scpClaims{Claims: jwt.Claims{Issuer: is.srv.URL, Subject: "svc", ID: "j1", Audience: jwt.Audience{aud}, Expiry: jwt.NewNumericDate(time.Now().Add(time.Minute))}, Scp: []string{"a", "b"}}
	p, err := v.Verify(context.Background(), sign(t, jose.ES256, key, "e1", c))
	if err != nil {
		t.Fatal(err)
	}
	if p.Subject != "svc" || p.TokenID != "j1" || !p.HasScope("b") {
		t.Fatalf("principal %+v", p)
	}
}

func TestConfigRefusesSymmetricAndNone(t *testing.T) {
	for _, alg := range []string{"HS256", "none", "RS1"} {
		if _, err := NewVerifier(Options{Issuer: "https://i", Audience: aud, Algorithms: []string{alg}}); err == nil {
			t.Errorf("algorithm %s accepted", alg)
		}
	}
}

func TestSymmetricKeyInJWKSIsNeverUsed(t *testing.T) {
	is := newIssuerServer(t, "/.well-known/openid-configuration")
	secret := []byte("0123456789abcdef0123456789abcdef")
	is.keys = jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: secret, KeyID: "k1", Algorithm: "RS256"}}}
	v, _ := NewVerifier(Options{Issuer: is.srv.URL, Audience: aud, Algorithms: []string{"RS256"}})
	c := jwt.Claims{Issuer: is.srv.URL, Subject: "x", Audience: jwt.Audience{aud}, Expiry: jwt.NewNumericDate(time.Now().Add(time.Minute))}
	if _, err := v.Verify(context.Background(), sign(t, jose.HS256, secret, "k1", c)); err == nil {
		t.Fatal("HS256 token verified")
	}
}

func TestDiscoveryChecksIssuer(t *testing.T) {
	is := newIssuerServer(t, "/.well-known/openid-configuration")
	v, _ := NewVerifier(Options{Issuer: is.srv.URL + "/tenant", Audience: aud, Algorithms: []string{"RS256"}})
	_, err := v.discover(context.Background())
	if err == nil {
		t.Fatal("metadata of another issuer accepted")
	}
}

func TestKeyFetchHasADeadline(t *testing.T) {
	is := newIssuerServer(t, "/none")
	v, _ := NewVerifier(Options{Issuer: is.srv.URL, JWKSURL: is.srv.URL + "/slow-keys", Audience: aud, Algorithms: []string{"ES256"}, FetchTimeout: 200 * time.Millisecond})
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	c := jwt.Claims{Issuer: is.srv.URL, Subject: "x", Audience: jwt.Audience{aud}, Expiry: jwt.NewNumericDate(time.Now().Add(time.Minute))}
	start := time.Now()
	_, err := v.Verify(context.Background(), sign(t, jose.ES256, key, "e1", c))
	var ae *Error
	if !errors.As(err, &ae) || ae.Code != "invalid_token" {
		t.Fatalf("err %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("key fetch took %s", d)
	}
}

func TestChallengeAndMetadataPath(t *testing.T) {
	p, err := MetadataPath(aud)
	if err != nil || p != "/.well-known/oauth-protected-resource/mcp" {
		t.Fatalf("%q %v", p, err)
	}
	c := Challenge("https://x/.well-known/oauth-protected-resource", "insufficient_scope", `needs "b"`, "a b")
	if !strings.HasPrefix(c, `Bearer resource_metadata="https://x/`) || !strings.Contains(c, `scope="a b"`) || !strings.Contains(c, `needs \"b\"`) {
		t.Fatalf("challenge %s", c)
	}
}
