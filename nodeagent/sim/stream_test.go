package sim

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/herd-llm/herd/models"
	"github.com/herd-llm/herd/nodeagent/agentapi"
)

// serve puts the node behind a real HTTP server, as the agent does. done receives once per
// finished request.
func serve(t *testing.T, n *Node) (*httptest.Server, chan struct{}) {
	t.Helper()
	done := make(chan struct{}, 64)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() { done <- struct{}{} }()
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		n.ServeInference(w, r, r.URL.Path, body)
	}))
	t.Cleanup(srv.Close)
	return srv, done
}

// sseEvent is one "data:" payload of a stream.
type sseEvent struct {
	data string
	err  error
}

// readSSE posts body and sends each data payload on the returned channel as it arrives, closing
// it at the end of the response. The request runs in the background (a manual clock may have to
// move before the headers come); the response headers arrive on the second channel.
func readSSE(ctx context.Context, t *testing.T, url string, body any) (<-chan sseEvent, <-chan http.Header) {
	t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	ch := make(chan sseEvent, 1024)
	hdr := make(chan http.Header, 1)
	go func() {
		defer close(ch)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			ch <- sseEvent{err: err}
			return
		}
		hdr <- resp.Header
		defer resp.Body.Close()
		rd := bufio.NewReader(resp.Body)
		for {
			line, err := rd.ReadString('\n')
			if err != nil {
				if !errors.Is(err, io.EOF) {
					ch <- sseEvent{err: err}
				}
				return
			}
			line = strings.TrimRight(line, "\n")
			if line == "" {
				continue
			}
			if !strings.HasPrefix(line, "data: ") {
				ch <- sseEvent{err: errors.New("not an SSE data line: " + line)}
				return
			}
			ch <- sseEvent{data: strings.TrimPrefix(line, "data: ")}
		}
	}()
	return ch, hdr
}

type chunk struct {
	ID                string          `json:"id"`
	Object            string          `json:"object"`
	Created           int64           `json:"created"`
	Model             string          `json:"model"`
	SystemFingerprint string          `json:"system_fingerprint"`
	Usage             json.RawMessage `json:"usage"`
	Choices           []struct {
		Index int `json:"index"`
		Delta *struct {
			Role    *string `json:"role"`
			Content *string `json:"content"`
		} `json:"delta"`
		Text         *string         `json:"text"`
		Logprobs     json.RawMessage `json:"logprobs"`
		FinishReason *string         `json:"finish_reason"`
	} `json:"choices"`
}

// Chunks reach the client while the response is still being produced: with a manual clock the
// handler cannot finish before the test advances time for every token. The test advances one
// timer at a time and gives the first chunk a moment to arrive after each, so on a loaded machine
// it would take a delay of tens of advances (not one slow read) to finish a genuinely
// incremental stream before the first chunk is seen.
func TestStreamChunksArriveIncrementally(t *testing.T) {
	const streamTokens = 40
	clk := newManualClock()
	n := newNode(t, Config{GPUs: []models.GPUProfile{gpu(t, "a40")}, Clock: clk, Models: []string{"llama3.1:8b"}, Preload: []string{"llama3.1:8b"}})
	srv, done := serve(t, n)
	events, header := readSSE(context.Background(), t, srv.URL+agentapi.PathChatCompletions,
		chatBody("llama3.1:8b", "Stream to me.", map[string]any{"stream": true, "max_tokens": streamTokens}))
	var got []string
	// Advance the clock one timer at a time until the first event arrives.
	deadline := time.Now().Add(20 * time.Second)
	for len(got) == 0 {
		select {
		case ev := <-events:
			if ev.err != nil {
				t.Fatal(ev.err)
			}
			got = append(got, ev.data)
		case <-time.After(50 * time.Millisecond):
			if time.Now().After(deadline) {
				t.Fatal("no first chunk")
			}
			clk.AdvanceToNext()
		}
	}
	select {
	case <-done:
		t.Fatal("handler finished before the first chunk was read: the stream was buffered")
	default:
	}
	if in, _ := n.InFlight(); in != 1 {
		t.Errorf("in flight %d during the stream", in)
	}
	h := <-header
	if ct := h.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("Content-Type %q", ct)
	}
	if h.Get(agentapi.HeaderSimulated) != "true" {
		t.Error("no simulated header")
	}
	stop := make(chan struct{})
	go func() { drive(t, clk, stop) }()
	for ev := range events {
		if ev.err != nil {
			t.Fatal(ev.err)
		}
		got = append(got, ev.data)
	}
	close(stop)
	// role, the content chunks, finish, [DONE]
	if len(got) != streamTokens+3 || got[len(got)-1] != "[DONE]" {
		t.Fatalf("events %q", got)
	}
}

func TestStreamFormat(t *testing.T) {
	n := newNode(t, Config{GPUs: []models.GPUProfile{gpu(t, "3090")}, Clock: newAutoClock(), Seed: 3,
		Models: []string{"llama3.2:3b"}, Preload: []string{"llama3.2:3b"}})
	srv, _ := serve(t, n)
	for _, tc := range []struct {
		name     string
		endpoint string
		body     map[string]any
		usage    bool
		object   string
	}{
		{"chat", agentapi.PathChatCompletions, chatBody("llama3.2", "hello", map[string]any{"stream": true}), false, "chat.completion.chunk"},
		{"chat include_usage", agentapi.PathChatCompletions, chatBody("llama3.2", "hello", map[string]any{"stream": true, "stream_options": map[string]any{"include_usage": true}}), true, "chat.completion.chunk"},
		{"completion", agentapi.PathCompletions, map[string]any{"model": "llama3.2", "prompt": "hello", "stream": true, "max_tokens": 9}, false, "text_completion"},
		{"completion include_usage", agentapi.PathCompletions, map[string]any{"model": "llama3.2", "prompt": "hello", "stream": true, "max_tokens": 9, "stream_options": map[string]any{"include_usage": true}}, true, "text_completion"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			events, _ := readSSE(context.Background(), t, srv.URL+tc.endpoint, tc.body)
			var datas []string
			for ev := range events {
				if ev.err != nil {
					t.Fatal(ev.err)
				}
				datas = append(datas, ev.data)
			}
			if len(datas) < 3 || datas[len(datas)-1] != "[DONE]" {
				t.Fatalf("events %q", datas)
			}
			datas = datas[:len(datas)-1]
			chat := tc.object == "chat.completion.chunk"
			var chunks []chunk
			for _, d := range datas {
				chunks = append(chunks, decodeJSON[chunk](t, []byte(d)))
				// Usage is a key of every chunk (null until the last) exactly when asked for.
				hasUsage := strings.Contains(d, `"usage":`)
				if hasUsage != tc.usage {
					t.Fatalf("usage key present %v in %s", hasUsage, d)
				}
			}
			var finalUsage *usage
			if tc.usage {
				last := chunks[len(chunks)-1]
				if len(last.Choices) != 0 || string(last.Usage) == "null" {
					t.Fatalf("last chunk is not the usage chunk: %s", datas[len(datas)-1])
				}
				u := decodeJSON[usage](t, last.Usage)
				finalUsage = &u
				if !strings.Contains(datas[len(datas)-1], `"choices":[]`) {
					t.Errorf("usage chunk choices not an empty array: %s", datas[len(datas)-1])
				}
				chunks = chunks[:len(chunks)-1]
				for _, c := range chunks {
					if string(c.Usage) != "null" {
						t.Errorf("usage %s before the last chunk", c.Usage)
					}
				}
			}
			var text strings.Builder
			tokens := 0
			for i, c := range chunks {
				if c.Object != tc.object || c.ID != chunks[0].ID || c.Model != "llama3.2:3b" || c.Created < testEpoch.Unix() || c.Created > n.clock.Now().Unix() || c.SystemFingerprint == "" {
					t.Fatalf("chunk %d header: %s", i, datas[i])
				}
				if len(c.Choices) != 1 || string(c.Choices[0].Logprobs) != "null" {
					t.Fatalf("chunk %d choices: %s", i, datas[i])
				}
				ch := c.Choices[0]
				last := i == len(chunks)-1
				if (ch.FinishReason != nil) != last {
					t.Fatalf("chunk %d finish_reason %v", i, ch.FinishReason)
				}
				if chat {
					if ch.Delta == nil {
						t.Fatalf("chunk %d has no delta", i)
					}
					if i == 0 {
						if ch.Delta.Role == nil || *ch.Delta.Role != "assistant" || ch.Delta.Content == nil || *ch.Delta.Content != "" {
							t.Errorf("first chunk %s", datas[0])
						}
						continue
					}
					if ch.Delta.Role != nil {
						t.Errorf("chunk %d repeats the role", i)
					}
					if last {
						if ch.Delta.Content != nil {
							t.Errorf("final chunk has content: %s", datas[i])
						}
						continue
					}
					text.WriteString(*ch.Delta.Content)
				} else {
					if ch.Text == nil {
						t.Fatalf("chunk %d has no text", i)
					}
					if last {
						if *ch.Text != "" {
							t.Errorf("final chunk text %q", *ch.Text)
						}
						continue
					}
					text.WriteString(*ch.Text)
				}
				tokens++
			}
			if got := len(strings.Fields(text.String())); got != tokens {
				t.Errorf("%d words in %d token chunks", got, tokens)
			}
			if want := tc.body["max_tokens"]; want != nil && tokens != want.(int) {
				t.Errorf("%d tokens, want %v", tokens, want)
			}
			fin := *chunks[len(chunks)-1].Choices[0].FinishReason
			if (tc.body["max_tokens"] != nil) != (fin == "length") {
				t.Errorf("finish_reason %q", fin)
			}
			if finalUsage != nil && (finalUsage.CompletionTokens != tokens || finalUsage.TotalTokens != finalUsage.PromptTokens+tokens) {
				t.Errorf("usage %+v for %d tokens", finalUsage, tokens)
			}
		})
	}
}

// A streamed answer is the same text as the non-streamed answer to the same request.
func TestStreamMatchesNonStream(t *testing.T) {
	n := newNode(t, Config{GPUs: []models.GPUProfile{gpu(t, "3090")}, Clock: newAutoClock(), Models: []string{"llama3.2:3b"}})
	srv, _ := serve(t, n)
	body := chatBody("llama3.2:3b", "Same answer twice?", nil)
	whole := decodeJSON[chatResp](t, call(context.Background(), n, agentapi.PathChatCompletions, body).Body.Bytes())
	body["stream"] = true
	events, _ := readSSE(context.Background(), t, srv.URL+agentapi.PathChatCompletions, body)
	var text strings.Builder
	for ev := range events {
		if ev.err != nil {
			t.Fatal(ev.err)
		}
		if ev.data == "[DONE]" {
			continue
		}
		c := decodeJSON[chunk](t, []byte(ev.data))
		if len(c.Choices) == 1 && c.Choices[0].Delta != nil && c.Choices[0].Delta.Content != nil {
			text.WriteString(*c.Choices[0].Delta.Content)
		}
	}
	if text.String() != whole.Choices[0].Message.Content {
		t.Errorf("stream %q\nwhole  %q", text.String(), whole.Choices[0].Message.Content)
	}
}

// A client that goes away mid-stream stops the work and frees its slot.
func TestStreamClientCancel(t *testing.T) {
	clk := newManualClock()
	n := newNode(t, Config{GPUs: []models.GPUProfile{gpu(t, "t4")}, Clock: clk, Models: []string{"llama3.2:1b"}, Preload: []string{"llama3.2:1b"}})
	srv, done := serve(t, n)
	ctx, cancel := context.WithCancel(context.Background())
	events, _ := readSSE(ctx, t, srv.URL+agentapi.PathChatCompletions,
		chatBody("llama3.2:1b", "long answer", map[string]any{"stream": true, "max_tokens": 1000}))
	// Read a few chunks, then hang up.
	seen := 0
	deadline := time.Now().Add(20 * time.Second)
	for seen < 3 {
		select {
		case ev, ok := <-events:
			if !ok || ev.err != nil {
				t.Fatalf("stream ended early: %v", ev.err)
			}
			seen++
		default:
			if time.Now().After(deadline) {
				t.Fatal("no chunks")
			}
			if !clk.AdvanceToNext() {
				time.Sleep(100 * time.Microsecond)
			}
		}
	}
	cancel()
	for range events {
	}
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("handler still running after the client left")
	}
	if in, q := n.InFlight(); in != 0 || q != 0 {
		t.Errorf("after cancel: in flight %d, queued %d", in, q)
	}
	if m, _ := modelInfo(t, n, "llama3.2:1b"); m.InFlight != 0 {
		t.Errorf("model in flight %d", m.InFlight)
	}
}

// When the GPU under a streaming model falls off the bus, the stream ends with an OpenAI-shaped
// error event and no [DONE], rather than hanging.
func TestStreamGPULostMidStream(t *testing.T) {
	clk := newManualClock()
	n := newNode(t, Config{GPUs: []models.GPUProfile{gpu(t, "a40")}, Clock: clk, Models: []string{"llama3.2:1b"}, Preload: []string{"llama3.2:1b"}})
	srv, _ := serve(t, n)
	events, _ := readSSE(context.Background(), t, srv.URL+agentapi.PathChatCompletions,
		chatBody("llama3.2:1b", "hi", map[string]any{"stream": true, "max_tokens": 1000}))
	deadline := time.Now().Add(20 * time.Second)
	var got []string
	for len(got) < 2 {
		select {
		case ev := <-events:
			if ev.err != nil {
				t.Fatal(ev.err)
			}
			got = append(got, ev.data)
		default:
			if time.Now().After(deadline) {
				t.Fatal("no chunks")
			}
			if !clk.AdvanceToNext() {
				time.Sleep(100 * time.Microsecond)
			}
		}
	}
	if err := n.InjectFault(0, FaultXID); err != nil {
		t.Fatal(err)
	}
	for ev := range events {
		if ev.err != nil {
			t.Fatal(ev.err)
		}
		got = append(got, ev.data)
	}
	last := got[len(got)-1]
	if last == "[DONE]" {
		t.Fatal("stream finished normally after the GPU was lost")
	}
	e := decodeJSON[agentapi.ErrorBody](t, []byte(last))
	if e.Error.Type != "service_unavailable" || e.Error.Code == nil || *e.Error.Code != "gpu_lost" {
		t.Errorf("error event %s", last)
	}
	eventually(t, "slot freed", func() bool { in, _ := n.InFlight(); return in == 0 })
}
