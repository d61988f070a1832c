package gateway

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// leaf writes a certificate for localhost with the serial into dir/<name>/{tls.crt,tls.key}.
func (ca *testCA) leaf(t *testing.T, dir, name string, serial int64) string {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature,
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	d := filepath.Join(dir, name)
	if err := os.MkdirAll(d, 0o700); err != nil {
		t.Fatal(err)
	}
	write := func(f, typ string, b []byte) {
		if err := os.WriteFile(filepath.Join(d, f), pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("tls.crt", "CERTIFICATE", der)
	write("tls.key", "PRIVATE KEY", kder)
	return d
}

// swap points dir/..data at target, as the kubelet updates a Secret volume (an atomic symlink swap).
func swap(t *testing.T, dir, target string) {
	t.Helper()
	tmp := filepath.Join(dir, "..data_tmp")
	if err := os.Symlink(target, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
}

func servedSerial(t *testing.T, url string, pool *x509.CertPool) (int64, error) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"}}}
	resp, err := c.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	return resp.TLS.PeerCertificates[0].SerialNumber.Int64(), nil
}

// TestCertReloaderServesRenewedCertificate: the kubelet swaps the mounted Secret's files; the next
// handshake gets the new certificate without a restart, a broken pair keeps the last good one, and a
// client that does not trust the CA fails verification.
func TestCertReloaderServesRenewedCertificate(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	swap(t, dir, ca.leaf(t, dir, "v1", 1001))
	for _, f := range []string{"tls.crt", "tls.key"} {
		if err := os.Symlink(filepath.Join("..data", f), filepath.Join(dir, f)); err != nil {
			t.Fatal(err)
		}
	}
	r, err := NewCertReloader(filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"), nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(_ http.ResponseWriter, _ *http.Request) {}))
	srv.TLS = r.ServerTLSConfig()
	srv.StartTLS()
	defer srv.Close()

	if got, err := servedSerial(t, srv.URL, ca.pool); err != nil || got != 1001 {
		t.Fatalf("first certificate: serial %d, %v; want 1001", got, err)
	}
	swap(t, dir, ca.leaf(t, dir, "v2", 1002))
	if changed, err := r.Reload(); err != nil || !changed {
		t.Fatalf("reload after the swap: changed %v, %v", changed, err)
	}
	srv.CloseClientConnections()
	if got, err := servedSerial(t, srv.URL, ca.pool); err != nil || got != 1002 {
		t.Fatalf("after renewal: serial %d, %v; want 1002", got, err)
	}

	// A key that does not match its certificate (a half-finished update): the last good pair stays.
	bad := ca.leaf(t, dir, "v3", 1003)
	other := ca.leaf(t, dir, "v4", 1004)
	if err := os.Rename(filepath.Join(other, "tls.key"), filepath.Join(bad, "tls.key")); err != nil {
		t.Fatal(err)
	}
	swap(t, dir, bad)
	if _, err := r.Reload(); err == nil {
		t.Fatal("a mismatched key was loaded")
	}
	srv.CloseClientConnections()
	if got, err := servedSerial(t, srv.URL, ca.pool); err != nil || got != 1002 {
		t.Fatalf("after a broken update: serial %d, %v; want the last good 1002", got, err)
	}

	if _, err := servedSerial(t, srv.URL, newTestCA(t).pool); err == nil {
		t.Fatal("a client trusting another CA connected")
	}
	old := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.pool, ServerName: "localhost", MaxVersion: tls.VersionTLS11}}} //nolint:gosec // the attacker's client: the gateway must refuse TLS 1.1
	if _, err := old.Get(srv.URL); err == nil {
		t.Fatal("a TLS 1.1 client connected")
	}
}

// TestCertReloaderRunPicksUpChange: the polling loop, not a manual Reload, picks up a renewal.
func TestCertReloaderRunPicksUpChange(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	d1 := ca.leaf(t, dir, "v1", 1)
	r, err := NewCertReloader(filepath.Join(d1, "tls.crt"), filepath.Join(d1, "tls.key"), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	go r.Run(ctx, 20*time.Millisecond)
	d2 := ca.leaf(t, dir, "v2", 2)
	for _, f := range []string{"tls.crt", "tls.key"} {
		if err := os.Rename(filepath.Join(d2, f), filepath.Join(d1, f)); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for r.Leaf().SerialNumber.Int64() != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("serving serial %d 5s after the renewal; want 2", r.Leaf().SerialNumber.Int64())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestCertReloaderCredentialBundle: the kubelet's credential bundle of a pod certificate (one file:
// the PKCS#8 key, then the chain) serves as both certFile and keyFile, and a refreshed bundle, swapped
// in as the kubelet does, is served on the next handshake.
func TestCertReloaderCredentialBundle(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	bundle := func(name string, serial int64) string {
		d := ca.leaf(t, dir, name, serial)
		crt, _ := os.ReadFile(filepath.Join(d, "tls.crt"))
		key, _ := os.ReadFile(filepath.Join(d, "tls.key"))
		if err := os.WriteFile(filepath.Join(d, "tls.pem"), append(key, crt...), 0o600); err != nil {
			t.Fatal(err)
		}
		return d
	}
	live := filepath.Join(dir, "live")
	if err := os.Mkdir(live, 0o700); err != nil {
		t.Fatal(err)
	}
	swap(t, live, bundle("v1", 1))
	if err := os.Symlink("..data/tls.pem", filepath.Join(live, "tls.pem")); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(live, "tls.pem")
	r, err := NewCertReloader(path, path, nil)
	if err != nil {
		t.Fatalf("the credential bundle does not load as certificate and key: %v", err)
	}
	if got := r.Leaf().SerialNumber.Int64(); got != 1 {
		t.Fatalf("serial %d, want 1", got)
	}
	swap(t, live, bundle("v2", 2))
	if changed, err := r.Reload(); err != nil || !changed || r.Leaf().SerialNumber.Int64() != 2 {
		t.Fatalf("after the refresh: changed %v, err %v, serial %d; want the new bundle", changed, err, r.Leaf().SerialNumber.Int64())
	}
}

// TestTLSConfigValidated: a certificate without its key, or relative paths, are refused at start.
func TestTLSConfigValidated(t *testing.T) {
	for _, tc := range []struct {
		tls  TLSConfig
		want string
	}{
		{TLSConfig{CertFile: "/etc/mcp-warden-tls/tls.crt"}, "go together"},
		{TLSConfig{CertFile: "tls.crt", KeyFile: "tls.key"}, "must be an absolute path"},
		{TLSConfig{CertFile: "/etc/mcp-warden-tls/tls.crt", KeyFile: "/etc/mcp-warden-tls/tls.key"}, ""},
	} {
		c := &Config{Upstream: "http://127.0.0.1:8080/mcp", Resource: "https://files.example/mcp", Auth: AuthConfig{Disabled: true}, TLS: tc.tls}
		c.WithDefaults()
		err := c.Validate()
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%+v: %v, want %q", tc.tls, err, tc.want)
		}
	}
}
