package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func chain(t *testing.T, n int) []string {
	t.Helper()
	var buf bytes.Buffer
	l := NewLogger(&buf)
	for i := range n {
		if err := l.Write(Record{Time: time.Unix(int64(i), 5).UTC(), Principal: "alice", Tool: "read_file", Decision: Allow, Result: "ok",
			Arguments: map[string]any{"path": "a<b>&c", "n": float64(i), "nested": []any{true, nil, 1.5}}, LatencyMS: 1.25}); err != nil {
			t.Fatal(err)
		}
	}
	return strings.Split(strings.TrimSpace(buf.String()), "\n")
}

func verify(lines []string) (Summary, error) {
	return Verify(strings.NewReader(strings.Join(lines, "\n") + "\n"))
}

func TestVerifyAcceptsIntactChains(t *testing.T) {
	lines := chain(t, 5)
	s, err := verify(lines)
	if err != nil || s.Records != 5 || s.Chains != 1 {
		t.Fatalf("%+v %v", s, err)
	}
	// a restarted gateway starts a second chain in the same file
	s, err = verify(append(lines, chain(t, 2)...))
	if err != nil || s.Records != 7 || s.Chains != 2 {
		t.Fatalf("two chains: %+v %v", s, err)
	}
}

func TestVerifyNamesTheFirstBadLine(t *testing.T) {
	lines := chain(t, 5)
	edit := func(i int, from, to string) []string {
		out := append([]string(nil), lines...)
		if !strings.Contains(out[i], from) {
			t.Fatalf("line %d has no %q", i+1, from)
		}
		out[i] = strings.Replace(out[i], from, to, 1)
		return out
	}
	without := func(i int) []string {
		return append(append([]string(nil), lines[:i]...), lines[i+1:]...)
	}
	for name, tc := range map[string]struct {
		lines []string
		line  int
	}{
		"edited field":                  {edit(2, `"principal":"alice"`, `"principal":"bob"`), 3},
		"edited argument":               {edit(1, `"path":"a\u003cb\u003e\u0026c"`, `"path":"x"`), 2},
		"deleted middle":                {without(2), 3},
		"deleted first":                 {without(0), 1},
		"swapped":                       {[]string{lines[0], lines[2], lines[1], lines[3]}, 2},
		"duplicated":                    {[]string{lines[0], lines[1], lines[1]}, 3},
		"not json":                      {append(append([]string(nil), lines[:2]...), "garbage"), 3},
		"recomputed hash without chain": {edit(3, `"seq":3`, `"seq":9`), 4},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := verify(tc.lines)
			var le *LineError
			if !errors.As(err, &le) || le.Line != tc.line {
				t.Fatalf("err %v, want line %d", err, tc.line)
			}
		})
	}
}

var testKey = bytes.Repeat([]byte("k"), MinKeyBytes)

// keyedChain writes n records with the test key, continuing the head file at state if it is set.
func keyedChain(t *testing.T, n int, state string) []string {
	t.Helper()
	var buf bytes.Buffer
	l, err := Open(&buf, Options{Key: testKey, StatePath: state})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if err := l.Write(Record{Time: time.Unix(int64(i), 0).UTC(), Principal: "alice", Tool: "read_file", Decision: Allow, Result: "ok"}); err != nil {
			t.Fatal(err)
		}
	}
	return strings.Split(strings.TrimSpace(buf.String()), "\n")
}

// rechain rewrites lines from i on as someone without the key would: apply edit to line i, then
// recompute every hash and prev link after it (the MACs cannot be recomputed).
func rechain(t *testing.T, lines []string, i int, edit func(map[string]any)) []string {
	t.Helper()
	out := append([]string(nil), lines...)
	prev := ""
	if i > 0 {
		var m map[string]any
		if err := json.Unmarshal([]byte(out[i-1]), &m); err != nil {
			t.Fatal(err)
		}
		prev = m["hash"].(string)
	}
	for j := i; j < len(out); j++ {
		var m map[string]any
		if err := json.Unmarshal([]byte(out[j]), &m); err != nil {
			t.Fatal(err)
		}
		if j == i {
			edit(m)
		}
		m["prev"] = prev
		b, _ := json.Marshal(m)
		sum, err := hashLine(b)
		if err != nil {
			t.Fatal(err)
		}
		m["hash"], prev = sum, sum
		b, _ = json.Marshal(m)
		out[j] = string(b)
	}
	return out
}

func verifyWith(lines []string, opts VerifyOptions) (Summary, error) {
	return VerifyWith(strings.NewReader(strings.Join(lines, "\n")+"\n"), opts)
}

func wantLine(t *testing.T, err error, line int, reason string) {
	t.Helper()
	var le *LineError
	if !errors.As(err, &le) || le.Line != line || !strings.Contains(le.Reason, reason) {
		t.Fatalf("err %v, want line %d: ...%s...", err, line, reason)
	}
}

func TestMACDetectsARewriteWithRecomputedHashes(t *testing.T) {
	lines := keyedChain(t, 5, "")
	if s, err := verifyWith(lines, VerifyOptions{Key: testKey}); err != nil || s.MACs != 5 {
		t.Fatalf("intact: %+v %v", s, err)
	}
	rewritten := rechain(t, lines, 2, func(m map[string]any) { m["principal"] = "mallory" })
	if _, err := Verify(strings.NewReader(strings.Join(rewritten, "\n"))); err != nil {
		t.Fatalf("the hash chain alone cannot see this rewrite, yet: %v", err)
	}
	_, err := verifyWith(rewritten, VerifyOptions{Key: testKey})
	wantLine(t, err, 3, "rewritten")
	// a plain edit is still a hash mismatch
	edited := append([]string(nil), lines...)
	edited[1] = strings.Replace(edited[1], `"alice"`, `"bob"`, 1)
	_, err = verifyWith(edited, VerifyOptions{Key: testKey})
	wantLine(t, err, 2, "modified")
	// stripping the MACs does not help
	stripped := rechain(t, lines, 0, func(m map[string]any) { delete(m, "mac") })
	_, err = verifyWith(stripped, VerifyOptions{Key: testKey})
	wantLine(t, err, 1, "no MAC")
	// another key
	_, err = verifyWith(lines, VerifyOptions{Key: bytes.Repeat([]byte("x"), MinKeyBytes)})
	wantLine(t, err, 1, "rewritten")
}

func TestVerifyReportsAGapInSeq(t *testing.T) {
	lines := keyedChain(t, 5, "")
	// record 3 removed and the chain relinked around it: the prev links fit, the seq does not
	gap := rechain(t, append(append([]string(nil), lines[:2]...), lines[3:]...), 2, func(map[string]any) {})
	_, err := Verify(strings.NewReader(strings.Join(gap, "\n")))
	wantLine(t, err, 3, "sequence jumps from 1 to 3")
}

func TestHeadDetectsTruncation(t *testing.T) {
	state := filepath.Join(t.TempDir(), "head.json")
	lines := keyedChain(t, 5, state)
	h, err := ReadHead(state)
	if err != nil || h.Seq != 4 || h.MAC == "" {
		t.Fatalf("head %+v %v", h, err)
	}
	opts := VerifyOptions{Key: testKey, Head: &h}
	if s, err := verifyWith(lines, opts); err != nil || !s.Head || s.Records != 5 {
		t.Fatalf("intact: %+v %v", s, err)
	}
	_, err = verifyWith(lines[:3], opts)
	wantLine(t, err, 4, "truncated")
	_, err = VerifyWith(strings.NewReader(""), opts)
	wantLine(t, err, 1, "truncated")
	// truncated and refilled with a rewritten tail: the record at the head's seq does not match
	refilled := rechain(t, lines, 3, func(m map[string]any) { m["tool"] = "delete_file" })
	_, err = verifyWith(refilled, VerifyOptions{Head: &h})
	wantLine(t, err, 5, "head file")
	// a head moved back to hide the truncation is refused without the key's MAC
	back := h
	back.Seq = 2
	if _, err := verifyWith(lines[:3], VerifyOptions{Key: testKey, Head: &back}); err == nil || !strings.Contains(err.Error(), "head file") {
		t.Fatalf("edited head: %v", err)
	}
}

func TestRestartContinuesTheChain(t *testing.T) {
	state := filepath.Join(t.TempDir(), "head.json")
	first := keyedChain(t, 3, state)
	second := keyedChain(t, 2, state) // a new process
	if !strings.Contains(second[0], `"seq":3`) {
		t.Fatalf("restart did not continue: %s", second[0])
	}
	h, err := ReadHead(state)
	if err != nil {
		t.Fatal(err)
	}
	s, err := verifyWith(append(first, second...), VerifyOptions{Key: testKey, Head: &h})
	if err != nil || s.Records != 5 || s.Chains != 1 || !s.Head {
		t.Fatalf("%+v %v", s, err)
	}
	// the second process's records alone start in the middle of the chain
	_, err = verifyWith(second, VerifyOptions{Key: testKey})
	wantLine(t, err, 1, "middle of a chain")
	// an edited head file stops the next start instead of forking the chain
	if err := os.WriteFile(state, []byte(`{"seq":1,"hash":"`+h.Hash+`","mac":"`+h.MAC+`"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(io.Discard, Options{Key: testKey, StatePath: state}); err == nil || !strings.Contains(err.Error(), "MAC") {
		t.Fatalf("edited head accepted: %v", err)
	}
}

func TestOpenRefusesAShortKeyAndAnUnwritableHead(t *testing.T) {
	if _, err := Open(io.Discard, Options{Key: []byte("short")}); err == nil {
		t.Fatal("short key accepted")
	}
	if _, err := Open(io.Discard, Options{StatePath: filepath.Join(t.TempDir(), "missing", "head.json")}); err == nil {
		t.Fatal("head file in a missing directory accepted")
	}
}

// TestLostHeadUpdateShowsAsAFork: a process killed after writing a record but before its head restarts
// at the same seq; verify reports the fork at the line after the record whose head was lost.
func TestLostHeadUpdateShowsAsAFork(t *testing.T) {
	state := filepath.Join(t.TempDir(), "head.json")
	first := keyedChain(t, 2, state)
	stale, err := os.ReadFile(state)
	if err != nil {
		t.Fatal(err)
	}
	first = append(first, keyedChain(t, 1, state)...) // seq 2, whose head update is then lost
	if err := os.WriteFile(state, stale, 0o600); err != nil {
		t.Fatal(err)
	}
	second := keyedChain(t, 1, state)
	if !strings.Contains(second[0], `"seq":2`) {
		t.Fatalf("restart: %s", second[0])
	}
	_, err = verifyWith(append(first, second...), VerifyOptions{Key: testKey})
	wantLine(t, err, 4, "chain broken")
}
