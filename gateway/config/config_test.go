package config_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mcp-warden/mcp-warden/gateway/config"
)

const exampleConfig = `{
  "listen": ":8443",
  "upstream": "http://127.0.0.1:8080/mcp",
  "resource": "https://files.mcp.example.com/mcp",
  "auth": {
    "issuer": "https://auth.example.com",
    "algorithms": ["RS256", "ES256"],
    "clockSkew": "30s",
    "requiredScopes": ["mcp"]
  },
  "scopes": {"files:read": ["read_file", "list_dir"], "files:write": ["write_file", "delete_file"], "mail:send": ["send_email"]},
  "destructive": ["delete_file"],
  "toolLabels": {"read_file": ["reads-private"], "send_email": ["writes-external"]},
  "pins": {"read_file": "sha256:5f2b8e7c0d8e4b8f7a1c9d3e2f4a6b8c0d2e4f6a8b0c2d4e6f8a0b2c4d6e8f0a"},
  "pinStatePath": "/var/run/mcp-warden/pins.json",
  "limits": {"maxBodyBytes": 1048576, "maxResponseBytes": 8388608, "requestsPerSecond": 10, "burst": 20,
             "callTimeout": "30s", "approvalTimeout": "2m", "streamTimeout": "1h"},
  "allowedOrigins": ["https://app.example.com"],
  "blockSecretsInArguments": true,
  "audit": {"keyPath": "/etc/mcp-warden/audit/key", "statePath": "/var/run/mcp-warden/audit-head.json"}
}`

func TestLoadExampleConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gateway.json")
	if err := os.WriteFile(path, []byte(exampleConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if c.Auth.ClockSkew.Seconds() != 30 || c.Limits.Burst != 20 || c.Auth.Disabled || !c.BlockSecretsInArguments {
		t.Fatalf("%+v", c)
	}
}

func TestValidateNamesTheBadField(t *testing.T) {
	valid := func() *config.Config {
		return &config.Config{Upstream: "http://127.0.0.1:8080/mcp", Resource: "https://files.mcp.example.com/mcp",
			Auth: config.AuthConfig{Issuer: "https://auth.example.com"}, Scopes: map[string][]string{"mcp": {"*"}}}
	}
	for field, mutate := range map[string]func(*config.Config){
		"upstream:":            func(c *config.Config) { c.Upstream = "http://10.0.0.8:8080/mcp" },
		"resource:":            func(c *config.Config) { c.Resource = "files.mcp.example.com" },
		"auth.issuer:":         func(c *config.Config) { c.Auth.Issuer = "http://auth.example.com" },
		"auth.algorithms:":     func(c *config.Config) { c.Auth.Algorithms = []string{"HS256"} },
		"auth.jwksURL:":        func(c *config.Config) { c.Auth.JWKSURL = "ftp://x" },
		"auth.clockSkew:":      func(c *config.Config) { c.Auth.ClockSkew.Duration = 1 << 40 },
		"scopes:":              func(c *config.Config) { c.Scopes = nil },
		"scopes.mcp:":          func(c *config.Config) { c.Scopes["mcp"] = nil },
		"toolLabels.x:":        func(c *config.Config) { c.ToolLabels = map[string][]string{"x": {"dangerous"}} },
		"audit.keyPath:":       func(c *config.Config) { c.Audit.KeyPath = "secrets/audit-key" },
		"audit.statePath:":     func(c *config.Config) { c.Audit.StatePath, c.PinStatePath = "/run/state.json", "/run/state.json" },
		"pins.x:":              func(c *config.Config) { c.Pins = map[string]string{"x": "abc"} },
		"limits.burst:":        func(c *config.Config) { c.Limits.Burst = -1 },
		"limits.maxBodyBytes:": func(c *config.Config) { c.Limits.MaxBodyBytes = 10 },
		"allowedOrigins[0]:":   func(c *config.Config) { c.AllowedOrigins = []string{"app.example.com"} },
		"listen:":              func(c *config.Config) { c.Listen = "8443" },
		"auth.disabled:":       func(c *config.Config) { c.Auth.Disabled = true },
		"sessions.peersDNS:":   func(c *config.Config) { c.Sessions.PeersDNS = "github-peers.tools.svc" },
		"sessions.peersDNS: \"http": func(c *config.Config) {
			c.Sessions = config.SessionsConfig{PeerListen: ":8445", PeersDNS: "http://github-peers:8445"}
		},
	} {
		t.Run(field, func(t *testing.T) {
			c := valid()
			c.WithDefaults()
			mutate(c)
			err := c.Validate()
			if err == nil || !strings.HasPrefix(err.Error(), field) {
				t.Fatalf("err %v, want one naming %s", err, field)
			}
		})
	}
	c := valid()
	c.WithDefaults()
	if err := c.Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
}

func TestLoadRefusesUnknownFields(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gateway.json")
	if err := os.WriteFile(path, []byte(`{"upstream":"http://127.0.0.1:1/mcp","resource":"https://x/mcp","auth":{"disabled":true},"authDisabled":true}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := config.Load(path); err == nil || !strings.Contains(err.Error(), "authDisabled") {
		t.Fatalf("err %v", err)
	}
}
