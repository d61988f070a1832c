// Package strictjson decodes JSON the one way every peer of the gateway reads it, and refuses what
// peers could read differently.
//
// encoding/json (v1) matches object member names case-insensitively and lets the last of two duplicate
// names win; the MCP Go SDK, the TypeScript SDK and the Python SDK match names exactly. A message that
// carries "method" and "Method", or "name" and "NAME", therefore means one thing to one peer and another
// thing to the next. This package removes that class of differential: it refuses
//
//   - an object with two member names that are equal, or equal under Unicode simple case folding, at any
//     depth ("name" and "NAME", "k" and "\u212a" (KELVIN SIGN));
//   - invalid UTF-8, and escapes that denote no Unicode scalar value (a lone surrogate);
//   - nesting deeper than MaxDepth, and anything after the first value.
//
// Unmarshal then decodes with github.com/go-json-experiment/json (the encoding/json/v2 API, usable
// without GOEXPERIMENT=jsonv2): member names match exactly, and duplicate names and invalid UTF-8 are
// errors. It is chosen over encoding/json/v2 because a GOEXPERIMENT would have to be set for every
// build, test and vet of the project; the API is the same, so moving later is an import change.
package strictjson

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"unicode"

	json "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
)

// MaxDepth bounds the nesting of objects and arrays (the MCP Go SDK accepts up to 1000; real MCP
// messages nest a handful of levels).
const MaxDepth = 128

// Check validates data as one strict JSON value (see the package comment).
func Check(data []byte) error {
	c := checker{dec: jsontext.NewDecoder(bytes.NewReader(data))}
	started := false
	for {
		tok, err := c.dec.ReadToken()
		if errors.Is(err, io.EOF) {
			if !started {
				return errors.New("empty JSON text")
			}
			return nil
		}
		if err != nil {
			return describe(err)
		}
		if started && len(c.stack) == 0 {
			return errors.New("invalid JSON: more than one value")
		}
		started = true
		if err := c.token(tok); err != nil {
			return err
		}
	}
}

// frame is one object or array that Check has open: for an object, whether the next token is a
// member name, and the names seen so far by their case fold.
type frame struct {
	object   bool
	wantName bool
	names    map[string]string
}

// checker holds the objects and arrays open at the decoder's position.
type checker struct {
	dec   *jsontext.Decoder
	stack []*frame
}

// token applies one token: it closes or opens an object or array, or records a member name.
func (c *checker) token(tok jsontext.Token) error {
	kind := tok.Kind()
	if kind == '}' || kind == ']' {
		c.stack = c.stack[:len(c.stack)-1]
		return nil
	}
	if isName, err := c.member(tok); isName || err != nil {
		return err
	}
	if kind != '{' && kind != '[' {
		return nil
	}
	if len(c.stack) >= MaxDepth {
		return fmt.Errorf("JSON nests deeper than %d levels", MaxDepth)
	}
	fr := &frame{object: kind == '{', wantName: kind == '{'}
	if fr.object {
		fr.names = map[string]string{}
	}
	c.stack = append(c.stack, fr)
	return nil
}

// member reports whether tok is a member name of the innermost open object, and refuses a name equal
// under case folding to one the object already has. A token that is a member's value makes the
// object expect a name next.
func (c *checker) member(tok jsontext.Token) (bool, error) {
	n := len(c.stack)
	if n == 0 || !c.stack[n-1].object {
		return false, nil
	}
	top := c.stack[n-1]
	if !top.wantName {
		top.wantName = true
		return false, nil
	}
	name := tok.String()
	f := Fold(name)
	if prev, dup := top.names[f]; dup {
		return true, fmt.Errorf("member names %s and %s at %s differ only in letter case; peers would read them differently", Quote(prev), Quote(name), pointer(c.dec))
	}
	top.names[f] = name
	top.wantName = false
	return true, nil
}

func pointer(dec *jsontext.Decoder) string {
	p := string(dec.StackPointer())
	if p == "" {
		return "the top level"
	}
	return Quote(p)
}

// describe turns a decoder error into a message that never echoes the input's characters.
func describe(err error) error {
	var se *jsontext.SyntacticError
	if errors.As(err, &se) {
		msg := se.Err.Error()
		if errors.Is(se.Err, jsontext.ErrDuplicateName) {
			msg = "duplicate member name"
		}
		return fmt.Errorf("invalid JSON at byte %d (%s): %s", se.ByteOffset, pointerOf(se.JSONPointer), msg)
	}
	return fmt.Errorf("invalid JSON: %w", err)
}

func pointerOf(p jsontext.Pointer) string {
	if p == "" {
		return "top level"
	}
	return Quote(string(p))
}

// Unmarshal checks data (Check) and decodes it into v with exact member names.
func Unmarshal(data []byte, v any, opts ...json.Options) error {
	if err := Check(data); err != nil {
		return err
	}
	return DecodeChecked(data, v, opts...)
}

// DecodeChecked decodes data that Check accepted into v with exact member names.
func DecodeChecked(data []byte, v any, opts ...json.Options) error {
	if err := json.Unmarshal(data, v, opts...); err != nil {
		return clean(err)
	}
	return nil
}

// UnmarshalKnown is Unmarshal that also refuses members v does not declare.
func UnmarshalKnown(data []byte, v any) error {
	return Unmarshal(data, v, json.RejectUnknownMembers(true))
}

// clean shortens a semantic error to its field and cause.
func clean(err error) error {
	var se *json.SemanticError
	if errors.As(err, &se) {
		where := "top level"
		if se.JSONPointer != "" {
			where = Quote(string(se.JSONPointer))
		}
		if se.Err != nil {
			return fmt.Errorf("at %s: %s", where, se.Err.Error())
		}
		if se.JSONKind != 0 && se.GoType != nil {
			return fmt.Errorf("at %s: JSON %s where %s was expected", where, se.JSONKind, kindName(se.GoType.Kind().String()))
		}
		return fmt.Errorf("at %s: %s", where, "unexpected value")
	}
	return err
}

func kindName(k string) string {
	switch k {
	case "struct", "map":
		return "an object"
	case "slice", "array":
		return "an array"
	case "string":
		return "a string"
	case "bool":
		return "a boolean"
	default:
		return "a number"
	}
}

// Marshal encodes v without HTML escaping.
func Marshal(v any) ([]byte, error) { return json.Marshal(v) }

// Canonical returns the minimal encoding of a checked value: no whitespace, strings with minimal
// escapes, numbers as written. What the gateway forwards is this form of what it checked.
func Canonical(v []byte) ([]byte, error) {
	val := jsontext.Value(bytes.Clone(v))
	if err := val.Format(); err != nil {
		return nil, describe(err)
	}
	return val, nil
}

// Fold maps s to a key that is equal for two strings exactly when they are equal under Unicode simple
// case folding (what encoding/json v1 uses to match member names).
func Fold(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			out := make([]rune, 0, len(s))
			for _, r := range s {
				out = append(out, foldRune(r))
			}
			return string(out)
		}
	}
	// ASCII: the smallest rune of an ASCII letter's orbit is its upper case.
	b := []byte(s)
	for i, c := range b {
		if 'a' <= c && c <= 'z' {
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}

// foldRune returns the smallest rune of r's case-folding orbit.
func foldRune(r rune) rune {
	m := r
	for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
		if f < m {
			m = f
		}
	}
	return m
}

// Quote quotes s for an error message in ASCII (so that no hidden character is echoed), at most 64
// characters of it.
func Quote(s string) string {
	r := []rune(s)
	if len(r) > 64 {
		return strconv.QuoteToASCII(string(r[:64])) + "..."
	}
	return strconv.QuoteToASCII(s)
}
