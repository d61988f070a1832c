package main

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	mcpv1alpha1 "github.com/mcp-warden/mcp-warden/api/v1alpha1"
	"github.com/mcp-warden/mcp-warden/gateway"
	"github.com/mcp-warden/mcp-warden/gateway/audit"
	"github.com/mcp-warden/mcp-warden/gateway/stdio"
	"github.com/mcp-warden/mcp-warden/internal/demoserver"
	"github.com/mcp-warden/mcp-warden/internal/syncbuf"
)

// issuer is the demo's OAuth authorization server on loopback: discovery metadata and a JWKS.
type issuer struct {
	srv *httptest.Server
	key *rsa.PrivateKey
}

func startIssuer() (*issuer, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	is := &issuer{key: key}
	mux := http.NewServeMux()
	meta := func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]string{"issuer": is.srv.URL, "jwks_uri": is.srv.URL + "/jwks"})
	}
	mux.HandleFunc("/.well-known/openid-configuration", meta)
	mux.HandleFunc("/.well-known/oauth-authorization-server", meta)
	mux.HandleFunc("/jwks", func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "demo", Algorithm: "RS256", Use: "sig"}}})
	})
	is.srv = httptest.NewServer(mux)
	return is, nil
}

// demoScope is the scope of every token the demo mints: its client reads files.
const demoScope = "files:read"

// token mints an RS256 access token for audience aud with the demo's scope.
func (is *issuer) token(aud string) (string, error) {
	scope := demoScope
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: is.key}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", "demo"))
	if err != nil {
		return "", err
	}
	now := time.Now()
	claims := struct {
		jwt.Claims
		Scope string `json:"scope"`
	}{jwt.Claims{Issuer: is.srv.URL, Subject: "alice@example.com", ID: fmt.Sprintf("demo-%d", now.UnixNano()), Audience: jwt.Audience{aud},
		Expiry: jwt.NewNumericDate(now.Add(5 * time.Minute)), IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now)}, scope}
	return jwt.Signed(signer).Claims(claims).Serialize()
}

// bearer adds a token to every request.
type bearer struct {
	token string
	next  http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.next.RoundTrip(r)
}

// gatewayChecks runs the gateway with the configuration the operator rendered for the server (its
// ConfigMap) in front of the demo MCP server, both on loopback: the simulated node does not run
// containers, so the gateway runs here, exactly as configured. Then it drives it with a real MCP client.
func (d *demo) gatewayChecks(ctx context.Context, key client.ObjectKey, is *issuer, serverBinary string) {
	server := &mcpv1alpha1.MCPServer{}
	if err := d.c.Get(ctx, key, server); err != nil {
		d.expect(false, "get %s: %v", key, err)
		return
	}
	stdioServer := server.Spec.Transport == mcpv1alpha1.TransportStdio
	how := "the demo MCP server on loopback"
	if stdioServer {
		how = "the demo MCP server binary from the image, started over stdio by the gateway's bridge (" + strings.Join(server.Spec.Command, " ") + ")"
	}
	step("live gateway checks: %s's gateway configuration (ConfigMap %s-gateway) in front of %s", key, key.Name, how)
	cm := &corev1.ConfigMap{}
	if err := d.c.Get(ctx, client.ObjectKey{Namespace: key.Namespace, Name: key.Name + "-gateway"}, cm); err != nil {
		d.expect(false, "gateway ConfigMap: %v", err)
		return
	}
	cfg := &gateway.Config{}
	if err := json.Unmarshal([]byte(cm.Data["gateway.json"]), cfg); err != nil {
		d.expect(false, "gateway configuration: %v", err)
		return
	}
	if stdioServer {
		// The pod's server container runs `gateway stdio-exec SOCKET -- /mcp-files --stdio` on the
		// gateway sidecar's socket; here the same binary runs as the bridge's child.
		bridge, err := stdio.Start(append([]string{serverBinary}, server.Spec.Command[1:]...), slog.New(slog.DiscardHandler))
		if err != nil {
			d.expect(false, "start the stdio server: %v", err)
			return
		}
		defer bridge.Close(5 * time.Second)
		d.expect(cfg.Stdio && cfg.Upstream == "", "the rendered configuration is for a stdio server (no upstream; the gateway serves its child process)")
		cfg.Upstream = bridge.URL()
	} else {
		upstream := httptest.NewServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return demoserver.New() }, nil))
		defer func() { upstream.CloseClientConnections(); upstream.Close() }()
		cfg.Upstream = upstream.URL + "/mcp"
	}
	cfg.Listen, cfg.StatusListen, cfg.PinStatePath = "127.0.0.1:0", "", ""
	// The pod's gateway keeps its audit head on its own emptyDir and reads the issuer's keys the
	// operator delivered from its mounted ConfigMap; here a temporary folder stands in for both.
	dir, err := os.MkdirTemp("", "mcp-warden-demo-gateway-")
	if err != nil {
		d.expect(false, "a folder for the gateway's audit head and keys: %v", err)
		return
	}
	defer os.RemoveAll(dir)
	if cfg.Audit.StatePath != "" {
		cfg.Audit.StatePath = filepath.Join(dir, filepath.Base(cfg.Audit.StatePath))
	}
	if cfg.Auth.JWKSFile != "" {
		keys := cm.Data["jwks.json"]
		d.expect(strings.Contains(keys, `"kid":"demo"`), "the operator delivered the issuer's signing keys to the gateway (ConfigMap %s, jwks.json: %d bytes)", cm.Name, len(keys))
		cfg.Auth.JWKSFile = filepath.Join(dir, "jwks.json")
		if err := os.WriteFile(cfg.Auth.JWKSFile, []byte(keys), 0o600); err != nil {
			d.expect(false, "write the delivered keys: %v", err)
			return
		}
	}
	// One replica here, served over plaintext by httptest: no peer port, and no certificate (the pod's
	// gateway reads its pod certificate; session ids need no key, the replica keeps their handles).
	cfg.TLS, cfg.Sessions = gateway.TLSConfig{}, gateway.SessionsConfig{}
	auditLog := &syncbuf.Buffer{}
	g, err := gateway.New(cfg, gateway.Options{AuditWriter: auditLog, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		d.expect(false, "gateway with the rendered configuration: %v", err)
		return
	}
	gctx, cancel := context.WithCancel(ctx)
	g.Start(gctx)
	srv := httptest.NewServer(g)
	defer func() { cancel(); _ = g.Close(); srv.CloseClientConnections(); srv.Close() }()
	fmt.Printf("    resource (token audience) %s, issuer %s, scopes %v\n", cfg.Resource, cfg.Auth.Issuer, cfg.Scopes)
	if !d.clientChecks(ctx, srv.URL+"/mcp", is, cfg.Resource) {
		return
	}

	// The audit log: one hash-chained record per call; an edit is detected.
	log := auditLog.String()
	sum, err := audit.Verify(strings.NewReader(log))
	d.expect(err == nil && sum.Records >= 4, "audit log: %d records, hash chain verified (%v)", sum.Records, err)
	tampered := strings.Replace(log, `"decision":"deny"`, `"decision":"allow"`, 1)
	_, terr := audit.Verify(strings.NewReader(tampered))
	d.expect(tampered != log && terr != nil, "audit log with one decision edited -> %v", terr)
}

func resultText(res *mcp.CallToolResult) string {
	if res == nil || len(res.Content) == 0 {
		return ""
	}
	if t, ok := res.Content[0].(*mcp.TextContent); ok {
		return t.Text
	}
	return ""
}

func errText(res *mcp.CallToolResult, err error) string {
	if err != nil {
		return firstLine(err)
	}
	return resultText(res)
}

func status(resp *http.Response, err error) string {
	if err != nil {
		return err.Error()
	}
	return resp.Status
}

func header(resp *http.Response, name string) string {
	if resp == nil {
		return ""
	}
	return resp.Header.Get(name)
}

// clientChecks drives the gateway at endpoint as an agent would: no token and a token for another
// server are refused, and a real MCP client with a files:read token sees the filtered tools. It
// reports false when it could not get as far as the client's calls.
func (d *demo) clientChecks(ctx context.Context, endpoint string, is *issuer, resource string) bool {
	// Without a token, and with a token for another server, the gateway answers 401.
	init := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"curl","version":"1"}}}`
	post := func(token string) (*http.Response, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(init))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		return resp, err
	}
	resp, err := post("")
	d.expect(err == nil && resp.StatusCode == http.StatusUnauthorized && strings.Contains(resp.Header.Get("WWW-Authenticate"), "resource_metadata="),
		"no token -> %s, WWW-Authenticate: %s", status(resp, err), header(resp, "WWW-Authenticate"))
	wrong, _ := is.token("https://other-server.example/mcp")
	resp, err = post(wrong)
	d.expect(err == nil && resp.StatusCode == http.StatusUnauthorized, "token for another audience -> %s", status(resp, err))

	// A token for this server with scope files:read.
	tok, err := is.token(resource)
	if err != nil {
		d.expect(false, "mint token: %v", err)
		return false
	}
	hc := &http.Client{Timeout: 20 * time.Second, Transport: bearer{tok, http.DefaultTransport}}
	cctx, ccancel := context.WithTimeout(ctx, 30*time.Second)
	defer ccancel()
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "demo-agent", Version: "1"}, nil).Connect(cctx, &mcp.StreamableClientTransport{Endpoint: endpoint, HTTPClient: hc, MaxRetries: -1}, nil)
	if err != nil {
		d.expect(false, "MCP client connects with a files:read token: %v", err)
		return false
	}
	defer cs.Close()
	list, err := cs.ListTools(cctx, nil)
	var names []string
	if err == nil {
		for _, t := range list.Tools {
			names = append(names, t.Name)
		}
	}
	joined := strings.Join(names, ",")
	d.expect(err == nil && strings.Contains(joined, "read_file") && !strings.Contains(joined, "admin_reset") && !strings.Contains(joined, "write_file"),
		"tools/list with scope files:read shows %v (write_file and admin_reset hidden)", names)
	res, err := cs.CallTool(cctx, &mcp.CallToolParams{Name: "read_file", Arguments: map[string]any{"path": "readme.txt"}})
	d.expect(err == nil && !res.IsError && strings.Contains(resultText(res), "Demo files"), "allowed tool read_file -> %q", resultText(res))
	res, err = cs.CallTool(cctx, &mcp.CallToolParams{Name: "admin_reset", Arguments: map[string]any{}})
	d.expect(err != nil || res.IsError, "hidden tool admin_reset called directly -> refused: %s", errText(res, err))
	res, err = cs.CallTool(cctx, &mcp.CallToolParams{Name: "read_file", Arguments: map[string]any{"path": "report.txt"}})
	got := resultText(res)
	clean := err == nil && strings.HasPrefix(got, demoserver.ReportVisible) && !strings.ContainsAny(got, "\u200b\U000E0049") &&
		!strings.Contains(got, "<!--") && !strings.Contains(got, "AKIAIOSFODNN7EXAMPLE")
	d.expect(clean, "injected hidden text stripped and key redacted: server sent %q, client got %q", demoserver.ReportVisible+"<hidden ...>", got)
	res, err = cs.CallTool(cctx, &mcp.CallToolParams{Name: "read_file", Arguments: map[string]any{"path": 7}})
	d.expect(err != nil || res.IsError, "arguments that break the input schema -> refused: %s", errText(res, err))
	_ = cs.Close()
	return true
}
