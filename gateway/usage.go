package gateway

import (
	"bytes"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/herd-llm/herd/jsonspan"
)

// The gateway meters what it relays, on the side and without decoding: token counts from the
// answer's usage object and, for streams, when each event went out.
//
// Decisions:
//   - Tokens come from usage (prompt_tokens, completion_tokens; Ollama's native answers passed
//     through by the Ollama front: prompt_eval_count, eval_count), which is the last thing of a
//     non-streamed answer and the last chunk before [DONE] of a stream sent with
//     stream_options.include_usage: the meter keeps the last usageTail bytes of the body and reads
//     the last occurrence of each key there at the end. A stream without usage counts as
//     completion tokens the events that carried generated text (one token per chunk, which is how
//     Ollama, vLLM and llama.cpp stream), and no prompt tokens: the gateway does not tokenise.
//   - Inter-token latency is the gap between consecutive relayed events (SSE events, or NDJSON
//     lines of a native Ollama stream) that carry text; a read
//     that brings several events at once spreads its gap evenly over them. Time per output token
//     is per request: the span from the first text event to the last over the tokens after the
//     first. Both exist only for streams; so does time to first token (a non-streamed answer's
//     first byte is its last, which says nothing about the first token).

// usageTail is how much of the end of a body the meter keeps to find usage in.
const usageTail = 2 << 10

// meter is the per-request metering state, part of the pooled call.
type meter struct {
	tail  [usageTail]byte
	tailN int

	// Streams only.
	textEvents int
	firstText  time.Time
	lastText   time.Time
	itl        prometheus.Observer
}

func (m *meter) reset() {
	m.tailN, m.textEvents, m.firstText, m.lastText, m.itl = 0, 0, time.Time{}, time.Time{}, nil
}

// body notes bytes relayed to the client.
func (m *meter) body(p []byte) {
	if len(p) >= usageTail {
		m.tailN = copy(m.tail[:], p[len(p)-usageTail:])
		return
	}
	if m.tailN+len(p) > usageTail {
		drop := m.tailN + len(p) - usageTail
		m.tailN = copy(m.tail[:], m.tail[drop:m.tailN])
	}
	m.tailN += copy(m.tail[m.tailN:], p)
}

// events notes the events of one relayed read, sent at now: SSE events (sep sseEventEnd) or
// NDJSON lines (ndjsonLineEnd; a line cut by a read boundary counts where its text is).
func (m *meter) events(p []byte, sep []byte, now time.Time) {
	n := 0
	for len(p) > 0 {
		end := bytes.Index(p, sep)
		ev := p
		if end >= 0 {
			ev, p = p[:end], p[end+len(sep):]
		} else {
			p = nil
		}
		if eventHasText(ev) {
			n++
		}
	}
	if n == 0 {
		return
	}
	if m.textEvents > 0 && m.itl != nil {
		gap := now.Sub(m.lastText).Seconds() / float64(n)
		for range n {
			m.itl.Observe(gap)
		}
	} else if m.itl != nil && n > 1 {
		// The first text event has no predecessor; the others of its read arrived with it.
		for range n - 1 {
			m.itl.Observe(0)
		}
	}
	if m.textEvents == 0 {
		m.firstText = now
	}
	m.textEvents += n
	m.lastText = now
}

var (
	// sseEventEnd ends an SSE event; herd's agents, Ollama and vLLM all end events with "\n\n".
	sseEventEnd   = []byte("\n\n")
	ndjsonLineEnd = []byte("\n")
)

// eventHasText reports whether an event carries generated text: a non-empty "content" or "text"
// string (OpenAI chat and completions chunks), or "response" (Ollama's generate lines). A
// role-only opening chunk, a finish chunk, the usage chunk and [DONE] do not.
func eventHasText(ev []byte) bool {
	for _, key := range [...][]byte{[]byte(`"content":"`), []byte(`"text":"`), []byte(`"reasoning_content":"`), []byte(`"response":"`)} {
		for rest := ev; ; {
			i := bytes.Index(rest, key)
			if i < 0 {
				break
			}
			rest = rest[i+len(key):]
			if len(rest) > 0 && rest[0] != '"' {
				return true
			}
		}
	}
	return false
}

// tokens returns the request's prompt and completion tokens (see the decisions above). Ollama's
// native answers say prompt_eval_count and eval_count instead.
func (m *meter) tokens(stream bool) (prompt, completion int64) {
	w := m.tail[:m.tailN]
	prompt, ok := lastIntField(w, "prompt_tokens")
	if !ok {
		prompt, _ = lastIntField(w, "prompt_eval_count")
	}
	c, ok := lastIntField(w, "completion_tokens")
	if !ok {
		c, ok = lastIntField(w, "eval_count")
	}
	if !ok && stream {
		c = int64(m.textEvents)
	}
	return prompt, c
}

// tpot is the mean time per output token after the first (0 when not measurable).
func (m *meter) tpot(completion int64) time.Duration {
	if m.textEvents < 2 || completion < 2 {
		return 0
	}
	return m.lastText.Sub(m.firstText) / time.Duration(completion-1)
}

// lastIntField returns the non-negative integer value of the last `"key":` in b. It reads JSON
// text as it is (outside input: fuzzed); a key inside a string value could fool it, which the
// usage object, the last one in the body, makes harmless.
func lastIntField(b []byte, key string) (int64, bool) {
	var pat [64]byte
	if len(key)+3 > len(pat) {
		return 0, false
	}
	n := copy(pat[:], `"`)
	n += copy(pat[n:], key)
	n += copy(pat[n:], `"`)
	for end := len(b); end > 0; {
		i := bytes.LastIndex(b[:end], pat[:n])
		if i < 0 {
			return 0, false
		}
		end = i
		j := jsonspan.SkipWS(b, i+n)
		if j >= len(b) || b[j] != ':' {
			continue
		}
		j = jsonspan.SkipWS(b, j+1)
		var v int64
		digits := 0
		for j < len(b) && b[j] >= '0' && b[j] <= '9' && digits < 18 {
			v = v*10 + int64(b[j]-'0')
			j++
			digits++
		}
		if digits == 0 || j < len(b) && b[j] >= '0' && b[j] <= '9' {
			continue
		}
		return v, true
	}
	return 0, false
}
