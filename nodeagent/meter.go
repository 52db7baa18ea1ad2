package nodeagent

import (
	"bytes"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/herd-llm/herd/clock"
)

// tailSize is how much of the end of a response the meter keeps to find usage in. Usage is the
// last field of a non-streamed completion and the last chunk before [DONE] of a streamed one.
const tailSize = 8 << 10

// maxLineSize bounds the partial SSE line the meter assembles; a longer line is not counted.
const maxLineSize = 256 << 10

// meterWriter wraps the ResponseWriter a backend writes an inference response to. It passes
// every byte and every Flush straight through (streams stay chunk-by-chunk) and on the side notes
// when the first and last bytes went out, keeps the tail of the body, and counts streamed chunks
// that carry generated text, so the agent can learn tokens per second.
type meterWriter struct {
	http.ResponseWriter
	clock clock.Clock

	status    int
	stream    bool
	ndjson    bool
	bytes     int64
	firstByte time.Time
	lastByte  time.Time
	// firstText is when the first chunk carrying generated text went out (streams only): the
	// first token, which a role-only opening chunk is not.
	firstText time.Time

	tail      []byte
	line      []byte
	lineOver  bool
	textChunk int
}

var _ http.Flusher = (*meterWriter)(nil)

func newMeterWriter(w http.ResponseWriter, clock clock.Clock) *meterWriter {
	return &meterWriter{ResponseWriter: w, clock: clock}
}

// meters pools meterWriters with their tail and line buffers, which every response would
// otherwise grow anew.
var meters = sync.Pool{New: func() any { return new(meterWriter) }}

// maxPooledBuffer bounds the buffers a pooled meter keeps: a rare huge line is not worth holding.
const maxPooledBuffer = 4 * tailSize

func getMeterWriter(w http.ResponseWriter, clock clock.Clock) *meterWriter {
	m := meters.Get().(*meterWriter)
	m.ResponseWriter, m.clock = w, clock
	return m
}

// putMeterWriter returns m to the pool; nothing may use it afterwards.
func putMeterWriter(m *meterWriter) {
	tail, line := m.tail[:0], m.line[:0]
	if cap(tail) > maxPooledBuffer {
		tail = nil
	}
	if cap(line) > maxPooledBuffer {
		line = nil
	}
	*m = meterWriter{tail: tail, line: line}
	meters.Put(m)
}

// WriteHeader records the status and whether the response is an SSE stream.
func (m *meterWriter) WriteHeader(code int) {
	if m.status == 0 {
		m.status = code
		ct := m.Header().Get("Content-Type")
		m.stream = strings.HasPrefix(ct, "text/event-stream")
		// Ollama's native streams are NDJSON: one JSON chunk a line, no "data:" prefix.
		m.ndjson = strings.HasPrefix(ct, "application/x-ndjson")
		m.stream = m.stream || m.ndjson
	}
	m.ResponseWriter.WriteHeader(code)
}

// Write passes p through and meters it.
func (m *meterWriter) Write(p []byte) (int, error) {
	if m.status == 0 {
		m.WriteHeader(http.StatusOK)
	}
	n, err := m.ResponseWriter.Write(p)
	if n > 0 {
		now := m.clock.Now()
		if m.bytes == 0 {
			m.firstByte = now
		}
		m.lastByte = now
		m.bytes += int64(n)
		m.observe(p[:n], now)
	}
	return n, err
}

// Flush passes a flush through to the server's writer.
func (m *meterWriter) Flush() {
	if f, ok := m.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the server's writer (deadlines, full duplex).
func (m *meterWriter) Unwrap() http.ResponseWriter { return m.ResponseWriter }

func (m *meterWriter) observe(p []byte, now time.Time) {
	if len(p) >= tailSize {
		// Only the end of a large write can be in the window.
		m.tail = append(m.tail[:0], p[len(p)-tailSize:]...)
	} else {
		m.tail = append(m.tail, p...)
		if len(m.tail) > 2*tailSize {
			m.tail = append(m.tail[:0], m.tail[len(m.tail)-tailSize:]...)
		}
	}
	if m.stream {
		m.scanLines(p, now)
	}
}

// scanLines assembles SSE lines across writes and counts data events with generated text.
func (m *meterWriter) scanLines(p []byte, now time.Time) {
	for len(p) > 0 {
		nl := bytes.IndexByte(p, '\n')
		if nl < 0 {
			m.appendLine(p)
			return
		}
		m.appendLine(p[:nl])
		if !m.lineOver && m.countLine(m.line) && m.textChunk == 1 {
			m.firstText = now
		}
		m.line = m.line[:0]
		m.lineOver = false
		p = p[nl+1:]
	}
}

func (m *meterWriter) appendLine(p []byte) {
	if m.lineOver {
		return
	}
	if len(m.line)+len(p) > maxLineSize {
		m.lineOver = true
		m.line = m.line[:0]
		return
	}
	m.line = append(m.line, p...)
}

// countLine counts line if it is a data event with generated text, and reports whether it was.
func (m *meterWriter) countLine(line []byte) bool {
	line = bytes.TrimRight(line, "\r")
	payload, ok := bytes.CutPrefix(line, []byte("data:"))
	if m.ndjson {
		payload, ok = line, true
	}
	if !ok {
		return false
	}
	payload = bytes.TrimSpace(payload)
	if bytes.Equal(payload, []byte("[DONE]")) || !hasGeneratedText(payload) {
		return false
	}
	m.textChunk++
	return true
}

// firstToken is when the first generated token went out: the first text chunk of a stream,
// else the first byte.
func (m *meterWriter) firstToken() time.Time {
	if !m.firstText.IsZero() {
		return m.firstText
	}
	return m.firstByte
}

// tokens returns the completion tokens of the response: usage's completion_tokens when the
// backend sent usage, else (streams only) the number of chunks that carried text.
func (m *meterWriter) tokens() (int64, bool) {
	if n, ok := lastIntField(m.window(), "completion_tokens"); ok {
		return n, true
	}
	if n, ok := lastIntField(m.window(), "eval_count"); ok && m.ndjson {
		return n, true // Ollama's native final chunk
	}
	if n, ok := lastIntField(m.window(), "output_tokens"); ok {
		return n, true // a Responses answer passed through
	}
	if m.stream && m.textChunk > 0 {
		return int64(m.textChunk), true
	}
	return 0, false
}

// promptTokens returns usage's prompt_tokens when the backend sent usage.
func (m *meterWriter) promptTokens() (int64, bool) {
	if n, ok := lastIntField(m.window(), "prompt_tokens"); ok {
		return n, true
	}
	if m.ndjson {
		return lastIntField(m.window(), "prompt_eval_count")
	}
	return lastIntField(m.window(), "input_tokens") // a Responses answer passed through
}

// window is the last tailSize bytes of the body: the same bytes however the backend cut its
// writes.
func (m *meterWriter) window() []byte {
	return m.tail[max(0, len(m.tail)-tailSize):]
}
