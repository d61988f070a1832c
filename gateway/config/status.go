package config

import "github.com/mcp-warden/mcp-warden/gateway/pin"

// Status is what the gateway reports to the operator on its status port (GET /status).
type Status struct {
	// Pins is the pin state of the server's tools (also served alone at GET /pins).
	Pins pin.State `json:"pins"`
	// Upstream is the outcome of the gateway's own MCP handshake with the server.
	Upstream UpstreamStatus `json:"upstream"`
}

// UpstreamStatus is the outcome of the gateway's last MCP handshake with its server: initialize, then
// tools/list (every page), over the gateway's own session.
type UpstreamStatus struct {
	// Initialized is true when the last attempt succeeded: the server speaks MCP.
	Initialized bool `json:"initialized"`
	// ServerName, ServerVersion and ProtocolVersion are from the server's initialize result.
	ServerName      string `json:"serverName,omitempty"`
	ServerVersion   string `json:"serverVersion,omitempty"`
	ProtocolVersion string `json:"protocolVersion,omitempty"`
	// ToolCount is the number of tools the server listed (before pinning and authorization).
	ToolCount int `json:"toolCount"`
	// Error is what went wrong on the last attempt, as the gateway saw it (at most 512 bytes).
	Error string `json:"error,omitempty"`
	// FailingSeconds is how long the handshake has been failing: since the last success, or since the
	// gateway started if it never succeeded (0 while it succeeds).
	FailingSeconds int64 `json:"failingSeconds,omitempty"`
}
