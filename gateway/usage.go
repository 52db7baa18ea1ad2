package gateway

import (
	"bytes"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/herd-llm/herd/jsonspan"
	"github.com/herd-llm/herd/tracing"
)

// The gateway meters what it relays, on the side and without decoding: token counts from the
// answer's usage object and, for streams, when each event went out. One meter per call serves
// the token counters, the rate limits' settlement (limits.go) and the request span (tracing.go).
//
// Decisions:
//   - Tokens come from usage (chat and completions: prompt_tokens, completion_tokens,
//     total_tokens; the Responses API: input_tokens, output_tokens, total_tokens; Ollama's native
//     answers passed through by the Ollama front: prompt_eval_count, eval_count), which is the
//     last thing of a non-streamed answer and the last event before [DONE] of a stream sent with
//     stream_options.include_usage (a Responses stream's response.completed): the meter keeps
//     the last usageTail bytes of the body and reads the last occurrence of each key there, once,
//     when the answer has ended. A stream without usage counts as completion tokens the events
//     that carried generated text (one token per chunk, which is how Ollama, vLLM and llama.cpp
//     stream), and no prompt tokens: the gateway does not tokenise.
//   - The same bytes give the span its response model and finish reasons (tracing.ScanOutcome),
//     read only when a span records; keeping them costs a copy into the pooled call, and no
//     allocation.
//   - Inter-token latency is the gap between consecutive relayed events (SSE events, or NDJSON
//     lines of a native Ollama stream) that carry text; a read
//     that brings several events at once spreads its gap evenly over them. Time per output token
//     is per request: the span from the first text event to the last over the tokens after the
//     first. Both exist only for streams; so does time to first token (a non-streamed answer's
//     first byte is its last, which says nothing about the first token).

// usageTail is how much of the end of a body the meter keeps to find usage in (and the span's
// scan the response model and finish reasons): the usage object and the last events of a
// stream are a few hundred bytes. It is half of tracing.TailSize, what the agent's span scan
// keeps, because every open stream holds the meter's buffer (twice the tail) in its call: at
// 8 KiB it was 16 KiB of the gateway's 56 KiB per stream (docs/BENCHMARKS.md, "Ten thousand
// slow streams").
const usageTail = tracing.TailSize / 2

// meter is the per-request metering state, part of the pooled call.
type meter struct {
	// buf holds the end of the body; its last usageTail bytes (window) are the tail. It is twice
	// that so that keeping the end moves each byte at most once.
	buf  [2 * usageTail]byte
	bufN int

	// u is what usage said, read from the tail once the answer has ended (scanned).
	u       usage
	scanned bool

	// Streams only.
	textEvents int
	firstText  time.Time
	lastText   time.Time
	itl        prometheus.Observer
}

// usage is the token counts an answer reported.
type usage struct {
	prompt, completion, total int64
	// hasPrompt and hasCompletion say the answer reported them; seen that it reported any count
	// (total is then total_tokens, or prompt and completion added up).
	hasPrompt, hasCompletion, seen bool
}

func (m *meter) reset() {
	m.bufN, m.u, m.scanned = 0, usage{}, false
	m.textEvents, m.firstText, m.lastText, m.itl = 0, time.Time{}, time.Time{}, nil
}

// body notes bytes relayed to the client.
func (m *meter) body(p []byte) {
	m.scanned = false
	if len(p) >= usageTail {
		m.bufN = copy(m.buf[:], p[len(p)-usageTail:])
		return
	}
	if m.bufN+len(p) > len(m.buf) {
		m.bufN = copy(m.buf[:], m.buf[m.bufN-usageTail:m.bufN])
	}
	m.bufN += copy(m.buf[m.bufN:], p)
}

// window is the last (at most) usageTail bytes of the body.
func (m *meter) window() []byte {
	return m.buf[max(0, m.bufN-usageTail):m.bufN]
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

// usage returns the counts the answer reported (see the decisions above).
func (m *meter) usage() usage {
	if !m.scanned {
		m.u, m.scanned = scanUsage(m.window()), true
	}
	return m.u
}

// tokens returns the request's prompt and completion tokens for the counters: what usage said,
// else, for a stream, one completion token per text event.
func (m *meter) tokens(stream bool) (prompt, completion int64) {
	u := m.usage()
	if !u.hasCompletion && stream {
		u.completion = int64(m.textEvents)
	}
	return u.prompt, u.completion
}

// tpot is the mean time per output token after the first (0 when not measurable).
func (m *meter) tpot(completion int64) time.Duration {
	if m.textEvents < 2 || completion < 2 {
		return 0
	}
	return m.lastText.Sub(m.firstText) / time.Duration(completion-1)
}

// The keys scanUsage reads, by slot; a count's name is the first of its kind's slots found.
const (
	slotPromptTokens = iota
	slotInputTokens
	slotPromptEvalCount
	slotCompletionTokens
	slotOutputTokens
	slotEvalCount
	slotTotalTokens
	numSlots
)

var usageKeyNames = [numSlots]string{"prompt_tokens", "input_tokens", "prompt_eval_count",
	"completion_tokens", "output_tokens", "eval_count", "total_tokens"}

// usageCounts holds the last valid value of each usage key in a text.
type usageCounts struct {
	v  [numSlots]int64
	ok [numSlots]bool
}

// first returns the value of the first of slots that was found.
func (c *usageCounts) first(slots ...int) (int64, bool) {
	for _, s := range slots {
		if c.ok[s] {
			return c.v[s], true
		}
	}
	return 0, false
}

// scanUsage reads the usage counts in b.
func scanUsage(b []byte) usage {
	c := countUsageKeys(b)
	var u usage
	u.prompt, u.hasPrompt = c.first(slotPromptTokens, slotInputTokens, slotPromptEvalCount)
	u.completion, u.hasCompletion = c.first(slotCompletionTokens, slotOutputTokens, slotEvalCount)
	total, hasTotal := c.first(slotTotalTokens)
	switch {
	case hasTotal:
		u.total, u.seen = total, true
	case u.hasPrompt || u.hasCompletion:
		u.total, u.seen = u.prompt+u.completion, true
	}
	return u
}

// countUsageKeys finds the last valid non-negative integer value of each usage key in b. It reads
// JSON text as it is (outside input: fuzzed), in one forward pass for the two endings every key
// has: a key whose quote is escaped is inside a string, not a key; one inside a string value
// could otherwise fool it, which the usage object, the last one in the body, makes harmless.
func countUsageKeys(b []byte) usageCounts {
	var c usageCounts
	for _, end := range [...]string{`_tokens"`, `_count"`} {
		for off := 0; ; {
			i := bytes.Index(b[off:], []byte(end))
			if i < 0 {
				break
			}
			i += off
			off = i + 1
			q := bytes.LastIndexByte(b[max(0, i-len("prompt_eval")-1):i], '"')
			if q < 0 {
				continue
			}
			q += max(0, i-len("prompt_eval")-1)
			if q > 0 && b[q-1] == '\\' {
				continue
			}
			name := b[q+1 : i+len(end)-1]
			slot := -1
			for s, n := range usageKeyNames {
				if string(name) == n {
					slot = s
					break
				}
			}
			if slot < 0 {
				continue
			}
			if v, ok := intAfterKey(b, i+len(end)); ok {
				c.v[slot], c.ok[slot] = v, true
			}
		}
	}
	return c
}

// intAfterKey reads `: N` at b[j:]: a non-negative integer of at most 18 digits.
func intAfterKey(b []byte, j int) (int64, bool) {
	j = jsonspan.SkipWS(b, j)
	if j >= len(b) || b[j] != ':' {
		return 0, false
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
		return 0, false
	}
	return v, true
}
