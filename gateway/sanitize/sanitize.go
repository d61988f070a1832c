// Package sanitize removes what a person does not see but a model reads (format and other
// default-ignorable characters, tag characters, variation selectors, bidirectional controls, control
// characters and terminal escape sequences, HTML comments), keeps what real text needs (emoji sequences,
// joiners where a script uses them), redacts
// secrets (cloud keys, tokens, private keys, JWTs) and strips internal detail from upstream errors.
package sanitize

import (
	"encoding/base64"
	"regexp"
	"strings"
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

// Value sanitizes every string in a decoded JSON value in place, at every depth and under every key
// (map and slice elements are replaced), and returns the possibly new value. The only strings left alone
// are base64 payloads where MCP puts binary content: "data" of image and audio content and "blob" of
// resource contents, and only when they really are base64 (which cannot carry hidden text).
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
			if isBinaryPayload(t, k, e) {
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

func isBinaryPayload(obj map[string]any, key string, v any) bool {
	s, ok := v.(string)
	if !ok {
		return false
	}
	switch key {
	case "data":
		if ty, _ := obj["type"].(string); ty != "image" && ty != "audio" {
			return false
		}
	case "blob":
		if _, ok := obj["uri"].(string); !ok {
			return false
		}
	default:
		return false
	}
	_, err := base64.StdEncoding.DecodeString(s)
	return err == nil
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
