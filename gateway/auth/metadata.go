package auth

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/modelcontextprotocol/go-sdk/oauthex"
)

// MetadataPath returns the RFC 9728 well-known path of a resource's metadata: the well-known prefix
// followed by the resource URI's path, e.g. /.well-known/oauth-protected-resource/mcp.
func MetadataPath(resource string) (string, error) {
	u, err := url.Parse(resource)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return "", fmt.Errorf("resource %q is not an absolute URI", resource)
	}
	return "/.well-known/oauth-protected-resource" + strings.TrimSuffix(u.EscapedPath(), "/"), nil
}

// MetadataURL returns the absolute URL of a resource's RFC 9728 metadata.
func MetadataURL(resource string) (string, error) {
	p, err := MetadataPath(resource)
	if err != nil {
		return "", err
	}
	u, _ := url.Parse(resource) // parsed by MetadataPath
	return u.Scheme + "://" + u.Host + p, nil
}

// MetadataHandler serves a protected resource metadata document as JSON.
func MetadataHandler(meta *oauthex.ProtectedResourceMetadata) (http.Handler, error) {
	body, err := json.Marshal(meta)
	if err != nil {
		return nil, fmt.Errorf("encode protected resource metadata: %w", err)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "max-age=300")
		_, _ = w.Write(body)
	}), nil
}

// Challenge builds a WWW-Authenticate Bearer challenge naming the resource metadata; code, description
// and scope are optional.
func Challenge(metadataURL, code, description, scope string) string {
	var b strings.Builder
	b.WriteString(`Bearer resource_metadata="`)
	b.WriteString(quote(metadataURL))
	b.WriteByte('"')
	if code != "" {
		b.WriteString(`, error="` + quote(code) + `"`)
	}
	if description != "" {
		b.WriteString(`, error_description="` + quote(description) + `"`)
	}
	if scope != "" {
		b.WriteString(`, scope="` + quote(scope) + `"`)
	}
	return b.String()
}

func quote(s string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", " ", "\r", " ").Replace(s)
}
