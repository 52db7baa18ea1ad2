package nodeagent

import (
	"bytes"
	"encoding/json"

	"github.com/herd-llm/herd/jsonspan"
)

// The agent reads only what it needs from request and response bytes, without decoding them:
// the request's top-level "model", and from the end of a response the usage token counts. These
// scanners take outside input and are fuzzed; they walk JSON with package jsonspan.

// modelFromBody returns the top-level "model" string of a JSON object, "" when there is none or
// the body is not a JSON object. It walks the bytes once and stops at the key, so a large
// messages array after "model" costs nothing; a key spelled with escapes is not recognised.
func modelFromBody(b []byte) string {
	i := jsonspan.SkipWS(b, 0)
	if i >= len(b) || b[i] != '{' {
		return ""
	}
	i++
	for {
		i = jsonspan.SkipWS(b, i)
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
		end := jsonspan.StringEnd(b, i)
		if end < 0 {
			return ""
		}
		key := b[i:end]
		i = jsonspan.SkipWS(b, end)
		if i >= len(b) || b[i] != ':' {
			return ""
		}
		i = jsonspan.SkipWS(b, i+1)
		if string(key) == `"model"` {
			if i >= len(b) || b[i] != '"' {
				return ""
			}
			vend := jsonspan.StringEnd(b, i)
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
		i = jsonspan.SkipValue(b, i)
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

// lastIntField finds the last `"key": N` in b and returns N. A key inside a JSON string value
// cannot match because its quotes would be escaped.
func lastIntField(b []byte, key string) (int64, bool) {
	needle := []byte(`"` + key + `"`)
	idx := bytes.LastIndex(b, needle)
	if idx < 0 {
		return 0, false
	}
	i := jsonspan.SkipWS(b, idx+len(needle))
	if i >= len(b) || b[i] != ':' {
		return 0, false
	}
	i = jsonspan.SkipWS(b, i+1)
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
// reasoning (vLLM's reasoning_content, Ollama's reasoning), legacy completions text, Ollama's
// native generate response and thinking, and a Responses stream's "delta" (a string there; a chat
// chunk's delta is an object, which does not count).
var generatedTextKeys = [][]byte{[]byte(`"content"`), []byte(`"reasoning_content"`), []byte(`"reasoning"`), []byte(`"text"`),
	[]byte(`"response"`), []byte(`"thinking"`), []byte(`"delta"`)}

// hasGeneratedText reports whether an SSE data payload carries a non-empty generated string.
func hasGeneratedText(payload []byte) bool {
	for _, k := range generatedTextKeys {
		rest := payload
		for {
			idx := bytes.Index(rest, k)
			if idx < 0 {
				break
			}
			i := jsonspan.SkipWS(rest, idx+len(k))
			if i < len(rest) && rest[i] == ':' {
				i = jsonspan.SkipWS(rest, i+1)
				if i+1 < len(rest) && rest[i] == '"' && rest[i+1] != '"' {
					return true
				}
			}
			rest = rest[idx+len(k):]
		}
	}
	return false
}
