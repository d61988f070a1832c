package imagetest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
)

// Fulcio is a certificate authority on loopback that speaks Fulcio's v2 API (POST /api/v2/signingCert):
// it checks the caller's OIDC identity token (signature, audience "sigstore", expiry) and the proof of
// possession (the subject signed with the key to certify), then certifies the key for that identity with
// the CA. Its tokens come from Token, signed by an OIDC issuer key only it holds.
type Fulcio struct {
	// URL is the base URL, e.g. http://127.0.0.1:41234.
	URL string
	// Requests counts certificate requests, granted or not.
	Requests atomic.Int32
	ca       *CA
	key      *ecdsa.PrivateKey
	srv      *httptest.Server
}

// StartFulcio serves a Fulcio-compatible CA backed by ca.
func StartFulcio(ca *CA) (*Fulcio, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	f := &Fulcio{ca: ca, key: key}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v2/signingCert", f.signingCert)
	f.srv = httptest.NewServer(mux)
	f.URL = f.srv.URL
	return f, nil
}

// Close stops the server.
func (f *Fulcio) Close() { f.srv.Close() }

// Token mints an OIDC identity token for the email subject from issuer, valid for ttl (negative: expired).
func (f *Fulcio) Token(email, issuer string, ttl time.Duration) (string, error) {
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: f.key}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return "", err
	}
	now := time.Now()
	claims := map[string]any{
		"iss": issuer, "sub": "repo:acme/mcp-warden:ref:refs/heads/main", "aud": "sigstore",
		"email": email, "email_verified": true,
		"iat": now.Unix(), "nbf": now.Add(-time.Minute).Unix(), "exp": now.Add(ttl).Unix(),
	}
	return jwt.Signed(signer).Claims(claims).Serialize()
}

func (f *Fulcio) signingCert(w http.ResponseWriter, r *http.Request) {
	f.Requests.Add(1)
	fail := func(code int, format string, a ...any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(map[string]any{"code": code, "message": fmt.Sprintf(format, a...)})
	}
	raw, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		fail(http.StatusUnauthorized, "no bearer token")
		return
	}
	tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		fail(http.StatusUnauthorized, "token: %v", err)
		return
	}
	var std jwt.Claims
	var extra struct {
		Email         string `json:"email"`
		EmailVerified bool   `json:"email_verified"`
	}
	if err := tok.Claims(&f.key.PublicKey, &std, &extra); err != nil {
		fail(http.StatusUnauthorized, "token signature: %v", err)
		return
	}
	if err := std.ValidateWithLeeway(jwt.Expected{AnyAudience: jwt.Audience{"sigstore"}, Time: time.Now()}, 0); err != nil {
		fail(http.StatusUnauthorized, "token: %v", err)
		return
	}
	if extra.Email == "" || !extra.EmailVerified {
		fail(http.StatusBadRequest, "token has no verified email")
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	if err != nil {
		fail(http.StatusBadRequest, "body: %v", err)
		return
	}
	var req struct {
		PublicKeyRequest struct {
			PublicKey struct {
				Content string `json:"content"`
			} `json:"publicKey"`
			ProofOfPossession []byte `json:"proofOfPossession"`
		} `json:"publicKeyRequest"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		fail(http.StatusBadRequest, "body: %v", err)
		return
	}
	pub, err := cryptoutils.UnmarshalPEMToPublicKey([]byte(req.PublicKeyRequest.PublicKey.Content))
	if err != nil {
		fail(http.StatusBadRequest, "public key: %v", err)
		return
	}
	ecPub, ok := pub.(*ecdsa.PublicKey)
	digest := sha256.Sum256([]byte(extra.Email))
	if !ok || !ecdsa.VerifyASN1(ecPub, digest[:], req.PublicKeyRequest.ProofOfPossession) {
		fail(http.StatusBadRequest, "proof of possession: the signed subject does not verify with the public key")
		return
	}
	cert, err := f.ca.certify(pub, extra.Email, std.Issuer)
	if err != nil {
		fail(http.StatusInternalServerError, "certify: %v", err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"signedCertificateEmbeddedSct": map[string]any{
		"chain": map[string]any{"certificates": []string{string(cert), string(f.ca.RootPEM)}}}})
}
