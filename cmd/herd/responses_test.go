package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/responses"

	"github.com/herd-llm/herd/nodeagent/backend/ollamatest"
)

// The Responses API through the real binary, with the official openai-go v3 SDK: on a simulated
// node (translated to chat completions by the agent), on real Ollama (passed through), and on an
// OpenAI-compatible server without the route (translated).

func sdkV3(base string) openai.Client {
	return openai.NewClient(option.WithBaseURL(base+"/v1"), option.WithAPIKey("unused"), option.WithMaxRetries(0))
}

// checkResponses runs a non-streamed and a streamed Responses call for model and checks what an
// app relies on; it returns the non-streamed response.
func checkResponses(t *testing.T, base, model string) *responses.Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	client := sdkV3(base)
	params := responses.ResponseNewParams{
		Model:           model,
		Input:           responses.ResponseNewParamsInputUnion{OfString: openai.String("Say hello")},
		Instructions:    openai.String("Answer in one short sentence."),
		MaxOutputTokens: openai.Int(16),
	}

	// The tiny generated model behind real Ollama samples its end of reply now and then, sometimes
	// as its first token, and Responses has no seed: a reply with no text is asked again, a
	// bounded number of times, before the checks below (which then hold for a reply with text).
	const tries = 6
	var resp *http.Response
	var r *responses.Response
	var err error
	for i := 0; i < tries; i++ {
		if r, err = client.Responses.New(ctx, params, option.WithResponseInto(&resp)); err != nil || r.OutputText() != "" {
			break
		}
	}
	if err != nil {
		t.Fatalf("Responses.New: %v", err)
	}
	if r.Object != "response" || !strings.HasPrefix(r.ID, "resp_") || (r.Status != "completed" && r.Status != "incomplete") {
		t.Fatalf("response id %q object %q status %q", r.ID, r.Object, r.Status)
	}
	if r.OutputText() == "" || r.Usage.OutputTokens <= 0 || r.Usage.InputTokens <= 0 {
		t.Fatalf("output %q usage %+v", r.OutputText(), r.Usage)
	}
	if resp.Header.Get("X-Herd-Node") == "" {
		t.Error("no X-Herd-Node header")
	}

	var types []string
	var deltas strings.Builder
	var final responses.Response
	for i := 0; i < tries && deltas.Len() == 0; i++ {
		types, final = nil, responses.Response{}
		stream := client.Responses.NewStreaming(ctx, params)
		seq := int64(0)
		for stream.Next() {
			ev := stream.Current()
			if ev.SequenceNumber != seq {
				t.Errorf("event %s has sequence_number %d, want %d", ev.Type, ev.SequenceNumber, seq)
			}
			seq++
			types = append(types, ev.Type)
			switch ev.Type {
			case "response.output_text.delta":
				deltas.WriteString(ev.Delta)
			case "response.completed", "response.incomplete":
				final = ev.Response
			}
		}
		if err := stream.Err(); err != nil {
			t.Fatalf("stream: %v", err)
		}
	}
	want := []string{"response.created", "response.in_progress", "response.output_item.added", "response.content_part.added", "response.output_text.delta"}
	if len(types) < len(want)+4 || strings.Join(types[:len(want)], " ") != strings.Join(want, " ") {
		t.Fatalf("stream events %v", types)
	}
	if last := types[len(types)-1]; last != "response.completed" && last != "response.incomplete" {
		t.Fatalf("stream ends with %s: %v", last, types)
	}
	if final.OutputText() != deltas.String() || deltas.Len() == 0 {
		t.Errorf("final text %q, deltas %q", final.OutputText(), deltas.String())
	}
	if final.Usage.OutputTokens <= 0 {
		t.Errorf("final usage %+v", final.Usage)
	}

	// Stored responses do not exist in herd: a clear 400, the same on every backend.
	params.PreviousResponseID = openai.String(r.ID)
	_, err = client.Responses.New(ctx, params)
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 400 || apiErr.Param != "previous_response_id" {
		t.Errorf("previous_response_id: %v, want a 400 on that parameter", err)
	}
	_, err = client.Responses.Get(ctx, r.ID, responses.ResponseGetParams{})
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 404 {
		t.Errorf("GET a response: %v, want 404", err)
	}
	return r
}

func TestResponsesOnSim(t *testing.T) {
	herdBinary(t)
	dir := t.TempDir()
	presets := filepath.Join(dir, "presets.yaml")
	if err := os.WriteFile(presets, []byte("presets:\n  - name: greeter\n    model: llama3.2:1b\n    system: You greet people.\n    max_tokens: 8\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := startGateway(t, "--presets", presets)
	c.addSimAgent("sim-1", "t4")
	c.waitNodes(1)
	checkResponses(t, c.url, "llama3.2:1b")

	// A preset by name: its system prompt becomes the instructions, its max_tokens the cap.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	client := sdkV3(c.url)
	r, err := client.Responses.New(ctx, responses.ResponseNewParams{
		Model: "greeter", Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("Hi")},
	})
	if err != nil {
		t.Fatal(err)
	}
	if r.Instructions.OfString != "You greet people." || r.MaxOutputTokens != 8 || r.Usage.OutputTokens > 8 {
		t.Errorf("preset not applied: instructions %q max_output_tokens %d usage %+v", r.Instructions.OfString, r.MaxOutputTokens, r.Usage)
	}

	// /v1/responses as a batch endpoint, as OpenAI's Batch API takes it.
	lines := `{"custom_id":"a","method":"POST","url":"/v1/responses","body":{"model":"llama3.2:1b","input":"one","max_output_tokens":4}}` + "\n" +
		`{"custom_id":"b","method":"POST","url":"/v1/responses","body":{"model":"greeter","input":"two"}}` + "\n"
	f, err := client.Files.New(ctx, openai.FileNewParams{File: openai.File(strings.NewReader(lines), "lines.jsonl", "application/jsonl"), Purpose: openai.FilePurposeBatch})
	if err != nil {
		t.Fatal(err)
	}
	b, err := client.Batches.New(ctx, openai.BatchNewParams{InputFileID: f.ID, Endpoint: openai.BatchNewParamsEndpointV1Responses,
		CompletionWindow: openai.BatchNewParamsCompletionWindow24h})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, "the Responses batch to complete", func() bool {
		b, err = client.Batches.Get(ctx, b.ID)
		return err == nil && b.Status == openai.BatchStatusCompleted
	})
	if b.RequestCounts.Completed != 2 || b.OutputFileID == "" {
		t.Fatalf("batch %+v", b)
	}
	out, err := client.Files.Content(ctx, b.OutputFileID)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Body.Close()
	body, _ := io.ReadAll(out.Body)
	for _, line := range strings.Split(strings.TrimSpace(string(body)), "\n") {
		var l struct {
			Response struct {
				StatusCode int                `json:"status_code"`
				Body       responses.Response `json:"body"`
			} `json:"response"`
		}
		if err := json.Unmarshal([]byte(line), &l); err != nil || l.Response.StatusCode != 200 || l.Response.Body.Object != "response" || l.Response.Body.OutputText() == "" {
			t.Errorf("output line %s (%v)", line, err)
		}
	}
}

func TestResponsesOnRealOllama(t *testing.T) {
	herdBinary(t)
	ol := ollamatest.Start(t, ollamatest.Options{})
	c := startGateway(t)
	c.addAgent("ollama-1", "--backend", "ollama", "--ollama-url", ol.URL, "--ollama-models", ol.ModelsDir)
	c.waitNodes(1)
	checkResponses(t, c.url, ol.Model)
}

// fakeVLLM is an OpenAI-compatible server as vLLM is one: a case-sensitive model id with a
// slash, vLLM's error shape, and no /v1/responses route (as a server without it answers).
type fakeVLLM struct {
	mu     sync.Mutex
	models []string // model names the chat route was called with
}

const vllmModel = "Qwen/Qwen2.5-0.5B-Instruct"

func (f *fakeVLLM) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	vllmError := func(status int, typ, msg string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(map[string]any{"object": "error", "message": msg, "type": typ, "param": nil, "code": status})
	}
	switch r.URL.Path {
	case "/v1/models":
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"object":"list","data":[{"id":"`+vllmModel+`","object":"model","created":1,"owned_by":"vllm","max_model_len":32768}]}`)
	case "/v1/chat/completions":
		var req struct {
			Model       string   `json:"model"`
			Stream      bool     `json:"stream"`
			Temperature *float64 `json:"temperature"`
		}
		json.NewDecoder(r.Body).Decode(&req)
		f.mu.Lock()
		f.models = append(f.models, req.Model)
		f.mu.Unlock()
		if req.Model != vllmModel {
			vllmError(404, "NotFoundError", "The model `"+req.Model+"` does not exist.")
			return
		}
		if req.Temperature != nil && *req.Temperature < 0 {
			vllmError(400, "BadRequestError", "temperature must be non-negative, got -1.0.")
			return
		}
		if req.Stream {
			w.Header().Set("Content-Type", "text/event-stream")
			for _, c := range []string{
				`{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"` + vllmModel + `","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}`,
				`{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"` + vllmModel + `","choices":[{"index":0,"delta":{"content":"Hello"}}]}`,
				`{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"` + vllmModel + `","choices":[{"index":0,"delta":{"content":" there"},"finish_reason":"stop"}]}`,
				`{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"` + vllmModel + `","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}`,
			} {
				io.WriteString(w, "data: "+c+"\n\n")
				w.(http.Flusher).Flush()
			}
			io.WriteString(w, "data: [DONE]\n\n")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"`+vllmModel+`","choices":[{"index":0,"message":{"role":"assistant","content":"Hello there"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}`)
	default:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(404)
		io.WriteString(w, `{"detail":"Not Found"}`)
	}
}

// TestOpenAICompatExactNamesAndErrors: a model id with capitals and a slash is listed, retrieved
// and served by exactly that id; the backend's vLLM-shaped error reaches the client in OpenAI's
// shape with its status and message; and Responses calls are translated for a server without
// the route.
func TestOpenAICompatExactNamesAndErrors(t *testing.T) {
	herdBinary(t)
	fake := &fakeVLLM{}
	srv := httptest.NewServer(fake)
	defer srv.Close()
	c := startGateway(t)
	c.addAgent("vllm-1", "--backend", "openai", "--openai-url", srv.URL)
	c.waitNodes(1)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	client := sdkV3(c.url)

	page, err := client.Models.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, m := range page.Data {
		ids = append(ids, m.ID)
	}
	if len(ids) != 1 || ids[0] != vllmModel {
		t.Fatalf("/v1/models lists %v, want exactly [%s]", ids, vllmModel)
	}
	m, err := client.Models.Get(ctx, ids[0])
	if err != nil || m.ID != vllmModel {
		t.Fatalf("Models.Get(%q) = %+v, %v", ids[0], m, err)
	}
	chat, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model:    ids[0],
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
	})
	if err != nil || chat.Choices[0].Message.Content != "Hello there" {
		t.Fatalf("chat by the listed id: %+v, %v", chat, err)
	}

	// Another spelling is not that model: the backend is case-sensitive and knows no tag.
	var apiErr *openai.Error
	for _, wrong := range []string{"qwen/qwen2.5-0.5b-instruct", "qwen/qwen2.5-0.5b-instruct:latest"} {
		_, err = client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
			Model: wrong, Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
		})
		if !errors.As(err, &apiErr) || apiErr.StatusCode != 404 || apiErr.Code != "model_not_found" {
			t.Errorf("chat with %q: %v, want 404 model_not_found", wrong, err)
		}
	}

	// The backend's own error, in vLLM's shape, becomes OpenAI's, status and message kept.
	_, err = client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model: ids[0], Temperature: openai.Float(-1), Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
	})
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 400 || apiErr.Type != "invalid_request_error" ||
		!strings.Contains(apiErr.Message, "temperature must be non-negative") {
		t.Errorf("backend 400: %v, want OpenAI's shape with the backend's message", err)
	}

	// Responses, translated to chat completions by the agent (the server has no such route).
	r := checkResponses(t, c.url, ids[0])
	if r.OutputText() != "Hello there" || r.Model != vllmModel {
		t.Errorf("translated response: model %q text %q", r.Model, r.OutputText())
	}
	fake.mu.Lock()
	defer fake.mu.Unlock()
	for _, got := range fake.models {
		if got != vllmModel {
			t.Errorf("backend was called with model %q, want exactly %q", got, vllmModel)
		}
	}
}
