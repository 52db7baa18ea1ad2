package gateway

import (
	"github.com/gin-gonic/gin"

	"github.com/herd-llm/herd/jsonspan"
)

// POST /v1/responses, the OpenAI Responses API, takes the inference path of the other /v1 routes
// (scan, model or preset, scheduling, admission, failover, metrics). Agents pass it through to a
// backend that serves it (Ollama ≥ 0.13.3, vLLM) and translate it to chat completions for one
// that does not (the simulator, other OpenAI-compatible servers); see nodeagent/responses.
//
// Decisions:
//   - herd does not store responses: a response says "store": false whatever the request asked,
//     and what needs a stored response is refused here with a 400 before anything is scheduled,
//     the same on every backend: previous_response_id, conversation, background mode, and stored
//     prompt templates (prompt as an object). GET/DELETE /v1/responses/{id} (and its
//     input_items, cancel) answer 404 saying so. A client keeps the conversation itself and
//     sends it whole in input, as with chat completions.
//   - A preset's system prompt becomes the instructions (before the request's own); its
//     defaults fill temperature, top_p, max_output_tokens and text.format where the request is
//     silent (models.Preset.Apply).
//   - The prefix hash (KV-cache affinity) covers the instructions and the opening input items up
//     to the first user message, like a chat request's opening messages.

// checkResponses refuses what herd cannot honour in a Responses request body (already scanned
// as valid JSON) and sets the prefix hash from its instructions and input.
func checkResponses(b []byte, info *bodyInfo) *APIError {
	var ins, input []byte
	var err *APIError
	i := jsonspan.SkipWS(b, 0)
	jsonspan.EachMember(b[i:], func(key, v []byte) {
		if err != nil {
			return
		}
		switch string(jsonspan.Key(key)) {
		case "previous_response_id":
			if v[0] == '"' && len(jsonspan.String(v)) > 0 {
				err = badRequest("unsupported_parameter", "previous_response_id",
					"previous_response_id is not supported: herd does not store responses (store is always false). Send the whole conversation in input instead.")
			}
		case "conversation":
			if v[0] != 'n' {
				err = badRequest("unsupported_parameter", "conversation",
					"conversation is not supported: herd does not store conversations. Send the whole conversation in input instead.")
			}
		case "background":
			if v[0] == 't' {
				err = badRequest("unsupported_parameter", "background",
					"background mode is not supported: herd does not store responses to poll. Use stream=true for long answers.")
			}
		case "prompt":
			if v[0] == '{' {
				err = badRequest("unsupported_parameter", "prompt", "Stored prompt templates are not supported; send instructions and input instead.")
			}
		case "instructions":
			ins = v
		case "input":
			input = v
		}
	})
	if err != nil {
		return err
	}
	// The conversation is the instructions, then the input's items (or its text), as the
	// agent's translation renders them for the backend.
	info.resetPrefix()
	var insSpan, inSpan span
	if len(ins) > 0 {
		insSpan = spanOf(b, ins)
	}
	if len(input) > 0 {
		inSpan = spanOf(b, input)
	}
	if inSpan.present() && b[inSpan.start] == '[' {
		info.setPrefix(b, span{}, insSpan, inSpan, span{})
	} else {
		info.setPrefix(b, span{}, insSpan, span{}, inSpan)
	}
	return nil
}

// handleStoredResponse answers the routes of stored responses, which herd does not keep.
func (s *Server) handleStoredResponse(c *gin.Context) {
	abortWithError(c, notFound("response_not_found", "response_id",
		"herd does not store responses (store is always false), so there is no response to %s %s. Keep the conversation in the client and send it whole in input.",
		c.Request.Method, c.Request.URL.Path))
}
