package gateway

import (
	"bytes"
	"encoding/json"
	"math"

	"github.com/herd-llm/herd/jsonspan"
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
	// prefixHash identifies the conversation's opening (0: none), for KV-cache affinity.
	prefixHash uint64
}

// prefixMessages bounds how many leading messages the prefix hash covers; prefixPromptBytes how
// much of a completions prompt.
const (
	prefixMessages    = 8
	prefixPromptBytes = 1024
)

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
	*info = bodyInfo{}
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
	var model, stream, maxTokens, maxCompletion, streamOpts, messages, prompt, input, instructions span
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
	info.setPrefixHash(b, messages, prompt)
	return nil
}

// setPrefixHash sets the prefix hash (KV-cache affinity) from the opening messages of a
// messages array or, without one, the first prefixPromptBytes of the prompt, both spans of b.
func (info *bodyInfo) setPrefixHash(b []byte, messages, prompt span) {
	switch {
	case messages.present() && b[messages.start] == '[':
		info.prefixHash = messagesPrefixHash(b[messages.start:messages.end])
	case prompt.present():
		p := b[prompt.start:prompt.end]
		if len(p) > prefixPromptBytes {
			p = p[:prefixPromptBytes]
		}
		info.prefixHash = fnvAdd(fnvOffset, p)
	}
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

// messagesPrefixHash hashes a conversation's opening: the messages up to and including the first
// user message. A conversation resends those unchanged on every turn, so its turns hash alike and
// stick to the node that has their KV cache.
func messagesPrefixHash(arr []byte) uint64 {
	h := uint64(fnvOffset)
	n := 0
	jsonspan.EachElement(arr, func(el []byte) bool {
		h = fnvAdd(h, el)
		h *= fnvPrime // a zero byte between messages, so boundaries count
		n++
		return n < prefixMessages && !isUserMessage(el)
	})
	if n == 0 {
		return 0
	}
	return h
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

// FNV-1a, 64 bit: deterministic across processes, so several gateways agree on affinity.
const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

func fnvAdd(h uint64, p []byte) uint64 {
	for _, c := range p {
		h ^= uint64(c)
		h *= fnvPrime
	}
	return h
}
