package nodeagent

import (
	"bytes"
	"encoding/json"
)

// The agent reads only what it needs from request and response bytes, without decoding them:
// the request's top-level "model", and from the end of a response the usage token counts. These
// scanners take outside input and are fuzzed.

// modelFromBody returns the top-level "model" string of a JSON object, "" when there is none or
// the body is not a JSON object. It walks the bytes once and stops at the key, so a large
// messages array after "model" costs nothing; a key spelled with escapes is not recognised.
func modelFromBody(b []byte) string {
	i := skipWS(b, 0)
	if i >= len(b) || b[i] != '{' {
		return ""
	}
	i++
	for {
		i = skipWS(b, i)
		if i >= len(b) || b[i] == '}' {
			return ""
		}
		if b[i] == ',' {
			i++
			continue
		}
		if b[i] != '"' {
			return ""
		}
		end := endOfString(b, i)
		if end < 0 {
			return ""
		}
		key := b[i:end]
		i = skipWS(b, end)
		if i >= len(b) || b[i] != ':' {
			return ""
		}
		i = skipWS(b, i+1)
		if string(key) == `"model"` {
			if i >= len(b) || b[i] != '"' {
				return ""
			}
			vend := endOfString(b, i)
			if vend < 0 {
				return ""
			}
			if v := b[i+1 : vend-1]; plainString(v) {
				return string(v)
			}
			var s string
			if json.Unmarshal(b[i:vend], &s) != nil {
				return ""
			}
			return s
		}
		i = skipValue(b, i)
		if i < 0 {
			return ""
		}
	}
}

// plainString reports whether the contents of a JSON string token are printable ASCII without
// escapes: then they are the string's value as is, and decoding them is not needed.
func plainString(v []byte) bool {
	for _, c := range v {
		if c < 0x20 || c >= 0x80 || c == '\\' {
			return false
		}
	}
	return true
}

func skipWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// endOfString returns the index just past the string starting at b[i] == '"', or -1.
func endOfString(b []byte, i int) int {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1
		}
	}
	return -1
}

// skipValue returns the index just past the JSON value starting at b[i], or -1. It checks
// nesting and strings, not the grammar of scalars.
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		return endOfString(b, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				e := endOfString(b, j)
				if e < 0 {
					return -1
				}
				j = e - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1
				}
			}
		}
		return -1
	default:
		j := i
		for j < len(b) && b[j] != ',' && b[j] != '}' && b[j] != ']' && b[j] != ' ' && b[j] != '\n' && b[j] != '\r' && b[j] != '\t' {
			j++
		}
		if j == i {
			return -1
		}
		return j
	}
}

// lastIntField finds the last `"key": N` in b and returns N. A key inside a JSON string value
// cannot match because its quotes would be escaped.
func lastIntField(b []byte, key string) (int64, bool) {
	needle := []byte(`"` + key + `"`)
	idx := bytes.LastIndex(b, needle)
	if idx < 0 {
		return 0, false
	}
	i := skipWS(b, idx+len(needle))
	if i >= len(b) || b[i] != ':' {
		return 0, false
	}
	i = skipWS(b, i+1)
	var n int64
	digits := 0
	for i < len(b) && b[i] >= '0' && b[i] <= '9' && digits < 18 {
		n = n*10 + int64(b[i]-'0')
		i++
		digits++
	}
	if digits == 0 {
		return 0, false
	}
	return n, true
}

// generatedTextKeys are the fields of a streamed chunk that carry generated tokens: chat content,
// reasoning (vLLM's reasoning_content, Ollama's reasoning) and legacy completions text.
// A Responses stream passed through carries its text in "delta" (a string there; a chat chunk's
// delta is an object, which does not count).
var generatedTextKeys = [][]byte{[]byte(`"content"`), []byte(`"reasoning_content"`), []byte(`"reasoning"`), []byte(`"text"`), []byte(`"delta"`)}

// hasGeneratedText reports whether an SSE data payload carries a non-empty generated string.
func hasGeneratedText(payload []byte) bool {
	for _, k := range generatedTextKeys {
		rest := payload
		for {
			idx := bytes.Index(rest, k)
			if idx < 0 {
				break
			}
			i := skipWS(rest, idx+len(k))
			if i < len(rest) && rest[i] == ':' {
				i = skipWS(rest, i+1)
				if i+1 < len(rest) && rest[i] == '"' && rest[i+1] != '"' {
					return true
				}
			}
			rest = rest[idx+len(k):]
		}
	}
	return false
}
