package gateway

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/herd-llm/herd/nodeagent/agentapi"
)

// benchAgentBody is a typical non-streamed chat completion.
var benchAgentBody = []byte(`{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"llama3.1:8b","choices":[{"index":0,"message":{"role":"assistant","content":"KV caching keeps attention keys and values."},"finish_reason":"stop"}],"usage":{"prompt_tokens":25,"completion_tokens":9,"total_tokens":34}}`)

// benchAgentStream is a short streamed chat completion.
var benchAgentStream = func() []byte {
	var b bytes.Buffer
	for i, w := range wireWords {
		b.WriteString("data: " + wireChunk(testModel, i, w) + "\n\n")
	}
	b.WriteString("data: [DONE]\n\n")
	return b.Bytes()
}()

// newBenchAgent answers every request with canned bytes, allocating as little as net/http lets it.
func newBenchAgent(b *testing.B) *httptest.Server {
	ct, sse := []string{"application/json"}, []string{"text/event-stream"}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		if r.Header.Get("X-Bench-Stream") != "" {
			w.Header()["Content-Type"] = sse
			_, _ = w.Write(benchAgentStream)
			return
		}
		w.Header()["Content-Type"] = ct
		_, _ = w.Write(benchAgentBody)
	}))
	b.Cleanup(srv.Close)
	return srv
}

// streamMarker makes the bench agent stream; the gateway forwards no client header, so the
// benchmark sets it on the agent request through a wrapping transport.
type streamMarker struct{ rt http.RoundTripper }

func (m streamMarker) RoundTrip(r *http.Request) (*http.Response, error) {
	r.Header["X-Bench-Stream"] = hdrNo
	return m.rt.RoundTrip(r)
}

// BenchmarkProxyChat runs the whole gateway handler (auth, body scan, model resolution, Pick,
// admission, proxy) for a chat request against an in-process agent. "agent-direct" is the same
// request sent straight to the agent with the same transport: the difference is what the gateway
// adds. Allocations of the in-process agent count in both.
func BenchmarkProxyChat(b *testing.B) {
	agent := newBenchAgent(b)
	body := benchChatBody
	for _, bc := range []struct {
		name   string
		stream bool
	}{{"json", false}, {"sse", true}} {
		b.Run(bc.name, func(b *testing.B) {
			var rt http.RoundTripper = newAgentTransport()
			if bc.stream {
				rt = streamMarker{rt}
			}
			h := benchGateway(b, agent.URL, agentapi.BackendOpenAI, WithTransport(rt))
			req := httptest.NewRequest(http.MethodPost, "/v1/chat/completions", nil)
			req.Header.Set("Authorization", "Bearer "+testAPIKey)
			req.Header.Set("Content-Type", "application/json")
			benchServe(b, h, req, body)
		})
	}
	b.Run("agent-direct", func(b *testing.B) {
		rt := newAgentTransport()
		u, _ := url.Parse(agent.URL + agentapi.PathChatCompletions)
		b.ReportAllocs()
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			req := &http.Request{Method: http.MethodPost, URL: u, Host: u.Host, Header: http.Header{"Content-Type": hdrJSON},
				Body: io.NopCloser(bytes.NewReader(body)), ContentLength: int64(len(body))}
			resp, err := rt.RoundTrip(req)
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
}

// benchGateway is a gateway whose one node "a", at agentURL with backend, serves testModel;
// opts add to a quiet logger.
func benchGateway(b *testing.B, agentURL, backend string, opts ...Option) http.Handler {
	b.Helper()
	cfg := DefaultConfig()
	cfg.DataDir, cfg.ClusterToken, cfg.APIKeys = b.TempDir(), testClusterToken, []string{testAPIKey}
	s, err := New(cfg, append([]Option{WithLogger(slog.New(slog.DiscardHandler))}, opts...)...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	s.registry.Observe(agentapi.Heartbeat{NodeID: "a", Address: agentURL, Backend: backend, Slots: 64,
		IntervalMS: int64(time.Hour / time.Millisecond), Models: []agentapi.Model{{Name: testModel, Resident: true, OnDisk: true}}})
	return s.Handler()
}

// benchServe serves req with body on h for the benchmark's iterations, each answered 200,
// reporting allocations and bytes.
func benchServe(b *testing.B, h http.Handler, req *http.Request, body []byte) {
	b.Helper()
	w := &benchWriter{h: http.Header{}}
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		req.Body = io.NopCloser(bytes.NewReader(body))
		req.ContentLength = int64(len(body))
		clear(w.h)
		w.status = 0
		h.ServeHTTP(w, req)
		if w.status != 200 {
			b.Fatalf("status %d", w.status)
		}
	}
}

// benchWriter is a ResponseWriter that discards the body and allocates nothing.
type benchWriter struct {
	h      http.Header
	status int
}

func (w *benchWriter) Header() http.Header { return w.h }
func (w *benchWriter) WriteHeader(s int) {
	if w.status == 0 {
		w.status = s
	}
}
func (w *benchWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = 200
	}
	return len(p), nil
}
func (w *benchWriter) Flush() {}
