package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// responsesStream is one streamed /v1/responses answer as a raw SSE client read it, checked as
// it went: one response.created, consecutive sequence numbers from 0, deltas only for items
// added before them at their output_index, and one final response.completed (or .incomplete)
// that ends the stream.
type responsesStream struct {
	streamResult
	final struct {
		ID, Model string
		CreatedAt int64
		Text      string
		Output    int
		Usage     struct {
			InputTokens  int `json:"input_tokens"`
			OutputTokens int `json:"output_tokens"`
			TotalTokens  int `json:"total_tokens"`
		}
	}
	deltas int
}

// streamResponses streams one Responses answer from base and checks its framing.
func streamResponses(ctx context.Context, base, body string, r *responsesStream) {
	defer r.finished.Store(true)
	resp, reqID, why := postStream(ctx, base+"/v1/responses", body)
	r.requestID = reqID
	if why != "" {
		r.err = why
		return
	}
	defer resp.Body.Close()
	fail := func(format string, args ...any) { r.err = fmt.Sprintf(format, args...) }
	var text strings.Builder
	items := map[string]int{} // item id → output_index
	seq, created := int64(0), 0
	var id, model string
	var createdAt int64
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 4<<20)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		if r.done {
			fail("an event after the final one: %s", data)
			return
		}
		var ev struct {
			Type        string `json:"type"`
			Seq         int64  `json:"sequence_number"`
			ItemID      string `json:"item_id"`
			OutputIndex int    `json:"output_index"`
			Delta       string `json:"delta"`
			Item        *struct {
				ID string `json:"id"`
			} `json:"item"`
			Response *struct {
				ID        string `json:"id"`
				CreatedAt int64  `json:"created_at"`
				Model     string `json:"model"`
				Output    []struct {
					Type    string `json:"type"`
					Content []struct {
						Text string `json:"text"`
					} `json:"content"`
				} `json:"output"`
				Usage json.RawMessage `json:"usage"`
			} `json:"response"`
		}
		if err := json.Unmarshal([]byte(data), &ev); err != nil {
			fail("not JSON: %s", data)
			return
		}
		if ev.Seq != seq {
			fail("%s has sequence_number %d, want %d", ev.Type, ev.Seq, seq)
			return
		}
		seq++
		if ev.Response != nil {
			if id == "" {
				id, createdAt, model = ev.Response.ID, ev.Response.CreatedAt, ev.Response.Model
			}
			if ev.Response.ID != id || ev.Response.CreatedAt != createdAt || ev.Response.Model != model {
				fail("%s is for response %s/%d/%s, the stream's is %s/%d/%s", ev.Type, ev.Response.ID, ev.Response.CreatedAt, ev.Response.Model, id, createdAt, model)
				return
			}
		}
		switch ev.Type {
		case "response.created":
			if created++; created > 1 {
				fail("a second response.created")
				return
			}
		case "response.output_item.added":
			if _, dup := items[ev.Item.ID]; dup || ev.OutputIndex != len(items) {
				fail("item %s added again or at %d (have %d)", ev.Item.ID, ev.OutputIndex, len(items))
				return
			}
			items[ev.Item.ID] = ev.OutputIndex
		case "response.output_text.delta":
			if at, ok := items[ev.ItemID]; !ok || at != ev.OutputIndex {
				fail("delta for item %s at %d, not added there", ev.ItemID, ev.OutputIndex)
				return
			}
			text.WriteString(ev.Delta)
			r.deltas++
			r.chunks.Add(1)
		case "response.completed", "response.incomplete":
			r.done, r.finish = true, ev.Type
			f := &r.final
			f.ID, f.Model, f.CreatedAt, f.Output = id, model, createdAt, len(ev.Response.Output)
			for _, o := range ev.Response.Output {
				if o.Type == "message" && len(o.Content) == 1 {
					f.Text += o.Content[0].Text
				}
			}
			_ = json.Unmarshal(ev.Response.Usage, &f.Usage)
		case "error", "response.failed":
			fail("%s event: %s", ev.Type, data)
			return
		}
	}
	r.text = text.String()
	if err := sc.Err(); err != nil {
		fail("%v", err)
	}
}

// TestKillNodeMidResponsesStream: three simulated nodes, 40 concurrent /v1/responses streams,
// one agent killed with SIGKILL while they run: every stream is one response (one
// response.created, one id, created_at and model, consecutive sequence numbers, deltas at their
// items' output_index) ending with response.completed, whose text is the deltas' and whose
// usage counts every delta; each continued stream's text is the text before the kill (which the
// continuing request carried, checked against its agent's log) followed by the continuation.
// About 10 s.
func TestKillNodeMidResponsesStream(t *testing.T) {
	c := startGateway(t, "--heartbeat-interval", "2s")
	for _, id := range []string{"r1", "r2", "r3"} {
		c.addSimAgent(id, "3090,3090", "--sim-speed", "1")
	}
	c.waitNodes(3)

	const streams = 40
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	results := make([]*responsesStream, streams)
	plain := make([]*streamResult, streams)
	var wg sync.WaitGroup
	for i := range streams {
		results[i] = &responsesStream{}
		plain[i] = &results[i].streamResult
		body := fmt.Sprintf(`{"model":"llama3.2:1b","stream":true,"max_output_tokens":200,"input":"story %d"}`, i)
		wg.Go(func() { streamResponses(ctx, c.url, body, results[i]) })
	}
	waitFor(t, time.Minute, "streams under way", func() bool { return running(plain, 5) >= 15 })
	c.agents["r2"].kill9()
	wg.Wait()

	for _, r := range results {
		f := r.final
		if r.err != "" || !r.done || f.Text != r.text || f.Output != 1 || f.Usage.OutputTokens != r.deltas ||
			f.Usage.TotalTokens != f.Usage.InputTokens+f.Usage.OutputTokens {
			t.Fatalf("stream %s: err %q, final %v %+v, %d deltas, text %q", r.requestID, r.err, r.done, f, r.deltas, r.text)
		}
	}
	logs := c.agents["r1"].output() + c.agents["r3"].output()
	n := checkContinued(t, logs, plain)
	if n == 0 || continuations(t, c.url, "continued") < n {
		t.Fatalf("%d streams continued per the agents' logs, %d per the gateway's metrics: the kill hit no stream", n, continuations(t, c.url, "continued"))
	}
	t.Logf("%d of %d Responses streams were continued after the kill", n, streams)
}
