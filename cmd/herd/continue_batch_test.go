package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/herd-llm/herd/gateway/api"
)

// TestKillNodeMidBatch: three simulated nodes run a batch of 48 chat lines; one agent is killed
// with SIGKILL while lines are generating on it. Every line completes (none fails), each line's
// answer is one chat completion with a finish_reason and usage, and the lines the killed node
// was generating continued on another node: their text is the text it had generated (which the
// continuing request carried, checked against the continuing agent's log) followed by the
// continuation, and their usage counts the tokens of both nodes (a line cut by max_tokens counts
// exactly max_tokens). About 15 s.
func TestKillNodeMidBatch(t *testing.T) {
	c := startGateway(t, "--heartbeat-interval", "2s", "--batch-concurrency", "24")
	for _, id := range []string{"b1", "b2", "b3"} {
		c.addSimAgent(id, "3090,3090", "--sim-speed", "1")
	}
	c.waitNodes(3)

	const lines = 48
	id := startLinesBatch(t, c.url, lines, 400)
	// Kill b2 once it has had lines in flight for a second: they are generating, each with
	// part of its answer.
	var since time.Time
	waitFor(t, time.Minute, "lines generating on b2", func() bool {
		nodes, err := c.nodes()
		if err != nil {
			return false
		}
		for _, n := range nodes {
			if n.ID == "b2" && n.GatewayInFlight >= 4 {
				if since.IsZero() {
					since = time.Now()
				}
				return time.Since(since) > time.Second
			}
		}
		since = time.Time{}
		return false
	})
	c.agents["b2"].kill9()

	var final api.BatchObject
	waitFor(t, 2*time.Minute, "the batch to finish", func() bool {
		final = batchStatus(t, c, id)
		return final.Terminal()
	})
	if final.Status != "completed" || final.RequestCounts.Completed != lines || final.RequestCounts.Failed != 0 || final.OutputFileID == nil {
		t.Fatalf("batch: %+v", final)
	}
	content, err := (&api.Client{BaseURL: c.url, HTTP: httpClient()}).FileContent(context.Background(), *final.OutputFileID)
	if err != nil {
		t.Fatal(err)
	}
	var results []*streamResult
	sc := bufio.NewScanner(bytes.NewReader(content))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var l api.OutputLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil || l.Response == nil || l.Response.StatusCode != 200 {
			t.Fatalf("output line %s (%v)", sc.Text(), err)
		}
		var cc struct {
			Object  string `json:"object"`
			Choices []struct {
				Message struct {
					Content string `json:"content"`
				} `json:"message"`
				FinishReason string `json:"finish_reason"`
			} `json:"choices"`
			Usage struct {
				CompletionTokens int `json:"completion_tokens"`
			} `json:"usage"`
		}
		if err := json.Unmarshal(l.Response.Body, &cc); err != nil || cc.Object != "chat.completion" || len(cc.Choices) != 1 ||
			cc.Choices[0].FinishReason == "" || cc.Usage.CompletionTokens == 0 || cc.Choices[0].Message.Content == "" {
			t.Fatalf("line %s: body %s (%v)", l.CustomID, l.Response.Body, err)
		}
		// The continuing node's cap is lowered by the tokens already generated and its usage
		// adds them: a line cut by max_tokens counts exactly 400, continued or not.
		if u := cc.Usage.CompletionTokens; u > 400 || (cc.Choices[0].FinishReason == "length" && u != 400) {
			t.Fatalf("line %s: %d completion tokens, finish %s", l.CustomID, u, cc.Choices[0].FinishReason)
		}
		results = append(results, &streamResult{requestID: l.Response.RequestID, text: cc.Choices[0].Message.Content})
	}
	if len(results) != lines {
		t.Fatalf("%d output lines, want %d", len(results), lines)
	}
	logs := c.agents["b1"].output() + c.agents["b3"].output()
	n := checkContinued(t, logs, results)
	if n == 0 || continuations(t, c.url, "continued") < n {
		t.Fatalf("%d lines continued per the agents' logs, %d per the gateway's metrics: the kill hit no line", n, continuations(t, c.url, "continued"))
	}
	t.Logf("%d of %d batch lines were continued after the kill, none failed", n, lines)
}
