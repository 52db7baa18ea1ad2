package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ollama/ollama/api"

	"github.com/herd-llm/herd/nodeagent/backend/ollamatest"
)

// The Ollama front, checked with Ollama's own Go client (github.com/ollama/ollama/api) pointed at
// the gateway as OLLAMA_HOST would point it: against simulated nodes (translated to the OpenAI
// API) and against real Ollama (native pass-through).

// TestOllamaClientAgainstSimCluster runs every Ollama route through a gateway in front of two
// simulated nodes.
func TestOllamaClientAgainstSimCluster(t *testing.T) {
	presets := writePresets(t, "llama3.2:1b")
	c := startGateway(t, "--presets", presets)
	c.addSimAgent("sim-a", "t4")
	c.addSimAgent("sim-b", "3090")
	c.waitNodes(2)
	checkOllamaPath(t, c.url, "llama3.2:1b", "nomic-embed-text", true)
}

// TestOllamaClientAgainstRealOllama runs every Ollama route through a gateway and agent in front
// of real Ollama serving the tiny generated model.
func TestOllamaClientAgainstRealOllama(t *testing.T) {
	herdBinary(t)
	ol := ollamatest.Start(t, ollamatest.Options{})
	presets := writePresets(t, ol.Model)
	c := startGateway(t, "--presets", presets)
	c.addAgent("ollama-1", "--backend", "ollama", "--ollama-url", ol.URL, "--ollama-models", ol.ModelsDir)
	c.waitNodes(1)
	checkOllamaPath(t, c.url, ol.Model, ol.Model, false)
}

// writePresets writes a presets file with one preset, "terse", on model.
func writePresets(t *testing.T, model string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "presets.yaml")
	body := "presets:\n  - name: terse\n    model: " + model + "\n    system: Answer in one short line.\n    max_tokens: 6\n    temperature: 0.1\n"
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// replySeed fixes the sampling seed of the replies checked here: the tiny generated model ends a
// reply by itself now and then, sometimes at its first token, and a fixed seed makes each reply
// the same on every run instead of empty once in a while.
const replySeed = 7

func checkOllamaPath(t *testing.T, base, chatModel, embedModel string, simulated bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	client := api.NewClient(u, httpClient())
	no, yes := false, true

	t.Run("heartbeat-version", func(t *testing.T) {
		if err := client.Heartbeat(ctx); err != nil {
			t.Fatal(err)
		}
		v, err := client.Version(ctx)
		if err != nil || v != ollamatest.Version {
			t.Fatalf("version %q, %v; want %s", v, err, ollamatest.Version)
		}
		resp, err := http.Get(base + "/")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != "Ollama is running" {
			t.Fatalf("GET / = %q", b)
		}
	})

	t.Run("tags", func(t *testing.T) {
		list, err := client.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var found, preset bool
		for _, m := range list.Models {
			if m.Name == normalized(chatModel) {
				found = true
				if m.ModifiedAt.IsZero() || m.Size <= 0 || m.Details.Family == "" || m.Details.ParameterSize == "" {
					t.Errorf("model %s lacks fields: %+v", m.Name, m)
				}
				if !simulated && (m.Digest == "" || m.Details.Format != "gguf") {
					t.Errorf("real Ollama model %s lacks digest or format: %+v", m.Name, m)
				}
			}
			if m.Name == "terse" && m.Details.ParentModel == chatModel {
				preset = true
			}
		}
		if !found || !preset {
			t.Fatalf("tags lack %s or the preset: %+v", chatModel, list.Models)
		}
	})

	t.Run("chat", func(t *testing.T) {
		var got api.ChatResponse
		n := 0
		err := client.Chat(ctx, &api.ChatRequest{Model: chatModel, Stream: &no,
			Messages: []api.Message{{Role: "user", Content: "Say hello"}}, Options: map[string]any{"num_predict": 8, "seed": replySeed}},
			func(r api.ChatResponse) error { got = r; n++; return nil })
		if err != nil {
			t.Fatal(err)
		}
		if n != 1 || !got.Done || got.DoneReason == "" || got.Message.Role != "assistant" || got.Message.Content == "" {
			t.Fatalf("%d answers, last %+v", n, got)
		}
		if got.EvalCount <= 0 || got.PromptEvalCount <= 0 || got.TotalDuration <= 0 || got.Model != chatModel {
			t.Fatalf("metrics or model missing: %+v", got)
		}
	})

	t.Run("chat-stream", func(t *testing.T) {
		var text strings.Builder
		var last api.ChatResponse
		chunks := 0
		err := client.Chat(ctx, &api.ChatRequest{Model: chatModel, Stream: &yes,
			Messages: []api.Message{{Role: "user", Content: "Count to five"}}, Options: map[string]any{"num_predict": 12, "seed": replySeed}},
			func(r api.ChatResponse) error {
				if last.Done {
					return errors.New("chunk after the done chunk")
				}
				text.WriteString(r.Message.Content)
				last = r
				chunks++
				return nil
			})
		if err != nil {
			t.Fatal(err)
		}
		if chunks < 3 || !last.Done || text.Len() == 0 || last.EvalCount <= 0 {
			t.Fatalf("%d chunks, text %q, last %+v", chunks, text.String(), last)
		}
	})

	t.Run("generate", func(t *testing.T) {
		var got api.GenerateResponse
		err := client.Generate(ctx, &api.GenerateRequest{Model: chatModel, Prompt: "Once upon a time", Stream: &no,
			Options: map[string]any{"num_predict": 8, "seed": replySeed}}, func(r api.GenerateResponse) error { got = r; return nil })
		if err != nil {
			t.Fatal(err)
		}
		if !got.Done || got.Response == "" || got.EvalCount <= 0 {
			t.Fatalf("%+v", got)
		}
		chunks := 0
		err = client.Generate(ctx, &api.GenerateRequest{Model: chatModel, Prompt: "Once upon a time",
			Options: map[string]any{"num_predict": 8, "seed": replySeed}}, func(r api.GenerateResponse) error { got = r; chunks++; return nil })
		if err != nil {
			t.Fatal(err)
		}
		if chunks < 1 || !got.Done {
			t.Fatalf("streamed generate: %d chunks, last %+v", chunks, got)
		}
	})

	t.Run("preset", func(t *testing.T) {
		var got api.ChatResponse
		err := client.Chat(ctx, &api.ChatRequest{Model: "terse", Stream: &no, Messages: []api.Message{{Role: "user", Content: "Tell me a long story"}}},
			func(r api.ChatResponse) error { got = r; return nil })
		if err != nil {
			t.Fatal(err)
		}
		// The preset's max_tokens (6) caps the answer; its name is echoed as the model.
		if got.Model != "terse" || got.EvalCount <= 0 || got.EvalCount > 6 {
			t.Fatalf("preset answer %+v", got)
		}
	})

	t.Run("embed", func(t *testing.T) {
		r, err := client.Embed(ctx, &api.EmbedRequest{Model: embedModel, Input: []string{"hello", "world"}})
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Embeddings) != 2 || len(r.Embeddings[0]) == 0 {
			t.Fatalf("embed: %d vectors", len(r.Embeddings))
		}
		e, err := client.Embeddings(ctx, &api.EmbeddingRequest{Model: embedModel, Prompt: "hello"})
		if err != nil || len(e.Embedding) != len(r.Embeddings[0]) {
			t.Fatalf("embeddings: %d values, %v", len(e.Embedding), err)
		}
	})

	t.Run("ps-show", func(t *testing.T) {
		// The model answered above, so it is resident; the gateway learns so from a heartbeat.
		waitFor(t, 30*time.Second, "a resident model in /api/ps", func() bool {
			running, err := client.ListRunning(ctx)
			return err == nil && len(running.Models) > 0
		})
		// The node is in a field Ollama's types do not have.
		resp, err := http.Get(base + "/api/ps")
		if err != nil {
			t.Fatal(err)
		}
		var raw struct {
			Models []map[string]any `json:"models"`
		}
		json.NewDecoder(resp.Body).Decode(&raw)
		resp.Body.Close()
		if node, _ := raw.Models[0]["herd_node"].(string); node == "" {
			t.Fatalf("ps lacks herd_node: %+v", raw.Models[0])
		}
		show, err := client.Show(ctx, &api.ShowRequest{Model: chatModel})
		if err != nil || len(show.Capabilities) == 0 || show.Details.Family == "" {
			t.Fatalf("show: %+v, %v", show, err)
		}
		if !simulated && show.Template == "" {
			t.Fatalf("show from real Ollama lacks the template: %+v", show)
		}
		ps, err := client.Show(ctx, &api.ShowRequest{Model: "terse"})
		if err != nil || ps.System != "Answer in one short line." || ps.Details.ParentModel != chatModel {
			t.Fatalf("show preset: %+v, %v", ps, err)
		}
	})

	t.Run("errors", func(t *testing.T) {
		err := client.Chat(ctx, &api.ChatRequest{Model: "nope", Messages: []api.Message{{Role: "user", Content: "hi"}}},
			func(api.ChatResponse) error { return nil })
		var se api.StatusError
		if !errors.As(err, &se) || se.StatusCode != http.StatusNotFound || se.ErrorMessage != "model 'nope' not found" {
			t.Fatalf("unknown model: %#v", err)
		}
		_, err = client.Show(ctx, &api.ShowRequest{Model: "nope"})
		if !errors.As(err, &se) || se.StatusCode != http.StatusNotFound || se.ErrorMessage != "model 'nope' not found" {
			t.Fatalf("show unknown model: %#v", err)
		}
		resp, err := http.Post(base+"/api/chat", "application/json", strings.NewReader(`{"model":`))
		if err != nil {
			t.Fatal(err)
		}
		var body map[string]any
		json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if msg, _ := body["error"].(string); resp.StatusCode != http.StatusBadRequest || msg == "" {
			t.Fatalf("bad JSON: %d %v", resp.StatusCode, body)
		}
	})
}

// normalized is the name the gateway lists a model under ("tiny" is "tiny:latest").
func normalized(name string) string {
	if strings.Contains(name, ":") {
		return name
	}
	return name + ":latest"
}

// TestOllamaCLIAgainstGateway runs the real `ollama` command line (the binary the Ollama tests
// use) as a client with OLLAMA_HOST at a gateway in front of simulated nodes.
func TestOllamaCLIAgainstGateway(t *testing.T) {
	herdBinary(t)
	bin, ok := ollamatest.Binary()
	if !ok {
		if ollamatest.Required() {
			t.Fatal("the ollama binary is required (scripts/build-ollama.sh)")
		}
		t.Skip("no ollama binary: run scripts/build-ollama.sh or set HERD_OLLAMA_BIN")
	}
	c := startGateway(t)
	c.addSimAgent("sim-a", "t4")
	c.waitNodes(1)
	run := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Env = append(os.Environ(), "OLLAMA_HOST="+c.url, "HOME="+t.TempDir(), "NO_COLOR=1", "TERM=dumb")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("ollama %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	if out := run("list"); !strings.Contains(out, "llama3.2:1b") || !strings.Contains(out, "nomic-embed-text:latest") {
		t.Fatalf("ollama list:\n%s", out)
	}
	// A model no keep-alive unloads reads "Forever", never "Stopping..." (a zero expires_at).
	if out := run("ps"); !strings.Contains(out, "llama3.2:1b") || strings.Contains(out, "Stopping") {
		t.Fatalf("ollama ps:\n%s", out)
	}
	if out := run("show", "llama3.2:1b"); !strings.Contains(out, "completion") {
		t.Fatalf("ollama show:\n%s", out)
	}
	// ollama run asks /api/show, then streams /api/chat to the terminal.
	if out := run("run", "llama3.2:1b", "Say hello"); !strings.Contains(out, " ") {
		t.Fatal("ollama run printed nothing")
	}
}
