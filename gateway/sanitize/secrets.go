package sanitize

import (
	"fmt"
	"regexp"
	"sort"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/rs/zerolog"
	"github.com/spf13/viper"
	"github.com/zricethezav/gitleaks/v8/config"
	"github.com/zricethezav/gitleaks/v8/detect"
	"github.com/zricethezav/gitleaks/v8/logging"
)

// Secrets are found by gitleaks' default rule set (github.com/zricethezav/gitleaks/v8, the gitleaks.toml
// embedded in its config package, run by its detect package: keywords, expressions, entropy thresholds and
// allowlists), plus a few rules of the gateway's own for what that set leaves out: an AWS secret access
// key printed next to its key id, PEM private keys that are short or cut off, bearer tokens, and
// key=value credentials with low entropy (see fallbackRules).
//
// The rule set is built for scanning repositories and is slow on text that mentions "key" or "token"
// (milliseconds per KiB), so it never sees a whole text: a linear prefilter finds candidate tokens (runs
// of at least minToken characters that mix character classes or have many distinct characters, as every
// secret does) and PEM blocks, and only a window around each goes to the detector. Plain prose has no
// candidates and costs one pass over its bytes.

// Rules returns the number of rules secrets are looked for with, loading the rule set if needed (a
// fraction of a second, once per process); a server calls it at start so that the first result does not
// pay for the loading.
func Rules() int { return len(ruleSet().Config.Rules) + len(fallbackRules) + 2 } // + credential, aws-secret-access-key

// ruleSet parses gitleaks' embedded default configuration once. The configuration is compiled into the
// module at a pinned version, so an error here is a programming error.
var ruleSet = sync.OnceValue(func() *detect.Detector {
	logging.Logger = zerolog.Nop() // the detector's logs are for its command line, not for the gateway's stderr
	v := viper.New()
	v.SetConfigType("toml")
	if err := v.ReadConfig(strings.NewReader(config.DefaultConfig)); err != nil {
		panic(fmt.Sprintf("sanitize: gitleaks default config: %v", err))
	}
	var vc config.ViperConfig
	if err := v.Unmarshal(&vc); err != nil {
		panic(fmt.Sprintf("sanitize: gitleaks default config: %v", err))
	}
	cfg, err := vc.Translate()
	if err != nil {
		panic(fmt.Sprintf("sanitize: gitleaks default config: %v", err))
	}
	return detect.NewDetector(cfg)
})

type fallbackRule struct {
	kind string
	re   *regexp.Regexp
	// hints are substrings (lower case) one of which every match contains; a string without any of them
	// is skipped without running the expression.
	hints []string
	// keep keeps the first submatch (for key=value patterns, the key) outside the redaction.
	keep bool
}

// fallbackRules catch what gitleaks' rule set passes over: its allowlists skip documentation examples
// (AKIA...EXAMPLE), its private-key rule needs a body of 64 characters, and it has no rule for bearer
// tokens or low-entropy passwords. A kind that gitleaks has a rule for carries gitleaks' rule id.
var fallbackRules = []fallbackRule{
	{kind: "private-key", re: regexp.MustCompile(`(?s)-----BEGIN[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----.*?(?:-----END[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|$)`), hints: []string{"private key"}},
	{kind: "aws-access-token", re: regexp.MustCompile(`\b(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[0-9A-Z]{16}\b`), hints: []string{"a3t", "akia", "asia", "abia", "acca", "agpa", "aida", "aroa", "anpa", "anva", "aipa"}},
	{kind: "github-token", re: regexp.MustCompile(`\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,})\b`), hints: []string{"gh", "github_pat_"}},
	{kind: "slack-token", re: regexp.MustCompile(`\bxox[abposr]-[A-Za-z0-9-]{10,}\b`), hints: []string{"xox"}},
	{kind: "stripe-access-token", re: regexp.MustCompile(`\b[rs]k_(?:live|test)_[A-Za-z0-9]{16,}\b`), hints: []string{"k_live_", "k_test_"}},
	{kind: "api-key", re: regexp.MustCompile(`\bsk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}\b`), hints: []string{"sk-"}},
	{kind: "gcp-api-key", re: regexp.MustCompile(`\bAIza[0-9A-Za-z_-]{35}\b`), hints: []string{"aiza"}},
	{kind: "jwt", re: regexp.MustCompile(`\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}`), hints: []string{"eyj"}},
	{kind: "azure-key", re: regexp.MustCompile(`(?i)\b(?:AccountKey|SharedAccessKey|sig)=[A-Za-z0-9+/%]{20,}={0,2}`), hints: []string{"accountkey=", "sharedaccesskey=", "sig="}},
	{kind: "bearer", re: regexp.MustCompile(`(?i)\b(bearer\s+)[A-Za-z0-9._~+/-]{16,}=*`), hints: []string{"bearer"}, keep: true},
}

// AWS secret access keys are 40 characters of base64 with no prefix of their own: they are found by
// their name (SecretAccessKey, aws_secret_access_key, "Secret access key") or next to a key id.
var (
	awsKeyID      = regexp.MustCompile(`\b(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b`)
	awsSecretName = regexp.MustCompile(`(?i)secret[_ .-]?access[_ .-]?key`)
	awsSecret     = regexp.MustCompile(`(?:^|[^A-Za-z0-9/+=])([A-Za-z0-9/+]{40})(?:[^A-Za-z0-9/+=]|$)`)
	awsIDPrefixes = []string{"AKIA", "ASIA", "ABIA", "ACCA", "A3T"}
)

// awsNear is how far from a key id or a name a secret access key is looked for.
const awsNear = 256

const (
	// minToken is the shortest candidate token; gitleaks' generic rule needs 10 characters.
	minToken = 10
	// windowBefore and windowAfter are the context around a candidate the detector sees: gitleaks'
	// generic rule looks for a key name at most about 45 characters before a value.
	windowBefore, windowAfter = 64, 8
	// detectBudget bounds the bytes of one text that go to the detector. Its generic rule is one large
	// expression that Go's regexp runs at about 2 µs per byte; past the budget (a text with thousands of
	// candidates, such as a listing of hashes next to the word "key"), only the fallback rules run.
	detectBudget = 16 << 10
	// maxWindow bounds the windows that overlapping candidates merge into, so that the budget runs out
	// window by window and not at once on one long run of candidates.
	maxWindow = 2 << 10
)

// span is a part of a text to redact.
type span struct {
	start, end int
	kind       string
}

// Secrets replaces secrets with "[REDACTED:<rule id>]", the rule id being gitleaks' (e.g.
// aws-access-token, github-pat, generic-api-key) or a fallback rule's (e.g. bearer, credential).
func Secrets(s string) (string, Findings) {
	spans := findSecrets(s)
	if len(spans) == 0 {
		return s, Findings{}
	}
	var b strings.Builder
	b.Grow(len(s))
	last := 0
	for _, sp := range spans {
		b.WriteString(s[last:sp.start])
		b.WriteString("[REDACTED:" + sp.kind + "]")
		last = sp.end
	}
	b.WriteString(s[last:])
	return b.String(), Findings{Secrets: len(spans)}
}

// ContainsSecret reports the rule id of the first secret found in a decoded JSON value (strings and
// object member names at any depth, members in sorted order), for refusing a tool call whose arguments
// carry one.
func ContainsSecret(v any) (kind string, found bool) {
	switch t := v.(type) {
	case string:
		if spans := findSecrets(t); len(spans) > 0 {
			return spans[0].kind, true
		}
	case []any:
		for _, e := range t {
			if kind, found := ContainsSecret(e); found {
				return kind, true
			}
		}
	case map[string]any:
		keys := make([]string, 0, len(t))
		for k := range t {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if kind, found := ContainsSecret(k); found {
				return kind, true
			}
			if kind, found := ContainsSecret(t[k]); found {
				return kind, true
			}
		}
	}
	return "", false
}

// findSecrets returns the disjoint, ordered spans of s to redact.
func findSecrets(s string) []span {
	if len(s) < minToken {
		return nil
	}
	var spans []span
	if ws := candidateWindows(s); len(ws) > 0 {
		d, budget := ruleSet(), detectBudget
		for _, w := range ws {
			if budget -= w[1] - w[0]; budget >= 0 {
				spans = append(spans, detected(d, s, w[0], w[1])...)
			}
			spans = append(spans, fallback(s, w[0], w[1])...)
		}
	}
	lower := asciiLower(s)
	spans = append(spans, credentials(s, lower)...)
	spans = append(spans, awsSecrets(s, lower)...)
	return merge(spans)
}

// detected runs the rule set on s[a:b] and locates each finding's secret in it.
func detected(d *detect.Detector, s string, a, b int) []span {
	var spans []span
	w := s[a:b]
	for _, f := range d.DetectString(w) {
		secret := strings.TrimSpace(f.Secret)
		if secret == "" {
			continue
		}
		for off := 0; ; {
			i := strings.Index(w[off:], secret)
			if i < 0 {
				break
			}
			spans = append(spans, span{start: a + off + i, end: a + off + i + len(secret), kind: f.RuleID})
			off += i + len(secret)
		}
	}
	return spans
}

// fallback runs the fallback rules on s[a:b].
func fallback(s string, a, b int) []span {
	var spans []span
	w := s[a:b]
	lower := asciiLower(w)
	for _, r := range fallbackRules {
		if containsAny(lower, r.hints) {
			spans = append(spans, matches(r, w, a)...)
		}
	}
	return spans
}

func matches(r fallbackRule, w string, a int) []span {
	var spans []span
	for _, m := range r.re.FindAllStringSubmatchIndex(w, -1) {
		start := m[0]
		if r.keep {
			start = m[3]
		}
		spans = append(spans, span{start: a + start, end: a + m[1], kind: r.kind})
	}
	return spans
}

// credential is the key=value fallback rule. Its values need not look random (hunter2hunter2), so it
// does not depend on the candidate prefilter: it runs around each key name that an assignment follows.
var credential = fallbackRule{kind: "credential", re: regexp.MustCompile(`(?i)\b((?:aws_secret_access_key|client_secret|password|passwd|pwd|secret|api[_-]?key|access[_-]?key|auth[_-]?token|token)["']?\s*[:=]\s*["']?)[^\s"',;]{8,}`),
	hints: []string{"secret", "passw", "pwd", "key", "token"}, keep: true}

// credentials finds key=value credentials: around every key name followed by ':' or '=' within a few
// bytes, the expression runs on the line.
func credentials(s, lower string) []span {
	var spans []span
	for _, h := range credential.hints {
		next := 0 // the end of the last window for this hint
		for off := 0; ; {
			i := strings.Index(lower[off:], h)
			if i < 0 {
				break
			}
			i += off
			off = i + len(h)
			j := off
			for j < len(s) && j-off < 24 && s[j] != ':' && s[j] != '=' && s[j] != '\n' {
				j++
			}
			if j == len(s) || (s[j] != ':' && s[j] != '=') || i < next {
				continue
			}
			a, b := widen(s, i-32, -1), j+1
			for b < len(s) && (b-j < 4 || !strings.ContainsRune(" \t\r\n\"',;", rune(s[b]))) && s[b] != '\n' {
				b++
			}
			spans = append(spans, matches(credential, s[a:b], a)...)
			next = b
		}
	}
	return spans
}

// awsSecrets finds 40-character secret access keys near a key id or after their name.
func awsSecrets(s, lower string) []span {
	var spans []span
	look := func(a, b int) {
		a, b = max(a, 0), min(b, len(s))
		for _, m := range awsSecret.FindAllStringSubmatchIndex(s[a:b], -1) {
			v := s[a+m[2] : a+m[3]]
			if classes(v) == 7 {
				spans = append(spans, span{start: a + m[2], end: a + m[3], kind: "aws-secret-access-key"})
			}
		}
	}
	if containsAny(s, awsIDPrefixes) {
		for _, m := range awsKeyID.FindAllStringIndex(s, -1) {
			look(m[0]-awsNear, m[1]+awsNear)
		}
	}
	for off := 0; ; {
		i := strings.Index(lower[off:], "secret")
		if i < 0 {
			break
		}
		i += off
		off = i + len("secret")
		if m := awsSecretName.FindStringIndex(s[i:min(len(s), i+20)]); m != nil && m[0] == 0 {
			look(i+m[1], i+m[1]+awsNear)
		}
	}
	return spans
}

// merge sorts spans and joins the overlapping ones; a joined span keeps the kind of the one that starts
// first (the longest, at equal starts).
func merge(spans []span) []span {
	if len(spans) == 0 {
		return nil
	}
	sort.SliceStable(spans, func(i, j int) bool {
		if spans[i].start != spans[j].start {
			return spans[i].start < spans[j].start
		}
		return spans[i].end > spans[j].end
	})
	out := spans[:1]
	for _, sp := range spans[1:] {
		last := &out[len(out)-1]
		if sp.start < last.end {
			last.end = max(last.end, sp.end)
			continue
		}
		out = append(out, sp)
	}
	return out
}

// candidateWindows is the prefilter: the byte ranges of s, in order, that may hold a secret. They are
// disjoint except where a run of overlapping candidates was split at maxWindow.
func candidateWindows(s string) [][2]int {
	var ws [][2]int
	add := func(a, b int) {
		a, b = widen(s, a-windowBefore, -1), widen(s, b+windowAfter, 1)
		if n := len(ws); n > 0 && a <= ws[n-1][1] && b-ws[n-1][0] <= maxWindow {
			ws[n-1][1] = max(ws[n-1][1], b)
			return
		}
		ws = append(ws, [2]int{a, b})
	}
	pem := 0
	for i := 0; i < len(s); {
		if !tokenByte(s[i]) {
			i++
			continue
		}
		j := i
		for j < len(s) && tokenByte(s[j]) {
			j++
		}
		switch {
		case i >= pem && j-i >= 10 && hasPrefixFold(s[i:j], "-----begin"):
			// a PEM block spans lines: the window runs to its end line
			end := len(s)
			if k := strings.Index(s[j:], "-----END"); k >= 0 {
				end = j + k + len("-----END")
				for end < len(s) && s[end] != '\n' {
					end++
				}
			}
			add(i, end)
			pem = end
		case j-i >= minToken && candidate(s[i:j]):
			add(i, j)
		}
		i = j
	}
	return ws
}

// candidate reports whether a token looks like a secret could be in it: it mixes digits and letters, or
// it has at least 12 distinct characters (the least that the entropy threshold of gitleaks' generic rule
// allows), so words, camel-case names, numbers and dates are not candidates. (Short letter-only
// passwords after a key name are the credential fallback rule's, which does not depend on this.)
func candidate(tok string) bool {
	if c := classes(tok); c&4 != 0 && c&3 != 0 {
		return true
	}
	var seen [4]uint64
	n := 0
	for i := 0; i < len(tok); i++ {
		c := tok[i]
		if seen[c>>6]&(1<<(c&63)) == 0 {
			seen[c>>6] |= 1 << (c & 63)
			if n++; n >= 12 {
				return true
			}
		}
	}
	return false
}

// classes returns a bit set of the character classes in s: 1 lower case, 2 upper case, 4 digits.
func classes(s string) uint8 {
	var c uint8
	for i := 0; i < len(s); i++ {
		switch b := s[i]; {
		case b >= 'a' && b <= 'z':
			c |= 1
		case b >= 'A' && b <= 'Z':
			c |= 2
		case b >= '0' && b <= '9':
			c |= 4
		}
	}
	return c
}

// tokenByte reports the bytes a secret token is made of: printable ASCII other than quotes, brackets
// and separators.
func tokenByte(b byte) bool { return tokenBytes[b] }

var tokenBytes = func() (t [256]bool) {
	for b := '!'; b < 0x7f; b++ {
		t[b] = !strings.ContainsRune("\"'`,;()[]{}<>\\", b)
	}
	return t
}()

// asciiLower lower-cases ASCII letters only (the hints are ASCII), keeping byte offsets.
func asciiLower(s string) string {
	b := make([]byte, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		b[i] = c
	}
	return string(b)
}

// widen moves a window edge (i, going in direction dir) to a word boundary within 8 more bytes and to a
// UTF-8 character boundary, clamped to s.
func widen(s string, i, dir int) int {
	i = max(0, min(i, len(s)))
	for k := 0; k < 8 && i > 0 && i < len(s) && tokenByte(s[i]) && tokenByte(s[i-1]); k++ {
		i += dir
	}
	for i > 0 && i < len(s) && !utf8.RuneStart(s[i]) {
		i += dir
	}
	return i
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

func containsAny(s string, subs []string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}
