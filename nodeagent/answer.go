package nodeagent

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"

	"github.com/herd-llm/herd/jsonspan"
	"github.com/herd-llm/herd/nodeagent/agentapi"
)

// The agent writes the client's name for the model into its answers: the gateway says in
// agentapi.HeaderClientModel which name the client used (a preset's, an Ollama spelling such as
// "llama3" for "llama3:latest"), and in HeaderModel the backend's name it resolved it to. When
// the two differ, answerWriter rewrites the top-level "model" of every JSON line the backend
// writes: each SSE data event, each NDJSON line, a one-line JSON body. The gateway then passes
// the bytes through untouched.
//
// Decisions:
//   - Only a top-level "model" string is replaced, found by walking the line's members (package
//     jsonspan), never by matching bytes; nested objects (a Responses stream's "response") keep
//     theirs.
//   - A line that is not one JSON object (pretty-printed JSON, a comment) passes unchanged.
//   - Error answers (not 2xx) pass unchanged: the gateway renders them in its client's shape.

// answerWriter rewrites each complete line of a 2xx answer with fix and passes everything else
// through. Lines are held only until their newline; Flush passes complete lines on at once.
type answerWriter struct {
	http.ResponseWriter
	fix func(dst, line []byte) []byte

	status int
	line   []byte // the start of a line whose newline has not come yet
	out    []byte
}

var _ http.Flusher = (*answerWriter)(nil)

// WriteHeader implements http.ResponseWriter.
func (a *answerWriter) WriteHeader(code int) {
	if a.status == 0 {
		a.status = code
		if code/100 == 2 {
			// The rewritten body's length is not the backend's.
			a.Header().Del("Content-Length")
		}
	}
	a.ResponseWriter.WriteHeader(code)
}

// Write implements http.ResponseWriter.
func (a *answerWriter) Write(p []byte) (int, error) {
	if a.status == 0 {
		a.WriteHeader(http.StatusOK)
	}
	if a.status/100 != 2 {
		return a.ResponseWriter.Write(p)
	}
	n := len(p)
	a.out = a.out[:0]
	for len(p) > 0 {
		nl := bytes.IndexByte(p, '\n')
		if nl < 0 {
			a.line = append(a.line, p...)
			break
		}
		line := p[:nl+1]
		if len(a.line) > 0 {
			a.line = append(a.line, line...)
			line = a.line
		}
		a.out = a.fix(a.out, line)
		a.line = a.line[:0]
		p = p[nl+1:]
	}
	if len(a.out) > 0 {
		if _, err := a.ResponseWriter.Write(a.out); err != nil {
			return 0, err
		}
	}
	return n, nil
}

// Flush implements http.Flusher.
func (a *answerWriter) Flush() {
	if f, ok := a.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the server's writer.
func (a *answerWriter) Unwrap() http.ResponseWriter { return a.ResponseWriter }

// finish writes a last line that had no newline (a JSON body usually ends without one).
func (a *answerWriter) finish() {
	if len(a.line) == 0 {
		return
	}
	a.out = a.fix(a.out[:0], a.line)
	a.line = a.line[:0]
	_, _ = a.ResponseWriter.Write(a.out)
}

// renameModel returns a line fixer that sets the top-level "model" of JSON lines (SSE data
// events, NDJSON lines, a JSON body) to name.
func renameModel(name string) func(dst, line []byte) []byte {
	quoted, _ := json.Marshal(name)
	return func(dst, line []byte) []byte {
		start, end, ok := jsonLine(line)
		if !ok {
			return append(dst, line...)
		}
		vs, ve, ok := memberValue(line[start:end], "model")
		if !ok || line[start+vs] != '"' {
			return append(dst, line...)
		}
		dst = append(dst, line[:start+vs]...)
		dst = append(dst, quoted...)
		return append(dst, line[start+ve:]...)
	}
}

// jsonLine finds the JSON object of an SSE data line or an NDJSON line: its span in line.
func jsonLine(line []byte) (start, end int, ok bool) {
	i := 0
	if bytes.HasPrefix(line, []byte("data:")) {
		i = len("data:")
	}
	i = jsonspan.SkipWS(line, i)
	if i >= len(line) || line[i] != '{' {
		return 0, 0, false
	}
	e := jsonspan.SkipValue(line, i)
	if e < 0 {
		return 0, 0, false
	}
	return i, e, true
}

// memberValue returns the span of the value of obj's top-level member key (a key spelled with
// escapes is not recognised).
func memberValue(obj []byte, key string) (start, end int, ok bool) {
	i := 1
	for {
		i = jsonspan.SkipWS(obj, i)
		if i >= len(obj) || obj[i] == '}' {
			return 0, 0, false
		}
		if obj[i] == ',' {
			i++
			continue
		}
		if obj[i] != '"' {
			return 0, 0, false
		}
		kend := jsonspan.StringEnd(obj, i)
		if kend < 0 {
			return 0, 0, false
		}
		k := obj[i+1 : kend-1]
		i = jsonspan.SkipWS(obj, kend)
		if i >= len(obj) || obj[i] != ':' {
			return 0, 0, false
		}
		i = jsonspan.SkipWS(obj, i+1)
		vend := jsonspan.SkipValue(obj, i)
		if vend < 0 {
			return 0, 0, false
		}
		if string(k) == key {
			return i, vend, true
		}
		i = vend
	}
}

// clientModel is the name to write into answers for a request naming backend model: the
// gateway's HeaderClientModel when it differs from the backend's, else "" (nothing to rewrite).
func clientModel(h http.Header, model string) string {
	c := strings.TrimSpace(h.Get(agentapi.HeaderClientModel))
	if c == "" || c == model {
		return ""
	}
	return c
}
