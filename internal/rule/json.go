package rule

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
)

// ReadJSON reads a JSON array of rules from r, streaming, and returns the
// valid ones in order. An item that is not a string, or not a valid rule,
// is skipped and reported to warn with its index in the array (from 0).
// Anything that is not a JSON array, or not valid JSON to its very end, is
// an error, and then the rules read so far must not be used.
func ReadJSON(r io.Reader, warn func(index int, reason error)) ([]netip.Prefix, error) {
	dec := json.NewDecoder(r)
	// Numbers stay text: a number out of float64's range, such as 1e400,
	// is then one item to skip, not an error that ends the file.
	dec.UseNumber()
	tok, err := dec.Token()
	if err == io.EOF {
		return nil, errors.New("the file is empty: write the rules as a JSON array of strings, such as [\"10.0.0.0/24\", \"2001:db8::1\"]")
	}
	if err != nil {
		return nil, jsonError(dec, err)
	}
	if tok != json.Delim('[') {
		return nil, fmt.Errorf("the JSON root is %s, not an array: write the rules as a JSON array of strings, such as [\"10.0.0.0/24\", \"2001:db8::1\"]", TokenKind(tok))
	}
	var rules []netip.Prefix
	for i := 0; dec.More(); i++ {
		tok, err := dec.Token()
		if err != nil {
			return nil, jsonError(dec, err)
		}
		s, ok := tok.(string)
		if !ok {
			if err := skip(dec, tok); err != nil {
				return nil, jsonError(dec, err)
			}
			warn(i, fmt.Errorf("%s, not a string: write each rule as a string, such as \"10.0.0.0/24\"", TokenKind(tok)))
			continue
		}
		p, err := Parse(s)
		if err != nil {
			warn(i, err)
			continue
		}
		rules = append(rules, p)
	}
	if _, err := dec.Token(); err != nil { // the closing ']'
		return nil, jsonError(dec, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		if err == nil {
			err = errors.New("data after the array")
		}
		return nil, jsonError(dec, err)
	}
	return rules, nil
}

// skip reads the rest of a JSON value that began with tok.
func skip(dec *json.Decoder, tok json.Token) error {
	depth := 0
	for {
		if d, ok := tok.(json.Delim); ok {
			if d == '[' || d == '{' {
				depth++
			} else {
				depth--
			}
		}
		if depth == 0 {
			return nil
		}
		var err error
		if tok, err = dec.Token(); err != nil {
			return err
		}
	}
}

// TokenKind names, for people, the JSON value that begins with tok: "an
// object", "a number (5)", "null"...
func TokenKind(tok json.Token) string {
	switch v := tok.(type) {
	case json.Delim:
		if v == '{' {
			return "an object"
		}
		return "an array"
	case bool:
		return fmt.Sprintf("a boolean (%v)", v)
	case json.Number, float64:
		return fmt.Sprintf("a number (%v)", v)
	case nil:
		return "null"
	default:
		return fmt.Sprintf("a string (%q)", v)
	}
}

// JSONError describes a JSON syntax error with its place in the input; a
// file that ends too early gets the error ends.
func JSONError(dec *json.Decoder, err error, ends string) error {
	if err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF) {
		return errors.New(ends)
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Errorf("invalid JSON at byte %d: %v: fix the file", se.Offset, se)
	}
	return fmt.Errorf("invalid JSON at byte %d: %v: fix the file", dec.InputOffset(), err)
}

// jsonError is JSONError for a rules file.
func jsonError(dec *json.Decoder, err error) error {
	return JSONError(dec, err, "invalid JSON: the file ends before the array does: fix the file")
}
