package issuerkeys

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"math/big"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// TestDeliveredKeysAreBare: an issuer may attach certificate chains (x5c) to its keys. The gateway
// verifies with the key alone, yet the chains were delivered too, so a key set of a few keys with long
// chains filled the 256 KiB bound and the operator kept (and wrote into every subscribing ConfigMap,
// and cached) that much per issuer a tenant names: 1000 such MCPServers held about 250 MB. Only the key,
// its id (at most 256 bytes: long ids filled the bound the same way), algorithm and use are delivered.
func TestDeliveredKeysAreBare(t *testing.T) {
	var set jose.JSONWebKeySet
	for i := range 5 {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: strings.Repeat("c", 200)}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
		if err != nil {
			t.Fatal(err)
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		chain := make([]*x509.Certificate, 50)
		for j := range chain {
			chain[j] = cert
		}
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: &k.PublicKey, KeyID: fmt.Sprintf("k%d", i), Algorithm: "ES256", Use: "sig", Certificates: chain})
	}
	// Long key ids fill the bound the same way.
	long, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: &long.PublicKey, KeyID: strings.Repeat(fmt.Sprint(i), 5000), Algorithm: "ES256"})
	}
	body, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	if len(body) > DefaultMaxBytes {
		t.Fatalf("fixture of %d bytes is over the fetch bound", len(body))
	}
	out, n, err := PublicSigningKeys(body)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("the issuer answered %d bytes; %d bytes delivered for %d keys", len(body), len(out), n)
	if n != 5 || strings.Contains(string(out), `"x5c"`) || strings.Contains(string(out), `"x5t`) || len(out) > 5*300 {
		t.Fatalf("delivered %d keys in %d bytes (certificate chains must not be delivered): %.300s", n, len(out), out)
	}
}
