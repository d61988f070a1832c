// Package gateway is the MCP security gateway the operator puts in front of every MCP server: an OAuth 2.1
// resource server (audience-bound JWTs, RFC 9728 metadata), scope-to-tool authorization, input-schema
// validation, request limits, prompt-injection hygiene (hidden-content stripping), secret redaction, a
// hash-chained audit log and tool-description pinning, for the streamable HTTP transport.
package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"time"
)

// Config is the gateway's configuration; the operator renders it from the MCPServer spec.
type Config struct {
	// Listen is the address the gateway serves on, e.g. ":8443".
	Listen string `json:"listen"`
	// Upstream is the MCP endpoint of the server, on loopback, e.g. http://127.0.0.1:8080/mcp.
	Upstream string `json:"upstream"`
	// Resource is this server's canonical resource URI: tokens must carry it as audience.
	Resource string `json:"resource"`
	// Auth configures token validation.
	Auth AuthConfig `json:"auth"`
	// Scopes maps an OAuth scope to the tools it grants.
	Scopes map[string][]string `json:"scopes"`
	// Destructive tools need human approval; without it they are refused.
	Destructive []string `json:"destructive,omitempty"`
	// Pins are approved tool hashes (name -> sha256 of name, description and schemas). Tools not listed
	// are pinned on first sight.
	Pins map[string]string `json:"pins,omitempty"`
	// Limits bound requests.
	Limits Limits `json:"limits"`
	// AllowedOrigins are the browser origins allowed to call; requests with another Origin are refused.
	AllowedOrigins []string `json:"allowedOrigins,omitempty"`
}

// AuthConfig configures the OAuth 2.1 resource server.
type AuthConfig struct {
	// Disabled turns authentication off; a platform policy can forbid it.
	Disabled bool `json:"disabled,omitempty"`
	// Issuer is the authorization server; tokens must carry it as iss.
	Issuer string `json:"issuer"`
	// JWKSURL is where the issuer's keys are; default Issuer + "/.well-known/jwks.json".
	JWKSURL string `json:"jwksURL,omitempty"`
	// Algorithms are the allowed signature algorithms (asymmetric only); default RS256, ES256.
	Algorithms []string `json:"algorithms,omitempty"`
	// ClockSkew tolerated on exp/nbf; default 30s.
	ClockSkew Duration `json:"clockSkew,omitempty"`
}

// Limits bound requests.
type Limits struct {
	// MaxBodyBytes caps a request body; default 1 MiB.
	MaxBodyBytes int64 `json:"maxBodyBytes,omitempty"`
	// RatePerSecond and Burst limit requests per principal; default 10/s, burst 20.
	RatePerSecond float64 `json:"ratePerSecond,omitempty"`
	Burst         int     `json:"burst,omitempty"`
	// CallTimeout bounds one upstream call; default 30s.
	CallTimeout Duration `json:"callTimeout,omitempty"`
}

// Duration is a time.Duration written as "30s" in JSON.
type Duration struct{ time.Duration }

// UnmarshalJSON reads "30s".
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string such as \"30s\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

// MarshalJSON writes "30s".
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

var asymmetric = map[string]bool{"RS256": true, "RS384": true, "RS512": true, "PS256": true, "PS384": true, "PS512": true, "ES256": true, "ES384": true, "ES512": true, "EdDSA": true}

// Validate fills defaults and returns an error naming the first bad field and how to fix it.
func (c *Config) Validate() error {
	if c.Listen == "" {
		c.Listen = ":8443"
	}
	u, err := url.Parse(c.Upstream)
	if err != nil || u.Scheme != "http" || (u.Hostname() != "127.0.0.1" && u.Hostname() != "localhost" && u.Hostname() != "::1") {
		return fmt.Errorf("upstream: %q must be an http:// URL on loopback (the server listens on 127.0.0.1 behind the gateway)", c.Upstream)
	}
	if c.Resource == "" {
		return errors.New("resource: required: the canonical URI clients use for this server, e.g. https://files.mcp.example/mcp")
	}
	if !c.Auth.Disabled {
		if c.Auth.Issuer == "" {
			return errors.New("auth.issuer: required unless auth.disabled is true")
		}
		if len(c.Auth.Algorithms) == 0 {
			c.Auth.Algorithms = []string{"RS256", "ES256"}
		}
		for _, a := range c.Auth.Algorithms {
			if !asymmetric[a] {
				return fmt.Errorf("auth.algorithms: %q is not allowed; use asymmetric algorithms only (RS256, ES256, EdDSA, ...)", a)
			}
		}
		if c.Auth.JWKSURL == "" {
			c.Auth.JWKSURL = c.Auth.Issuer + "/.well-known/jwks.json"
		}
		if c.Auth.ClockSkew.Duration == 0 {
			c.Auth.ClockSkew.Duration = 30 * time.Second
		}
	}
	if c.Limits.MaxBodyBytes <= 0 {
		c.Limits.MaxBodyBytes = 1 << 20
	}
	if c.Limits.RatePerSecond <= 0 {
		c.Limits.RatePerSecond = 10
	}
	if c.Limits.Burst <= 0 {
		c.Limits.Burst = 20
	}
	if c.Limits.CallTimeout.Duration <= 0 {
		c.Limits.CallTimeout.Duration = 30 * time.Second
	}
	return nil
}

// Load reads and validates a JSON configuration file.
func Load(path string) (*Config, error) {
	body, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	c := &Config{}
	dec := json.NewDecoder(bytesReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(c); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}
