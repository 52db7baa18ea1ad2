package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/herd-llm/herd/nodeagent/backend/ollamatest"
)

// A stream never breaks: the node under a stream dies (kill -9) or stops (SIGSTOP) and the
// stream goes on on another node, through the real binary with simulated nodes.

// streamResult is one streamed chat as a raw SSE client read it.
type streamResult struct {
	requestID string
	text      string
	ids       map[string]bool
	finish    string
	done      bool
	err       string
	chunks    atomic.Int64
	finished  atomic.Bool
}

// running counts the streams under way with at least n chunks.
func running(results []*streamResult, n int64) int {
	k := 0
	for _, r := range results {
		if r.chunks.Load() >= n && !r.finished.Load() {
			k++
		}
	}
	return k
}

// postStream posts body to url and returns the answer, open, with its request ID, or why there
// is none.
func postStream(ctx context.Context, url, body string) (resp *http.Response, requestID, why string) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, "", err.Error()
	}
	requestID = resp.Header.Get("X-Request-Id")
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return nil, requestID, fmt.Sprintf("status %d: %s", resp.StatusCode, b)
	}
	return resp, requestID, ""
}

// streamChat streams one chat completion and checks its framing as it goes.
func streamChat(ctx context.Context, base, body string, r *streamResult) {
	defer r.finished.Store(true)
	resp, id, why := postStream(ctx, base+"/v1/chat/completions", body)
	r.requestID = id
	if why != "" {
		r.err = why
		return
	}
	defer resp.Body.Close()
	r.ids = map[string]bool{}
	var text strings.Builder
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		if data == "[DONE]" {
			r.done = true
			continue
		}
		var c struct {
			ID      string          `json:"id"`
			Error   json.RawMessage `json:"error"`
			Choices []struct {
				Delta struct {
					Content string `json:"content"`
				} `json:"delta"`
				FinishReason *string `json:"finish_reason"`
			} `json:"choices"`
		}
		if err := json.Unmarshal([]byte(data), &c); err != nil {
			r.err = "not JSON: " + data
			return
		}
		if len(c.Error) > 0 {
			r.err = "error event: " + data
			return
		}
		r.ids[c.ID] = true
		for _, ch := range c.Choices {
			text.WriteString(ch.Delta.Content)
			if ch.FinishReason != nil && *ch.FinishReason != "" {
				r.finish = *ch.FinishReason
			}
		}
		r.chunks.Add(1)
	}
	r.text = text.String()
	if err := sc.Err(); err != nil {
		r.err = err.Error()
	}
}

// continuedPrefixes reads the agents' "continuing a broken stream" log lines: request id →
// the prefix's length in characters and its SHA-256, as the continuing agent received them.
func continuedPrefixes(logs string) map[string][2]string {
	re := regexp.MustCompile(`continuing a broken stream".*? request_id=(\S+) .*?prefix_chars=(\d+) prefix_sha256=([0-9a-f]+)`)
	out := map[string][2]string{}
	for _, m := range re.FindAllStringSubmatch(logs, -1) {
		out[m[1]] = [2]string{m[2], m[3]}
	}
	return out
}

// checkContinued checks every stream continued by an agent: the continuing request carried
// exactly the text the client had (its first prefix_chars characters), so the client's text is
// that prefix followed by the continuation, nothing repeated, nothing missing. It returns how
// many streams were continued.
func checkContinued(t *testing.T, logs string, results []*streamResult) int {
	t.Helper()
	prefixes := continuedPrefixes(logs)
	n := 0
	for _, r := range results {
		p, ok := prefixes[r.requestID]
		if !ok {
			continue
		}
		n++
		chars, _ := strconv.Atoi(p[0])
		runes := []rune(r.text)
		if chars > len(runes) {
			t.Errorf("stream %s: the continuing request carried %d characters, the client has %d", r.requestID, chars, len(runes))
			continue
		}
		sum := sha256.Sum256([]byte(string(runes[:chars])))
		if hex.EncodeToString(sum[:]) != p[1] {
			t.Errorf("stream %s: the continuing request's prefix is not the client's first %d characters %q", r.requestID, chars, string(runes[:chars]))
		}
		if chars == len(runes) {
			t.Errorf("stream %s: nothing followed the continued prefix", r.requestID)
		}
	}
	return n
}

// continuations reads herd_stream_continuations_total{outcome} summed over models and nodes.
func continuations(t *testing.T, base, outcome string) int {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	total := 0
	for line := range strings.Lines(string(b)) {
		if strings.HasPrefix(line, "herd_stream_continuations_total{") && strings.Contains(line, `outcome="`+outcome+`"`) {
			f := strings.Fields(line)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			total += int(v)
		}
	}
	return total
}

// TestKillNodeMidStream: three simulated nodes, 100 concurrent streams, one agent killed with
// SIGKILL while they run: no stream ends in an error, every one ends with a finish_reason and
// [DONE] under one id, and each continued stream is the text before the kill followed by the
// continuation (the continuing request carried that text, checked against its agent's log).
func TestKillNodeMidStream(t *testing.T) {
	// A 2 s heartbeat interval (stale after 6 s): under -race on a loaded 2-core machine 100
	// streams can starve the heartbeats of a shorter one, and staleness is not what is tested.
	c := startGateway(t, "--heartbeat-interval", "2s")
	for _, id := range []string{"k1", "k2", "k3"} {
		// Four GPUs of four slots each: 48 streams run at once, the rest wait in the gateway.
		c.addSimAgent(id, "3090,3090,3090,3090", "--sim-speed", "1")
	}
	c.waitNodes(3)

	const streams = 100
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	results := make([]*streamResult, streams)
	var wg sync.WaitGroup
	for i := range streams {
		results[i] = &streamResult{}
		body := fmt.Sprintf(`{"model":"llama3.2:1b","stream":true,"max_tokens":200,"seed":%d,"messages":[{"role":"user","content":"story %d"}]}`, i, i)
		wg.Go(func() { streamChat(ctx, c.url, body, results[i]) })
	}
	// Kill while many streams are under way, each with some text.
	waitFor(t, time.Minute, "streams under way", func() bool { return running(results, 5) >= 30 })
	c.agents["k2"].kill9()
	wg.Wait()

	for _, r := range results {
		if r.err != "" || !r.done || r.finish == "" || len(r.ids) != 1 {
			t.Fatalf("stream %s: err %q, [DONE] %v, finish %q, ids %v, text %q", r.requestID, r.err, r.done, r.finish, r.ids, r.text)
		}
	}
	logs := c.agents["k1"].output() + c.agents["k3"].output()
	n := checkContinued(t, logs, results)
	if n == 0 || continuations(t, c.url, "continued") < n {
		t.Fatalf("%d streams continued per the agents' logs, %d per the gateway's metrics: the kill hit no stream", n, continuations(t, c.url, "continued"))
	}
	t.Logf("%d of %d streams were continued after the kill", n, streams)
}

// TestStalledNodeMidStream: a node stopped with SIGSTOP goes silent without resetting its
// connections; the stall timeout, with the node's heartbeat late, moves its streams to the other
// node. One stream is read with openai-go's ChatCompletionAccumulator, and its node is the one
// stopped, so the accumulator reads a continued stream.
func TestStalledNodeMidStream(t *testing.T) {
	c := startGateway(t, "--stall-timeout", "1s", "--heartbeat-interval", "250ms")
	for _, id := range []string{"s1", "s2"} {
		c.addSimAgent(id, "3090", "--sim-speed", "2")
	}
	c.waitNodes(2)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// Seven streams and the accumulator's fill the two nodes' eight slots: all run at once.
	const streams = 7
	results := make([]*streamResult, streams)
	var wg sync.WaitGroup
	for i := range streams {
		results[i] = &streamResult{}
		body := fmt.Sprintf(`{"model":"llama3.2:1b","stream":true,"max_tokens":400,"messages":[{"role":"user","content":"stall %d"}]}`, i)
		wg.Go(func() { streamChat(ctx, c.url, body, results[i]) })
	}
	var acc openai.ChatCompletionAccumulator
	var accErr error
	var accChunks atomic.Int64
	var accResp *http.Response
	wg.Go(func() {
		client := sdkV3(c.url)
		s := client.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
			Model: "llama3.2:1b", MaxTokens: openai.Int(400), Seed: openai.Int(1),
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("stall for the accumulator")},
		}, option.WithResponseInto(&accResp))
		for s.Next() {
			acc.AddChunk(s.Current())
			accChunks.Add(1)
		}
		accErr = s.Err()
	})
	waitFor(t, time.Minute, "streams under way", func() bool { return running(results, 3) >= 5 && accChunks.Load() >= 3 })
	stoppedID, otherID := accResp.Header.Get("X-Herd-Node"), "s1"
	if stoppedID == "s1" {
		otherID = "s2"
	}
	stopped := c.agents[stoppedID]
	t.Cleanup(func() { _ = stopped.cmd.Process.Signal(syscall.SIGCONT) })
	start := time.Now()
	if err := stopped.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	took := time.Since(start)
	for _, r := range results {
		if r.err != "" || !r.done || r.finish == "" || len(r.ids) != 1 {
			t.Fatalf("stream %s: err %q, [DONE] %v, finish %q, ids %v", r.requestID, r.err, r.done, r.finish, r.ids)
		}
	}
	if accErr != nil || len(acc.Choices) != 1 || acc.Choices[0].FinishReason == "" || acc.Choices[0].Message.Content == "" {
		t.Fatalf("accumulator: err %v, %+v", accErr, acc.ChatCompletion)
	}
	accResult := &streamResult{requestID: accResp.Header.Get("X-Request-Id"), text: acc.Choices[0].Message.Content}
	logs := c.agents[otherID].output()
	if checkContinued(t, logs, []*streamResult{accResult}) != 1 {
		t.Fatalf("the accumulator's stream (%s on %s) was not continued", accResult.requestID, stoppedID)
	}
	n := 1 + checkContinued(t, logs, results)
	// Detected by the stall timeout (1s, heartbeat late), not the 60s idle timeout.
	if took > 30*time.Second {
		t.Fatalf("the stalled streams took %s to finish", took)
	}
	t.Logf("%d of %d streams continued after SIGSTOP; all done %s after it", n, streams, took.Round(time.Millisecond))
}

// TestRealOllamaContinues: a real `ollama serve` whose model's template leaves the last assistant
// turn open (ollamatest.ContinuableModelfile) continues a partial answer handed to its agent as
// a continuation, on the native /api/chat and on Ollama's /v1 route: the answer goes on from the
// prefix (it differs from the fresh answer under the same seed), with the client's framing and
// the first node's tokens counted.
func TestRealOllamaContinues(t *testing.T) {
	herdBinary(t)
	ol := ollamatest.Start(t, ollamatest.Options{Modelfile: ollamatest.ContinuableModelfile})
	c := startGateway(t)
	c.addAgent("ollama-c", "--backend", "ollama", "--ollama-url", ol.URL, "--ollama-models", ol.ModelsDir)
	c.waitNodes(1)
	nodes, err := c.nodes()
	if err != nil || len(nodes) != 1 {
		t.Fatalf("nodes %v %v", nodes, err)
	}
	model := normalized(ol.Model)
	post := func(path, body string, cont bool) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, nodes[0].Address+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+c.token)
		req.Header.Set("X-Herd-Model", model)
		req.Header.Set("X-Request-Id", "req-real-"+strconv.FormatBool(cont)+path)
		if cont {
			req.Header.Set("X-Herd-Continue", "1")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	const ask = `"model":%q,"stream":true,"messages":[{"role":"user","content":"Tell me a long story"}]`
	cont := `"herd_continue":{"id":"chatcmpl-first","created":42,"tokens":3,"content":"Once upon a"},`

	// Native /api/chat: NDJSON, eval_count counts the first node's 3 tokens too.
	nativeBody := fmt.Sprintf(`{`+ask+`,"options":{"num_predict":12,"seed":2}}`, model)
	status, fresh := post("/api/chat", nativeBody, false)
	status2, continued := post("/api/chat", "{"+cont+nativeBody[1:], true)
	if status != 200 || status2 != 200 {
		t.Fatalf("%d %s / %d %s", status, fresh, status2, continued)
	}
	var text string
	var last struct {
		Done      bool `json:"done"`
		EvalCount int  `json:"eval_count"`
		Message   struct {
			Content string `json:"content"`
		} `json:"message"`
		Error string `json:"error"`
	}
	for line := range strings.Lines(continued) {
		if err := json.Unmarshal([]byte(line), &last); err != nil || last.Error != "" {
			t.Fatalf("line %q: %v", line, err)
		}
		text += last.Message.Content
	}
	if !last.Done || last.EvalCount < 4 || last.EvalCount > 15 || strings.Contains(fresh, text) {
		t.Fatalf("continued answer %q (eval_count %d) vs fresh %s", text, last.EvalCount, fresh)
	}

	// Ollama's /v1 route: SSE with the stream's id and created kept.
	v1 := fmt.Sprintf(`{`+ask+`,"max_tokens":12,"seed":2,"stream_options":{"include_usage":true}}`, model)
	status, out := post("/v1/chat/completions", "{"+cont+v1[1:], true)
	if status != 200 || !strings.Contains(out, `"id":"chatcmpl-first"`) || !strings.Contains(out, `"created":42`) || !strings.Contains(out, "data: [DONE]") || strings.Contains(out, `"error"`) {
		t.Fatalf("%d %s", status, out)
	}
	if logs := c.agents["ollama-c"].output(); strings.Count(logs, "continuing a broken stream") != 2 {
		t.Fatalf("agent log:\n%s", logs)
	}
}
