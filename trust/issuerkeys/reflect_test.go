package issuerkeys

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestAnswersAreNotReflected: a tenant aims the fetch at an internal JSON service (or runs a hostile
// issuer) and reads the condition message. Neither the metadata's issuer, nor key ids, key types or
// curves, nor a parser's view of a non-JSON answer may come back in the error, and the error stays
// short however large the answer.
func TestAnswersAreNotReflected(t *testing.T) {
	const marker = "INTERNAL-SECRET-VALUE"
	long := strings.Repeat(marker, 500)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/.well-known/openid-configuration", "/.well-known/oauth-authorization-server":
			_, _ = w.Write([]byte(`{"issuer":"` + long + `","jwks_uri":"https://x"}`))
		case "/keys":
			_, _ = w.Write([]byte(`{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"` + long + `"},{"kty":"` + long + `"},` +
				`{"kty":"EC","crv":"` + long + `","x":"AA","y":"AA"},{"kty":"oct","k":"AA"},{"kty":"oct","k":"AA"},{"kty":"oct","k":"AA"}]}`))
		case "/text":
			_, _ = w.Write([]byte(marker))
		}
	}))
	defer srv.Close()
	f := &Fetcher{Client: srv.Client()}
	for name, src := range map[string]Source{
		"metadata naming another issuer": {Issuer: srv.URL},
		"unusable keys":                  {Issuer: srv.URL, JWKSURL: srv.URL + "/keys"},
		"not JSON":                       {Issuer: srv.URL, JWKSURL: srv.URL + "/text"},
	} {
		_, _, _, err := f.Fetch(context.Background(), src)
		if err == nil {
			t.Fatalf("%s: no error", name)
		}
		if msg := err.Error(); strings.Contains(msg, marker[:8]) || len(msg) > 1024 {
			t.Errorf("%s: the error quotes the answer or is long (%d bytes): %.400s", name, len(msg), msg)
		}
		t.Logf("%s: %v", name, err)
	}
}
