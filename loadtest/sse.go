package loadtest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/herd-llm/herd/openaierr"
)

// maxSSELine bounds one line of an event stream; a longer one is a broken stream, not a reason
// to grow without limit.
const maxSSELine = 1 << 20

// usage is the token accounting of an OpenAI response.
type usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
}

// streamChunk is the part of a chat.completion.chunk (or text_completion chunk) the generator reads.
type streamChunk struct {
	Choices []struct {
		Delta struct {
			Content          string `json:"content"`
			ReasoningContent string `json:"reasoning_content"`
		} `json:"delta"`
		Text string `json:"text"`
	} `json:"choices"`
	Usage *usage            `json:"usage"`
	Error *openaierr.Detail `json:"error"`
}

// streamStats is what one SSE response told: when content arrived and how much.
type streamStats struct {
	// First is the offset of the first non-empty content delta; HasFirst says whether there was one.
	First    time.Duration
	HasFirst bool
	// Last is the offset of the last content delta.
	Last time.Duration
	// Deltas counts non-empty content deltas; ITL holds the gaps between consecutive ones.
	Deltas int
	ITL    []time.Duration
	// Usage is the server's token accounting, when it sent one.
	Usage *usage
	// Done is true once "data: [DONE]" arrived.
	Done bool
}

// errStream marks a response stream that broke: an error event, a malformed chunk, or an end
// without [DONE]. Transport errors while reading are returned as they are.
var errStream = errors.New("stream error")

// parseStream reads an OpenAI server-sent-event stream to its [DONE] and measures it. now returns
// the current offset from the request's start; it is injected so tests and fuzzing need no clock.
// Events follow the SSE rules: "data:" lines accumulate until a blank line dispatches them,
// comments (":") and other fields are skipped, and an "event: error" or a chunk with an "error"
// object fails the stream.
func parseStream(r io.Reader, now func() time.Duration) (streamStats, error) {
	var st streamStats
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxSSELine)
	var data []byte
	var event string
	pending := false
	dispatch := func() error {
		if !pending {
			return nil
		}
		pending = false
		ev := event
		event = ""
		d := bytes.TrimSpace(data)
		data = data[:0]
		if bytes.Equal(d, []byte("[DONE]")) {
			st.Done = true
			return nil
		}
		var ch streamChunk
		if err := json.Unmarshal(d, &ch); err != nil {
			if ev == "error" {
				return fmt.Errorf("%w: error event: %.200s", errStream, d)
			}
			return fmt.Errorf("%w: malformed chunk: %v", errStream, err)
		}
		if ch.Error != nil {
			return fmt.Errorf("%w: %s", errStream, ch.Error.Message)
		}
		if ev == "error" {
			return fmt.Errorf("%w: error event: %.200s", errStream, d)
		}
		if ch.Usage != nil {
			u := *ch.Usage
			st.Usage = &u
		}
		n := 0
		for _, c := range ch.Choices {
			n += len(c.Delta.Content) + len(c.Delta.ReasoningContent) + len(c.Text)
		}
		if n > 0 {
			t := now()
			if !st.HasFirst {
				st.First, st.HasFirst = t, true
			} else {
				st.ITL = append(st.ITL, t-st.Last)
			}
			st.Last = t
			st.Deltas++
		}
		return nil
	}
	for sc.Scan() {
		line := bytes.TrimSuffix(sc.Bytes(), []byte("\r"))
		switch {
		case len(line) == 0:
			if err := dispatch(); err != nil {
				return st, err
			}
			if st.Done {
				return st, nil
			}
		case line[0] == ':': // comment, e.g. a keep-alive
		default:
			field, value, _ := bytes.Cut(line, []byte(":"))
			value = bytes.TrimPrefix(value, []byte(" "))
			switch string(field) {
			case "data":
				if pending {
					data = append(data, '\n')
				}
				data = append(data, value...)
				pending = true
			case "event":
				event = string(value)
			}
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return st, fmt.Errorf("%w: line longer than %d bytes", errStream, maxSSELine)
		}
		return st, err
	}
	// A stream may end on its last data line without the blank line that should follow.
	if err := dispatch(); err != nil {
		return st, err
	}
	if !st.Done {
		return st, fmt.Errorf("%w: stream ended without [DONE]", errStream)
	}
	return st, nil
}

// completion is the part of a non-streaming response the generator reads.
type completion struct {
	Choices []struct {
		Message struct {
			Content string `json:"content"`
		} `json:"message"`
		Text string `json:"text"`
	} `json:"choices"`
	Usage *usage            `json:"usage"`
	Error *openaierr.Detail `json:"error"`
}

// errorMessage extracts error.message from an OpenAI error body, or returns the start of the body.
func errorMessage(body []byte) string {
	var e struct {
		Error *openaierr.Detail `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil && e.Error != nil && e.Error.Message != "" {
		return e.Error.Message
	}
	return fmt.Sprintf("%.200s", bytes.TrimSpace(body))
}
