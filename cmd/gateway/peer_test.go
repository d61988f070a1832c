package main

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
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcp-warden/mcp-warden/internal/syncbuf"
)

// peerName is the Service name the replicas' certificates are for in TestPeerPortFromPodIP.
const peerName = "files.tools.svc.cluster.local"

// writePeerPKI writes a CA (ca.crt) and a certificate for peerName and localhost, good for serving and
// client authentication (tls.crt, tls.key), as a gateway's pod certificate is, into dir.
func writePeerPKI(t *testing.T, dir string) (*x509.CertPool, tls.Certificate) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "gateway CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), DNSNames: []string{peerName, "localhost"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		KeyUsage:    x509.KeyUsageDigitalSignature, NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	files := map[string]*pem.Block{"ca.crt": {Type: "CERTIFICATE", Bytes: caDER}, "tls.crt": {Type: "CERTIFICATE", Bytes: der}, "tls.key": {Type: "PRIVATE KEY", Bytes: kder}}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(b), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cert, err := tls.X509KeyPair(pem.EncodeToMemory(files["tls.crt"]), pem.EncodeToMemory(files["tls.key"]))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return pool, cert
}

// TestPeerPortFromPodIP: with sessions.peerListen in the configuration, the binary takes its peer
// address from $MCP_WARDEN_POD_IP, issues session ids naming it and serves the peer port over mutual
// TLS: a connection without a client certificate is refused at the handshake (what the server
// container beside the gateway can do), a replica's certificate is served. Without the variable it
// refuses to start, naming it.
func TestPeerPortFromPodIP(t *testing.T) {
	t.Setenv("GATEWAY_TEST_STDIO_SERVER", "1")
	addr, peer := freePort(t), freePort(t)
	dir := t.TempDir()
	roots, replicaCert := writePeerPKI(t, dir)
	cfgPath := filepath.Join(dir, "gateway.json")
	cfg, _ := json.Marshal(map[string]any{
		"listen": addr, "resource": "https://files.mcp.example/mcp", "auth": map[string]any{"disabled": true},
		"tls":   map[string]any{"certFile": filepath.Join(dir, "tls.crt"), "keyFile": filepath.Join(dir, "tls.key")},
		"stdio": true, "sessions": map[string]any{"peerListen": peer, "peerCAFile": filepath.Join(dir, "ca.crt"), "peerServerName": peerName},
	})
	if err := os.WriteFile(cfgPath, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	var out, logs syncbuf.Buffer
	if code := run(context.Background(), []string{"--config", cfgPath, "--stdio", "--", exe}, &out, &logs); code != 1 || !strings.Contains(logs.String(), "MCP_WARDEN_POD_IP") {
		t.Fatalf("without the pod's IP: exit %d, logs %s", code, logs.String())
	}

	t.Setenv("MCP_WARDEN_POD_IP", "127.0.0.1")
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"--config", cfgPath, "--stdio", "--", exe}, &out, &logs) }()
	client := mcp.NewClient(&mcp.Implementation{Name: "test", Version: "1"}, nil)
	httpsClient := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "localhost"}}}
	var cs *mcp.ClientSession
	for ctx.Err() == nil {
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		cs, err = client.Connect(cctx, &mcp.StreamableClientTransport{Endpoint: "https://" + addr + "/mcp", HTTPClient: httpsClient, MaxRetries: -1}, nil)
		ccancel()
		if err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if cs == nil {
		t.Fatalf("connect: %v\nlogs: %s", err, logs.String())
	}
	if !strings.HasPrefix(cs.ID(), "mw2.") || !strings.Contains(logs.String(), `"advertise":"`+peer+`"`) {
		t.Fatalf("session id %q, logs %s", cs.ID(), logs.String())
	}
	if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "read_file", Arguments: map[string]any{"path": "a.txt"}}); err != nil {
		t.Fatalf("call: %v", err)
	}
	peerPost := func(certs ...tls.Certificate) (*http.Response, error) {
		req, _ := http.NewRequest(http.MethodPost, "https://"+peer+"/mcp", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`))
		req.Header.Set("Mcp-Session-Id", cs.ID())
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: peerName, Certificates: certs}}}
		resp, err := c.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		return resp, err
	}
	if resp, err := peerPost(); err == nil {
		t.Fatalf("peer port without a client certificate: status %d, want the handshake refused", resp.StatusCode)
	}
	if resp, err := peerPost(replicaCert); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("peer port with a replica's certificate: %v %v, want 200", resp, err)
	}
	_ = cs.Close()
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("exit %d\nlogs: %s", code, logs.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("gateway did not stop")
	}
}
