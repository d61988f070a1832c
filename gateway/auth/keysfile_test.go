package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// TestKeysFileRotation verifies tokens against a key set file, as the operator delivers it, with no
// network: no file refuses every token; a rotated file is used at once for a token naming the new key
// id, and a token signed with the removed key is refused.
func TestKeysFileRotation(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "jwks.json")
	const iss = "https://login.example.com"
	// The issuer URL is never fetched: a request would fail (nothing listens), and Verify must not
	// even try.
	v, err := NewVerifier(Options{Issuer: iss, JWKSURL: "https://127.0.0.1:1/keys", KeysFile: file, Audience: aud, Algorithms: []string{"ES256"}, FileRecheck: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	claims := func(id string) scpClaims {
		return scpClaims{Claims: jwt.Claims{Issuer: iss, Subject: "svc", ID: id, Audience: jwt.Audience{aud}, Expiry: jwt.NewNumericDate(time.Now().Add(time.Minute))}}
	}
	write := func(keys ...jose.JSONWebKey) {
		b, err := json.Marshal(jose.JSONWebKeySet{Keys: keys})
		if err != nil {
			t.Fatal(err)
		}
		// The kubelet swaps a ConfigMap volume's files atomically; so does this.
		tmp := file + ".tmp"
		if err := os.WriteFile(tmp, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, file); err != nil {
			t.Fatal(err)
		}
	}
	k1, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	k2, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ctx := context.Background()

	if _, err := v.Verify(ctx, sign(t, jose.ES256, k1, "k1", claims("a"))); err == nil || !strings.Contains(err.Error(), "not delivered yet") {
		t.Fatalf("no key file: want a refusal saying the keys are not delivered yet, got %v", err)
	}
	write(jose.JSONWebKey{Key: &k1.PublicKey, KeyID: "k1", Algorithm: "ES256", Use: "sig"})
	if _, err := v.Verify(ctx, sign(t, jose.ES256, k1, "k1", claims("b"))); err != nil {
		t.Fatalf("key k1 delivered: %v", err)
	}
	// Rotation: k2 in, k1 out. A token naming k2 is accepted at once (unknown key id: the file is read
	// again without waiting for the recheck).
	write(jose.JSONWebKey{Key: &k2.PublicKey, KeyID: "k2", Algorithm: "ES256", Use: "sig"})
	time.Sleep(150 * time.Millisecond) // past the unknown-kid rate limit of 100 ms
	if _, err := v.Verify(ctx, sign(t, jose.ES256, k2, "k2", claims("c"))); err != nil {
		t.Fatalf("rotated to k2: %v", err)
	}
	if _, err := v.Verify(ctx, sign(t, jose.ES256, k1, "k1", claims("d"))); err == nil {
		t.Fatal("a token signed with the removed key k1 was accepted after the rotation")
	}
	// A broken file keeps the last good keys.
	if err := os.WriteFile(file, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if _, err := v.Verify(ctx, sign(t, jose.ES256, k2, "k2", claims("e"))); err != nil {
		t.Fatalf("a broken key file must keep the last good keys: %v", err)
	}
}

// TestRotatedOutKeyLeavesTheCache: a token verified with a key is cached for VerifiedCacheTTL (a
// minute) without its signature being checked again. Once the delivered key set drops that key (the
// issuer rotated a leaked key out), the same token, presented again, must be refused as soon as the
// gateway reads the new set, not a minute later; while the set is unchanged the cache still serves.
func TestRotatedOutKeyLeavesTheCache(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "jwks.json")
	const iss = "https://login.example.com"
	v, err := NewVerifier(Options{Issuer: iss, KeysFile: file, Audience: aud, Algorithms: []string{"ES256"}, FileRecheck: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	write := func(keys ...jose.JSONWebKey) {
		b, err := json.Marshal(jose.JSONWebKeySet{Keys: keys})
		if err != nil {
			t.Fatal(err)
		}
		tmp := file + ".tmp"
		if err := os.WriteFile(tmp, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, file); err != nil {
			t.Fatal(err)
		}
	}
	leaked, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	next, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	write(jose.JSONWebKey{Key: &leaked.PublicKey, KeyID: "leaked", Algorithm: "ES256", Use: "sig"})
	tok := sign(t, jose.ES256, leaked, "leaked", scpClaims{Claims: jwt.Claims{Issuer: iss, Subject: "svc", Audience: jwt.Audience{aud}, Expiry: jwt.NewNumericDate(time.Now().Add(10 * time.Minute))}})
	ctx := context.Background()
	if _, err := v.Verify(ctx, tok); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // past the recheck: the unchanged file is read again
	if _, err := v.Verify(ctx, tok); err != nil {
		t.Fatalf("the key set did not change, the token must still be accepted: %v", err)
	}
	write(jose.JSONWebKey{Key: &next.PublicKey, KeyID: "next", Algorithm: "ES256", Use: "sig"})
	time.Sleep(100 * time.Millisecond)
	if _, err := v.Verify(ctx, tok); err == nil {
		t.Fatal("a token signed with the rotated-out key was accepted from the verified-token cache")
	}
}
