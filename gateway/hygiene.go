package gateway

import (
	"bytes"
	"io"
	"regexp"
	"strings"
)

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }

var (
	htmlComment = regexp.MustCompile(`(?s)<!--.*?-->`)
	secrets     = []*regexp.Regexp{
		regexp.MustCompile(`(?s)-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----`),
		regexp.MustCompile(`\b(AKIA|ASIA)[0-9A-Z]{16}\b`),
		regexp.MustCompile(`\bgh[pousr]_[A-Za-z0-9]{30,}\b`),
		regexp.MustCompile(`\bgithub_pat_[A-Za-z0-9_]{30,}\b`),
		regexp.MustCompile(`\bxox[abposr]-[A-Za-z0-9-]{10,}\b`),
		regexp.MustCompile(`\bsk-[A-Za-z0-9_-]{20,}\b`),
		regexp.MustCompile(`\bAIza[0-9A-Za-z_-]{35}\b`),
		regexp.MustCompile(`\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\b`),
		regexp.MustCompile(`(?i)\b(aws_secret_access_key|password|passwd|secret|api[_-]?key|token)\s*[:=]\s*["']?[^\s"']{8,}`),
	}
	internalDetail = []*regexp.Regexp{
		regexp.MustCompile(`(?m)^\s*(at |goroutine |Traceback|File ").*$`),
		regexp.MustCompile(`(/[\w.-]+)+\.(go|py|js|ts|java|rb)(:\d+)?`),
		regexp.MustCompile(`\b\d{1,3}(\.\d{1,3}){3}(:\d+)?\b`),
		regexp.MustCompile(`\b[a-z0-9.-]+\.(svc|cluster\.local|internal|local)\b(:\d+)?`),
	}
)

// hidden reports characters that a person does not see but a model reads: zero-width and invisible
// formatting characters, bidirectional overrides and Unicode tag characters.
func hidden(r rune) bool {
	switch {
	case r >= 0xE0000 && r <= 0xE007F: // tag characters
		return true
	case r == 0x200B || r == 0x200C || r == 0x200D || r == 0x2060 || r == 0xFEFF || r == 0x00AD || r == 0x180E:
		return true
	case r >= 0x202A && r <= 0x202E, r >= 0x2066 && r <= 0x2069, r == 0x200E || r == 0x200F:
		return true
	}
	return false
}

// Sanitize removes hidden content (invisible characters, HTML comments) and redacts secrets; changed
// reports whether anything was removed.
func Sanitize(s string) (out string, changed bool) {
	out = strings.Map(func(r rune) rune {
		if hidden(r) {
			return -1
		}
		return r
	}, s)
	out = htmlComment.ReplaceAllString(out, "")
	out = Redact(out)
	return out, out != s
}

// Redact replaces secrets (keys, tokens, private keys, JWTs) with [REDACTED].
func Redact(s string) string {
	for _, re := range secrets {
		s = re.ReplaceAllString(s, "[REDACTED]")
	}
	return s
}

// sanitizeError strips what an upstream error must not tell a model: stack traces, source paths and
// internal hosts.
func sanitizeError(s string) string {
	s = Redact(s)
	for _, re := range internalDetail {
		s = re.ReplaceAllString(s, "[internal]")
	}
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return strings.TrimSpace(s)
}

// sanitizeValue walks decoded JSON and sanitizes every string.
func sanitizeValue(v any) any {
	switch v := v.(type) {
	case string:
		out, _ := Sanitize(v)
		return out
	case []any:
		for i := range v {
			v[i] = sanitizeValue(v[i])
		}
	case map[string]any:
		for k := range v {
			v[k] = sanitizeValue(v[k])
		}
	}
	return v
}
