package audit

import (
	"bytes"
	"errors"
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
