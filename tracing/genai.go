package tracing

import (
	"bytes"
	"strconv"

	"go.opentelemetry.io/otel/attribute"
	semconv "go.opentelemetry.io/otel/semconv/v1.41.0"
)

// Span attributes. The gen_ai.* names are OpenTelemetry's GenAI semantic conventions (semconv
// v1.41.0, status Development); herd.* are herd's own, on the spans herd makes.
const (
	KeyOperation     = semconv.GenAIOperationNameKey
	KeyProvider      = semconv.GenAIProviderNameKey
	KeyRequestModel  = semconv.GenAIRequestModelKey
	KeyResponseModel = semconv.GenAIResponseModelKey
	KeyMaxTokens     = semconv.GenAIRequestMaxTokensKey
	KeyStream        = semconv.GenAIRequestStreamKey
	KeyInputTokens   = semconv.GenAIUsageInputTokensKey
	KeyOutputTokens  = semconv.GenAIUsageOutputTokensKey
	KeyFinishReasons = semconv.GenAIResponseFinishReasonsKey
	// KeyTimeToFirstChunk is in seconds, measured by the span's own process.
	KeyTimeToFirstChunk = semconv.GenAIResponseTimeToFirstChunkKey

	// KeyNode is the node that served (or was tried).
	KeyNode = attribute.Key("herd.node")
	// KeyTTFT is the time to the first byte of the answer (streams: the first event), in ms.
	KeyTTFT = attribute.Key("herd.ttft_ms")
	// KeyQueueWait is the time the request waited in the gateway for a node, in ms.
	KeyQueueWait = attribute.Key("herd.queue_wait_ms")
	// KeyAttempts is how many nodes the request was tried on; KeyAttempt numbers one try.
	KeyAttempts = attribute.Key("herd.attempts")
	KeyAttempt  = attribute.Key("herd.attempt")
	// KeyRetryReason says why an attempt failed over to the next node.
	KeyRetryReason = attribute.Key("herd.retry_reason")
	// KeyRequestID is the X-Request-Id.
	KeyRequestID = attribute.Key("herd.request_id")
	// KeyClass is interactive or batch.
	KeyClass = attribute.Key("herd.class")
	// KeyModel is the base model as the scheduler knows it (normalised, a preset resolved).
	KeyModel = attribute.Key("herd.model")
	// KeyPreset is the preset the gateway applied.
	KeyPreset = attribute.Key("herd.preset")
	// KeySimulated marks spans of a simulated node, whose figures are simulated.
	KeySimulated = attribute.Key("herd.simulated")
	// KeyBackend is the agent's backend kind (ollama, openai, sim).
	KeyBackend = attribute.Key("herd.backend")

	// Scheduling decision.
	KeyPolicy         = attribute.Key("herd.policy")
	KeyCandidates     = attribute.Key("herd.candidates")
	KeyCandidateNodes = attribute.Key("herd.candidate_nodes")
	KeyRejected       = attribute.Key("herd.rejected")
	KeyRejections     = attribute.Key("herd.rejections")
	KeyScore          = attribute.Key("herd.score")
	KeyQueued         = attribute.Key("herd.queued")

	// Batches.
	KeyBatchID   = attribute.Key("herd.batch.id")
	KeyCustomID  = attribute.Key("herd.batch.custom_id")
	KeyLineIndex = attribute.Key("herd.batch.line")
	KeyEndpoint  = attribute.Key("herd.batch.endpoint")
	KeyLines     = attribute.Key("herd.batch.lines")
)

// EventFirstToken is the span event at the first byte (streams: first event) of the answer.
const EventFirstToken = "herd.first_token"

// Operation returns gen_ai.operation.name for an OpenAI or Ollama endpoint path
// ("/v1/chat/completions", "/api/chat"), and false for a path that is not an inference endpoint.
// The OpenAI Responses API is a chat operation in the gen_ai semantic conventions: "chat" covers
// every chat-style generation, and no Responses-specific value is defined.
func Operation(path string) (attribute.KeyValue, bool) {
	switch path {
	case "/v1/chat/completions", "/v1/responses", "/api/chat":
		return semconv.GenAIOperationNameChat, true
	case "/v1/completions", "/api/generate":
		return semconv.GenAIOperationNameTextCompletion, true
	case "/v1/embeddings", "/api/embed", "/api/embeddings":
		return semconv.GenAIOperationNameEmbeddings, true
	}
	return attribute.KeyValue{}, false
}

// SpanName is the name of a gen_ai client span, "{gen_ai.operation.name} {gen_ai.request.model}"
// as the conventions name it, falling back to whichever part is known so that a name never
// starts or ends with a space ("inference" when neither is).
func SpanName(op attribute.KeyValue, model string) string {
	name := op.Value.AsString()
	switch {
	case name != "" && model != "":
		return name + " " + model
	case name != "":
		return name
	case model != "":
		return model
	}
	return "inference"
}

// TailSize is how much of the end of an answer to keep for ScanResponse: usage, the finish
// reason and the response model are in the last chunks of a stream and at the end of a JSON body.
const TailSize = 8 << 10

// Response is what ScanResponse finds at the end of an OpenAI answer.
type Response struct {
	InputTokens, OutputTokens int64
	HasInput, HasOutput       bool
	// Model is the last "model" value, the response's model.
	Model string
	// FinishReasons are the distinct non-null finish_reason values, in order of appearance.
	FinishReasons []string
}

// ScanResponse reads usage, the response model and finish reasons from the end of an OpenAI
// chat/completions/embeddings answer, JSON or SSE, without decoding it: the last
// "prompt_tokens" and "completion_tokens" numbers, the last "model" string, and every
// non-null "finish_reason". A key is only taken where it starts a JSON key (its quote is not
// escaped), so text that quotes one inside a string value is not mistaken for it.
func ScanResponse(b []byte) Response {
	r := ScanOutcome(b)
	r.InputTokens, r.HasInput = lastInt(b, `"prompt_tokens"`)
	r.OutputTokens, r.HasOutput = lastInt(b, `"completion_tokens"`)
	return r
}

// ScanOutcome is ScanResponse without the token counts, for a caller that meters usage itself
// (the gateway, whose meter also reads the Responses API's and Ollama's counts): the response
// model and finish reasons.
func ScanOutcome(b []byte) Response {
	var r Response
	r.Model = lastString(b, `"model"`)
	for rest := b; ; {
		i := keyIndex(rest, `"finish_reason"`)
		if i < 0 {
			break
		}
		v, next := stringValue(rest, i+len(`"finish_reason"`))
		if v != "" && !contains(r.FinishReasons, v) && len(r.FinishReasons) < 8 {
			r.FinishReasons = append(r.FinishReasons, v)
		}
		rest = rest[next:]
	}
	return r
}

// Attributes are r's gen_ai attributes.
func (r Response) Attributes() []attribute.KeyValue {
	out := make([]attribute.KeyValue, 0, 5)
	if r.HasInput {
		out = append(out, KeyInputTokens.Int64(r.InputTokens))
	}
	if r.HasOutput {
		out = append(out, KeyOutputTokens.Int64(r.OutputTokens))
	}
	if r.Model != "" {
		out = append(out, KeyResponseModel.String(r.Model))
	}
	if len(r.FinishReasons) > 0 {
		out = append(out, KeyFinishReasons.StringSlice(r.FinishReasons))
	}
	return out
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// keyIndex is the index of the first occurrence of key in b that is not preceded by a backslash
// and is followed by optional white space and a colon, or -1.
func keyIndex(b []byte, key string) int {
	off := 0
	for {
		i := bytes.Index(b[off:], []byte(key))
		if i < 0 {
			return -1
		}
		i += off
		j := skipSpace(b, i+len(key))
		if (i == 0 || b[i-1] != '\\') && j < len(b) && b[j] == ':' {
			return i
		}
		off = i + 1
	}
}

// lastKeyIndex is keyIndex's last match.
func lastKeyIndex(b []byte, key string) int {
	end := len(b)
	for end > 0 {
		i := bytes.LastIndex(b[:end], []byte(key))
		if i < 0 {
			return -1
		}
		j := skipSpace(b, i+len(key))
		if (i == 0 || b[i-1] != '\\') && j < len(b) && b[j] == ':' {
			return i
		}
		end = i
	}
	return -1
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// lastInt returns the non-negative integer after the last key of b.
func lastInt(b []byte, key string) (int64, bool) {
	i := lastKeyIndex(b, key)
	if i < 0 {
		return 0, false
	}
	j := skipSpace(b, skipSpace(b, i+len(key))+1)
	k := j
	for k < len(b) && k-j < 18 && b[k] >= '0' && b[k] <= '9' {
		k++
	}
	if k == j {
		return 0, false
	}
	n, err := strconv.ParseInt(string(b[j:k]), 10, 64)
	return n, err == nil
}

// lastString returns the plain string value after the last key of b ("" for null, a string with
// escapes, or none).
func lastString(b []byte, key string) string {
	i := lastKeyIndex(b, key)
	if i < 0 {
		return ""
	}
	v, _ := stringValue(b, i+len(key))
	return v
}

// stringValue reads `: "value"` at b[i:] and returns value (bounded to 256 bytes, plain: no
// escapes or control bytes) and the index after it; "" when the value is anything else.
func stringValue(b []byte, i int) (string, int) {
	i = skipSpace(b, i)
	if i >= len(b) || b[i] != ':' {
		return "", min(i+1, len(b))
	}
	i = skipSpace(b, i+1)
	if i >= len(b) || b[i] != '"' {
		return "", min(i+1, len(b))
	}
	for j := i + 1; j < len(b) && j-i <= 257; j++ {
		switch c := b[j]; {
		case c == '"':
			return string(b[i+1 : j]), j + 1
		case c == '\\' || c < 0x20:
			return "", j
		}
	}
	return "", min(i+1, len(b))
}
