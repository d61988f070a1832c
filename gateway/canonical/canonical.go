// Package canonical encodes JSON deterministically: object keys sorted, no insignificant whitespace,
// numbers in their shortest float64 form and no HTML escaping, so that equal documents hash equally.
package canonical

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
)

// JSON returns the canonical form of a JSON document.
func JSON(doc []byte) ([]byte, error) {
	v, err := Decode(doc)
	if err != nil {
		return nil, err
	}
	return Marshal(v)
}

// Decode parses a JSON document into generic values, keeping numbers as json.Number.
func Decode(doc []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("decode JSON: %w", err)
	}
	if dec.More() {
		return nil, fmt.Errorf("decode JSON: trailing data after the document")
	}
	return v, nil
}

// Marshal encodes a generic JSON value (as produced by Decode) canonically.
func Marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	if err := encode(&buf, v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func encode(buf *bytes.Buffer, v any) error {
	switch v := v.(type) {
	case nil:
		buf.WriteString("null")
	case bool:
		if v {
			buf.WriteString("true")
		} else {
			buf.WriteString("false")
		}
	case json.Number:
		// Numbers take their shortest float64 form (as in RFC 8785), so 1.0 and 1 are equal.
		f, err := strconv.ParseFloat(v.String(), 64)
		if err != nil {
			return fmt.Errorf("encode number %s: %w", v, err)
		}
		b, err := json.Marshal(f)
		if err != nil {
			return fmt.Errorf("encode number %s: %w", v, err)
		}
		buf.Write(b)
	case float64, int, int64, uint64:
		b, err := json.Marshal(v)
		if err != nil {
			return fmt.Errorf("encode number: %w", err)
		}
		buf.Write(b)
	case string:
		encodeString(buf, v)
	case []any:
		buf.WriteByte('[')
		for i, e := range v {
			if i > 0 {
				buf.WriteByte(',')
			}
			if err := encode(buf, e); err != nil {
				return err
			}
		}
		buf.WriteByte(']')
	case map[string]any:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		buf.WriteByte('{')
		for i, k := range keys {
			if i > 0 {
				buf.WriteByte(',')
			}
			encodeString(buf, k)
			buf.WriteByte(':')
			if err := encode(buf, v[k]); err != nil {
				return err
			}
		}
		buf.WriteByte('}')
	default:
		return fmt.Errorf("encode: unsupported type %T", v)
	}
	return nil
}

func encodeString(buf *bytes.Buffer, s string) {
	enc := json.NewEncoder(buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)           // a string always encodes
	buf.Truncate(buf.Len() - 1) // drop the newline Encode appends
}
