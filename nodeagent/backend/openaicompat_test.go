package backend

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herd-llm/herd/nodeagent/agentapi"
)

// upstream is an OpenAI-compatible server for the proxy tests. It records what it received.
type upstream struct {
	*httptest.Server
	mu   sync.Mutex
	got  []*http.Request
	body [][]byte
	// step, when set, gates each streamed event: the handler waits for a value before writing
	// the next one, so a test can prove an event reached the client before the next existed.
	step chan struct{}
}

func newUpstream(t *testing.T) *upstream {
	t.Helper()
	u := &upstream{}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/chat/completions", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		u.mu.Lock()
		u.got = append(u.got, r.Clone(context.Background()))
		u.body = append(u.body, b)
		u.mu.Unlock()
		if strings.Contains(string(b), `"model":"missing"`) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, `{"object":"error","message":"The model `+"`missing`"+` does not exist.","type":"NotFoundError","param":null,"code":404}`)
			return
		}
		if !strings.Contains(string(b), `"stream":true`) {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("X-Upstream", "yes")
			io.WriteString(w, `{"id":"c1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}`)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		fl := w.(http.Flusher)
		for i := 0; i < 3; i++ {
			if u.step != nil {
				select {
				case <-u.step:
				case <-r.Context().Done():
					return
				}
			}
			fmt.Fprintf(w, "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"t%d\"}}]}\n\n", i)
			fl.Flush()
		}
		if strings.Contains(string(b), `"break":true`) {
			panic(http.ErrAbortHandler) // the backend dies mid-stream
		}
		io.WriteString(w, "data: [DONE]\n\n")
		fl.Flush()
	})
	mux.HandleFunc("GET /v1/models", func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.got = append(u.got, r.Clone(context.Background()))
		u.body = append(u.body, nil)
		u.mu.Unlock()
		io.WriteString(w, `{"object":"list","data":[{"id":"meta-llama/Llama-3.1-8B-Instruct","object":"model","owned_by":"vllm","max_model_len":8192},{"id":"qwen2.5-7b","object":"model"}]}`)
	})
	u.Server = httptest.NewServer(mux)
	t.Cleanup(u.Close)
	return u
}

func (u *upstream) last() (*http.Request, []byte) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.got) == 0 {
		return nil, nil
	}
	return u.got[len(u.got)-1], u.body[len(u.body)-1]
}

func newCompat(t *testing.T, url, key string) *OpenAICompat {
	t.Helper()
	b, err := NewOpenAICompat(url, key, WithLogger(quietLogger()))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestOpenAICompatKind(t *testing.T) {
	b := newCompat(t, "http://127.0.0.1:1", "")
	if b.Kind() != agentapi.BackendOpenAI || b.Simulated() {
		t.Errorf("Kind %q Simulated %v", b.Kind(), b.Simulated())
	}
}

func TestNewOpenAICompatURL(t *testing.T) {
	tests := []struct {
		in, want string
		err      bool
	}{
		{"http://127.0.0.1:8000", "http://127.0.0.1:8000", false},
		{"http://127.0.0.1:8000/", "http://127.0.0.1:8000", false},
		{"http://127.0.0.1:8000/v1", "http://127.0.0.1:8000", false},
		{"http://127.0.0.1:8000/v1/", "http://127.0.0.1:8000", false},
		{"https://gpu1.lan/vllm/v1", "https://gpu1.lan/vllm", false},
		{"127.0.0.1:8000", "", true},
		{"ftp://host", "", true},
		{"http://", "", true},
		{"::", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			b, err := NewOpenAICompat(tt.in, "")
			if tt.err {
				if !errors.Is(err, ErrInvalid) {
					t.Fatalf("err = %v, want ErrInvalid", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := b.base.String(); got != tt.want {
				t.Errorf("base %q, want %q", got, tt.want)
			}
		})
	}
}

func TestOpenAICompatProxiesNonStream(t *testing.T) {
	up := newUpstream(t)
	b := newCompat(t, up.URL+"/v1", "backend-key")
	body := `{"model":"m","messages":[{"role":"user","content":"hi"}]}`
	rec := newFlushRecorder()
	b.ServeInference(rec, agentRequest(t, agentapi.PathChatCompletions, body), agentapi.PathChatCompletions, []byte(body))

	if rec.status != http.StatusOK {
		t.Fatalf("status %d: %s", rec.status, rec.body())
	}
	if want := `{"id":"c1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}`; rec.body() != want {
		t.Errorf("body changed in transit:\n got %s\nwant %s", rec.body(), want)
	}
	if rec.header.Get("X-Upstream") != "yes" || rec.header.Get("Content-Type") != "application/json" {
		t.Errorf("headers not passed through: %v", rec.header)
	}
	req, got := up.last()
	if string(got) != body {
		t.Errorf("upstream got body %s", got)
	}
	if req.URL.Path != "/v1/chat/completions" {
		t.Errorf("upstream path %q", req.URL.Path)
	}
	if a := req.Header.Get("Authorization"); a != "Bearer backend-key" {
		t.Errorf("upstream Authorization %q: the agent's token must be replaced by the backend key", a)
	}
	if req.Header.Get("X-Request-Id") != "req-1" {
		t.Errorf("request id not forwarded")
	}
}

func TestOpenAICompatDropsAgentTokenWithoutKey(t *testing.T) {
	up := newUpstream(t)
	b := newCompat(t, up.URL, "")
	body := `{"model":"m","messages":[]}`
	b.ServeInference(newFlushRecorder(), agentRequest(t, agentapi.PathChatCompletions, body), agentapi.PathChatCompletions, []byte(body))
	req, _ := up.last()
	if a := req.Header.Get("Authorization"); a != "" {
		t.Errorf("agent token leaked to backend: %q", a)
	}
}

// TestOpenAICompatStreamsEventByEvent proves there is no buffering: the upstream writes event
// i+1 only after the client has read event i through a real HTTP server. A buffering proxy
// would deadlock here, which the context turns into a failure.
func TestOpenAICompatStreamsEventByEvent(t *testing.T) {
	up := newUpstream(t)
	up.step = make(chan struct{}, 1)
	b := newCompat(t, up.URL, "")
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		b.ServeInference(w, r, agentapi.PathChatCompletions, body)
	}))
	defer front.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, front.URL, strings.NewReader(`{"model":"m","stream":true}`))
	up.step <- struct{}{} // let the first event out
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("Content-Type %q", ct)
	}
	rd := bufio.NewReader(resp.Body)
	for i := 0; i < 3; i++ {
		line, err := rd.ReadString('\n')
		if err != nil {
			t.Fatalf("event %d: %v (buffered by the proxy?)", i, err)
		}
		if want := fmt.Sprintf(`"content":"t%d"`, i); !strings.Contains(line, want) {
			t.Fatalf("event %d: %q", i, line)
		}
		if _, err := rd.ReadString('\n'); err != nil { // the blank line ending the event
			t.Fatal(err)
		}
		if i < 2 {
			select {
			case up.step <- struct{}{}:
			case <-ctx.Done():
				t.Fatal("upstream never asked for the next event")
			}
		}
	}
	rest, _ := io.ReadAll(rd)
	if string(rest) != "data: [DONE]\n\n" {
		t.Errorf("tail %q", rest)
	}
}

func TestOpenAICompatFlushesEachEvent(t *testing.T) {
	up := newUpstream(t)
	b := newCompat(t, up.URL, "")
	body := `{"model":"m","stream":true}`
	rec := newFlushRecorder()
	b.ServeInference(rec, agentRequest(t, agentapi.PathChatCompletions, body), agentapi.PathChatCompletions, []byte(body))
	data := sseData(t, rec.body())
	if len(data) != 4 || data[3] != "[DONE]" {
		t.Fatalf("events %q", data)
	}
	// Nothing may sit unflushed in the writer when the stream ends. (That each event goes out
	// before the next exists is TestOpenAICompatStreamsEventByEvent's proof.)
	if got := strings.Join(rec.flushed(), ""); got != rec.body() {
		t.Errorf("unflushed tail: flushed %q of %q", got, rec.body())
	}
}

func TestOpenAICompatPassesUpstreamErrors(t *testing.T) {
	up := newUpstream(t)
	b := newCompat(t, up.URL, "")
	body := `{"model":"missing","messages":[]}`
	rec := newFlushRecorder()
	b.ServeInference(rec, agentRequest(t, agentapi.PathChatCompletions, body), agentapi.PathChatCompletions, []byte(body))
	if rec.status != http.StatusNotFound {
		t.Fatalf("status %d", rec.status)
	}
	if want := "The model `missing` does not exist."; !strings.Contains(rec.body(), want) {
		t.Errorf("upstream error not passed as is: %s", rec.body())
	}
}

func TestOpenAICompatUpstreamDown(t *testing.T) {
	b := newCompat(t, closedURL(t), "")
	body := `{"model":"m","messages":[]}`
	rec := newFlushRecorder()
	b.ServeInference(rec, agentRequest(t, agentapi.PathChatCompletions, body), agentapi.PathChatCompletions, []byte(body))
	if rec.status != http.StatusBadGateway {
		t.Fatalf("status %d, want 502", rec.status)
	}
	msg, typ, code := openAIErr(t, []byte(rec.body()))
	if typ != "server_error" || code == nil || *code != "backend_unavailable" || !strings.Contains(msg, "connection refused") {
		t.Errorf("error %q %q %v", msg, typ, code)
	}
	if strings.Contains(msg, "127.0.0.1") {
		t.Errorf("error leaks the backend address: %q", msg)
	}
}

func TestOpenAICompatStreamBreakEndsWithErrorEvent(t *testing.T) {
	up := newUpstream(t)
	b := newCompat(t, up.URL, "")
	body := `{"model":"m","stream":true,"break":true}`
	rec := newFlushRecorder()
	b.ServeInference(rec, agentRequest(t, agentapi.PathChatCompletions, body), agentapi.PathChatCompletions, []byte(body))
	data := sseData(t, rec.body())
	if len(data) != 4 {
		t.Fatalf("events %q", data)
	}
	_, typ, code := openAIErr(t, []byte(data[3]))
	if typ != "server_error" || code == nil || *code != "backend_stream_error" {
		t.Errorf("last event %s", data[3])
	}
}

func TestServeInferenceUnknownEndpoint(t *testing.T) {
	up := newUpstream(t)
	b := newCompat(t, up.URL, "")
	rec := newFlushRecorder()
	b.ServeInference(rec, agentRequest(t, "/v1/other", "{}"), "/v1/other", []byte("{}"))
	if rec.status != http.StatusNotFound {
		t.Errorf("status %d", rec.status)
	}
	openAIErr(t, []byte(rec.body()))
	if r, _ := up.last(); r != nil {
		t.Error("an unknown endpoint reached the backend")
	}
}

func TestOpenAICompatModels(t *testing.T) {
	up := newUpstream(t)
	b := newCompat(t, up.URL, "k")
	ms, err := b.Models(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := []agentapi.Model{
		{Name: "meta-llama/Llama-3.1-8B-Instruct", Resident: true, OnDisk: true},
		{Name: "qwen2.5-7b", Resident: true, OnDisk: true},
	}
	if fmt.Sprint(ms) != fmt.Sprint(want) {
		t.Errorf("models %+v", ms)
	}
	if r, _ := up.last(); r.Header.Get("Authorization") != "Bearer k" {
		t.Errorf("models request without the key")
	}
}

func TestOpenAICompatModelsErrors(t *testing.T) {
	serve := func(status int, body string) string {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(status)
			io.WriteString(w, body)
		}))
		t.Cleanup(s.Close)
		return s.URL
	}
	tests := []struct {
		name    string
		url     string
		is      error
		message string
	}{
		{"down", closedURL(t), ErrUnavailable, "connection refused"},
		{"server error", serve(500, `{"error":{"message":"boom","type":"server_error"}}`), ErrUnavailable, "boom"},
		{"unauthorized", serve(401, `{"error":{"message":"bad key","type":"authentication_error"}}`), nil, "bad key"},
		{"not json", serve(200, `<html>`), nil, "decode model list"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := newCompat(t, tt.url, "").Models(context.Background())
			if err == nil {
				t.Fatal("no error")
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("err %v, want %v", err, tt.is)
			}
			if !strings.Contains(err.Error(), tt.message) {
				t.Errorf("err %q lacks %q", err, tt.message)
			}
		})
	}
}

func TestParseModelList(t *testing.T) {
	ids, err := parseModelList([]byte(`{"data":[{"id":"b"},{"id":""},{"id":"a"},{"id":"b"}]}`))
	if err != nil || strings.Join(ids, ",") != "a,b" {
		t.Errorf("ids %q err %v", ids, err)
	}
	if _, err := parseModelList([]byte(`{"data":{}}`)); err == nil {
		t.Error("accepted data as an object")
	}
}

func FuzzParseModelList(f *testing.F) {
	f.Add([]byte(`{"object":"list","data":[{"id":"a"}]}`))
	f.Add([]byte(`{"data":[{"id":"b"},{"id":"b"},{"id":""}]}`))
	f.Add([]byte(`{"data":null}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		ids, err := parseModelList(data)
		if err != nil {
			return
		}
		seen := map[string]bool{}
		for i, id := range ids {
			if id == "" || seen[id] || (i > 0 && ids[i-1] > id) {
				t.Fatalf("ids not sorted, unique, non-empty: %q", ids)
			}
			seen[id] = true
		}
	})
}

func TestErrorMessage(t *testing.T) {
	tests := map[string]string{
		`{"error":{"message":"m1","type":"x"}}`: "m1",
		`{"error":"m2"}`:                        "m2",
		`plain text`:                            "plain text",
		strings.Repeat("x", 600):                strings.Repeat("x", 512) + "…",
	}
	for in, want := range tests {
		if got := errorMessage([]byte(in)); got != want {
			t.Errorf("errorMessage(%.20q) = %.20q, want %.20q", in, got, want)
		}
	}
}

func TestHTTPStatus(t *testing.T) {
	tests := []struct {
		err  error
		want int
	}{
		{nil, 200},
		{fmt.Errorf("x: %w", ErrModelNotFound), 404},
		{fmt.Errorf("x: %w", ErrBlobNotFound), 404},
		{fmt.Errorf("x: %w", ErrInvalid), 400},
		{fmt.Errorf("x: %w", ErrDigestMismatch), 422},
		{fmt.Errorf("x: %w", ErrUnsupported), 501},
		{fmt.Errorf("x: %w", ErrUnavailable), 502},
		{fmt.Errorf("x: %w", context.DeadlineExceeded), 504},
		{errors.New("other"), 500},
	}
	for _, tt := range tests {
		if got := HTTPStatus(tt.err); got != tt.want {
			t.Errorf("HTTPStatus(%v) = %d, want %d", tt.err, got, tt.want)
		}
	}
}
