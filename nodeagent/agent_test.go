package nodeagent

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/herd-llm/herd/internal/logbuf"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herd-llm/herd/nodeagent/agentapi"

	"github.com/herd-llm/herd/internal/fakeclock"
)

const testToken = "cluster-secret"

type testAgent struct {
	*Agent
	srv    *httptest.Server
	client *agentapi.Client
	logs   *logbuf.Buffer
}

// newTestAgent serves an agent over httptest on 127.0.0.1.
func newTestAgent(t *testing.T, b Backend, ts TelemetrySource, mod func(*Config), opts ...Option) *testAgent {
	t.Helper()
	cfg := Config{NodeID: "node-a", ClusterToken: testToken, Listen: "127.0.0.1:0"}
	if mod != nil {
		mod(&cfg)
	}
	logs := &logbuf.Buffer{}
	opts = append([]Option{WithLogger(slog.New(slog.NewTextHandler(logs, nil)))}, opts...)
	a, err := New(cfg, b, ts, opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	srv := httptest.NewServer(a.Handler())
	t.Cleanup(srv.Close)
	return &testAgent{Agent: a, srv: srv, client: agentapi.NewClient(srv.URL, testToken, srv.Client()), logs: logs}
}

func (ta *testAgent) post(t *testing.T, path, token, body string) *http.Response {
	t.Helper()
	return ta.postAs(t, path, token, body, nil)
}

// postAs posts body with the extra headers h, as the gateway sends its own (the model names).
func (ta *testAgent) postAs(t *testing.T, path, token, body string, h map[string]string) *http.Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ta.srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range h {
		req.Header.Set(k, v)
	}
	resp, err := ta.srv.Client().Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// wantOpenAIError checks resp is status with an OpenAI-shaped error of type typ.
func wantOpenAIError(t *testing.T, resp *http.Response, status int, typ string) agentapi.ErrorDetail {
	t.Helper()
	if resp.StatusCode != status {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("status %d, want %d: %s", resp.StatusCode, status, b)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	var eb agentapi.ErrorBody
	if err := json.NewDecoder(resp.Body).Decode(&eb); err != nil {
		t.Fatalf("error body: %v", err)
	}
	if eb.Error.Message == "" || eb.Error.Type != typ {
		t.Errorf("error = %+v, want type %q and a message", eb.Error, typ)
	}
	return eb.Error
}

// gatewayNames are the model headers the gateway sends for a client asking for "llama3" on a
// node that lists it as "llama3:latest".
var gatewayNames = map[string]string{agentapi.HeaderModel: "llama3:latest", agentapi.HeaderClientModel: "llama3"}

func sseChunk(content string) string {
	return `data: {"object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"` + content + `"}}]}` + "\n\n"
}

func TestAuth(t *testing.T) {
	ta := newTestAgent(t, &fakeBackend{}, nil, nil)
	for _, tc := range []struct {
		name   string
		header string
		status int
	}{
		{"none", "", http.StatusUnauthorized},
		{"wrong token", "Bearer nope", http.StatusUnauthorized},
		{"token prefix", "Bearer " + testToken[:5], http.StatusUnauthorized},
		{"basic scheme", "Basic " + testToken, http.StatusUnauthorized},
		{"right token", "Bearer " + testToken, http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, path := range []string{agentapi.PathInfo, agentapi.PathChatCompletions} {
				method := http.MethodGet
				if path == agentapi.PathChatCompletions {
					method = http.MethodPost
				}
				req, _ := http.NewRequest(method, ta.srv.URL+path, strings.NewReader(`{"model":"m"}`))
				if tc.header != "" {
					req.Header.Set("Authorization", tc.header)
				}
				resp, err := ta.srv.Client().Do(req)
				if err != nil {
					t.Fatal(err)
				}
				if tc.status == http.StatusUnauthorized {
					wantOpenAIError(t, resp, http.StatusUnauthorized, errAuthentication)
				} else if resp.StatusCode != tc.status {
					t.Errorf("%s: status %d, want %d", path, resp.StatusCode, tc.status)
				}
				if resp.Header.Get(agentapi.HeaderNode) != "node-a" {
					t.Errorf("%s: no %s header", path, agentapi.HeaderNode)
				}
				resp.Body.Close()
			}
		})
	}
	// Liveness needs no token (probes carry no secret) and tells nothing but the node's ID; a
	// POST to it is still an authenticated route that does not exist.
	for _, tc := range []struct {
		method string
		status int
	}{{http.MethodGet, http.StatusOK}, {http.MethodHead, http.StatusOK}, {http.MethodPost, http.StatusUnauthorized}} {
		req, _ := http.NewRequest(tc.method, ta.srv.URL+agentapi.PathHealthz, nil)
		resp, err := ta.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status || (tc.method == http.MethodGet && string(body) != `{"status":"ok","node":"node-a"}`) {
			t.Errorf("%s %s: %d %s", tc.method, agentapi.PathHealthz, resp.StatusCode, body)
		}
	}
	// The client surfaces a 401 as a typed error.
	_, err := agentapi.NewClient(ta.srv.URL, "wrong", nil).Info(context.Background())
	var ae *agentapi.APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusUnauthorized || !strings.Contains(ae.Message, "cluster token") {
		t.Errorf("Info with a wrong token: %v", err)
	}
}

func TestInferenceBadRequests(t *testing.T) {
	b := &fakeBackend{}
	ta := newTestAgent(t, b, nil, func(c *Config) { c.MaxBodyBytes = 64 })
	big := `{"model":"m","messages":[{"role":"user","content":"` + strings.Repeat("x", 100) + `"}]}`
	wantOpenAIError(t, ta.post(t, agentapi.PathChatCompletions, testToken, big), http.StatusRequestEntityTooLarge, errInvalidRequest)
	d := wantOpenAIError(t, ta.post(t, agentapi.PathChatCompletions, testToken, `{"messages":[]}`), http.StatusBadRequest, errInvalidRequest)
	if d.Param == nil || *d.Param != "model" {
		t.Errorf("missing model: param %v", d.Param)
	}
	wantOpenAIError(t, ta.post(t, agentapi.PathEmbeddings, testToken, `not json`), http.StatusBadRequest, errInvalidRequest)
	if n := b.servedCount(); n != 0 {
		t.Errorf("backend served %d bad requests", n)
	}
	wantOpenAIError(t, ta.post(t, "/v1/nothing", testToken, `{}`), http.StatusNotFound, errNotFound)
	if ta.Heartbeat(context.Background()).InFlight != 0 {
		t.Error("rejected requests left in-flight counts")
	}
}

func TestInferencePassesBodyAndEndpoint(t *testing.T) {
	b := &fakeBackend{sim: true, kind: agentapi.BackendSim}
	body := `{"messages":[{"role":"user","content":"the \"model\" is"}],"model":"qwen2:0.5b","stream":false}`
	var gotEndpoint, gotBody, gotReqBody string
	b.setServe(func(w http.ResponseWriter, r *http.Request, endpoint string, bb []byte) {
		rb, _ := io.ReadAll(r.Body)
		b.locked(func() { gotEndpoint, gotBody, gotReqBody = endpoint, string(bb), string(rb) })
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusTeapot)
		io.WriteString(w, `{"ok":true}`)
	})
	ta := newTestAgent(t, b, nil, nil)
	for _, ep := range []string{agentapi.PathChatCompletions, agentapi.PathCompletions, agentapi.PathEmbeddings} {
		resp := ta.post(t, ep, testToken, body)
		out, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusTeapot || string(out) != `{"ok":true}` {
			t.Errorf("%s: %d %s", ep, resp.StatusCode, out)
		}
		b.locked(func() {
			if gotEndpoint != ep || gotBody != body || gotReqBody != body {
				t.Errorf("%s: backend got endpoint %q body %q request body %q", ep, gotEndpoint, gotBody, gotReqBody)
			}
		})
		if resp.Header.Get(agentapi.HeaderSimulated) != "true" {
			t.Errorf("%s: simulated response not labelled", ep)
		}
	}
}

func TestStreamingIsChunkByChunk(t *testing.T) {
	b := &fakeBackend{}
	release := make(chan struct{})
	finished := make(chan struct{})
	b.setServe(func(w http.ResponseWriter, r *http.Request, _ string, _ []byte) {
		defer close(finished)
		f, ok := w.(http.Flusher)
		if !ok {
			t.Error("backend's ResponseWriter is not an http.Flusher")
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, sseChunk("Hel"))
		f.Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, sseChunk("lo"))
		io.WriteString(w, "data: [DONE]\n\n")
		f.Flush()
	})
	ta := newTestAgent(t, b, nil, nil)
	resp := ta.post(t, agentapi.PathChatCompletions, testToken, `{"model":"m","stream":true}`)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("status %d content-type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	br := bufio.NewReader(resp.Body)
	// The backend is still blocked: this line can only arrive if the agent flushed it through.
	first, err := br.ReadString('\n')
	if err != nil {
		t.Fatalf("reading the first chunk before the backend finished: %v", err)
	}
	if first != strings.SplitAfter(sseChunk("Hel"), "\n")[0] {
		t.Errorf("first line %q", first)
	}
	select {
	case <-finished:
		t.Fatal("backend finished before it was released")
	default:
	}
	close(release)
	rest, err := io.ReadAll(br)
	if err != nil {
		t.Fatal(err)
	}
	if want := "\n" + sseChunk("lo") + "data: [DONE]\n\n"; string(rest) != want {
		t.Errorf("rest %q, want %q", rest, want)
	}
}

func TestInFlightCounting(t *testing.T) {
	b := &fakeBackend{models: []agentapi.Model{{Name: "llama3:latest", Resident: true}, {Name: "other", Resident: true}}}
	entered := make(chan struct{}, 8)
	release := make(chan struct{})
	b.setServe(func(w http.ResponseWriter, r *http.Request, _ string, _ []byte) {
		entered <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
		}
		io.WriteString(w, `{}`)
	})
	ta := newTestAgent(t, b, nil, func(c *Config) { c.Slots = 2 })
	ta.Refresh(context.Background())

	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			resp := ta.postAs(t, agentapi.PathChatCompletions, testToken, `{"model":"llama3","stream":false}`, gatewayNames)
			io.Copy(io.Discard, resp.Body)
		})
	}
	for range 3 {
		select {
		case <-entered:
		case <-time.After(10 * time.Second):
			t.Fatal("requests did not reach the backend")
		}
	}
	hb := ta.Heartbeat(context.Background())
	if hb.InFlight != 3 || hb.Queued != 1 || hb.Slots != 2 {
		t.Errorf("in flight %d queued %d slots %d, want 3 1 2", hb.InFlight, hb.Queued, hb.Slots)
	}
	if hb.Models[0].InFlight != 3 || hb.Models[1].InFlight != 0 {
		t.Errorf("per-model in flight: %+v", hb.Models)
	}
	// The same numbers are served at PathInfo.
	info, err := ta.client.Info(context.Background())
	if err != nil || info.InFlight != 3 || info.Queued != 1 {
		t.Errorf("Info: %+v %v", info, err)
	}
	close(release)
	wg.Wait()
	hb = ta.Heartbeat(context.Background())
	if hb.InFlight != 0 || hb.Queued != 0 || hb.Models[0].InFlight != 0 {
		t.Errorf("after completion: in flight %d queued %d model %d", hb.InFlight, hb.Queued, hb.Models[0].InFlight)
	}
	if hb.Models[0].LastUsed.IsZero() {
		t.Error("LastUsed not recorded")
	}
}

// loadBackend reports its own queue.
type loadBackend struct{ *fakeBackend }

func (loadBackend) InFlight() (int, int) { return 7, 5 }

func TestSlotsAndLoadFromBackend(t *testing.T) {
	ta := newTestAgent(t, slotsBackend{&fakeBackend{slots: 8}}, nil, nil)
	if got := ta.Heartbeat(context.Background()).Slots; got != 8 {
		t.Errorf("slots from backend = %d, want 8", got)
	}
	ta = newTestAgent(t, slotsBackend{&fakeBackend{slots: 8}}, nil, func(c *Config) { c.Slots = 3 })
	if got := ta.Heartbeat(context.Background()).Slots; got != 3 {
		t.Errorf("configured slots = %d, want 3", got)
	}
	ta = newTestAgent(t, &fakeBackend{}, nil, nil)
	if got := ta.Heartbeat(context.Background()).Slots; got != DefaultSlots {
		t.Errorf("default slots = %d", got)
	}
	ta = newTestAgent(t, loadBackend{&fakeBackend{}}, nil, nil)
	if hb := ta.Heartbeat(context.Background()); hb.InFlight != 7 || hb.Queued != 5 {
		t.Errorf("backend's own load: %d %d", hb.InFlight, hb.Queued)
	}
}

// streamServe returns a backend that streams: after ttft, one chunk per token every gap, then
// (withUsage) a usage chunk, then [DONE].
func streamServe(clock *fakeclock.Clock, tokens int, ttft, gap time.Duration, withUsage bool, promptTokens int) func(http.ResponseWriter, *http.Request, string, []byte) {
	return func(w http.ResponseWriter, _ *http.Request, _ string, _ []byte) {
		f := w.(http.Flusher)
		w.Header().Set("Content-Type", "text/event-stream")
		clock.Advance(ttft)
		// A role-only opening chunk, as vLLM sends: not a token.
		io.WriteString(w, `data: {"choices":[{"delta":{"role":"assistant","content":""}}]}`+"\n\n")
		f.Flush()
		for i := range tokens {
			if i > 0 {
				clock.Advance(gap)
			}
			io.WriteString(w, sseChunk(fmt.Sprintf("t%d", i)))
			f.Flush()
		}
		if withUsage {
			fmt.Fprintf(w, `data: {"choices":[],"usage":{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}}`+"\n\n", promptTokens, tokens, promptTokens+tokens)
		}
		io.WriteString(w, "data: [DONE]\n\n")
		f.Flush()
	}
}

func TestTokensPerSecondLearning(t *testing.T) {
	const model = "llama3:latest"
	near := func(a, b float64) bool { return math.Abs(a-b) < 1e-6 }
	for _, tc := range []struct {
		name        string
		reported    float64 // the backend's own figure
		endpoint    string
		serve       func(*fakeclock.Clock) func(http.ResponseWriter, *http.Request, string, []byte)
		wantTPS     float64
		wantPrefill float64
	}{
		{
			// 10 tokens, 9 gaps of 10 ms after the first: 100 tokens/s; 40 prompt tokens in 200 ms.
			name: "stream with usage", endpoint: agentapi.PathChatCompletions,
			serve: func(c *fakeclock.Clock) func(http.ResponseWriter, *http.Request, string, []byte) {
				return streamServe(c, 10, 200*time.Millisecond, 10*time.Millisecond, true, 40)
			},
			wantTPS: 100, wantPrefill: 200,
		},
		{
			name: "stream without usage counts chunks", endpoint: agentapi.PathChatCompletions,
			serve: func(c *fakeclock.Clock) func(http.ResponseWriter, *http.Request, string, []byte) {
				return streamServe(c, 21, 50*time.Millisecond, 5*time.Millisecond, false, 0)
			},
			wantTPS: 200,
		},
		{
			name: "non-stream with usage", endpoint: agentapi.PathCompletions,
			serve: func(c *fakeclock.Clock) func(http.ResponseWriter, *http.Request, string, []byte) {
				return func(w http.ResponseWriter, _ *http.Request, _ string, _ []byte) {
					c.Advance(500 * time.Millisecond)
					w.Header().Set("Content-Type", "application/json")
					io.WriteString(w, `{"choices":[{"text":"…"}],"usage": {"prompt_tokens": 9, "completion_tokens": 50, "total_tokens": 59}}`)
				}
			},
			wantTPS: 100,
		},
		{
			name: "error status teaches nothing", endpoint: agentapi.PathChatCompletions,
			serve: func(c *fakeclock.Clock) func(http.ResponseWriter, *http.Request, string, []byte) {
				return func(w http.ResponseWriter, _ *http.Request, _ string, _ []byte) {
					c.Advance(time.Second)
					w.WriteHeader(http.StatusInternalServerError)
					io.WriteString(w, `{"error":{"message":"boom","usage":{"completion_tokens":5}}}`)
				}
			},
		},
		{
			name: "embeddings have no completion tokens", endpoint: agentapi.PathEmbeddings,
			serve: func(c *fakeclock.Clock) func(http.ResponseWriter, *http.Request, string, []byte) {
				return func(w http.ResponseWriter, _ *http.Request, _ string, _ []byte) {
					c.Advance(time.Second)
					io.WriteString(w, `{"data":[{"embedding":[0.1,0.2]}],"usage":{"prompt_tokens":5,"total_tokens":5}}`)
				}
			},
		},
		{
			name: "backend's own figure wins", endpoint: agentapi.PathChatCompletions, reported: 42,
			serve: func(c *fakeclock.Clock) func(http.ResponseWriter, *http.Request, string, []byte) {
				return streamServe(c, 10, 200*time.Millisecond, 10*time.Millisecond, true, 40)
			},
			wantTPS: 42, wantPrefill: 200,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := newFakeClock()
			b := &fakeBackend{models: []agentapi.Model{{Name: model, Resident: true, TokensPerSecond: tc.reported}}}
			b.setServe(tc.serve(clock))
			ta := newTestAgent(t, b, nil, nil, WithClock(clock))
			ta.Refresh(context.Background())
			resp := ta.postAs(t, tc.endpoint, testToken, `{"model":"llama3","stream":true}`, gatewayNames)
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			m := ta.Heartbeat(context.Background()).Models[0]
			if !near(m.TokensPerSecond, tc.wantTPS) || !near(m.PrefillTokensPerSecond, tc.wantPrefill) {
				t.Errorf("tokens/s %v prefill %v, want %v %v", m.TokensPerSecond, m.PrefillTokensPerSecond, tc.wantTPS, tc.wantPrefill)
			}
			// One request alone ran at concurrency 1; the figure goes with the agent's own speed
			// only, not with a speed the backend reported.
			wantConc := 0.0
			if tc.wantTPS > 0 && tc.reported == 0 {
				wantConc = 1
			}
			if m.Concurrency != wantConc {
				t.Errorf("concurrency %v, want %v", m.Concurrency, wantConc)
			}
		})
	}
}

func TestTokensPerSecondEWMA(t *testing.T) {
	clock := newFakeClock()
	b := &fakeBackend{models: []agentapi.Model{{Name: "m"}}}
	ta := newTestAgent(t, b, nil, nil, WithClock(clock))
	ta.Refresh(context.Background())
	for _, gap := range []time.Duration{10 * time.Millisecond, 5 * time.Millisecond} { // 100, then 200 tokens/s
		b.setServe(streamServe(clock, 11, 0, gap, true, 1))
		resp := ta.post(t, agentapi.PathChatCompletions, testToken, `{"model":"m","stream":true}`)
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	if got, want := ta.Heartbeat(context.Background()).Models[0].TokensPerSecond, 100+ewmaAlpha*(200-100); math.Abs(got-want) > 1e-6 {
		t.Errorf("EWMA tokens/s %v, want %v", got, want)
	}
}

func TestHeartbeatState(t *testing.T) {
	gpus := []agentapi.GPU{{Index: 0, Name: "T4", Healthy: true}, {Index: 1, Name: "T4", Healthy: false, HealthReason: "xid 79"}}
	src := &fakeSource{gpus: gpus}
	b := &fakeBackend{models: []agentapi.Model{{Name: "m", Resident: true}}}
	clock := newFakeClock()
	ta := newTestAgent(t, b, src, func(c *Config) {
		c.Advertise = "http://10.0.0.5:8090/"
		c.Version = "1.2.3"
		c.HeartbeatInterval = 2 * time.Second
	}, WithClock(clock))
	ta.Refresh(context.Background())
	clock.Advance(time.Minute)
	hb := ta.Heartbeat(context.Background())
	if hb.NodeID != "node-a" || hb.Address != "http://10.0.0.5:8090" || hb.Backend != agentapi.BackendOllama ||
		hb.Version != "1.2.3" || hb.IntervalMS != 2000 || hb.Simulated || hb.Hostname == "" {
		t.Errorf("node facts: %+v", hb)
	}
	if !hb.SentAt.Equal(clock.Now()) || !hb.StartedAt.Equal(clock.Now().Add(-time.Minute)) {
		t.Errorf("sent %v started %v", hb.SentAt, hb.StartedAt)
	}
	if len(hb.GPUs) != 2 || hb.GPUs[1].HealthReason != "xid 79" || hb.TelemetryError != "" {
		t.Errorf("GPUs %+v telemetry error %q", hb.GPUs, hb.TelemetryError)
	}
	if len(hb.Models) != 1 || hb.BackendError != "" {
		t.Errorf("models %+v backend error %q", hb.Models, hb.BackendError)
	}

	// No GPUs: the source's reason. A failing source: its error. A failing backend: no models.
	src.mu.Lock()
	src.gpus, src.reason = nil, "no NVIDIA driver found"
	src.mu.Unlock()
	b.locked(func() { b.modelsErr = errors.New("connection refused") })
	ta.Refresh(context.Background())
	hb = ta.Heartbeat(context.Background())
	if hb.GPUs == nil || len(hb.GPUs) != 0 || hb.TelemetryError != "no NVIDIA driver found" {
		t.Errorf("GPUs %v error %q", hb.GPUs, hb.TelemetryError)
	}
	if hb.Models == nil || len(hb.Models) != 0 || hb.BackendError != "connection refused" {
		t.Errorf("models %v backend error %q", hb.Models, hb.BackendError)
	}
	src.mu.Lock()
	src.err = errors.New("nvml device count: unknown error")
	src.mu.Unlock()
	ta.Refresh(context.Background())
	if hb := ta.Heartbeat(context.Background()); hb.TelemetryError != "nvml device count: unknown error" {
		t.Errorf("telemetry error %q", hb.TelemetryError)
	}
	// Problems are logged when they start, not on every sample.
	ta.Refresh(context.Background())
	ta.Refresh(context.Background())
	if n := strings.Count(ta.logs.String(), "backend cannot list models"); n != 1 {
		t.Errorf("backend failure logged %d times, want 1", n)
	}
	// No source at all says so.
	nb := newTestAgent(t, &fakeBackend{}, nil, nil)
	nb.Refresh(context.Background())
	if hb := nb.Heartbeat(context.Background()); hb.TelemetryError == "" || hb.GPUs == nil {
		t.Errorf("nil source: %+v", hb)
	}
}

// gatewayRecorder is an httptest gateway that records heartbeats.
type gatewayRecorder struct {
	srv  *httptest.Server
	beat chan agentapi.Heartbeat
	hits atomic.Int32
}

func newGateway(t *testing.T, status int, draining bool) *gatewayRecorder {
	g := &gatewayRecorder{beat: make(chan agentapi.Heartbeat, 64)}
	g.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.hits.Add(1)
		if r.Method != http.MethodPost || r.URL.Path != agentapi.PathHeartbeat {
			http.Error(w, "wrong route", http.StatusNotFound)
			return
		}
		if r.Header.Get("Authorization") != "Bearer "+testToken {
			http.Error(w, "bad token", http.StatusUnauthorized)
			return
		}
		if status != http.StatusOK {
			http.Error(w, `{"error":{"message":"registry down","type":"server_error"}}`, status)
			return
		}
		var hb agentapi.Heartbeat
		if err := json.NewDecoder(r.Body).Decode(&hb); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		select {
		case g.beat <- hb:
		default:
		}
		json.NewEncoder(w).Encode(agentapi.HeartbeatReply{Draining: draining})
	}))
	t.Cleanup(g.srv.Close)
	return g
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestRunSendsHeartbeats(t *testing.T) {
	good := newGateway(t, http.StatusOK, true)
	bad := newGateway(t, http.StatusServiceUnavailable, false)
	src := &fakeSource{gpus: []agentapi.GPU{{Index: 0, Name: "A40", Healthy: true}}}
	b := &fakeBackend{models: []agentapi.Model{{Name: "m", Resident: true}}}
	logs := &logbuf.Buffer{}
	a, err := New(Config{
		NodeID: "node-a", ClusterToken: testToken, Listen: "127.0.0.1:0",
		GatewayURLs:       []string{good.srv.URL, bad.srv.URL},
		HeartbeatInterval: 10 * time.Millisecond, TelemetryInterval: 10 * time.Millisecond,
	}, b, src, WithLogger(slog.New(slog.NewTextHandler(logs, nil))))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx, ln) }()

	wantAddr := "http://" + ln.Addr().String()
	for i := range 3 {
		select {
		case hb := <-good.beat:
			if hb.NodeID != "node-a" || hb.Address != wantAddr || hb.IntervalMS != 10 || hb.Slots != DefaultSlots {
				t.Errorf("heartbeat %d facts: %+v", i, hb)
			}
			// Sampled before the first beat, so even the first carries GPUs and models.
			if len(hb.GPUs) != 1 || hb.GPUs[0].Name != "A40" || len(hb.Models) != 1 {
				t.Errorf("heartbeat %d: GPUs %+v models %+v", i, hb.GPUs, hb.Models)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("heartbeat %d never arrived", i)
		}
	}
	// The agent is reachable at its advertised address and echoes the gateway's drain flag.
	c := agentapi.NewClient(wantAddr, testToken, nil)
	waitFor(t, "draining in info", func() bool {
		info, err := c.Info(ctx)
		return err == nil && info.Draining
	})
	// The failing gateway keeps being tried, and its failure is logged once.
	waitFor(t, "retries to the failing gateway", func() bool { return bad.hits.Load() >= 5 })
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	out := logs.String()
	if n := strings.Count(out, "heartbeat failed"); n != 1 {
		t.Errorf("heartbeat failure logged %d times over %d failures, want 1:\n%s", n, bad.hits.Load(), out)
	}
	if n := strings.Count(out, "heartbeat accepted"); n != 1 {
		t.Errorf("heartbeat success logged %d times, want 1", n)
	}
	if !strings.Contains(out, "registry down") {
		t.Errorf("failure log lacks the gateway's message:\n%s", out)
	}
	// The listener is closed: Run shut the server down.
	if _, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		t.Error("agent still accepting connections after Run returned")
	}
}

func TestRunListenError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	a, err := New(Config{NodeID: "n", ClusterToken: testToken, Listen: ln.Addr().String()}, &fakeBackend{}, nil,
		WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.Run(ctx, nil); err == nil || ctx.Err() != nil {
		t.Fatalf("Run on a taken port: %v", err)
	}
}

func TestModelManagementRoutes(t *testing.T) {
	mb := &managerBackend{fakeBackend: &fakeBackend{}}
	ta := newTestAgent(t, mb, nil, nil)
	ctx := context.Background()

	var lines []agentapi.Progress
	if err := ta.client.Pull(ctx, agentapi.PullRequest{Model: "qwen2:0.5b"}, func(p agentapi.Progress) { lines = append(lines, p) }); err != nil {
		t.Fatalf("Pull: %v", err)
	}
	if len(lines) != 4 || lines[2].Completed != 3 || lines[3].Status != "success" {
		t.Errorf("pull progress %+v", lines)
	}
	for _, l := range lines {
		if l.Node != "node-a" {
			t.Errorf("progress line without node: %+v", l)
		}
	}
	// The pulled model is in the next heartbeat without waiting for the sampler.
	if hb := ta.Heartbeat(ctx); len(hb.Models) != 1 || hb.Models[0].Name != "qwen2:0.5b" {
		t.Errorf("models after pull: %+v", hb.Models)
	}
	if err := ta.client.Load(ctx, agentapi.ModelRequest{Model: "qwen2:0.5b", KeepAlive: "10m"}); err != nil {
		t.Fatalf("Load: %v", err)
	}
	if hb := ta.Heartbeat(ctx); !hb.Models[0].Resident {
		t.Errorf("model not resident after load: %+v", hb.Models)
	}
	if err := ta.client.Unload(ctx, agentapi.ModelRequest{Model: "qwen2:0.5b"}); err != nil {
		t.Fatalf("Unload: %v", err)
	}
	if err := ta.client.Delete(ctx, agentapi.ModelRequest{Model: "qwen2:0.5b"}); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	want := []string{"pull qwen2:0.5b", "load qwen2:0.5b 10m", "unload qwen2:0.5b", "delete qwen2:0.5b"}
	mb.locked(func() {
		if fmt.Sprint(mb.calls) != fmt.Sprint(want) {
			t.Errorf("backend calls %q, want %q", mb.calls, want)
		}
	})

	// Errors: a backend status passes through; a plain error is 502; a failed pull is a final
	// error line.
	mb.locked(func() { mb.loadErr = &statusErr{status: http.StatusNotFound, msg: "model nope not found"} })
	err := ta.client.Load(ctx, agentapi.ModelRequest{Model: "nope"})
	var ae *agentapi.APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusNotFound || ae.Message != "model nope not found" {
		t.Errorf("Load of an unknown model: %v", err)
	}
	mb.locked(func() { mb.loadErr = errors.New("out of memory") })
	if err := ta.client.Load(ctx, agentapi.ModelRequest{Model: "big"}); !errors.As(err, &ae) || ae.Status != http.StatusBadGateway {
		t.Errorf("Load failing in the backend: %v", err)
	}
	if err := ta.client.Load(ctx, agentapi.ModelRequest{}); !errors.As(err, &ae) || ae.Status != http.StatusBadRequest {
		t.Errorf("Load without a model: %v", err)
	}
	mb.locked(func() { mb.pullErr = errors.New("registry unreachable") })
	lines = nil
	err = ta.client.Pull(ctx, agentapi.PullRequest{Model: "x"}, func(p agentapi.Progress) { lines = append(lines, p) })
	var pe *agentapi.ProgressError
	if !errors.As(err, &pe) || pe.Message != "registry unreachable" || lines[len(lines)-1].Status != "error" {
		t.Errorf("failed pull: %v, lines %+v", err, lines)
	}
}

func TestMissingCapabilitiesAre501(t *testing.T) {
	ta := newTestAgent(t, &fakeBackend{kind: agentapi.BackendOpenAI}, nil, nil)
	ctx := context.Background()
	digest := digestOf([]byte("x"))
	calls := map[string]func() error{
		"pull":   func() error { return ta.client.Pull(ctx, agentapi.PullRequest{Model: "m"}, nil) },
		"load":   func() error { return ta.client.Load(ctx, agentapi.ModelRequest{Model: "m"}) },
		"unload": func() error { return ta.client.Unload(ctx, agentapi.ModelRequest{Model: "m"}) },
		"delete": func() error { return ta.client.Delete(ctx, agentapi.ModelRequest{Model: "m"}) },
		"export": func() error { _, err := ta.client.Export(ctx, "m"); return err },
		"blob": func() error {
			rc, err := ta.client.Blob(ctx, digest)
			if err == nil {
				rc.Close()
			}
			return err
		},
		"copy": func() error {
			return ta.client.Copy(ctx, agentapi.CopyRequest{Model: "m", From: "http://127.0.0.1:1"}, nil)
		},
		"fault": func() error { return ta.client.InjectFault(ctx, 0, "ecc") },
	}
	for name, call := range calls {
		err := call()
		var ae *agentapi.APIError
		if !errors.As(err, &ae) || ae.Status != http.StatusNotImplemented || !strings.Contains(ae.Message, "openai backend") {
			t.Errorf("%s on a plain backend: %v", name, err)
		}
	}
}

func TestCopyBetweenAgents(t *testing.T) {
	src := newBlobStore()
	weights := bytes.Repeat([]byte("weights!"), 40_000)
	m := src.addModel("tiny", map[string][]byte{"model.gguf": weights, "params": []byte(`{"temperature":0.1}`)})
	srcAgent := newTestAgent(t, src, nil, func(c *Config) { c.NodeID = "node-src" })
	dst := newBlobStore()
	dstAgent := newTestAgent(t, dst, nil, func(c *Config) { c.NodeID = "node-dst" })
	ctx := context.Background()

	var lines []agentapi.Progress
	err := dstAgent.client.Copy(ctx, agentapi.CopyRequest{Model: "tiny", From: srcAgent.srv.URL}, func(p agentapi.Progress) { lines = append(lines, p) })
	if err != nil {
		t.Fatalf("Copy: %v (lines %+v)", err, lines)
	}
	src.locked(func() {
		dst.locked(func() {
			for d, want := range src.blobs {
				if got := dst.blobs[d]; !bytes.Equal(got, want) {
					t.Errorf("blob %s: copied %d bytes, want %d", d, len(got), len(want))
				}
			}
			if got := dst.manifests["tiny"]; fmt.Sprint(got) != fmt.Sprint(m) {
				t.Errorf("manifest %+v, want %+v", got, m)
			}
		})
	})
	var statuses []string
	for _, l := range lines {
		statuses = append(statuses, l.Status)
	}
	if len(lines) != 5 || !strings.HasPrefix(statuses[0], "fetching manifest") || statuses[1] != "importing 2 blobs" ||
		statuses[4] != "success" || lines[1].Total != int64(len(weights))+int64(len(`{"temperature":0.1}`)) {
		t.Errorf("progress: %q %+v", statuses, lines)
	}
	if hb := dstAgent.Heartbeat(ctx); len(hb.Models) != 1 || hb.Models[0].Name != "tiny" {
		t.Errorf("copied model not in heartbeat: %+v", hb.Models)
	}

	// A blob that arrives corrupted is refused by the importer's digest check.
	src.addModel("bad", map[string][]byte{"model.gguf": []byte("real bytes")})
	src.locked(func() { src.corrupt[digestOf([]byte("real bytes"))] = []byte("evil bytes") })
	err = dstAgent.client.Copy(ctx, agentapi.CopyRequest{Model: "bad", From: srcAgent.srv.URL}, nil)
	var pe *agentapi.ProgressError
	if !errors.As(err, &pe) || !strings.Contains(pe.Message, "digest mismatch") {
		t.Errorf("corrupt copy: %v", err)
	}
	dst.locked(func() {
		if _, ok := dst.manifests["bad"]; ok {
			t.Error("a model with a corrupt blob was created")
		}
	})
	// Unknown model on the peer: the peer's 404 ends the copy.
	err = dstAgent.client.Copy(ctx, agentapi.CopyRequest{Model: "ghost", From: srcAgent.srv.URL}, nil)
	if !errors.As(err, &pe) || !strings.Contains(pe.Message, "404") {
		t.Errorf("copy of an unknown model: %v", err)
	}
	// A peer with another cluster token refuses the copy.
	other := newBlobStore()
	other.addModel("tiny", map[string][]byte{"model.gguf": weights})
	otherAgent := newTestAgent(t, other, nil, func(c *Config) { c.ClusterToken = "another-cluster" })
	err = dstAgent.client.Copy(ctx, agentapi.CopyRequest{Model: "tiny", From: otherAgent.srv.URL}, nil)
	if !errors.As(err, &pe) || !strings.Contains(pe.Message, "401") {
		t.Errorf("copy from a foreign cluster: %v", err)
	}
	// Bad requests are refused before any streaming.
	var ae *agentapi.APIError
	for _, req := range []agentapi.CopyRequest{{Model: "tiny"}, {Model: "tiny", From: "ftp://x"}, {From: srcAgent.srv.URL}} {
		if err := dstAgent.client.Copy(ctx, req, nil); !errors.As(err, &ae) || ae.Status != http.StatusBadRequest {
			t.Errorf("copy %+v: %v", req, err)
		}
	}
}

func TestBlobRoute(t *testing.T) {
	src := newBlobStore()
	content := []byte("some blob content")
	src.addModel("m", map[string][]byte{"f": content})
	ta := newTestAgent(t, src, nil, nil)
	ctx := context.Background()
	rc, err := ta.client.Blob(ctx, digestOf(content))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	rc.Close()
	if !bytes.Equal(got, content) {
		t.Errorf("blob = %q", got)
	}
	var ae *agentapi.APIError
	for digest, status := range map[string]int{
		digestOf([]byte("absent")):          http.StatusNotFound,
		"sha256:xyz":                        http.StatusBadRequest,
		"md5:" + strings.Repeat("a", 64):    http.StatusBadRequest,
		"sha256:" + strings.Repeat("A", 64): http.StatusBadRequest,
	} {
		rc, err := ta.client.Blob(ctx, digest)
		if err == nil {
			rc.Close()
		}
		if !errors.As(err, &ae) || ae.Status != status {
			t.Errorf("blob %q: %v, want %d", digest, err, status)
		}
	}
	man, err := ta.client.Export(ctx, "m")
	if err != nil || man.Files["f"] != digestOf(content) {
		t.Errorf("Export: %+v %v", man, err)
	}
	if _, err := ta.client.Export(ctx, ""); !errors.As(err, &ae) || ae.Status != http.StatusBadRequest {
		t.Errorf("Export without a model: %v", err)
	}
}

func TestSimFaultRoute(t *testing.T) {
	fb := &faultBackend{fakeBackend: &fakeBackend{kind: agentapi.BackendSim, sim: true}}
	ta := newTestAgent(t, fb, nil, nil)
	ctx := context.Background()
	if err := ta.client.InjectFault(ctx, 1, "ecc"); err != nil {
		t.Fatalf("InjectFault: %v", err)
	}
	var ae *agentapi.APIError
	if err := ta.client.InjectFault(ctx, 1, "meteor"); !errors.As(err, &ae) || ae.Status != http.StatusBadRequest || !strings.Contains(ae.Message, "meteor") {
		t.Errorf("unknown fault: %v", err)
	}
	fb.locked(func() {
		if fmt.Sprint(fb.faults) != "[1:ecc]" {
			t.Errorf("faults %v", fb.faults)
		}
	})
}

// sharedGateway is an httptest gateway with a shared registry whose answer the test switches.
type sharedGateway struct {
	srv      *httptest.Server
	hits     atomic.Int32
	conflict atomic.Bool
	inst     atomic.Value // the last instance ID seen
}

func newSharedGateway(t *testing.T) *sharedGateway {
	g := &sharedGateway{}
	g.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var hb agentapi.Heartbeat
		if err := json.NewDecoder(r.Body).Decode(&hb); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		g.inst.Store(hb.InstanceID)
		g.hits.Add(1)
		if g.conflict.Load() {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusConflict)
			io.WriteString(w, `{"error":{"message":"node id \"node-a\" is held by another live agent at http://10.0.0.9:9090","type":"invalid_request_error","param":"node_id","code":"node_id_conflict"}}`)
			return
		}
		json.NewEncoder(w).Encode(agentapi.HeartbeatReply{Registry: agentapi.RegistryShared})
	}))
	t.Cleanup(g.srv.Close)
	return g
}

// TestHeartbeatFailoverAndRefusal: with a shared registry the agent heartbeats to one gateway,
// moves to the next when it dies, and logs a refusal of its node ID as an error, once, while it
// keeps trying.
func TestHeartbeatFailoverAndRefusal(t *testing.T) {
	g1, g2 := newSharedGateway(t), newSharedGateway(t)
	logs := &logbuf.Buffer{}
	a, err := New(Config{
		NodeID: "node-a", ClusterToken: testToken, Listen: "127.0.0.1:0",
		GatewayURLs:       []string{g1.srv.URL, g2.srv.URL},
		HeartbeatInterval: 10 * time.Millisecond, TelemetryInterval: 10 * time.Millisecond,
	}, &fakeBackend{}, nil, WithLogger(slog.New(slog.NewTextHandler(logs, nil))))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx, nil) }()

	waitFor(t, "beats to the first gateway", func() bool { return g1.hits.Load() >= 5 })
	if n := g2.hits.Load(); n != 0 {
		t.Fatalf("the second gateway got %d heartbeats while the first, shared, accepted them", n)
	}
	if inst, _ := g1.inst.Load().(string); inst == "" || inst != a.InstanceID() {
		t.Fatalf("heartbeat instance %q, agent instance %q", inst, a.InstanceID())
	}
	g1.srv.CloseClientConnections()
	g1.srv.Close()
	waitFor(t, "beats to the second gateway", func() bool { return g2.hits.Load() >= 5 })

	g2.conflict.Store(true)
	refusedAt := g2.hits.Load()
	waitFor(t, "retries while refused", func() bool { return g2.hits.Load() >= refusedAt+10 })
	g2.conflict.Store(false)
	waitFor(t, "the ID acquired", func() bool { return strings.Contains(logs.String(), "node id acquired") })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	out := logs.String()
	for _, want := range []string{"heartbeats now go to another gateway", "level=ERROR msg=\"gateway refused this agent", "held by another live agent at http://10.0.0.9:9090"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "gateway refused this agent"); n != 1 {
		t.Errorf("refusal logged %d times, want once:\n%s", n, out)
	}
}

// TestCachedPromptTokens checks the cache evidence the agent reports: the backend's own
// cached_tokens where it gives them, else (Ollama) an estimate from a prompt read far faster than
// the node's cold prefill speed, which that fast read does not move.
func TestCachedPromptTokens(t *testing.T) {
	const model = "llama3:latest"
	t.Run("backend reports cached_tokens", func(t *testing.T) {
		clock := newFakeClock()
		b := &fakeBackend{models: []agentapi.Model{{Name: model, Resident: true}}}
		b.setServe(func(w http.ResponseWriter, _ *http.Request, _ string, _ []byte) {
			w.Header().Set("Content-Type", "text/event-stream")
			f := w.(http.Flusher)
			clock.Advance(100 * time.Millisecond)
			io.WriteString(w, `data: {"choices":[{"delta":{"content":"a"}}]}`+"\n\n")
			f.Flush()
			clock.Advance(10 * time.Millisecond)
			io.WriteString(w, `data: {"choices":[{"delta":{"content":"b"}}]}`+"\n\n")
			io.WriteString(w, `data: {"choices":[],"usage":{"prompt_tokens":1000,"completion_tokens":2,"total_tokens":1002,"prompt_tokens_details":{"cached_tokens":800}}}`+"\n\n")
			io.WriteString(w, "data: [DONE]\n\n")
		})
		ta := newTestAgent(t, b, nil, nil, WithClock(clock))
		ta.Refresh(context.Background())
		resp := ta.post(t, agentapi.PathChatCompletions, testToken, `{"model":"llama3:latest","stream":true}`)
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		m := ta.Heartbeat(context.Background()).Models[0]
		if m.PromptTokens != 1000 || m.CachedPromptTokens != 800 {
			t.Fatalf("prompt %d cached %d, want 1000 800", m.PromptTokens, m.CachedPromptTokens)
		}
		if math.Abs(m.PrefillTokensPerSecond-2000) > 1e-6 { // the 200 uncached tokens in 100 ms
			t.Fatalf("prefill %v tokens/s, want 2000 (uncached tokens only)", m.PrefillTokensPerSecond)
		}
	})
	t.Run("estimated from the time the prompt took", func(t *testing.T) {
		clock := newFakeClock()
		b := &fakeBackend{models: []agentapi.Model{{Name: model, Resident: true}}}
		ttft := 200 * time.Millisecond
		b.setServe(func(w http.ResponseWriter, r *http.Request, p string, body []byte) {
			streamServe(clock, 3, ttft, 10*time.Millisecond, true, 40)(w, r, p, body)
		})
		ta := newTestAgent(t, b, nil, nil, WithClock(clock))
		ta.Refresh(context.Background())
		send := func() agentapi.Model {
			resp := ta.post(t, agentapi.PathChatCompletions, testToken, `{"model":"llama3:latest","stream":true}`)
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			return ta.Heartbeat(context.Background()).Models[0]
		}
		m := send() // cold: 40 tokens in 200 ms, 200 tokens/s
		if m.CachedPromptTokens != 0 || math.Abs(m.PrefillTokensPerSecond-200) > 1e-6 {
			t.Fatalf("cold request: cached %d prefill %v, want 0 and 200", m.CachedPromptTokens, m.PrefillTokensPerSecond)
		}
		ttft = 20 * time.Millisecond // a hit: 4 tokens' worth of cold prefill time
		m = send()
		if m.PromptTokens != 80 || m.CachedPromptTokens != 36 {
			t.Fatalf("after a hit: prompt %d cached %d, want 80 and 36", m.PromptTokens, m.CachedPromptTokens)
		}
		if math.Abs(m.PrefillTokensPerSecond-200) > 1e-6 {
			t.Fatalf("a hit moved the cold prefill speed to %v", m.PrefillTokensPerSecond)
		}
	})
}
