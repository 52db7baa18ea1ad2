package ollamacompat

import (
	"bytes"
	"net/http"
	"time"
)

// maxBody bounds a non-streamed answer (embeddings, an error body) the Writer buffers.
const maxBody = 64 << 20

// Writer is the ResponseWriter a backend writes its OpenAI answer to when an agent serves one of
// Ollama's native routes on a backend that does not speak them; it writes Ollama's answer to the
// client's writer instead. Call Finish once the backend has returned.
//
// A streamed chat or generate answer is translated event by event, each line flushed when the
// backend flushes; a non-streamed one, and an embeddings answer, is built at Finish. An error
// answer (not 2xx) keeps its status and becomes Ollama's {"error":"message"}.
type Writer struct {
	w      http.ResponseWriter
	ep     Endpoint
	model  string
	stream bool
	start  time.Time
	now    func() time.Time
	hdr    http.Header

	resp   *Response
	status int
	body   []byte // an error or embeddings body, kept whole
	out    []byte
	ended  bool
	broken bool
}

var _ http.Flusher = (*Writer)(nil)

// NewWriter returns a Writer for the answer to up, a translation of a request to ep, that writes
// to w. model is the name the client asked for (Ollama echoes it), stream the client's choice,
// start when the request arrived (total_duration), now the clock.
func NewWriter(w http.ResponseWriter, ep Endpoint, up Upstream, model string, stream bool, start time.Time, now func() time.Time) *Writer {
	if now == nil {
		now = time.Now
	}
	tw := &Writer{w: w, ep: ep, model: model, stream: stream, start: start, now: now, hdr: http.Header{}}
	if ep == Chat || ep == Generate {
		tw.resp = NewResponse(ep, model, stream, up.Completion, start, now())
	}
	return tw
}

// Header implements http.ResponseWriter: the backend's headers stay here; the client gets
// Ollama's content type.
func (t *Writer) Header() http.Header { return t.hdr }

// WriteHeader implements http.ResponseWriter.
func (t *Writer) WriteHeader(code int) {
	if t.status == 0 {
		t.status = code
	}
}

// Write implements http.ResponseWriter.
func (t *Writer) Write(p []byte) (int, error) {
	if t.status == 0 {
		t.status = http.StatusOK
	}
	if t.status/100 != 2 || t.resp == nil {
		if len(t.body)+len(p) > maxBody {
			return 0, http.ErrContentLength
		}
		t.body = append(t.body, p...)
		return len(p), nil
	}
	t.out = t.resp.Feed(t.out[:0], p, t.now())
	if t.stream && len(t.out) > 0 {
		if err := t.send(t.out); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// Flush implements http.Flusher: lines are flushed as they are written.
func (t *Writer) Flush() {}

func (t *Writer) commit(status int, contentType string) {
	if t.ended {
		return
	}
	t.ended = true
	t.w.Header().Set("Content-Type", contentType)
	t.w.Header().Del("Content-Length")
	t.w.WriteHeader(status)
}

// send writes streamed lines to the client and flushes them.
func (t *Writer) send(b []byte) error {
	if t.broken {
		return http.ErrHandlerTimeout
	}
	t.commit(http.StatusOK, "application/x-ndjson")
	if _, err := t.w.Write(b); err != nil {
		t.broken = true
		return err
	}
	if f, ok := t.w.(http.Flusher); ok {
		f.Flush()
	}
	return nil
}

// Finish writes the rest of the answer once the backend has returned.
func (t *Writer) Finish() {
	if t.broken {
		return
	}
	switch {
	case t.status == 0:
		t.commit(http.StatusBadGateway, "application/json; charset=utf-8")
		_, _ = t.w.Write(AppendError(nil, "the backend answered nothing"))
	case t.status/100 != 2:
		t.commit(t.status, "application/json; charset=utf-8")
		_, _ = t.w.Write(AppendError(nil, ErrorMessage(bytes.TrimSpace(t.body))))
	case t.resp != nil:
		out, status := t.resp.End(t.out[:0], t.now())
		if t.stream {
			_ = t.send(out)
			return
		}
		t.commit(status, "application/json; charset=utf-8")
		_, _ = t.w.Write(out)
	default:
		b, err := EmbedResponse(t.ep, t.model, t.body, t.start, t.now())
		if err != nil {
			t.commit(http.StatusBadGateway, "application/json; charset=utf-8")
			_, _ = t.w.Write(AppendError(nil, err.Error()))
			return
		}
		t.commit(http.StatusOK, "application/json; charset=utf-8")
		_, _ = t.w.Write(b)
	}
}
