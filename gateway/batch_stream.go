package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/herd-llm/herd/nodeagent/agentapi"
)

// A batch line continues, like a stream, when its node fails midway: the gateway runs the line
// as a stream internally, so that what the node generated before it failed is there to be
// continued on another node, and turns the finished stream back into the one answer the line
// asked for (a chat completion, a text completion, a response object), with the whole text and
// the usage of both nodes (the continuing agent's last usage already counts the first node's
// output tokens, as for a client's stream).
//
// Decisions:
//   - Which lines: chat completions and completions without tools, functions, logprobs or n > 1
//     (their answers carry more than text and usage to put back together), and every Responses
//     line (its stream's response.completed holds the whole response object). Embeddings and
//     the other lines are held as before; so is every line with continuation off.
//   - A line that breaks and cannot be continued (a refusal, no attempt left for it) starts over
//     on another node from nothing, as before: a batch line has no client that saw part of it.

// streamedLine returns body, a batch line's request for path, rewritten to stream (with usage),
// or false where the line is run as it is.
func streamedLine(path string, body []byte) ([]byte, bool) {
	switch path {
	case agentapi.PathChatCompletions, agentapi.PathCompletions, agentapi.PathResponses:
	default:
		return nil, false
	}
	var req map[string]json.RawMessage
	if json.Unmarshal(body, &req) != nil {
		return nil, false
	}
	if v, ok := req["stream"]; ok && !bytes.Equal(v, []byte("false")) && !bytes.Equal(v, []byte("null")) {
		return nil, false // a line that asked for a stream gets its stream, as before
	}
	if path != agentapi.PathResponses {
		for _, k := range []string{"tools", "functions"} {
			if v, ok := req[k]; ok && !bytes.Equal(v, []byte("null")) && !bytes.Equal(v, []byte("[]")) {
				return nil, false
			}
		}
		if v, ok := req["logprobs"]; ok && !bytes.Equal(v, []byte("false")) && !bytes.Equal(v, []byte("null")) {
			return nil, false
		}
		if v, ok := req["n"]; ok && !bytes.Equal(v, []byte("1")) && !bytes.Equal(v, []byte("null")) {
			return nil, false
		}
		req["stream_options"] = json.RawMessage(`{"include_usage":true}`)
	}
	req["stream"] = json.RawMessage("true")
	out, err := json.Marshal(req)
	if err != nil {
		return nil, false
	}
	return out, true
}

// errLineStream is a line's internal stream that cannot be turned into its answer.
var errLineStream = errors.New("the batch line's stream did not end with an answer")

// lineAnswer turns sse, the whole stream of a batch line on path, into the answer the line
// asked for.
func lineAnswer(path string, sse []byte) ([]byte, error) {
	if path == agentapi.PathResponses {
		return responsesAnswer(sse)
	}
	var (
		id, model, fingerprint, finish string
		created                        int64
		content, reasoning             bytes.Buffer
		usage                          json.RawMessage
		done                           bool
	)
	for line := range bytes.Lines(sse) {
		data, ok := bytes.CutPrefix(bytes.TrimSpace(line), []byte("data:"))
		if !ok {
			continue
		}
		data = bytes.TrimSpace(data)
		if bytes.Equal(data, []byte("[DONE]")) {
			done = true
			continue
		}
		var c struct {
			ID                string          `json:"id"`
			Created           int64           `json:"created"`
			Model             string          `json:"model"`
			SystemFingerprint string          `json:"system_fingerprint"`
			Usage             json.RawMessage `json:"usage"`
			Error             json.RawMessage `json:"error"`
			Choices           []struct {
				Text  string `json:"text"`
				Delta struct {
					Content          string `json:"content"`
					Refusal          string `json:"refusal"`
					ReasoningContent string `json:"reasoning_content"`
					Reasoning        string `json:"reasoning"`
				} `json:"delta"`
				FinishReason *string `json:"finish_reason"`
			} `json:"choices"`
		}
		if err := json.Unmarshal(data, &c); err != nil {
			return nil, fmt.Errorf("%w: an event is not JSON: %v", errLineStream, err)
		}
		if len(c.Error) > 0 && !bytes.Equal(c.Error, []byte("null")) {
			return nil, fmt.Errorf("%w: an error event: %s", errLineStream, c.Error)
		}
		if id == "" {
			id, created, model = c.ID, c.Created, c.Model
		}
		if fingerprint == "" {
			fingerprint = c.SystemFingerprint
		}
		if len(c.Usage) > 0 && !bytes.Equal(c.Usage, []byte("null")) {
			usage = c.Usage
		}
		for _, ch := range c.Choices {
			content.WriteString(ch.Text)
			content.WriteString(ch.Delta.Content)
			content.WriteString(ch.Delta.Refusal)
			reasoning.WriteString(ch.Delta.ReasoningContent)
			reasoning.WriteString(ch.Delta.Reasoning)
			if ch.FinishReason != nil && *ch.FinishReason != "" {
				finish = *ch.FinishReason
			}
		}
	}
	if !done {
		return nil, errLineStream
	}
	var fin *string // null where the stream said no finish_reason, as it said
	if finish != "" {
		fin = &finish
	}
	if len(usage) == 0 {
		usage = json.RawMessage("null")
	}
	var fp *string
	if fingerprint != "" {
		fp = &fingerprint
	}
	if path == agentapi.PathCompletions {
		type choice struct {
			Index        int     `json:"index"`
			Text         string  `json:"text"`
			Logprobs     *string `json:"logprobs"`
			FinishReason *string `json:"finish_reason"`
		}
		return json.Marshal(lineReply[choice]{id, "text_completion", created, model, fp,
			[]choice{{Text: content.String(), FinishReason: fin}}, usage})
	}
	type message struct {
		Role             string `json:"role"`
		Content          string `json:"content"`
		ReasoningContent string `json:"reasoning_content,omitempty"`
	}
	type choice struct {
		Index        int     `json:"index"`
		Message      message `json:"message"`
		Logprobs     *string `json:"logprobs"`
		FinishReason *string `json:"finish_reason"`
	}
	return json.Marshal(lineReply[choice]{id, "chat.completion", created, model, fp,
		[]choice{{Message: message{Role: "assistant", Content: content.String(), ReasoningContent: reasoning.String()}, FinishReason: fin}}, usage})
}

// lineReply is the one answer a chat or completions line asked for, with choices of type C.
type lineReply[C any] struct {
	ID                string          `json:"id"`
	Object            string          `json:"object"`
	Created           int64           `json:"created"`
	Model             string          `json:"model"`
	SystemFingerprint *string         `json:"system_fingerprint,omitempty"`
	Choices           []C             `json:"choices"`
	Usage             json.RawMessage `json:"usage"`
}

// responsesAnswer is the response object of a Responses stream's final event.
func responsesAnswer(sse []byte) ([]byte, error) {
	var final json.RawMessage
	for line := range bytes.Lines(sse) {
		data, ok := bytes.CutPrefix(bytes.TrimSpace(line), []byte("data:"))
		if !ok {
			continue
		}
		var ev struct {
			Type     string          `json:"type"`
			Response json.RawMessage `json:"response"`
		}
		if err := json.Unmarshal(bytes.TrimSpace(data), &ev); err != nil {
			return nil, fmt.Errorf("%w: an event is not JSON: %v", errLineStream, err)
		}
		switch ev.Type {
		case "response.completed", "response.incomplete":
			final = ev.Response
		case "error", "response.failed":
			return nil, fmt.Errorf("%w: a %s event", errLineStream, ev.Type)
		}
	}
	if len(final) == 0 {
		return nil, errLineStream
	}
	return final, nil
}
