package savefile

import (
	"bytes"
	"encoding/json"
)

// The functions here walk JSON that encoding/json has validated already,
// which is why they need no error checks: they are a fast path for the
// million small objects of a large file.

// members calls fn with the name and the raw value of each member of the
// JSON object b, in order.
func members(b []byte, fn func(name, value []byte)) {
	i := skipSpace(b, 1)
	for b[i] != '}' {
		end := stringEnd(b, i)
		name := unquote(b[i:end])
		i = skipSpace(b, skipSpace(b, end)+1) // past the ':'
		vend := valueEnd(b, i)
		fn(name, b[i:vend])
		i = skipSpace(b, vend)
		if b[i] == ',' {
			i = skipSpace(b, i+1)
		}
	}
}

// elements calls fn with the raw value of each element of the JSON array
// b, in order.
func elements(b []byte, fn func(value []byte)) {
	i := skipSpace(b, 1)
	for b[i] != ']' {
		end := valueEnd(b, i)
		fn(b[i:end])
		i = skipSpace(b, end)
		if b[i] == ',' {
			i = skipSpace(b, i+1)
		}
	}
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// stringEnd returns the index just past the string that starts at b[i].
func stringEnd(b []byte, i int) int {
	for i++; b[i] != '"'; i++ {
		if b[i] == '\\' {
			i++
		}
	}
	return i + 1
}

// valueEnd returns the index just past the value that starts at b[i].
func valueEnd(b []byte, i int) int {
	switch b[i] {
	case '"':
		return stringEnd(b, i)
	case '{', '[':
		depth := 0
		for {
			switch b[i] {
			case '"':
				i = stringEnd(b, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
	}
	for i < len(b) && b[i] != ',' && b[i] != '}' && b[i] != ']' && b[i] != ' ' && b[i] != '\t' && b[i] != '\n' && b[i] != '\r' {
		i++
	}
	return i
}

// unquote returns the text of a JSON string.
func unquote(s []byte) []byte {
	if bytes.IndexByte(s, '\\') < 0 {
		return s[1 : len(s)-1]
	}
	var out string
	json.Unmarshal(s, &out)
	return []byte(out)
}
