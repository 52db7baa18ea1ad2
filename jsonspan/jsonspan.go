// Package jsonspan finds the spans of JSON values in raw bytes without decoding them: the hand
// scanner the gateway's body scanner and the node agent's request and usage scanners share. A
// hot path that needs a few fields of a large body reads them in place, allocating nothing.
//
// SkipWS, StringEnd and SkipValue take any input and report malformed input (-1); EachMember
// and EachElement expect a value already known to be valid JSON (json.Valid), as the gateway
// checks first, and stop at the first malformation rather than panic.
package jsonspan

import (
	"bytes"
	"encoding/json"
	"unicode/utf8"
)

// SkipWS returns the index of the first byte at or after i that is not JSON whitespace.
func SkipWS(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// StringEnd returns the index just past the string token starting at b[i] == '"', or -1 when
// the string is not terminated.
func StringEnd(b []byte, i int) int {
	j := i + 1
	for j < len(b) {
		k := bytes.IndexByte(b[j:], '"')
		if k < 0 {
			return -1
		}
		j += k
		// The quote ends the string unless an odd run of backslashes escapes it.
		bs := 0
		for p := j - 1; p > i && b[p] == '\\'; p-- {
			bs++
		}
		j++
		if bs%2 == 0 {
			return j
		}
	}
	return -1
}

// SkipValue returns the index just past the JSON value starting at b[i], or -1 when it is not
// terminated (or i is at the end). It follows nesting and strings; it does not check the grammar
// of scalars.
func SkipValue(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		return StringEnd(b, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(b); {
			switch b[j] {
			case '"':
				j = StringEnd(b, j)
				if j < 0 {
					return -1
				}
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1
				}
			}
			j++
		}
		return -1
	}
	j := i
	for j < len(b) {
		switch b[j] {
		case ',', '}', ']', ' ', '\t', '\n', '\r':
			if j == i {
				return -1
			}
			return j
		}
		j++
	}
	return j
}

// EachMember calls fn with the raw key (between its quotes, escapes not decoded: see Key) and
// value span of every member of the JSON object obj, in order.
func EachMember(obj []byte, fn func(key, value []byte)) {
	i := SkipWS(obj, 0)
	if i >= len(obj) || obj[i] != '{' {
		return
	}
	i++
	for {
		i = SkipWS(obj, i)
		if i >= len(obj) || obj[i] == '}' {
			return
		}
		if obj[i] == ',' {
			i++
			continue
		}
		if obj[i] != '"' {
			return
		}
		keyEnd := StringEnd(obj, i)
		if keyEnd < 0 {
			return
		}
		key := obj[i+1 : keyEnd-1]
		i = SkipWS(obj, keyEnd)
		if i >= len(obj) || obj[i] != ':' {
			return
		}
		i = SkipWS(obj, i+1)
		end := SkipValue(obj, i)
		if end < 0 {
			return
		}
		fn(key, obj[i:end])
		i = end
	}
}

// EachElement calls fn for every element of the JSON array arr until fn returns false.
func EachElement(arr []byte, fn func(el []byte) bool) {
	i := SkipWS(arr, 0)
	if i >= len(arr) || arr[i] != '[' {
		return
	}
	i++
	for {
		i = SkipWS(arr, i)
		if i >= len(arr) || arr[i] == ']' {
			return
		}
		if arr[i] == ',' {
			i++
			continue
		}
		end := SkipValue(arr, i)
		if end < 0 {
			return
		}
		if !fn(arr[i:end]) {
			return
		}
		i = end
	}
}

// Key returns a member's raw key (as EachMember gives it) with escapes decoded. Callers compare
// string(Key(k)), which the compiler does in place; only an escaped key (rare) is decoded into a
// new slice. A key with a bad escape is nil.
func Key(key []byte) []byte {
	if bytes.IndexByte(key, '\\') < 0 {
		return key
	}
	var s string
	if json.Unmarshal(append(append([]byte{'"'}, key...), '"'), &s) != nil {
		return nil
	}
	return []byte(s)
}

// String returns the contents of the JSON string token tok (quotes included). Plain contents are
// returned in place; escapes or invalid UTF-8 are decoded as encoding/json would. A token that
// is not a valid string is nil.
func String(tok []byte) []byte {
	if len(tok) < 2 || tok[0] != '"' || tok[len(tok)-1] != '"' {
		return nil
	}
	s := tok[1 : len(tok)-1]
	if bytes.IndexByte(s, '\\') < 0 && utf8.Valid(s) {
		return s
	}
	var out string
	if json.Unmarshal(tok, &out) != nil {
		return nil
	}
	return []byte(out)
}
