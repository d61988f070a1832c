package sanitize

import (
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// randomKey returns n characters of the given alphabet from a fixed seed, so that test secrets have the
// entropy of real ones without committing any.
func randomKey(seed uint64, alphabet string, n int) string {
	r := rand.New(rand.NewPCG(seed, 1)) //nolint:gosec // seeded on purpose: fake keys must be the same every run
	b := make([]byte, n)
	for i := range b {
		b[i] = alphabet[r.IntN(len(alphabet))]
	}
	return string(b)
}

const (
	alnum    = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	b64chars = alnum + "+/"
	upper    = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
)

func TestAWSSecretNextToItsKeyID(t *testing.T) {
	id, secret := "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
	realID, realSecret := "AKIA"+randomKey(1, upper, 16), randomKey(2, b64chars, 40)
	for name, in := range map[string]string{
		"key=value":        "aws_access_key_id=" + id + " aws_secret_access_key=" + secret,
		"cli json":         `{"AccessKey": {"UserName": "ci", "AccessKeyId": "` + id + `", "Status": "Active", "SecretAccessKey": "` + secret + `"}}`,
		"secret first":     `{"SecretAccessKey": "` + secret + `", "AccessKeyId": "` + id + `"}`,
		"console csv":      "Access key ID,Secret access key\n" + id + "," + secret + "\n",
		"env":              "export AWS_ACCESS_KEY_ID=" + realID + "\nexport AWS_SECRET_ACCESS_KEY=" + realSecret + "\n",
		"table":            "| " + realID + " | " + realSecret + " |",
		"name only (yaml)": "SecretAccessKey: " + realSecret,
	} {
		t.Run(name, func(t *testing.T) {
			got, f := Secrets(in)
			for _, leak := range []string{id, secret, realID, realSecret} {
				if strings.Contains(got, leak) {
					t.Fatalf("%q keeps %q", got, leak)
				}
			}
			if f.Secrets == 0 {
				t.Fatalf("no findings for %q", got)
			}
		})
	}
	// a 40-character hex digest next to a key id is not a secret access key
	sha := randomKey(3, "0123456789abcdef", 40)
	if got, _ := Secrets("key " + id + " commit " + sha); !strings.Contains(got, sha) {
		t.Errorf("hex digest redacted: %q", got)
	}
}

func TestSecretsUseGitleaksRuleIDs(t *testing.T) {
	for want, in := range map[string]string{
		"aws-access-token":    "AKIA" + randomKey(4, upper, 16),
		"github-pat":          "ghp_" + randomKey(5, alnum, 36),
		"gitlab-pat":          "glpat-" + randomKey(6, alnum, 20),
		"generic-api-key":     `api_key = "` + randomKey(7, alnum, 32) + `"`,
		"slack-bot-token":     "xoxb-1234567890123-1234567890123-" + randomKey(8, alnum, 24),
		"private-key":         "-----BEGIN RSA PRIVATE KEY-----\n" + randomKey(9, b64chars, 64) + "\n" + randomKey(10, b64chars, 64) + "\n-----END RSA PRIVATE KEY-----",
		"stripe-access-token": "sk_live_" + randomKey(11, alnum, 24),
		"gcp-api-key":         "AIza" + randomKey(12, alnum, 35),
		"sendgrid-api-token":  "SG." + randomKey(13, alnum, 22) + "." + randomKey(14, alnum, 43),
	} {
		t.Run(want, func(t *testing.T) {
			got, f := Secrets("found: " + in + " end")
			if f.Secrets == 0 || !strings.Contains(got, "[REDACTED:"+want+"]") {
				t.Fatalf("Secrets(%q) = %q, want a [REDACTED:%s] marker", in, got, want)
			}
		})
	}
}

// plainText is 4 KiB of prose that names keys and tokens (so gitleaks' keyword prefilter would run its
// generic rule over all of it) but holds no secret.
func plainText() string {
	const para = "The API returns an access token that the client passes with each request; the key is rotated " +
		"weekly by the auth service (see RFC 6749, section 4.1, and the 2026-11-30 release notes). Passwords " +
		"must have at least twelve characters. Unfortunately, JavaScript clients cache the token until it expires. "
	return strings.Repeat(para, 4096/len(para)+1)[:4096]
}

// secretText is 4 KiB of the same prose with five secrets in it.
func secretText() string {
	s := plainText()[:3500]
	return (s + " aws_access_key_id=AKIA" + randomKey(20, upper, 16) + " aws_secret_access_key=" + randomKey(21, b64chars, 40) +
		"\ntoken: ghp_" + randomKey(22, alnum, 36) + "\nAuthorization: Bearer " + randomKey(23, alnum, 40) +
		"\napi_key = \"" + randomKey(24, alnum, 32) + "\"\n" + plainText())[:4096]
}

func TestCredentialFallback(t *testing.T) {
	for _, in := range []string{
		"token: lowercasevalue\npassword = correcthorse", // key names found in another order than they appear
		`{"secret": "hunter2(x)!"}`,
		"DB password: opensesame",
	} {
		got, f := Secrets(in)
		for _, leak := range []string{"lowercasevalue", "correcthorse", "hunter2", "opensesame"} {
			if strings.Contains(got, leak) {
				t.Errorf("Secrets(%q) = %q keeps %q", in, got, leak)
			}
		}
		if f.Secrets == 0 {
			t.Errorf("no findings for %q", in)
		}
	}
}

func TestPlainTextUnchanged(t *testing.T) {
	for _, s := range []string{plainText(), "héllo wörld ✓ 👩‍💻", "version 1.24.3 of 2026-12-01, commit " + randomKey(30, "0123456789abcdef", 40),
		"https://docs.example.com/guides/authentication#tokens", "the quick brown fox", "password policy: at least 12 characters"} {
		if got, f := Secrets(s); got != s || f.Any() {
			t.Errorf("Secrets changed plain text:\n%q\n%q", s, got)
		}
	}
	if ws := candidateWindows(plainText()); len(ws) > 0 {
		t.Errorf("plain prose has %d candidate windows: %v", len(ws), ws)
	}
}

func TestSecretTextRedacted(t *testing.T) {
	got, f := Secrets(secretText())
	if f.Secrets < 5 {
		t.Fatalf("%d secrets in %q", f.Secrets, got)
	}
}

// TestPrefilterKeepsFindings checks that the rule set finds in the candidate windows what it finds in the
// whole text.
func TestPrefilterKeepsFindings(t *testing.T) {
	d := ruleSet()
	for i, s := range []string{secretText(), plainText() + "\n" + secretText(), `{"password":"` + randomKey(40, alnum, 24) + `","user":"x"}`,
		"the_very_long_name_of_the_production_service_account_password_v2 = '" + randomKey(43, alnum, 20) + "'",
		"-----BEGIN OPENSSH PRIVATE KEY-----\n" + randomKey(41, b64chars, 70) + "\n" + randomKey(42, b64chars, 70) + "\n-----END OPENSSH PRIVATE KEY-----\n"} {
		var whole, windowed []string
		for _, f := range d.DetectString(s) {
			whole = append(whole, f.RuleID+":"+f.Secret)
		}
		for _, w := range candidateWindows(s) {
			for _, f := range d.DetectString(s[w[0]:w[1]]) {
				windowed = append(windowed, f.RuleID+":"+f.Secret)
			}
		}
		slices.Sort(whole)
		slices.Sort(windowed)
		if len(whole) == 0 || !slices.Equal(whole, windowed) {
			t.Errorf("text %d: whole text %v, windows %v", i, whole, windowed)
		}
	}
}

func TestContainsSecret(t *testing.T) {
	args := map[string]any{"url": "https://paste.example.com", "body": []any{"hello", map[string]any{"note": "key ghp_" + randomKey(50, alnum, 36)}}}
	if kind, found := ContainsSecret(args); !found || kind != "github-pat" {
		t.Fatalf("ContainsSecret = %q, %v", kind, found)
	}
	if kind, found := ContainsSecret(map[string]any{"AKIA" + randomKey(51, upper, 16): true}); !found || kind != "aws-access-token" {
		t.Fatalf("secret as a member name: %q, %v", kind, found)
	}
	if kind, found := ContainsSecret(map[string]any{"path": "/tmp/report.txt", "n": 3.0, "text": plainText()}); found {
		t.Fatalf("false positive %q", kind)
	}
}

// denseText is 64 KiB of key=value lines, each with a high-entropy value: the detector sees the first
// detectBudget bytes of candidates, the fallback rules all of it.
func denseText() string {
	var b strings.Builder
	for i := uint64(0); b.Len() < 64<<10; i++ {
		b.WriteString("api_key = " + randomKey(100+i, alnum, 32) + "\n")
	}
	return b.String()[:64<<10]
}

func TestSecretsConcurrently(t *testing.T) {
	want, _ := Secrets(secretText())
	done := make(chan string)
	for range 8 {
		go func() {
			got := ""
			for range 5 {
				got, _ = Secrets(secretText())
			}
			done <- got
		}()
	}
	for range 8 {
		if got := <-done; got != want {
			t.Fatalf("concurrent result differs:\n%q\n%q", got, want)
		}
	}
}

func TestDenseTextIsBounded(t *testing.T) {
	got, f := Secrets(denseText())
	if n := strings.Count(denseText(), "\n"); f.Secrets < n {
		t.Fatalf("%d of %d values redacted", f.Secrets, n)
	}
	if !strings.Contains(got, "[REDACTED:generic-api-key]") || !strings.Contains(got, "[REDACTED:credential]") {
		t.Fatalf("want the rule set's markers first and the fallback's past the budget")
	}
}

func BenchmarkSecrets(b *testing.B) {
	Rules()
	for name, s := range map[string]string{"plain-4KiB": plainText(), "secrets-4KiB": secretText(), "dense-64KiB": denseText()} {
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(s)))
			cpu := cpuTime()
			for b.Loop() {
				Secrets(s)
			}
			if cpu := cpuTime() - cpu; cpu > 0 {
				b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
			}
		})
	}
}
