package scan

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcp-warden/mcp-warden/gateway/sanitize"
)

// Endpoint connects to a live MCP endpoint (streamable HTTP) with an optional bearer token, lists every
// tool (following pagination) and checks each one's description and input schema.
func Endpoint(ctx context.Context, url, token string, timeout time.Duration) ([]Finding, int, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	hc := &http.Client{Timeout: timeout, Transport: bearer{token: token, next: &http.Transport{Proxy: nil, ResponseHeaderTimeout: timeout}}}
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "mcp-warden-scan", Version: "1"}, nil).
		Connect(ctx, &mcp.StreamableClientTransport{Endpoint: url, HTTPClient: hc, MaxRetries: -1}, nil)
	if err != nil {
		return nil, 0, fmt.Errorf("connect to %s: %w", url, err)
	}
	defer cs.Close()
	var out []Finding
	n := 0
	for tool, err := range cs.Tools(ctx, nil) {
		if err != nil {
			return nil, 0, fmt.Errorf("tools/list from %s: %w", url, err)
		}
		n++
		out = append(out, checkTool(url, tool)...)
	}
	Sort(out)
	return out, n, nil
}

func checkTool(url string, t *mcp.Tool) []Finding {
	var out []Finding
	add := func(r Rule, format string, args ...any) {
		out = append(out, newFinding(r, url, 0, t.Name, format, args...))
	}
	if _, f := sanitize.Hidden(t.Description); f.Hidden > 0 || f.Comments > 0 {
		add(ruleToolHidden, "tool %q: description has %d hidden characters and %d HTML comments", t.Name, f.Hidden, f.Comments)
	}
	if _, f := sanitize.Secrets(t.Description); f.Secrets > 0 {
		add(ruleToolSecret, "tool %q: description contains %d credential(s)", t.Name, f.Secrets)
	}
	if why := permissive(t.InputSchema); why != "" {
		add(ruleToolSchema, "tool %q: %s", t.Name, why)
	}
	if looksDestructive(t.Name) {
		add(ruleToolDestroy, "tool %q looks destructive by its name", t.Name)
	}
	return out
}

// permissive says why an input schema accepts anything ("" when it does not).
func permissive(schema any) string {
	m, ok := schema.(map[string]any)
	if !ok || len(m) == 0 {
		return "no input schema"
	}
	if ap, ok := m["additionalProperties"].(bool); ok && ap {
		return "the input schema allows any additional properties"
	}
	if ap, ok := m["additionalProperties"].(map[string]any); ok && len(ap) == 0 {
		return "the input schema allows any additional properties"
	}
	props, _ := m["properties"].(map[string]any)
	if len(props) == 0 && m["additionalProperties"] != false {
		return "the input schema declares no properties and does not forbid others"
	}
	return ""
}

type bearer struct {
	token string
	next  http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	if b.token != "" {
		r = r.Clone(r.Context())
		r.Header.Set("Authorization", "Bearer "+b.token)
	}
	return b.next.RoundTrip(r)
}
