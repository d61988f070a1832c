package sanitize

import (
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Hidden removes what renders invisibly, reorders or hides text, and HTML comments; see Invisible.
func Hidden(s string) (string, Findings) {
	var f Findings
	if needsStrip(s) {
		s, f.Hidden = Invisible(s)
	}
	if strings.Contains(s, "<!--") {
		s, f.Comments = stripComments(s)
	}
	return s, f
}

// Invisible removes, by Unicode property rather than by a list of code points:
//
//   - format characters (general category Cf: zero-width space, word joiner, soft hyphen, byte order
//     mark, bidirectional embeddings, overrides, isolates and marks, interlinear annotation, tag
//     characters) and the other default-ignorable code points (Hangul fillers, combining grapheme
//     joiner), except the prepended concatenation marks, which are visible;
//   - variation selectors, except one directly after a character that has variation sequences (emoji
//     presentation after a symbol, in a keycap or after the punctuation emoji; ideographic variation after a Han character;
//     Mongolian free variation selectors after a Mongolian letter);
//   - control characters (C0 and C1) other than tab, newline and the CR of a CRLF, and terminal escape
//     sequences as a whole (CSI, OSC, DCS and the others);
//
// and keeps what real text needs: U+200D ZERO WIDTH JOINER between emoji (👩‍💻) and, like U+200C ZERO
// WIDTH NON-JOINER, between letters of a script that uses joiners (Arabic, Persian, Indic scripts);
// tag characters in an emoji tag sequence (subdivision flags such as 🏴󠁧󠁢󠁳󠁣󠁴󠁿); CJK, right-to-left text and
// everything else visible. It returns the text and the number of code points removed.
func Invisible(s string) (string, int) {
	rs := []rune(s)
	out := make([]rune, 0, len(rs))
	removed := 0
	for i := 0; i < len(rs); i++ {
		r := rs[i]
		switch {
		case r == '\t' || r == '\n':
			out = append(out, r)
		case r == '\r':
			if i+1 < len(rs) && rs[i+1] == '\n' {
				out = append(out, r)
			} else {
				removed++
			}
		case r == 0x1B || (r >= 0x80 && r <= 0x9F && escapeIntroducer(r)):
			n := escapeLen(rs[i:])
			removed += n
			i += n - 1
		case r < 0x20 || (r >= 0x7F && r <= 0x9F):
			removed++
		case r == 0x1F3F4: // WAVING BLACK FLAG, which may start an emoji tag sequence
			n := tagSequenceLen(rs[i+1:])
			out = append(out, rs[i:i+1+n]...)
			i += n
		case r == 0x200D:
			if joinsEmoji(out, rs[i+1:]) || joinsScript(out, rs[i+1:]) {
				out = append(out, r)
			} else {
				removed++
			}
		case r == 0x200C:
			if joinsScript(out, rs[i+1:]) {
				out = append(out, r)
			} else {
				removed++
			}
		case unicode.Is(unicode.Variation_Selector, r):
			if selects(out, r, rs[i+1:]) {
				out = append(out, r)
			} else {
				removed++
			}
		case unicode.Is(unicode.Prepended_Concatenation_Mark, r):
			out = append(out, r)
		case unicode.Is(unicode.Cf, r), unicode.Is(unicode.Other_Default_Ignorable_Code_Point, r), unicode.Is(unicode.Bidi_Control, r):
			removed++
		default:
			out = append(out, r)
		}
	}
	if removed == 0 {
		return s, 0
	}
	return string(out), removed
}

// needsStrip is a fast scan: printable ASCII with tabs and newlines never contains anything to remove.
func needsStrip(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= utf8.RuneSelf || c == 0x7F || (c < 0x20 && c != '\t' && c != '\n') {
			return true
		}
	}
	return false
}

// escapeIntroducer reports the C1 controls that start a sequence: CSI, OSC, DCS, SOS, PM, APC.
func escapeIntroducer(r rune) bool {
	switch r {
	case 0x9B, 0x9D, 0x90, 0x98, 0x9E, 0x9F:
		return true
	}
	return false
}

// escapeLen is the length of the terminal escape sequence at the start of rs (at least 1).
func escapeLen(rs []rune) int {
	kind := rs[0]
	i := 1
	if kind == 0x1B {
		if len(rs) < 2 {
			return 1
		}
		switch rs[1] {
		case '[':
			kind = 0x9B
		case ']':
			kind = 0x9D
		case 'P', 'X', '^', '_':
			kind = 0x90
		default:
			if rs[1] >= 0x20 && rs[1] <= 0x7E {
				return 2 // a two-character escape
			}
			return 1
		}
		i = 2
	}
	if kind == 0x9B { // CSI: parameters, intermediates, one final byte
		for i < len(rs) && rs[i] >= 0x20 && rs[i] <= 0x3F {
			i++
		}
		if i < len(rs) && rs[i] >= 0x40 && rs[i] <= 0x7E {
			i++
		}
		return i
	}
	// a string sequence (OSC, DCS, SOS, PM, APC) runs to BEL or the string terminator
	for i < len(rs) {
		switch {
		case rs[i] == 0x07 || rs[i] == 0x9C:
			return i + 1
		case rs[i] == 0x1B && i+1 < len(rs) && rs[i+1] == '\\':
			return i + 2
		}
		i++
	}
	return i
}

// tagSequenceLen is the length of the tag characters and the CANCEL TAG that complete an emoji tag
// sequence at the start of rs, or 0 when rs does not start one. The tag spec must be a subdivision id
// (CLDR unicode_subdivision_id: a region of two letters or three digits, then one to four lower-case
// letters or digits), so that a flag cannot carry arbitrary invisible ASCII.
func tagSequenceLen(rs []rune) int {
	n := 0
	for n < len(rs) && n < 7 && isTagAlnum(rs[n]) {
		n++
	}
	if n < 3 || n >= len(rs) || rs[n] != 0xE007F {
		return 0
	}
	region := 0
	switch {
	case isTagLetter(rs[0]) && isTagLetter(rs[1]):
		region = 2
	case n >= 4 && isTagDigit(rs[0]) && isTagDigit(rs[1]) && isTagDigit(rs[2]):
		region = 3
	}
	if region == 0 || n-region < 1 || n-region > 4 {
		return 0
	}
	return n + 1
}

func isTagLetter(r rune) bool { return r >= 0xE0061 && r <= 0xE007A }
func isTagDigit(r rune) bool  { return r >= 0xE0030 && r <= 0xE0039 }
func isTagAlnum(r rune) bool  { return isTagLetter(r) || isTagDigit(r) }

func isEmojiModifier(r rune) bool { return r >= 0x1F3FB && r <= 0x1F3FF }

// joinsEmoji reports a ZWJ between two emoji: the kept text ends in a pictographic symbol (possibly
// with an emoji presentation selector or a skin-tone modifier) and the next character is one.
func joinsEmoji(out, next []rune) bool {
	if len(out) == 0 || len(next) == 0 || !unicode.Is(unicode.So, next[0]) {
		return false
	}
	prev := out[len(out)-1]
	if (prev == 0xFE0F || isEmojiModifier(prev)) && len(out) > 1 {
		prev = out[len(out)-2]
	}
	return unicode.Is(unicode.So, prev)
}

// joiningScripts are the scripts whose text uses ZWJ and ZWNJ to choose letter forms.
var joiningScripts = []*unicode.RangeTable{
	unicode.Arabic, unicode.Syriac, unicode.Nko, unicode.Mandaic, unicode.Mongolian, unicode.Adlam,
	unicode.Hanifi_Rohingya, unicode.Devanagari, unicode.Bengali, unicode.Gurmukhi, unicode.Gujarati,
	unicode.Oriya, unicode.Tamil, unicode.Telugu, unicode.Kannada, unicode.Malayalam, unicode.Sinhala,
	unicode.Khmer, unicode.Myanmar, unicode.Tibetan, unicode.Balinese, unicode.Javanese,
}

func inJoiningScript(r rune) bool {
	return (unicode.IsLetter(r) || unicode.IsMark(r)) && unicode.In(r, joiningScripts...)
}

// joinsScript reports a joiner between two letters (or marks) of a script that uses joiners.
func joinsScript(out, next []rune) bool {
	return len(out) > 0 && len(next) > 0 && inJoiningScript(out[len(out)-1]) && inJoiningScript(next[0])
}

// selects reports whether variation selector r may follow the kept text: at most one selector, right
// after a character that has variation sequences of that kind. A digit, '#' or '*' takes only the
// emoji selector of a keycap (1️⃣, followed by U+20E3); punctuation only where it has emoji variation
// sequences (‼ ⁉ 〰 〽). Elsewhere a selector after a digit or a full stop changes nothing a person
// sees, and one per character would carry hidden text through any number or sentence.
func selects(out []rune, r rune, next []rune) bool {
	if len(out) == 0 {
		return false
	}
	base := out[len(out)-1]
	if unicode.Is(unicode.Variation_Selector, base) {
		return false
	}
	switch {
	case r == 0xFE0E || r == 0xFE0F: // text or emoji presentation
		switch {
		case base >= '0' && base <= '9', base == '#', base == '*':
			return r == 0xFE0F && len(next) > 0 && next[0] == 0x20E3
		case base == 0x203C, base == 0x2049, base == 0x3030, base == 0x303D:
			return true
		}
		return unicode.IsSymbol(base)
	case r >= 0xE0100: // ideographic variation sequences
		return unicode.Is(unicode.Han, base)
	case r >= 0x180B && r <= 0x180F: // Mongolian free variation selectors
		return unicode.Is(unicode.Mongolian, base)
	default: // standardized variation sequences: mathematical symbols, CJK compatibility, a few scripts
		return unicode.Is(unicode.Sm, base) || unicode.Is(unicode.Han, base) || unicode.In(base, unicode.Myanmar, unicode.Phags_Pa, unicode.Manichaean, unicode.Egyptian_Hieroglyphs)
	}
}

var htmlComment = regexp.MustCompile(`(?s)<!--.*?(-->|$)`)

// stripComments removes HTML comments until none is left, so that removing one cannot assemble another
// (`<!<!-- -->-- SYSTEM: ... -->`).
func stripComments(s string) (string, int) {
	total := 0
	for strings.Contains(s, "<!--") {
		n := 0
		s = htmlComment.ReplaceAllStringFunc(s, func(string) string { n++; return "" })
		if n == 0 {
			break
		}
		total += n
	}
	return s, total
}
