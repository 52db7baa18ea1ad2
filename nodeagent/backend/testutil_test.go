package backend

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// flushRecorder is an http.ResponseWriter that records the body as the chunks it was flushed in,
// so a test can see that a proxy flushed each SSE event on its own rather than buffering.
type flushRecorder struct {
	mu      sync.Mutex
	header  http.Header
	status  int
	pending bytes.Buffer
	chunks  []string
}

func newFlushRecorder() *flushRecorder { return &flushRecorder{header: http.Header{}} }

func (f *flushRecorder) Header() http.Header { return f.header }

func (f *flushRecorder) WriteHeader(code int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.status == 0 {
		f.status = code
	}
}

func (f *flushRecorder) Write(b []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.status == 0 {
		f.status = http.StatusOK
	}
	return f.pending.Write(b)
}

func (f *flushRecorder) Flush() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.pending.Len() > 0 {
		f.chunks = append(f.chunks, f.pending.String())
		f.pending.Reset()
	}
}

// body is everything written, flushed or not.
func (f *flushRecorder) body() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return strings.Join(f.chunks, "") + f.pending.String()
}

func (f *flushRecorder) flushed() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.chunks...)
}

// sseData returns the data payloads of an SSE body, in order.
func sseData(t *testing.T, body string) []string {
	t.Helper()
	var out []string
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(make([]byte, 0, 1<<20), 1<<20)
	for sc.Scan() {
		if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			out = append(out, d)
		}
	}
	return out
}

// openAIErr decodes an OpenAI error body and fails the test if it is not one.
func openAIErr(t *testing.T, body []byte) (msg, typ string, code *string) {
	t.Helper()
	var e struct {
		Error *struct {
			Message string  `json:"message"`
			Type    string  `json:"type"`
			Param   *string `json:"param"`
			Code    *string `json:"code"`
		} `json:"error"`
	}
	if err := json.Unmarshal(body, &e); err != nil || e.Error == nil || e.Error.Message == "" || e.Error.Type == "" {
		t.Fatalf("not an OpenAI error body (%v): %s", err, body)
	}
	return e.Error.Message, e.Error.Type, e.Error.Code
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// closedURL is the URL of a server that is no longer listening.
func closedURL(t *testing.T) string {
	t.Helper()
	s := httptest.NewServer(http.NotFoundHandler())
	u := s.URL
	s.Close()
	return u
}

// agentRequest builds the request the agent would hand a backend: the body already read, the
// agent's own bearer token still on it.
func agentRequest(t *testing.T, endpoint, body string) *http.Request {
	t.Helper()
	r := httptest.NewRequest(http.MethodPost, endpoint, strings.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Authorization", "Bearer cluster-token")
	r.Header.Set("X-Request-Id", "req-1")
	return r
}
