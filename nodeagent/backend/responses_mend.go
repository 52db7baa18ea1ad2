package backend

import (
	"bytes"
	"encoding/json"
	"net/http"
)

// Ollama's own Responses stream (0.13.3 to at least 0.17.4) ends a reply in which the model said
// nothing with a response.completed event whose response has "output":null. The API's output is
// always an array, and clients that map over it throw (LangChain JS: "Cannot read properties of
// null (reading 'map')"). mendingWriter passes the stream on event line by event line and puts an
// empty array in place of that null; every other byte goes through unchanged. Ollama's answer
// without a stream always carries an output item, so only streams are mended.

// nullOutput is how the defect reads in Ollama's JSON; it cannot occur inside a JSON string,
// where the quotes would be escaped, so a line without it needs no further look.
var nullOutput = []byte(`"output":null`)

// mendingWriter is an http.ResponseWriter that mends the Responses event stream written to it.
// Complete lines are passed on at once; finish writes what is left of a last, unterminated line.
type mendingWriter struct {
	http.ResponseWriter
	checked, sse bool
	pending      []byte
}

var _ http.Flusher = (*mendingWriter)(nil)

func (m *mendingWriter) Write(p []byte) (int, error) {
	if !m.checked {
		m.checked, m.sse = true, isEventStream(m.Header())
	}
	if !m.sse {
		return m.ResponseWriter.Write(p)
	}
	m.pending = append(m.pending, p...)
	end := bytes.LastIndexByte(m.pending, '\n')
	if end < 0 {
		return len(p), nil
	}
	err := m.emit(m.pending[:end+1])
	m.pending = append(m.pending[:0], m.pending[end+1:]...)
	return len(p), err
}

// emit writes lines on, mended where they carry the defect.
func (m *mendingWriter) emit(lines []byte) error {
	if bytes.Contains(lines, nullOutput) {
		lines = mendLines(lines)
	}
	_, err := m.ResponseWriter.Write(lines)
	return err
}

// Flush passes a flush on; a partial line held back stays held, as no SSE client can use it.
func (m *mendingWriter) Flush() {
	if fl, ok := m.ResponseWriter.(http.Flusher); ok {
		fl.Flush()
	}
}

// Unwrap lets http.ResponseController reach the connection's own writer.
func (m *mendingWriter) Unwrap() http.ResponseWriter { return m.ResponseWriter }

// finish writes a last line the stream did not end with a newline.
func (m *mendingWriter) finish() {
	if len(m.pending) == 0 {
		return
	}
	_ = m.emit(m.pending)
	m.pending = m.pending[:0]
	m.Flush()
}

// mendLines returns lines with every "data:" line whose event's response has a null output
// rewritten to an empty output array.
func mendLines(lines []byte) []byte {
	var out []byte
	for line := range bytes.Lines(lines) {
		out = append(out, mendDataLine(line)...)
	}
	return out
}

// mendDataLine mends one SSE line; a line it cannot read as a Responses event is returned as is.
func mendDataLine(line []byte) []byte {
	payload, ok := bytes.CutPrefix(line, []byte("data:"))
	if !ok || !bytes.Contains(line, nullOutput) {
		return line
	}
	trimmed := bytes.TrimRight(payload, "\r\n")
	eol := payload[len(trimmed):]
	trimmed = bytes.TrimLeft(trimmed, " ")
	var event map[string]json.RawMessage
	if json.Unmarshal(trimmed, &event) != nil {
		return line
	}
	var resp map[string]json.RawMessage
	if json.Unmarshal(event["response"], &resp) != nil || resp == nil {
		return line
	}
	if out, ok := resp["output"]; !ok || string(out) != "null" {
		return line
	}
	resp["output"] = json.RawMessage("[]")
	r, err := json.Marshal(resp)
	if err != nil {
		return line
	}
	event["response"] = r
	e, err := json.Marshal(event)
	if err != nil {
		return line
	}
	mended := append([]byte("data: "), e...)
	return append(mended, eol...)
}
