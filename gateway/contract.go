// Package gateway is the MCP security gateway that the operator runs in front of every MCP server: a
// JSON-RPC-aware reverse proxy for the streamable HTTP transport that authenticates every request as an
// OAuth 2.1 resource server, limits each token to the tools its scopes grant, validates tool arguments
// and structured results against pinned schemas, bounds requests, strips hidden content and secrets from
// what reaches the model, asks a person before destructive or exfiltrating calls, pins tool definitions,
// and writes a hash-chained audit record for every tool call.
//
// Config is the contract with the operator, which renders it from the MCPServer resource into a JSON
// file read by Load; package gateway/config defines it.
package gateway

import (
	"fmt"
	"io"

	"github.com/mcp-warden/mcp-warden/gateway/audit"
	"github.com/mcp-warden/mcp-warden/gateway/config"
)

// The configuration and the status are the contract with the operator; package config defines them
// so that the operator links the contract without the proxy. These names keep the gateway's API.
type (
	// Config is the gateway configuration (see config.Config).
	Config = config.Config
	// AuthConfig configures the OAuth 2.1 resource server (see config.AuthConfig).
	AuthConfig = config.AuthConfig
	// AuditConfig configures the audit chain (see config.AuditConfig).
	AuditConfig = config.AuditConfig
	// Limits bound requests (see config.Limits).
	Limits = config.Limits
	// Duration is a time.Duration written as a Go duration string in JSON (see config.Duration).
	Duration = config.Duration
	// Status is what the gateway reports on its status port (see config.Status).
	Status = config.Status
	// UpstreamStatus is the outcome of the gateway's last MCP handshake (see config.UpstreamStatus).
	UpstreamStatus = config.UpstreamStatus
	// TLSConfig is the gateway's serving certificate (see config.TLSConfig).
	TLSConfig = config.TLSConfig
	// SessionsConfig configures sessions across replicas (see config.SessionsConfig).
	SessionsConfig = config.SessionsConfig
	// TelemetryConfig configures trace export (see config.TelemetryConfig).
	TelemetryConfig = config.TelemetryConfig
)

// Read decodes a configuration file without validating it (see config.Read).
func Read(path string) (*Config, error) { return config.Read(path) }

// Load reads a configuration file, fills defaults and validates it (see config.Load).
func Load(path string) (*Config, error) { return config.Load(path) }

// openAudit starts the audit logger on w: with the key of keyPath, continuing the head file.
func openAudit(a AuditConfig, w io.Writer) (*audit.Logger, error) {
	opts := audit.Options{StatePath: a.StatePath}
	if a.KeyPath != "" {
		key, err := audit.ReadKey(a.KeyPath)
		if err != nil {
			return nil, fmt.Errorf("gateway audit.keyPath: %w", err)
		}
		opts.Key = key
	}
	l, err := audit.Open(w, opts)
	if err != nil {
		return nil, fmt.Errorf("gateway audit.statePath: %w", err)
	}
	return l, nil
}
