package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"github.com/herd-llm/herd/internal/logbuf"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herd-llm/herd/nodeagent/agentapi"

	"github.com/herd-llm/herd/internal/fakeclock"
)

// stepClock is a Clock that moves only when told to (Advance), over the shared fake clock.
type stepClock struct{ *fakeclock.Clock }

var _ Clock = (*stepClock)(nil)

func newStepClock() *stepClock {
	return &stepClock{fakeclock.New(time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC))}
}

// Test keys.
const (
	testAPIKey       = "sk-test-0123456789abcdef"
	testAdminKey     = "sk-admin-0123456789abcdef"
	testClusterToken = "cluster-secret-token"
	// testMetricsToken is newCoreGW's scrape token (Config.MetricsToken).
	testMetricsToken = "metrics-scrape-token-0123"
	testModel        = "llama3.1:8b"
)

// wireMode is how a fake agent answers.
type wireMode int

const (
	wireOK wireMode = iota
	wire500
	wire400
	wire429
	wireHang         // never answers until the request is cancelled
	wireMidStream    // sends two chunks, then cuts the connection
	wireHangMidBody  // sends two chunks, then goes silent
	wireSlowEachStep // streams, waiting for a step signal before each chunk
	wireHalfJSON     // sends half a JSON completion, then cuts the connection
	wireErrorEvent   // sends two chunks, then the backend's error event, and ends
	wireEndsEarly    // sends two chunks and ends the body cleanly, without [DONE]
)

// wireAgent is an agent that speaks the OpenAI wire format (chat, completions, embeddings) and
// fails on demand.
type wireAgent struct {
	id  string
	srv *httptest.Server

	mu   sync.Mutex
	mode wireMode
	reqs []wireRequest

	// step, in wireSlowEachStep, lets one chunk out per receive.
	step chan struct{}
	// release, in wireHang, lets a hung request finish (with 200) when closed.
	release chan struct{}
	// entered receives once per request as it arrives.
	entered chan struct{}
}

type wireRequest struct {
	header http.Header
	body   []byte
	path   string
}

func newWireAgent(t testing.TB, id string, mode wireMode) *wireAgent {
	t.Helper()
	a := &wireAgent{id: id, mode: mode, step: make(chan struct{}), release: make(chan struct{}), entered: make(chan struct{}, 64)}
	a.srv = httptest.NewServer(http.HandlerFunc(a.serve))
	t.Cleanup(func() {
		a.srv.CloseClientConnections()
		a.srv.Close()
	})
	return a
}

func (a *wireAgent) requests() []wireRequest {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]wireRequest(nil), a.reqs...)
}

func (a *wireAgent) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	a.mu.Lock()
	a.reqs = append(a.reqs, wireRequest{header: r.Header.Clone(), body: body, path: r.URL.Path})
	mode := a.mode
	a.mu.Unlock()
	select {
	case a.entered <- struct{}{}:
	default:
	}
	if r.Header.Get("Authorization") != "Bearer "+testClusterToken {
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	var req struct {
		Model         string `json:"model"`
		Stream        bool   `json:"stream"`
		StreamOptions *struct {
			IncludeUsage bool `json:"include_usage"`
		} `json:"stream_options"`
	}
	_ = json.Unmarshal(body, &req)
	switch mode {
	case wire500:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusInternalServerError)
		fmt.Fprintf(w, `{"error":{"message":"backend crashed on %s","type":"server_error","param":null,"code":null}}`, a.id)
		return
	case wire400:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprint(w, `{"error":{"message":"temperature must be <= 2","type":"invalid_request_error","param":"temperature","code":null}}`)
		return
	case wire429:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusTooManyRequests)
		fmt.Fprint(w, `{"error":{"message":"agent queue full","type":"rate_limit_error","param":null,"code":"queue_full"}}`)
		return
	case wireHang:
		select {
		case <-r.Context().Done():
			return
		case <-a.release:
		}
	}
	if r.URL.Path == agentapi.PathEmbeddings {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1,0.2]}],"model":%q,"usage":{"prompt_tokens":2,"total_tokens":2}}`, req.Model)
		return
	}
	if mode == wireHalfJSON {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assi`)
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	}
	if r.URL.Path == agentapi.PathResponses && req.Stream && mode == wireOK {
		// A Responses stream in brief: created, the text, completed with the whole output.
		w.Header().Set("Content-Type", "text/event-stream")
		for i, ev := range []string{
			`{"type":"response.created","sequence_number":0,"response":{"id":"resp_1","created_at":1,"model":"m","status":"in_progress","output":[]}}`,
			`{"type":"response.output_item.added","sequence_number":1,"output_index":0,"item":{"id":"msg_1","type":"message"}}`,
			`{"type":"response.output_text.delta","sequence_number":2,"item_id":"msg_1","output_index":0,"content_index":0,"delta":"hello from ` + a.id + `"}`,
			`{"type":"response.completed","sequence_number":3,"response":{"id":"resp_1","created_at":1,"model":"m","status":"completed","output":[{"id":"msg_1","type":"message","content":[{"type":"output_text","text":"hello from ` + a.id + `"}]}]}}`,
		} {
			typ := []string{"response.created", "response.output_item.added", "response.output_text.delta", "response.completed"}[i]
			fmt.Fprintf(w, "event: %s\ndata: %s\n\n", typ, ev)
		}
		return
	}
	if !req.Stream {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":%q,"choices":[{"index":0,"message":{"role":"assistant","content":"hello from %s"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":3,"total_tokens":8}}`, req.Model, a.id)
		return
	}
	// A continuation (X-Herd-Continue) goes on after the words the client has, in the stream's
	// framing, as a real agent's backend would.
	from, chunk := 0, wireChunk
	if r.Header.Get(agentapi.HeaderContinue) != "" {
		var c struct {
			C agentapi.Continuation `json:"herd_continue"`
		}
		_ = json.Unmarshal(body, &c)
		for from < len(wireWords) && strings.HasPrefix(c.C.Content, strings.Join(wireWords[:from+1], "")) {
			from++
		}
		chunk = func(model string, i int, word string) string {
			return fmt.Sprintf(`{"id":%q,"object":"chat.completion.chunk","created":%d,"model":%q,"choices":[{"index":0,"delta":{"content":%q},"finish_reason":null}]}`, c.C.ID, c.C.Created, model, word)
		}
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	fl := w.(http.Flusher)
	for i, word := range wireWords {
		if i < from {
			continue
		}
		if mode == wireSlowEachStep {
			select {
			case <-a.step:
			case <-r.Context().Done():
				return
			}
		}
		fmt.Fprintf(w, "data: %s\n\n", chunk(req.Model, i, word))
		fl.Flush()
		if i == 1 {
			switch mode {
			case wireMidStream:
				// A partial event, then the connection is cut: the gateway must not relay it.
				fmt.Fprint(w, `data: {"id":"chatcmpl-1","choi`)
				fl.Flush()
				panic(http.ErrAbortHandler)
			case wireHangMidBody:
				<-r.Context().Done()
				return
			case wireEndsEarly:
				return
			case wireErrorEvent:
				fmt.Fprint(w, `data: {"error":{"message":"GPU lost","type":"server_error","param":null,"code":null}}`+"\n\n")
				fl.Flush()
				return
			}
		}
	}
	if req.StreamOptions != nil && req.StreamOptions.IncludeUsage {
		fmt.Fprintf(w, "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":%q,\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":%d,\"total_tokens\":%d}}\n\n", req.Model, len(wireWords), 5+len(wireWords))
	}
	fmt.Fprint(w, "data: [DONE]\n\n")
	fl.Flush()
}

var wireWords = []string{"Hello", " from", " the", " herd"}

func wireChunk(model string, i int, word string) string {
	return fmt.Sprintf(`{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":%q,"choices":[{"index":0,"delta":{"content":%q},"finish_reason":null}]}`, model, word)
}

// refusedURL returns an http:// address where nothing listens.
func refusedURL(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr
}

// coreGW is a gateway under test, served on a loopback port.
type coreGW struct {
	s     *Server
	clock *stepClock
	srv   *httptest.Server
	log   *logbuf.Buffer
}

// newCoreGW builds a gateway with a fake clock (so no heartbeat goes stale unless a test
// moves the clock) and test keys; edit adjusts the configuration first.
func newCoreGW(t testing.TB, edit func(*Config)) *coreGW {
	t.Helper()
	cfg := DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.ClusterToken = testClusterToken
	cfg.APIKeys = []string{testAPIKey}
	cfg.MetricsToken = testMetricsToken
	cfg.HeartbeatInterval = time.Hour
	cfg.FirstByteTimeout = 10 * time.Second
	cfg.StreamIdleTimeout = 10 * time.Second
	if edit != nil {
		edit(&cfg)
	}
	clock := newStepClock()
	logs := &logbuf.Buffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s, err := New(cfg, WithClock(clock), WithLogger(log))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return &coreGW{s: s, clock: clock, srv: srv, log: logs}
}

// beat registers a node serving models at address, with slots slots.
func (g *coreGW) beat(id, address string, slots int, models ...string) {
	g.beatBusy(id, address, slots, 0, models...)
}

// beatBusy is beat for a node that reports inFlight requests of its own; with the least_inflight
// policy that makes the scheduler prefer the other nodes.
func (g *coreGW) beatBusy(id, address string, slots, inFlight int, models ...string) {
	hb := agentapi.Heartbeat{NodeID: id, Address: address, Backend: agentapi.BackendOpenAI, Slots: slots, InFlight: inFlight, Version: "test"}
	for _, m := range models {
		hb.Models = append(hb.Models, agentapi.Model{Name: m, Resident: true, OnDisk: true})
	}
	g.s.registry.Observe(hb)
}

// post sends an authenticated POST to the gateway.
func (g *coreGW) post(t testing.TB, path, body string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, g.srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testAPIKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := g.srv.Client().Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	return resp
}

// get sends an authenticated GET to the gateway.
func (g *coreGW) get(t testing.TB, path, key string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, g.srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := g.srv.Client().Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return resp
}

// clientError is the OpenAI error shape as a client decodes it; Param and Code are pointers so a
// test can tell null from "".
type clientError struct {
	Error struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    *string `json:"code"`
	} `json:"error"`
}

// readOpenAIError reads resp as an OpenAI error, failing the test if it is not one.
func readOpenAIError(t testing.TB, resp *http.Response) clientError {
	t.Helper()
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var e clientError
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil || e.Error.Message == "" || e.Error.Type == "" {
		t.Fatalf("status %d body %q is not an OpenAI error: %v", resp.StatusCode, body, err)
	}
	return e
}

func nullable(p *string) string {
	if p == nil {
		return "<null>"
	}
	return *p
}

// readSSEData reads SSE data payloads until the stream ends.
func readSSEData(t testing.TB, r io.Reader) []string {
	t.Helper()
	var out []string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			out = append(out, data)
		}
	}
	return out
}

// writePresetFile writes a presets file into dir and returns its path.
func writePresetFile(t testing.TB, dir, yaml string) string {
	t.Helper()
	p := filepath.Join(dir, "presets.yaml")
	if err := os.WriteFile(p, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// eventually polls cond until it holds, failing after a generous bound; the bound guards against a
// hang, it is not a timing assertion.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// recv receives from ch, failing the test if nothing comes within a generous bound (a guard
// against a hang, not a timing assertion).
func recv[T any](t testing.TB, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(20 * time.Second):
		t.Fatal("nothing received")
		panic("unreachable")
	}
}

// send sends v on ch, failing the test if nobody takes it within a generous bound.
func send[T any](t testing.TB, ch chan<- T, v T) {
	t.Helper()
	select {
	case ch <- v:
	case <-time.After(20 * time.Second):
		t.Fatal("nobody received")
	}
}
