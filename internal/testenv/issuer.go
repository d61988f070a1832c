package testenv

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/mcp-warden/mcp-warden/trust/issuerkeys"
)

// Issuer is an in-process OAuth issuer that answers for every https issuer name the suites use
// (https://auth.example.com and the like): its metadata names the requested host as issuer, and its
// key set holds one ES256 key, which Rotate replaces. The operator fetches keys from it through
// Fetcher; nothing else reaches it.
type Issuer struct {
	srv *httptest.Server
	// caPEM is the CA of the issuer's certificate when StartIssuerOn made one for its address.
	caPEM []byte
	roots *x509.CertPool
	dial  func(ctx context.Context, network, addr string) (net.Conn, error)

	mu    sync.Mutex
	key   *ecdsa.PrivateKey
	kid   string
	fetch int
}

// StartIssuer starts the issuer on loopback; Close stops it.
func StartIssuer() *Issuer {
	return StartIssuerOn(nil, nil)
}

// StartIssuerOn starts the issuer on l (nil: loopback), reached with dial (nil: a plain dialer), e.g. a
// listener and a dialer in a network namespace.
func StartIssuerOn(l net.Listener, dial func(ctx context.Context, network, addr string) (net.Conn, error)) *Issuer {
	is := &Issuer{dial: dial}
	if is.dial == nil {
		is.dial = (&net.Dialer{Timeout: 2 * time.Second}).DialContext
	}
	is.Rotate()
	is.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		base := "https://" + r.Host
		switch r.URL.Path {
		case "/.well-known/oauth-authorization-server", "/.well-known/openid-configuration":
			_ = json.NewEncoder(w).Encode(map[string]string{"issuer": base, "jwks_uri": base + "/.well-known/jwks.json"})
		case "/.well-known/jwks.json":
			is.mu.Lock()
			is.fetch++
			set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &is.key.PublicKey, KeyID: is.kid, Algorithm: "ES256", Use: "sig"}}}
			is.mu.Unlock()
			_ = json.NewEncoder(w).Encode(set)
		case HostileKeysPath:
			_, _ = w.Write(HostileKeySet())
		default:
			http.NotFound(w, r)
		}
	}))
	if l != nil {
		_ = is.srv.Listener.Close()
		is.srv.Listener = l
		// A certificate for the listener's address, from a CA of its own (CAPEM), so that clients
		// verify it as they would a real issuer's.
		host, _, _ := net.SplitHostPort(l.Addr().String())
		cert, caPEM, err := selfSignedFor(host)
		if err != nil {
			panic(err)
		}
		is.caPEM = caPEM
		is.roots = x509.NewCertPool()
		is.roots.AppendCertsFromPEM(caPEM)
		is.srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	is.srv.StartTLS()
	return is
}

// CAPEM is the PEM CA of the issuer's certificate (StartIssuerOn with a listener), for a client that
// verifies it, e.g. a manager's --issuer-ca-file.
func (is *Issuer) CAPEM() []byte { return is.caPEM }

// selfSignedFor returns a serving certificate for host (an IP address or a name) and its CA's PEM.
func selfSignedFor(host string) (tls.Certificate, []byte, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test issuer CA"}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	leaf := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: host}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	if ip := net.ParseIP(host); ip != nil {
		leaf.IPAddresses = []net.IP{ip}
	} else {
		leaf.DNSNames = []string{host}
	}
	der, err := x509.CreateCertificate(rand.Reader, leaf, ca, &key.PublicKey, caKey)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), nil
}

// HostileKeysPath serves HostileKeySet, as a malicious issuer (or an internal service a tenant aims
// the operator at) would.
const HostileKeysPath = "/hostile/jwks.json"

// HostileMarker is in every value of HostileKeySet: no part of it may reach a status or a ConfigMap.
const HostileMarker = "EXFIL-FROM-THE-RESPONSE"

// HostileKeySet is a key set of nothing usable, just under the operator's 256 KiB bound: symmetric keys
// and keys of unknown types and curves whose key ids and members are long and carry HostileMarker.
func HostileKeySet() []byte {
	long := strings.Repeat(HostileMarker, 90) // ~2 KB
	var keys []map[string]string
	for i := range 60 {
		switch i % 3 {
		case 0:
			keys = append(keys, map[string]string{"kty": "oct", "k": "c2VjcmV0", "kid": long})
		case 1:
			keys = append(keys, map[string]string{"kty": long, "kid": long})
		default:
			keys = append(keys, map[string]string{"kty": "EC", "crv": long, "x": "AA", "y": "AA", "kid": long})
		}
	}
	b, err := json.Marshal(map[string]any{"keys": keys})
	if err != nil {
		panic(err)
	}
	return b
}

// Fetches is how many times the key set was served.
func (is *Issuer) Fetches() int {
	is.mu.Lock()
	defer is.mu.Unlock()
	return is.fetch
}

// Close stops the issuer.
func (is *Issuer) Close() { is.srv.Close() }

// Rotate replaces the signing key (and its key id).
func (is *Issuer) Rotate() {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	is.mu.Lock()
	defer is.mu.Unlock()
	is.key, is.kid = k, "k"+time.Now().Format("150405.000000000")
}

// KeyID is the current signing key's id.
func (is *Issuer) KeyID() string {
	is.mu.Lock()
	defer is.mu.Unlock()
	return is.kid
}

// Fetcher returns an issuer key fetcher whose every connection goes to this issuer, whatever the host
// name (the suites' issuers are names no resolver knows), refreshing every refresh (0: the default).
func (is *Issuer) Fetcher(refresh time.Duration) *issuerkeys.Fetcher {
	addr := is.srv.Listener.Addr().String()
	return &issuerkeys.Fetcher{Refresh: refresh, Client: &http.Client{
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return is.dial(ctx, network, addr)
			},
			TLSClientConfig: is.clientTLS(),
		},
	}}
}

// clientTLS verifies the issuer's own certificate when it has one for its address; on loopback it
// answers for made-up names, which no certificate covers.
func (is *Issuer) clientTLS() *tls.Config {
	if is.roots != nil {
		return &tls.Config{RootCAs: is.roots, MinVersion: tls.VersionTLS12}
	}
	return &tls.Config{InsecureSkipVerify: true} //nolint:gosec // a test issuer answering for the suites' made-up names
}

// Token mints an access token from issuer for the audience with the given scope (space-separated),
// signed with the current key, valid for 5 minutes.
func (is *Issuer) Token(issuer, audience, scope string) (string, error) {
	is.mu.Lock()
	key, kid := is.key, is.kid
	is.mu.Unlock()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", kid))
	if err != nil {
		return "", err
	}
	now := time.Now()
	claims := struct {
		jwt.Claims
		Scope string `json:"scope,omitempty"`
	}{jwt.Claims{Issuer: issuer, Subject: "agent", Audience: jwt.Audience{audience},
		Expiry: jwt.NewNumericDate(now.Add(5 * time.Minute)), IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now)}, scope}
	return jwt.Signed(signer).Claims(claims).Serialize()
}
