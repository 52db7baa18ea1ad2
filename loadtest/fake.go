package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// FaultMode is how the fake backend misbehaves on inference routes. /v1/models and /health
// always answer, so that an agent in front of a faulty backend still registers.
type FaultMode string

// Fault modes.
const (
	// FaultOK answers every request at once.
	FaultOK FaultMode = "ok"
	// FaultError answers every inference request with a 500 in the OpenAI error shape.
	FaultError FaultMode = "error"
	// FaultSlow waits FakeOptions.Delay before answering.
	FaultSlow FaultMode = "slow"
	// FaultHang never answers; the request ends when the client gives up.
	FaultHang FaultMode = "hang"
	// FaultFlaky fails every FakeOptions.FailEvery-th inference request with a 500.
	FaultFlaky FaultMode = "flaky"
)

// ParseFaultMode checks a fault mode's name.
func ParseFaultMode(s string) (FaultMode, error) {
	switch m := FaultMode(s); m {
	case FaultOK, FaultError, FaultSlow, FaultHang, FaultFlaky:
		return m, nil
	case "":
		return FaultOK, nil
	}
	return "", fmt.Errorf("%w: fault mode %q (want ok, error, slow, hang or flaky)", ErrBadOptions, s)
}

// DefaultFakeModel is the model the fake backend lists when FakeOptions.Models is empty.
const DefaultFakeModel = "fake-llm"

// FakeOptions tunes the fake backend. Zero values take the defaults on each field.
type FakeOptions struct {
	// Models are listed by /v1/models (default DefaultFakeModel). Any model name is served.
	Models []string
	// Chunks is the number of content chunks (= output tokens) of a response (default 20);
	// a smaller max_tokens lowers it.
	Chunks int
	// ChunkDelay is slept between streamed chunks (default 0: as fast as the socket goes).
	ChunkDelay time.Duration
	// FastModels are streamed with FastChunkDelay instead of ChunkDelay: a probe at a fast
	// GPU's speed beside slow streams (the streams scenario).
	FastModels     []string
	FastChunkDelay time.Duration
	// Delay is the wait of FaultSlow (default 1s).
	Delay time.Duration
	// FailEvery is k of FaultFlaky (default 5).
	FailEvery int
	// EmbeddingDim is the length of the embeddings returned (default 16).
	EmbeddingDim int
}

// FakeBackend is a minimal, fast OpenAI-compatible server: fixed text ("tok tok …"), exact usage,
// streaming with include_usage, and fault injection. It is not a model: it exists to measure
// what sits in front of a backend.
type FakeBackend struct {
	mode      FaultMode
	opts      FakeOptions
	models    []byte // /v1/models response
	count     atomic.Int64
	inference atomic.Int64
}

var _ http.Handler = (*FakeBackend)(nil)

// NewFakeBackend returns the fake backend in the given fault mode.
func NewFakeBackend(mode FaultMode, opts FakeOptions) *FakeBackend {
	if mode == "" {
		mode = FaultOK
	}
	if len(opts.Models) == 0 {
		opts.Models = []string{DefaultFakeModel}
	}
	if opts.Chunks <= 0 {
		opts.Chunks = 20
	}
	if opts.Delay <= 0 {
		opts.Delay = time.Second
	}
	if opts.FailEvery <= 0 {
		opts.FailEvery = 5
	}
	if opts.EmbeddingDim <= 0 {
		opts.EmbeddingDim = 16
	}
	b := []byte(`{"object":"list","data":[`)
	for i, m := range opts.Models {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"id":`...)
		b = appendJSONString(b, m)
		b = append(b, `,"object":"model","created":1700000000,"owned_by":"herd-loadtest-fake"}`...)
	}
	b = append(b, "]}"...)
	return &FakeBackend{mode: mode, opts: opts, models: b}
}

// Requests returns how many requests the backend has received, and how many of them were
// inference requests.
func (f *FakeBackend) Requests() (all, inference int64) { return f.count.Load(), f.inference.Load() }

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 8<<10); return &b }}

// ServeHTTP implements http.Handler.
func (f *FakeBackend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.count.Add(1)
	path := strings.TrimPrefix(r.URL.Path, "/v1")
	switch path {
	case "/chat/completions", "/completions", "/embeddings":
		if r.Method != http.MethodPost {
			fakeError(w, http.StatusMethodNotAllowed, "invalid_request_error", "method_not_allowed", "use POST")
			return
		}
		f.infer(w, r, path, f.inference.Add(1))
	case "/models":
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(f.models)
	case "/health", "/healthz":
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"status":"ok"}`)
	default:
		fakeError(w, http.StatusNotFound, "invalid_request_error", "not_found", "unknown route "+r.URL.Path)
	}
}

// fakeRequest is the part of a request body the fake reads.
type fakeRequest struct {
	Model         string `json:"model"`
	Stream        bool   `json:"stream"`
	StreamOptions *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
	MaxTokens           int             `json:"max_tokens"`
	MaxCompletionTokens int             `json:"max_completion_tokens"`
	Input               json.RawMessage `json:"input"`
}

// infer serves the n-th inference request.
func (f *FakeBackend) infer(w http.ResponseWriter, r *http.Request, path string, n int64) {
	bp := bufPool.Get().(*[]byte)
	defer func() {
		if cap(*bp) <= 1<<20 { // a huge body's buffer is left to the collector
			bufPool.Put(bp)
		}
	}()
	buf := bytes.NewBuffer((*bp)[:0])
	_, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, 32<<20))
	*bp = buf.Bytes()[:0]
	if err != nil {
		fakeError(w, http.StatusBadRequest, "invalid_request_error", "bad_body", "reading the body: "+err.Error())
		return
	}
	body := buf.Bytes()
	var req fakeRequest
	if err := json.Unmarshal(body, &req); err != nil {
		fakeError(w, http.StatusBadRequest, "invalid_request_error", "invalid_json", "body is not valid JSON: "+err.Error())
		return
	}
	if req.Model == "" {
		fakeError(w, http.StatusBadRequest, "invalid_request_error", "missing_model", "you must provide a model parameter")
		return
	}
	switch f.mode {
	case FaultError:
		fakeError(w, http.StatusInternalServerError, "server_error", "injected_fault", "fake backend: injected error")
		return
	case FaultFlaky:
		if n%int64(f.opts.FailEvery) == 0 {
			fakeError(w, http.StatusInternalServerError, "server_error", "injected_fault", "fake backend: injected flaky error")
			return
		}
	case FaultSlow:
		t := time.NewTimer(f.opts.Delay)
		select {
		case <-r.Context().Done():
			t.Stop()
			return
		case <-t.C:
		}
	case FaultHang:
		<-r.Context().Done()
		return
	}
	prompt := max(1, len(body)/4)
	if path == "/embeddings" {
		f.embed(w, req, prompt)
		return
	}
	tokens, finish := f.opts.Chunks, "stop"
	limit := req.MaxTokens
	if req.MaxCompletionTokens > 0 {
		limit = req.MaxCompletionTokens
	}
	if limit > 0 && limit < tokens {
		tokens, finish = limit, "length"
	}
	chat := path == "/chat/completions"
	out := (*bp)[:0]
	if req.Stream {
		f.stream(w, r, out, chat, req, tokens, prompt, finish)
		return
	}
	if chat {
		out = append(out, `{"id":"chatcmpl-fake","object":"chat.completion","created":1700000000,"model":`...)
		out = appendJSONString(out, req.Model)
		out = append(out, `,"choices":[{"index":0,"message":{"role":"assistant","content":"`...)
	} else {
		out = append(out, `{"id":"cmpl-fake","object":"text_completion","created":1700000000,"model":`...)
		out = appendJSONString(out, req.Model)
		out = append(out, `,"choices":[{"index":0,"text":"`...)
	}
	for range tokens {
		out = append(out, "tok "...)
	}
	out = append(out, '"')
	if chat {
		out = append(out, '}')
	}
	out = append(out, `,"finish_reason":"`...)
	out = append(out, finish...)
	out = append(out, `"}],`...)
	out = appendUsage(out, prompt, tokens)
	out = append(out, '}')
	*bp = out[:0]
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(out)))
	_, _ = w.Write(out)
}

func appendUsage(b []byte, prompt, completion int) []byte {
	b = append(b, `"usage":{"prompt_tokens":`...)
	b = strconv.AppendInt(b, int64(prompt), 10)
	b = append(b, `,"completion_tokens":`...)
	b = strconv.AppendInt(b, int64(completion), 10)
	b = append(b, `,"total_tokens":`...)
	b = strconv.AppendInt(b, int64(prompt+completion), 10)
	return append(b, '}')
}

// stream writes n content chunks, the finish chunk, the usage chunk when asked, and [DONE],
// flushing each one as a real server does per token.
func (f *FakeBackend) stream(w http.ResponseWriter, r *http.Request, buf []byte, chat bool, req fakeRequest, n, prompt int, finish string) {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	// head is everything up to the choices, shared by every chunk of this response.
	head := buf[:0]
	if chat {
		head = append(head, `data: {"id":"chatcmpl-fake","object":"chat.completion.chunk","created":1700000000,"model":`...)
	} else {
		head = append(head, `data: {"id":"cmpl-fake","object":"text_completion","created":1700000000,"model":`...)
	}
	head = appendJSONString(head, req.Model)
	head = append(head, `,"choices":`...)
	hl := len(head)
	write := func(rest string) bool {
		chunk := append(head[:hl], rest...)
		head = chunk
		if _, err := w.Write(chunk); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	var content, done string
	if chat {
		content = `[{"index":0,"delta":{"content":"tok "},"finish_reason":null}]}` + "\n\n"
		done = `[{"index":0,"delta":{},"finish_reason":"` + finish + `"}]}` + "\n\n"
		if !write(`[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}` + "\n\n") {
			return
		}
	} else {
		content = `[{"index":0,"text":"tok ","finish_reason":null}]}` + "\n\n"
		done = `[{"index":0,"text":"","finish_reason":"` + finish + `"}]}` + "\n\n"
	}
	var t *time.Timer
	delay := f.opts.ChunkDelay
	if slices.Contains(f.opts.FastModels, req.Model) {
		delay = f.opts.FastChunkDelay
	}
	for i := range n {
		if delay > 0 && i > 0 {
			if t == nil {
				t = time.NewTimer(delay)
				defer t.Stop()
			} else {
				t.Reset(delay)
			}
			select {
			case <-r.Context().Done():
				return
			case <-t.C:
			}
		}
		if !write(content) {
			return
		}
	}
	if !write(done) {
		return
	}
	if req.StreamOptions != nil && req.StreamOptions.IncludeUsage {
		u := appendUsage([]byte(`[],`), prompt, n)
		if !write(string(append(u, "}\n\n"...))) {
			return
		}
	}
	_, _ = io.WriteString(w, "data: [DONE]\n\n")
	_ = rc.Flush()
}

// embed answers /v1/embeddings with one fixed unit-length vector per input.
func (f *FakeBackend) embed(w http.ResponseWriter, req fakeRequest, prompt int) {
	inputs := 1
	in := bytes.TrimSpace(req.Input)
	if len(in) > 0 && in[0] == '[' {
		var arr []json.RawMessage
		if err := json.Unmarshal(in, &arr); err != nil {
			fakeError(w, http.StatusBadRequest, "invalid_request_error", "invalid_input", "input must be a string or an array")
			return
		}
		inputs = len(arr)
		// An array of numbers is one tokenised input, not many.
		if len(arr) > 0 && len(bytes.TrimSpace(arr[0])) > 0 && bytes.TrimSpace(arr[0])[0] != '"' && bytes.TrimSpace(arr[0])[0] != '[' {
			inputs = 1
		}
	} else if len(in) == 0 {
		fakeError(w, http.StatusBadRequest, "invalid_request_error", "missing_input", "you must provide an input")
		return
	}
	v := strconv.FormatFloat(1/math.Sqrt(float64(f.opts.EmbeddingDim)), 'f', 6, 64)
	var b []byte
	b = append(b, `{"object":"list","data":[`...)
	for i := range inputs {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"object":"embedding","index":`...)
		b = strconv.AppendInt(b, int64(i), 10)
		b = append(b, `,"embedding":[`...)
		for j := range f.opts.EmbeddingDim {
			if j > 0 {
				b = append(b, ',')
			}
			b = append(b, v...)
		}
		b = append(b, "]}"...)
	}
	b = append(b, `],"model":`...)
	b = appendJSONString(b, req.Model)
	b = append(b, `,"usage":{"prompt_tokens":`...)
	b = strconv.AppendInt(b, int64(prompt), 10)
	b = append(b, `,"total_tokens":`...)
	b = strconv.AppendInt(b, int64(prompt), 10)
	b = append(b, "}}"...)
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
}

// fakeError writes an error in the OpenAI shape.
func fakeError(w http.ResponseWriter, status int, typ, code, msg string) {
	b := []byte(`{"error":{"message":`)
	b = appendJSONString(b, msg)
	b = append(b, `,"type":`...)
	b = appendJSONString(b, typ)
	b = append(b, `,"param":null,"code":`...)
	b = appendJSONString(b, code)
	b = append(b, "}}"...)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// appendJSONString appends s as a JSON string literal.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}

// FakeServer is a FakeBackend listening on a TCP address.
type FakeServer struct {
	// URL is the server's base URL ("http://127.0.0.1:PORT").
	URL string
	// Backend is the handler, for its request counts.
	Backend *FakeBackend
	srv     *http.Server
	done    chan error
}

// StartFake serves a FakeBackend on addr ("127.0.0.1:0" picks a free port) until Close.
func StartFake(addr string, mode FaultMode, opts FakeOptions) (*FakeServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("fake backend: %w", err)
	}
	fb := NewFakeBackend(mode, opts)
	s := &FakeServer{
		URL:     "http://" + ln.Addr().String(),
		Backend: fb,
		srv:     &http.Server{Handler: fb, ReadHeaderTimeout: 10 * time.Second},
		done:    make(chan error, 1),
	}
	go func() { s.done <- s.srv.Serve(ln) }()
	return s, nil
}

// Close stops the server at once, cutting open connections (hanging requests included).
func (s *FakeServer) Close() error {
	err := s.srv.Close()
	if serr := <-s.done; !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	return err
}

// ServeFake serves a FakeBackend on addr until ctx is done. ready, if not nil, receives the base
// URL once it listens.
func ServeFake(ctx context.Context, addr string, mode FaultMode, opts FakeOptions, ready func(url string)) error {
	s, err := StartFake(addr, mode, opts)
	if err != nil {
		return err
	}
	if ready != nil {
		ready(s.URL)
	}
	select {
	case <-ctx.Done():
		return s.Close()
	case err := <-s.done:
		s.done <- err
		_ = s.srv.Close()
		return fmt.Errorf("fake backend: %w", err)
	}
}
