package gateway

import (
	"bytes"
	"encoding/json"
	"math"
	"unicode/utf8"

	"github.com/herd-llm/herd/gateway/prefixcache"
	"github.com/herd-llm/herd/jsonspan"
	"github.com/herd-llm/herd/scheduler"
)

// The body scanner (on package jsonspan's spans) reads only what routing needs from an OpenAI request body: the model, stream,
// the output cap, stream_options.include_usage, a size estimate of the prompt and a hash of the
// conversation's opening messages. The body is forwarded as the bytes the client sent, so nothing
// is decoded into Go values on the hot path; json.Valid (allocation-free) vouches for the syntax
// first, which lets the scanner below skip values without re-checking them.
//
// Semantics follow encoding/json decoding into a map, which is also what Python's json does:
// keys match exactly (after unescaping), and when a key repeats, the last one wins.

// bodyInfo is what routing needs from a request body.
type bodyInfo struct {
	// model is the model name; it points into the body unless the name had escapes.
	model  []byte
	stream bool
	// maxTokens is max_completion_tokens (max_output_tokens in the Responses API), or max_tokens
	// when that is absent; 0: not given.
	maxTokens    int
	includeUsage bool
	// promptBytes is the byte length of the messages, prompt, input and instructions values
	// together.
	promptBytes int
	// prefixHash identifies the conversation's opening (0: none), for KV-cache affinity: the
	// chain's link at the end of the first user message (or of the prefixMessages-th message).
	prefixHash uint64
	// chain hashes the conversation as the backend will see it, message by message, long ones in
	// blocks (package prefixcache), for the prefix index.
	chain prefixcache.Chainer
	// firstUser is the first user message (messages) or the first prompt; the chwbl policy's key
	// is taken from it only when that policy runs.
	firstUser span
}

// resetPrefix empties the chain (keeping its buffer), the prefix hash and the first user message.
func (info *bodyInfo) resetPrefix() {
	info.chain.Reset(info.chain.Links())
	info.prefixHash, info.firstUser = 0, span{}
}

// reset empties info, keeping the chain's buffer.
func (info *bodyInfo) reset(stream bool) {
	buf := info.chain.Links()
	*info = bodyInfo{stream: stream}
	info.chain.Reset(buf)
}

// prefixMessages bounds how many leading messages the prefix hash covers.
const prefixMessages = 8

// span is a value's position in the body; end == 0 means the key was absent.
type span struct{ start, end int }

func (s span) present() bool { return s.end > s.start }

// msgBadJSON is OpenAI's wording for a body that is not JSON.
const msgBadJSON = "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The API expects a JSON payload, but what was sent was not valid JSON.)"

// maxJSONDepth is how deeply encoding/json (json.Valid, and so the gateway) lets arrays and
// objects nest; deeper JSON is refused by it whatever else is right.
const maxJSONDepth = 10000

// errTooDeep is the 400 for JSON nested deeper than maxJSONDepth: a body that is otherwise
// well-formed must not be told it "was not valid JSON" with a hint about the HTTP library.
func errTooDeep() *APIError {
	return badRequest("invalid_json", "", "The JSON body is nested too deep: arrays and objects may nest at most %d levels.", maxJSONDepth)
}

// nestedTooDeep reports whether b opens more than maxJSONDepth arrays and objects at once
// (outside strings); it is asked only of a body json.Valid refused, to say why.
func nestedTooDeep(b []byte) bool {
	depth, inString := 0, false
	for i := 0; i < len(b); i++ {
		c := b[i]
		switch {
		case inString:
			if c == '\\' {
				i++
			} else if c == '"' {
				inString = false
			}
		case c == '"':
			inString = true
		case c == '[' || c == '{':
			if depth++; depth > maxJSONDepth {
				return true
			}
		case c == ']' || c == '}':
			depth--
		}
	}
	return false
}

// scanBody fills info from the JSON request body b, or returns the 400 a client must see.
func scanBody(b []byte, info *bodyInfo) *APIError {
	info.reset(false)
	if !json.Valid(b) {
		if nestedTooDeep(b) {
			return errTooDeep()
		}
		return badRequest("", "", msgBadJSON)
	}
	i := jsonspan.SkipWS(b, 0)
	if b[i] != '{' {
		return badRequest("invalid_type", "", "Invalid type for the request body: expected an object, but got %s instead.", jsonTypeName(b[i]))
	}
	var model, stream, maxTokens, maxCompletion, streamOpts, messages, prompt, input, instructions, tools span
	i++
	for {
		i = jsonspan.SkipWS(b, i)
		if i >= len(b) || b[i] == '}' {
			break
		}
		if b[i] == ',' {
			i++
			continue
		}
		keyEnd := jsonspan.StringEnd(b, i)
		key := b[i+1 : keyEnd-1]
		i = jsonspan.SkipWS(b, keyEnd) + 1 // past ':'
		i = jsonspan.SkipWS(b, i)
		v := span{i, jsonspan.SkipValue(b, i)}
		i = v.end
		switch string(jsonspan.Key(key)) {
		case "model":
			model = v
		case "stream":
			stream = v
		case "max_tokens":
			maxTokens = v
		case "max_completion_tokens", "max_output_tokens":
			// max_output_tokens is the Responses API's name for the cap.
			maxCompletion = v
		case "stream_options":
			streamOpts = v
		case "messages":
			messages = v
		case "prompt":
			prompt = v
		case "input":
			input = v
		case "instructions":
			instructions = v
		case "tools":
			tools = v
		}
	}

	if !model.present() || b[model.start] == 'n' {
		return badRequest("missing_required_parameter", "model", "you must provide a model parameter")
	}
	if b[model.start] != '"' {
		return invalidType("model", "a string", b[model.start])
	}
	info.model = jsonspan.String(b[model.start:model.end])
	if len(info.model) == 0 {
		return badRequest("missing_required_parameter", "model", "you must provide a model parameter")
	}

	if stream.present() {
		switch b[stream.start] {
		case 't':
			info.stream = true
		case 'f', 'n':
		default:
			return invalidType("stream", "a boolean", b[stream.start])
		}
	}
	// max_completion_tokens supersedes max_tokens in OpenAI's API; both are checked.
	for _, p := range [...]struct {
		name string
		v    span
	}{{"max_tokens", maxTokens}, {maxCompletionName(b, maxCompletion), maxCompletion}} {
		if !p.v.present() {
			continue
		}
		n, err := intValue(p.name, b[p.v.start:p.v.end])
		if err != nil {
			return err
		}
		if n > 0 {
			info.maxTokens = n
		}
	}
	if streamOpts.present() {
		switch b[streamOpts.start] {
		case '{':
			u, err := includeUsage(b[streamOpts.start:streamOpts.end])
			if err != nil {
				return err
			}
			info.includeUsage = u
		case 'n':
		default:
			return invalidType("stream_options", "an object", b[streamOpts.start])
		}
	}

	for _, v := range [...]span{messages, prompt, input, instructions} {
		info.promptBytes += v.end - v.start
	}
	info.setPrefix(b, tools, span{}, messages, prompt)
	return nil
}

// setPrefix hashes the conversation of b into info's chain, in the order a chat template
// renders it: the tools (which templates put in the system turn), a system prompt given apart
// (Ollama's generate), then each message, or the prompt. Each message's bytes are hashed as the
// client sent them: clients resend earlier turns byte for byte, so the chain matches what the
// engine cached, without decoding strings (an escape spelled two ways reads as two prompts).
// It also sets the prefix hash and the first user message.
func (info *bodyInfo) setPrefix(b []byte, tools, system, messages, prompt span) {
	c := &info.chain
	if tools.present() && b[tools.start] == '[' {
		c.Write(b[tools.start:tools.end])
		c.EndMessage()
	}
	if system.present() && b[system.start] == '"' {
		c.Write(b[system.start+1 : system.end-1])
		c.EndMessage()
	}
	switch {
	case messages.present() && b[messages.start] == '[':
		info.chainMessages(b[messages.start:messages.end], messages.start)
	case prompt.present():
		p := b[prompt.start:prompt.end]
		switch p[0] {
		case '"':
			c.Write(p[1 : len(p)-1])
			info.firstUser = prompt
		case '[':
			// A batch of prompts (or token IDs): the first is what a cache could hold for all.
			jsonspan.EachElement(p, func(el []byte) bool {
				if el[0] == '"' {
					c.Write(el[1 : len(el)-1])
					info.firstUser = spanOf(b, el)
				}
				return false
			})
		}
		c.EndMessage()
		if links := c.Links(); len(links) > 0 {
			info.prefixHash = links[0].Hash
		}
	}
	if info.prefixHash == 0 {
		if links := c.Links(); len(links) > 0 {
			info.prefixHash = links[len(links)-1].Hash
		}
	}
}

// chainMessages hashes each message of the array arr (at offset off in the body) into the chain,
// and takes the prefix hash at the end of the first user message (or of the prefixMessages-th),
// which a conversation resends unchanged on every turn.
func (info *bodyInfo) chainMessages(arr []byte, off int) {
	c := &info.chain
	n := 0
	jsonspan.EachElement(arr, func(el []byte) bool {
		c.Write(el)
		c.EndMessage()
		n++
		if info.prefixHash == 0 {
			user := !info.firstUser.present() && isUserMessage(el)
			if user {
				start := off + (cap(arr) - cap(el))
				info.firstUser = span{start, start + len(el)}
			}
			if user || n == prefixMessages {
				if links := c.Links(); len(links) > 0 {
					info.prefixHash = links[len(links)-1].Hash
				}
			}
		}
		return len(c.Links()) < prefixcache.MaxLinks
	})
}

// maxCompletionName names the key the span v was found under, for error messages: the body
// holds it just before the value.
func maxCompletionName(b []byte, v span) string {
	if v.present() && bytes.HasSuffix(bytes.TrimRight(b[:v.start], " \t\r\n:"), []byte(`max_output_tokens"`)) {
		return "max_output_tokens"
	}
	return "max_completion_tokens"
}

// invalidType is OpenAI's 400 for a parameter of the wrong JSON type.
func invalidType(param, want string, got byte) *APIError {
	return badRequest("invalid_type", param, "Invalid type for '%s': expected %s, but got %s instead.", param, want, jsonTypeName(got))
}

// jsonTypeName names the type of the JSON value starting with c, with its article.
func jsonTypeName(c byte) string {
	switch c {
	case '"':
		return "a string"
	case '{':
		return "an object"
	case '[':
		return "an array"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
}

// intValue reads a non-negative integer parameter; null reads as 0.
func intValue(param string, v []byte) (int, *APIError) {
	switch c := v[0]; {
	case c == 'n':
		return 0, nil
	case c == '-' || (c >= '0' && c <= '9'):
	default:
		return 0, invalidType(param, "an integer", c)
	}
	if bytes.ContainsAny(v, ".eE") {
		return 0, badRequest("invalid_type", param, "Invalid type for '%s': expected an integer, but got a decimal number instead.", param)
	}
	if v[0] == '-' {
		return 0, badRequest("integer_below_min_value", param, "Invalid '%s': integer below minimum value. Expected a value >= 0, but got %s instead.", param, v)
	}
	n := 0
	for _, c := range v {
		n = n*10 + int(c-'0')
		if n > math.MaxInt32 {
			// Far above any context length; the backend will refuse or cap it, routing need not care.
			return math.MaxInt32, nil
		}
	}
	return n, nil
}

// includeUsage reads include_usage from a stream_options object.
func includeUsage(obj []byte) (bool, *APIError) {
	usage := false
	var err *APIError
	jsonspan.EachMember(obj, func(key, v []byte) {
		if string(jsonspan.Key(key)) != "include_usage" {
			return
		}
		err = nil
		switch v[0] {
		case 't':
			usage = true
		case 'f', 'n':
			usage = false
		default:
			err = invalidType("stream_options.include_usage", "a boolean", v[0])
		}
	})
	return usage, err
}

// isUserMessage reports whether el is a message object whose role is "user".
func isUserMessage(el []byte) bool {
	if el[0] != '{' {
		return false
	}
	user := false
	jsonspan.EachMember(el, func(key, v []byte) {
		if string(jsonspan.Key(key)) == "role" {
			user = v[0] == '"' && string(jsonspan.String(v)) == "user"
		}
	})
	return user
}

// chwblKey is the chwbl policy's key (scheduler.CHWBLKey) for the first user message or prompt
// at sp in b: the first scheduler.CHWBLPrefixChars characters of its text (a message's content,
// or the text parts of a content array joined), as KubeAI takes it; of nothing when there is none.
func chwblKey(b []byte, sp span) uint64 {
	if !sp.present() {
		return scheduler.CHWBLKey(nil)
	}
	var text []byte
	v := b[sp.start:sp.end]
	switch v[0] {
	case '"':
		text = jsonspan.String(v)
	case '{':
		jsonspan.EachMember(v, func(key, val []byte) {
			if string(jsonspan.Key(key)) != "content" {
				return
			}
			text = nil
			switch val[0] {
			case '"':
				text = jsonspan.String(val)
			case '[':
				jsonspan.EachElement(val, func(part []byte) bool {
					jsonspan.EachMember(part, func(pk, pv []byte) {
						if string(jsonspan.Key(pk)) == "text" && pv[0] == '"' {
							text = append(text, jsonspan.String(pv)...)
						}
					})
					return true
				})
			}
		})
	}
	n, chars := 0, 0
	for n < len(text) && chars < scheduler.CHWBLPrefixChars {
		_, size := utf8.DecodeRune(text[n:])
		n += size
		chars++
	}
	return scheduler.CHWBLKey(text[:n])
}
