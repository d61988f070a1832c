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
