package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	openai "github.com/sashabaranov/go-openai"
)

// chatOnce sends one small chat request and returns the node that served it.
func chatOnce(t *testing.T, base, model string, stream bool) (string, error) {
	t.Helper()
	body := fmt.Sprintf(`{"model":%q,"max_tokens":8,"stream":%v,"messages":[{"role":"user","content":"hi"}]}`, model, stream)
	resp, err := http.Post(base+"/v1/chat/completions", "application/json", strings.NewReader(body))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %d: %s", resp.StatusCode, data)
	}
	if stream && (!bytes.Contains(data, []byte("data: [DONE]")) || bytes.Contains(data, []byte(`"error"`))) {
		return "", fmt.Errorf("stream did not end cleanly: %s", data)
	}
	return resp.Header.Get("X-Herd-Node"), nil
}

func TestNodesShowSimulatedGPUsAndMetrics(t *testing.T) {
	c := startGateway(t)
	c.addSimAgent("node-t4", "t4")
	c.addSimAgent("node-a40", "a40")
	c.waitNodes(2)

	out, err := runCLI(t, "nodes", "--url", c.url)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"node-t4", "node-a40", "16 GB", "48 GB", "(simulated)", "llama3.2:1b"} {
		if !strings.Contains(out, want) {
			t.Errorf("herd nodes output lacks %q:\n%s", want, out)
		}
	}
	jsonOut, err := runCLI(t, "nodes", "--json", "--url", c.url)
	if err != nil {
		t.Fatal(err)
	}
	if !json.Valid([]byte(jsonOut)) || !strings.Contains(jsonOut, `"memory_total_bytes"`) {
		t.Fatalf("herd nodes --json: %s", jsonOut)
	}
	models, err := runCLI(t, "models", "--url", c.url)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(models, "llama3.2:1b") || !strings.Contains(models, "llama3.1:8b") {
		t.Fatalf("herd models:\n%s", models)
	}

	resp, err := http.Get(c.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, series := range []string{
		"herd_gpu_utilization_ratio{", "herd_gpu_memory_used_bytes{", "herd_gpu_memory_total_bytes{",
		"herd_gpu_temperature_celsius{", "herd_gpu_power_watts{", "herd_gpu_healthy{",
		"herd_model_resident{", "herd_node_in_flight{", `node="node-t4"`, `node="node-a40"`,
	} {
		if !bytes.Contains(metrics, []byte(series)) {
			t.Errorf("/metrics lacks %s", series)
		}
	}
}

func TestDrainedAndUnhealthyNodesGetNoNewWork(t *testing.T) {
	c := startGateway(t)
	for _, id := range []string{"n1", "n2", "n3"} {
		c.addSimAgent(id, "3090")
	}
	c.waitNodes(3)

	if _, err := runCLI(t, "drain", "n1", "--url", c.url); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(c.url+"/admin/v1/nodes/n2/fault", "application/json", strings.NewReader(`{"gpu":0,"kind":"xid"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("fault injection: status %d", resp.StatusCode)
	}
	waitFor(t, 15*time.Second, "n2 reported unhealthy", func() bool {
		nodes, err := c.nodes()
		if err != nil {
			return false
		}
		for _, n := range nodes {
			if n.ID == "n2" {
				return !n.Healthy
			}
		}
		return false
	})
	for i := range 30 {
		node, err := chatOnce(t, c.url, "llama3.2:1b", i%2 == 0)
		if err != nil {
			t.Fatal(err)
		}
		if node != "n3" {
			t.Fatalf("request %d served by %s; only n3 is neither drained nor unhealthy", i, node)
		}
	}
	if _, err := runCLI(t, "undrain", "n1", "--url", c.url); err != nil {
		t.Fatal(err)
	}
	served := map[string]bool{}
	for range 30 {
		node, err := chatOnce(t, c.url, "llama3.2:1b", false)
		if err != nil {
			t.Fatal(err)
		}
		served[node] = true
	}
	if served["n2"] {
		t.Fatal("unhealthy n2 got work")
	}
}

// TestKillNodeMidRun is the failover promise: a node dies (SIGKILL) in the middle of 300
// requests sent 20 at a time with no client retries, and no request fails. The requests use the
// larger model at real simulated pace so that many are in flight on the node when it dies.
func TestKillNodeMidRun(t *testing.T) {
	c := startGateway(t)
	for _, id := range []string{"k1", "k2", "k3"} {
		c.addSimAgent(id, "3090", "--sim-speed", "4")
	}
	c.waitNodes(3)

	const total, parallel = 300, 20
	var done, failed atomic.Int64
	var mu sync.Mutex
	var failures []string
	perNode := map[string]int{}
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range jobs {
				// Non-streaming: a stream already under way cannot move to another node
				// without the client seeing it; that case is a well-formed SSE error.
				node, err := chatOnce(t, c.url, "llama3.2:1b", false)
				mu.Lock()
				if err != nil {
					failed.Add(1)
					failures = append(failures, err.Error())
				} else {
					perNode[node]++
				}
				mu.Unlock()
				done.Add(1)
			}
		}()
	}
	killed := false
	for i := range total {
		if !killed && done.Load() >= total/3 {
			c.agents["k2"].kill9()
			killed = true
		}
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	if !killed {
		t.Fatal("the node was never killed")
	}
	if n := failed.Load(); n != 0 {
		t.Fatalf("%d of %d requests failed after a node was killed; first: %s", n, total, failures[0])
	}
	t.Logf("requests per node: %v", perNode)
	if perNode["k1"] == 0 || perNode["k3"] == 0 {
		t.Fatalf("surviving nodes did not share the work: %v", perNode)
	}
}

// TestStreamingPassesChunksThrough checks that SSE chunks reach the client while the node is
// still generating (no buffering in gateway or agent).
func TestStreamingPassesChunksThrough(t *testing.T) {
	c := startGateway(t)
	c.addSimAgent("slow", "t4", "--sim-speed", "1")
	c.waitNodes(1)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	stream, err := sdk(c.url).CreateChatCompletionStream(ctx, openai.ChatCompletionRequest{
		Model: "llama3.1:8b", MaxTokens: 40, Stream: true,
		Messages: []openai.ChatCompletionMessage{{Role: "user", Content: "tell me a story"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	var arrivals []time.Time
	for {
		_, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		arrivals = append(arrivals, time.Now())
	}
	// 40 tokens of an 8B model on a simulated T4 take about a second; chunks that arrived all at
	// once would mean something buffered the stream.
	if len(arrivals) < 10 {
		t.Fatalf("only %d chunks", len(arrivals))
	}
	if spread := arrivals[len(arrivals)-1].Sub(arrivals[0]); spread < 200*time.Millisecond {
		t.Fatalf("chunks arrived within %s: the stream was buffered", spread)
	}
}

// TestMinReplicasKeepsModelWarm checks the placement loop: a model asked to have two warm
// replicas gets loaded on two nodes that have its weights, without any request for it.
func TestMinReplicasKeepsModelWarm(t *testing.T) {
	file := t.TempDir() + "/herd.yaml"
	if err := os.WriteFile(file, []byte("gateway:\n  min_replicas: {\"qwen2.5:7b\": 2}\n  replica_interval: 300ms\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := startGateway(t, "--config", file)
	for _, id := range []string{"r1", "r2", "r3"} {
		c.addSimAgent(id, "a40", "--sim-models", "llama3.2:1b,qwen2.5:7b", "--sim-preload", "llama3.2:1b")
	}
	c.waitNodes(3)
	waitFor(t, 60*time.Second, "two warm replicas of qwen2.5:7b", func() bool {
		nodes, err := c.nodes()
		if err != nil {
			return false
		}
		warm := 0
		for _, n := range nodes {
			for _, m := range n.Models {
				if m.Name == "qwen2.5:7b" && m.Resident {
					warm++
				}
			}
		}
		return warm == 2
	})
}
