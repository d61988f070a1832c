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

// Text removes hidden content and redacts secrets.
func Text(s string) (string, Findings) {
	s, f := Hidden(s)
	s, g := Secrets(s)
	return s, f.Add(g)
}

// Value sanitizes every string in a decoded JSON value in place, member names included, at every depth
// and under every key (map and slice elements are replaced; a member whose cleaned name another member
// has is dropped), and returns the possibly new value. The only strings left alone
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
		var renamed map[string]string
		for k, e := range t {
			if !isBinaryPayload(t, k, e) {
				var f Findings
				t[k], f = Value(e)
				total = total.Add(f)
			}
			// member names are text the model reads too
			if clean, f := Text(k); f.Any() {
				if renamed == nil {
					renamed = map[string]string{}
				}
				renamed[k] = clean
				total = total.Add(f)
			}
		}
		for k, clean := range renamed {
			e := t[k]
			delete(t, k)
			if _, taken := t[clean]; !taken {
				t[clean] = e
			}
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
