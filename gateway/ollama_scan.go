package gateway

import (
	"encoding/json"

	"github.com/herd-llm/herd/jsonspan"
)

// scanOllamaBody fills info from a native Ollama request body (/api/chat, /api/generate,
// /api/embed, /api/embeddings) the way scanBody does for OpenAI bodies, reading only what routing
// needs: the model, stream (Ollama's default is true), options.num_predict as the output cap, the
// size of messages, prompt and input, and the conversation's prefix hash. Errors carry Ollama's
// own wording, since /api/* clients get the message as it is.
func scanOllamaBody(b []byte, info *bodyInfo) *APIError {
	*info = bodyInfo{stream: true}
	i := jsonspan.SkipWS(b, 0)
	if i >= len(b) {
		return badRequest("missing_body", "", "missing request body")
	}
	if !json.Valid(b) {
		if nestedTooDeep(b) {
			return badRequest("invalid_json", "", "invalid JSON: nested too deep (arrays and objects may nest at most %d levels)", maxJSONDepth)
		}
		var v any
		err := json.Unmarshal(b, &v)
		return badRequest("invalid_json", "", "%v", err)
	}
	if b[i] != '{' {
		return badRequest("invalid_type", "", "json: cannot unmarshal %s into Go value of type api.Request", goJSONType(b[i]))
	}
	var model, stream, options, messages, prompt, input span
	jsonspan.EachMember(b[i:], func(key, v []byte) {
		sp := spanOf(b, v)
		switch string(jsonspan.Key(key)) {
		case "model":
			model = sp
		case "stream":
			stream = sp
		case "options":
			options = sp
		case "messages":
			messages = sp
		case "prompt":
			prompt = sp
		case "input":
			input = sp
		}
	})
	if model.present() && b[model.start] != '"' && b[model.start] != 'n' {
		return badRequest("invalid_type", "model", "json: cannot unmarshal %s into Go struct field .model of type string", goJSONType(b[model.start]))
	}
	if model.present() && b[model.start] == '"' {
		info.model = jsonspan.String(b[model.start:model.end])
	}
	if len(info.model) == 0 {
		return badRequest("missing_required_parameter", "model", "model is required")
	}
	if stream.present() {
		switch b[stream.start] {
		case 't', 'n':
		case 'f':
			info.stream = false
		default:
			return badRequest("invalid_type", "stream", "json: cannot unmarshal %s into Go struct field .stream of type bool", goJSONType(b[stream.start]))
		}
	}
	if options.present() {
		switch b[options.start] {
		case '{':
			jsonspan.EachMember(b[options.start:options.end], func(key, v []byte) {
				if string(jsonspan.Key(key)) == "num_predict" {
					info.maxTokens = numPredict(v)
				}
			})
		case 'n':
		default:
			return badRequest("invalid_type", "options", "json: cannot unmarshal %s into Go struct field .options of type map[string]interface {}", goJSONType(b[options.start]))
		}
	}
	for _, v := range [...]span{messages, prompt, input} {
		info.promptBytes += v.end - v.start
	}
	info.setPrefixHash(b, messages, prompt)
	return nil
}

// spanOf is the position of v, a subslice of b, in b.
func spanOf(b, v []byte) span {
	start := cap(b) - cap(v)
	return span{start, start + len(v)}
}

// numPredict reads num_predict as an output cap: a positive whole number, else 0 (none; -1 and
// -2 mean "no limit" and "fill the context" in Ollama).
func numPredict(v []byte) int {
	n := 0
	for _, c := range v {
		if c < '0' || c > '9' {
			if c == '.' || c == 'e' || c == 'E' {
				break
			}
			return 0
		}
		n = n*10 + int(c-'0')
		if n > 1<<31-1 {
			return 1<<31 - 1
		}
	}
	return n
}

// goJSONType names a JSON value's type as encoding/json's errors do.
func goJSONType(c byte) string {
	switch c {
	case '"':
		return "string"
	case '{':
		return "object"
	case '[':
		return "array"
	case 't', 'f':
		return "bool"
	case 'n':
		return "null"
	}
	return "number"
}
