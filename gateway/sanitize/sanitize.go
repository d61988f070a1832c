// Package sanitize removes what a person does not see but a model reads (zero-width and invisible
// formatting characters, Unicode tag characters, bidirectional overrides, HTML comments), redacts
// secrets (cloud keys, tokens, private keys, JWTs) and strips internal detail from upstream errors.
package sanitize

import (
	"regexp"
	"strings"
	"unicode/utf8"
)

// Findings counts what a sanitizing pass removed.
type Findings struct {
	// Hidden is the number of invisible characters removed.
	Hidden int
	// Comments is the number of HTML comments removed.
	Comments int
	// Secrets is the number of secrets redacted.
	Secrets int
}

// Any reports whether anything was found.
func (f Findings) Any() bool { return f.Hidden+f.Comments+f.Secrets > 0 }

// Add sums two findings.
func (f Findings) Add(o Findings) Findings {
	return Findings{Hidden: f.Hidden + o.Hidden, Comments: f.Comments + o.Comments, Secrets: f.Secrets + o.Secrets}
}

// IsHidden reports characters that render as nothing but reach a model: zero-width characters, invisible
// formatting characters, bidirectional embeddings, overrides and isolates, and Unicode tag characters.
func IsHidden(r rune) bool {
	switch {
	case r >= 0xE0000 && r <= 0xE007F: // tag characters
		return true
	case r >= 0x200B && r <= 0x200F: // zero-width space/joiners, LRM, RLM
		return true
	case r >= 0x202A && r <= 0x202E: // bidi embeddings and overrides
		return true
	case r >= 0x2060 && r <= 0x2064, r >= 0x2066 && r <= 0x2069: // word joiner, invisible operators, bidi isolates
		return true
	case r == 0xFEFF, r == 0x00AD, r == 0x180E, r == 0x034F, r == 0x061C, r == 0x115F, r == 0x1160, r == 0x3164, r == 0xFFA0:
		return true
	}
	return false
}

var htmlComment = regexp.MustCompile(`(?s)<!--.*?(-->|$)`)

// Hidden removes invisible characters and HTML comments.
func Hidden(s string) (string, Findings) {
	var f Findings
	if needsStrip(s) {
		s = strings.Map(func(r rune) rune {
			if IsHidden(r) {
				f.Hidden++
				return -1
			}
			return r
		}, s)
	}
	if strings.Contains(s, "<!--") {
		s = htmlComment.ReplaceAllStringFunc(s, func(string) string { f.Comments++; return "" })
	}
	return s, f
}

// needsStrip is a fast scan: plain ASCII never contains hidden characters.
func needsStrip(s string) bool {
	for i := 0; i < len(s); {
		if s[i] < utf8.RuneSelf {
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		if IsHidden(r) {
			return true
		}
		i += n
	}
	return false
}

type secretPattern struct {
	kind string
	re   *regexp.Regexp
	// hints are substrings (lower case) one of which every match contains; a string without any of them
	// is skipped without running the expression.
	hints []string
	// keep keeps the first submatch (for key=value patterns, the key) in front of the redaction marker.
	keep bool
}

var secretPatterns = []secretPattern{
	{kind: "private-key", re: regexp.MustCompile(`(?s)-----BEGIN[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----.*?(?:-----END[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|$)`), hints: []string{"private key"}},
	{kind: "aws-access-key", re: regexp.MustCompile(`\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[0-9A-Z]{16}\b`), hints: []string{"akia", "asia", "agpa", "aida", "aroa", "anpa", "anva", "aipa"}},
	{kind: "github-token", re: regexp.MustCompile(`\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,})\b`), hints: []string{"gh", "github_pat_"}},
	{kind: "slack-token", re: regexp.MustCompile(`\bxox[abposr]-[A-Za-z0-9-]{10,}\b`), hints: []string{"xox"}},
	{kind: "stripe-key", re: regexp.MustCompile(`\b[rs]k_(?:live|test)_[A-Za-z0-9]{16,}\b`), hints: []string{"k_live_", "k_test_"}},
	{kind: "api-key", re: regexp.MustCompile(`\bsk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}\b`), hints: []string{"sk-"}},
	{kind: "google-api-key", re: regexp.MustCompile(`\bAIza[0-9A-Za-z_-]{35}\b`), hints: []string{"aiza"}},
	{kind: "jwt", re: regexp.MustCompile(`\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}`), hints: []string{"eyj"}},
	{kind: "azure-key", re: regexp.MustCompile(`(?i)\b(?:AccountKey|SharedAccessKey|sig)=[A-Za-z0-9+/%]{20,}={0,2}`), hints: []string{"accountkey=", "sharedaccesskey=", "sig="}},
	{kind: "bearer", re: regexp.MustCompile(`(?i)\b(bearer\s+)[A-Za-z0-9._~+/-]{16,}=*`), hints: []string{"bearer"}, keep: true},
	{kind: "credential", re: regexp.MustCompile(`(?i)\b((?:aws_secret_access_key|client_secret|password|passwd|pwd|secret|api[_-]?key|access[_-]?key|auth[_-]?token|token)["']?\s*[:=]\s*["']?)[^\s"',;]{8,}`), hints: []string{"secret", "pass", "pwd", "key", "token"}, keep: true},
}

// Secrets replaces secrets with "[REDACTED:kind]".
func Secrets(s string) (string, Findings) {
	var f Findings
	var lower string
	for _, p := range secretPatterns {
		if lower == "" {
			lower = strings.ToLower(s)
		}
		hit := false
		for _, h := range p.hints {
			if strings.Contains(lower, h) {
				hit = true
				break
			}
		}
		if !hit {
			continue
		}
		repl := "[REDACTED:" + p.kind + "]"
		if p.keep {
			repl = "${1}" + repl
		}
		n := 0
		out := p.re.ReplaceAllStringFunc(s, func(m string) string {
			n++
			if p.keep {
				return p.re.ReplaceAllString(m, repl)
			}
			return repl
		})
		if n > 0 {
			f.Secrets += n
			s = out
			lower = ""
		}
	}
	return s, f
}

// Text removes hidden content and redacts secrets.
func Text(s string) (string, Findings) {
	s, f := Hidden(s)
	s, g := Secrets(s)
	return s, f.Add(g)
}

// Value sanitizes every string in a decoded JSON value in place (map and slice elements are replaced)
// and returns the possibly new value. Strings under the keys "data" and "blob" (base64 payloads) are
// left alone.
func Value(v any) (any, Findings) {
	switch t := v.(type) {
	case string:
		return Text(t)
	case []any:
		var total Findings
		for i := range t {
			var f Findings
			t[i], f = Value(t[i])
			total = total.Add(f)
		}
		return t, total
	case map[string]any:
		var total Findings
		for k, e := range t {
			if k == "data" || k == "blob" {
				continue
			}
			var f Findings
			t[k], f = Value(e)
			total = total.Add(f)
		}
		return t, total
	}
	return v, Findings{}
}

var internalDetail = []*regexp.Regexp{
	regexp.MustCompile(`(?i)\b[a-z][a-z0-9+.-]*://[^\s"']+`),                                                           // URLs
	regexp.MustCompile(`(?:[A-Za-z]:)?(?:[\\/][\w.@-]+){2,}(?::\d+)?`),                                                 // file paths
	regexp.MustCompile(`\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b`),                                                         // IPv4
	regexp.MustCompile(`\[[0-9a-fA-F:.]+\](?::\d+)?|\b(?:[0-9a-fA-F]{1,4}:){3,7}[0-9a-fA-F]{1,4}\b|::1\b`),             // IPv6
	regexp.MustCompile(`(?i)\b[a-z0-9-]+(?:\.[a-z0-9-]+)*\.(?:svc|cluster\.local|internal|local|lan|corp)\b(?::\d+)?`), // internal names
	regexp.MustCompile(`(?i)\blocalhost(?::\d+)?\b`),
}

var traceLine = regexp.MustCompile(`^\s*(?:at |goroutine \d|Traceback|File "|panic:|\[signal|created by |#\d+ )`)

// MaxErrorLength bounds a sanitized error message.
const MaxErrorLength = 240

// Error keeps what an upstream error may tell a model: its first line that is not part of a stack trace,
// with secrets redacted and URLs, file paths, addresses and internal host names replaced by "[internal]".
func Error(s string) string {
	line := ""
	for _, l := range strings.Split(s, "\n") {
		if strings.TrimSpace(l) == "" || traceLine.MatchString(l) {
			continue
		}
		line = l
		break
	}
	line, _ = Text(line)
	for _, re := range internalDetail {
		line = re.ReplaceAllString(line, "[internal]")
	}
	line = strings.TrimSpace(line)
	if len(line) > MaxErrorLength {
		line = strings.ToValidUTF8(line[:MaxErrorLength], "") + "..."
	}
	if line == "" {
		line = "upstream error"
	}
	return line
}
