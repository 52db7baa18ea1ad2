package main

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	openai "github.com/sashabaranov/go-openai"

	"github.com/herd-llm/herd/nodeagent/backend/ollamatest"
)

// TestRealOllamaThroughHerd runs the app developer's checks through a herd gateway and agent in
// front of real Ollama (built by scripts/build-ollama.sh) serving a tiny model the tests generate.
func TestRealOllamaThroughHerd(t *testing.T) {
	herdBinary(t)
	ol := ollamatest.Start(t, ollamatest.Options{})
	c := startGateway(t)
	c.addAgent("ollama-1", "--backend", "ollama", "--ollama-url", ol.URL, "--ollama-models", ol.ModelsDir)
	c.waitNodes(1)
	// The tiny model answers chat, completions and embeddings (64-dimensional).
	checkOpenAIPath(t, c.url, ol.Model, ol.Model, 6)
}

// TestModelCopyBetweenRealOllamas copies a model from one real Ollama to another through the
// agents, with no registry reachable, and then serves it from the receiving node.
func TestModelCopyBetweenRealOllamas(t *testing.T) {
	herdBinary(t)
	src := ollamatest.Start(t, ollamatest.Options{})
	dst := ollamatest.Start(t, ollamatest.Options{NoModel: true})
	c := startGateway(t)
	c.addAgent("has-it", "--backend", "ollama", "--ollama-url", src.URL, "--ollama-models", src.ModelsDir)
	c.addAgent("empty", "--backend", "ollama", "--ollama-url", dst.URL, "--ollama-models", dst.ModelsDir)
	c.waitNodes(2)

	out, err := runCLI(t, "models", "copy", src.Model, "--from", "has-it", "--to", "empty", "--url", c.url)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "success") {
		t.Fatalf("copy output lacks success:\n%s", out)
	}
	// The receiving Ollama lists it, and the gateway learns it from the next heartbeat.
	resp, err := http.Get(dst.URL + "/api/tags")
	if err != nil {
		t.Fatal(err)
	}
	var tags struct {
		Models []struct {
			Name string `json:"name"`
		} `json:"models"`
	}
	json.NewDecoder(resp.Body).Decode(&tags)
	resp.Body.Close()
	if len(tags.Models) != 1 || !strings.HasPrefix(tags.Models[0].Name, strings.Split(src.Model, ":")[0]) {
		t.Fatalf("receiving Ollama lists %+v", tags.Models)
	}

	// Drain the source so the answer must come from the node that received the copy.
	if _, err := runCLI(t, "drain", "has-it", "--url", c.url); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the copied model on the receiving node", func() bool {
		nodes, err := c.nodes()
		if err != nil {
			return false
		}
		for _, n := range nodes {
			if n.ID != "empty" {
				continue
			}
			for _, m := range n.Models {
				if strings.HasPrefix(m.Name, strings.Split(src.Model, ":")[0]) {
					return true
				}
			}
		}
		return false
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r, err := sdk(c.url).CreateChatCompletion(ctx, openai.ChatCompletionRequest{
		Model: src.Model, MaxTokens: 8, Messages: []openai.ChatCompletionMessage{{Role: "user", Content: "hi"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if node := r.Header().Get("X-Herd-Node"); node != "empty" {
		t.Fatalf("served by %q, want the node that received the copy", node)
	}
}

// TestRealOllamaModelManagement loads and unloads the model through the gateway's admin API and
// checks real Ollama's ps through the agent's heartbeat.
func TestRealOllamaModelManagement(t *testing.T) {
	herdBinary(t)
	ol := ollamatest.Start(t, ollamatest.Options{})
	c := startGateway(t)
	c.addAgent("mm", "--backend", "ollama", "--ollama-url", ol.URL, "--ollama-models", ol.ModelsDir)
	c.waitNodes(1)
	resident := func() bool {
		nodes, err := c.nodes()
		if err != nil || len(nodes) == 0 {
			return false
		}
		for _, m := range nodes[0].Models {
			if m.Resident {
				return true
			}
		}
		return false
	}
	if _, err := runCLI(t, "models", "load", ol.Model, "--node", "mm", "--url", c.url); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "model resident after load", resident)
	if _, err := runCLI(t, "models", "unload", ol.Model, "--node", "mm", "--url", c.url); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "model not resident after unload", func() bool { return !resident() })
	out, err := runCLI(t, "models", "--url", c.url)
	if err != nil || !strings.Contains(out, strings.Split(ol.Model, ":")[0]) {
		t.Fatalf("herd models: %v\n%s", err, out)
	}
}
