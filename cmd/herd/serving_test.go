package main

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	openai "github.com/sashabaranov/go-openai"

	"github.com/herd-llm/herd/models"
)

func sdk(url string) *openai.Client {
	cfg := openai.DefaultConfig("unused")
	cfg.BaseURL = url + "/v1"
	return openai.NewClientWithConfig(cfg)
}

// checkOpenAIPath runs the checks an app developer relies on: models, chat (plain and streamed),
// completions, embeddings, an unknown model, bad JSON, and concurrent requests.
func checkOpenAIPath(t *testing.T, base, chatModel, embedModel string, concurrent int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	client := sdk(base)

	t.Run("models", func(t *testing.T) {
		list, err := client.ListModels(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var found bool
		for _, m := range list.Models {
			if m.ID == models.NormalizeName(chatModel) {
				found = true
			}
		}
		if !found {
			t.Fatalf("model %q not listed: %+v", chatModel, list.Models)
		}
		m, err := client.GetModel(ctx, chatModel)
		if err != nil || m.ID != models.NormalizeName(chatModel) {
			t.Fatalf("GetModel(%q) = %+v, %v", chatModel, m, err)
		}
	})

	t.Run("chat", func(t *testing.T) {
		resp, err := client.CreateChatCompletion(ctx, openai.ChatCompletionRequest{
			Model:     chatModel,
			Messages:  []openai.ChatCompletionMessage{{Role: "user", Content: "Say hello"}},
			MaxTokens: 12,
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Choices) != 1 || resp.Choices[0].Message.Role != "assistant" || resp.Choices[0].FinishReason == "" {
			t.Fatalf("unexpected response %+v", resp)
		}
		if resp.Usage.CompletionTokens <= 0 || resp.Usage.PromptTokens <= 0 {
			t.Fatalf("usage missing: %+v", resp.Usage)
		}
		if resp.Header().Get("X-Herd-Node") == "" {
			t.Fatal("no X-Herd-Node header")
		}
	})

	t.Run("chat-stream", func(t *testing.T) {
		stream, err := client.CreateChatCompletionStream(ctx, openai.ChatCompletionRequest{
			Model:         chatModel,
			Messages:      []openai.ChatCompletionMessage{{Role: "user", Content: "Count to five"}},
			MaxTokens:     16,
			Stream:        true,
			StreamOptions: &openai.StreamOptions{IncludeUsage: true},
		})
		if err != nil {
			t.Fatal(err)
		}
		defer stream.Close()
		var chunks, content int
		var finish openai.FinishReason
		var usage *openai.Usage
		for {
			r, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			chunks++
			if r.Usage != nil {
				usage = r.Usage
			}
			for _, c := range r.Choices {
				if c.Delta.Content != "" {
					content++
				}
				if c.FinishReason != "" {
					finish = c.FinishReason
				}
			}
		}
		if chunks < 2 || content == 0 || finish == "" {
			t.Fatalf("stream: %d chunks, %d with content, finish %q", chunks, content, finish)
		}
		if usage == nil || usage.CompletionTokens <= 0 {
			t.Fatalf("stream_options.include_usage: no usage chunk (%+v)", usage)
		}
	})

	t.Run("completions", func(t *testing.T) {
		resp, err := client.CreateCompletion(ctx, openai.CompletionRequest{Model: chatModel, Prompt: "Once upon a time", MaxTokens: 8})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Choices) != 1 || resp.Object != "text_completion" {
			t.Fatalf("unexpected completion %+v", resp)
		}
	})

	t.Run("embeddings", func(t *testing.T) {
		resp, err := client.CreateEmbeddings(ctx, openai.EmbeddingRequestStrings{Model: openai.EmbeddingModel(embedModel), Input: []string{"hello", "world"}})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Data) != 2 || len(resp.Data[0].Embedding) == 0 {
			t.Fatalf("unexpected embeddings: %d items", len(resp.Data))
		}
	})

	t.Run("unknown-model", func(t *testing.T) {
		_, err := client.CreateChatCompletion(ctx, openai.ChatCompletionRequest{
			Model: "no-such-model", Messages: []openai.ChatCompletionMessage{{Role: "user", Content: "hi"}},
		})
		var apiErr *openai.APIError
		if !errors.As(err, &apiErr) || apiErr.HTTPStatusCode != http.StatusNotFound || apiErr.Code != "model_not_found" {
			t.Fatalf("want 404 model_not_found, got %v", err)
		}
	})

	t.Run("bad-json", func(t *testing.T) {
		resp, err := http.Post(base+"/v1/chat/completions", "application/json", strings.NewReader(`{"model": "x", "messages": [`))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), `"invalid_request_error"`) {
			t.Fatalf("bad JSON: %d %s", resp.StatusCode, body)
		}
	})

	t.Run("concurrent", func(t *testing.T) {
		var wg sync.WaitGroup
		errs := make(chan error, concurrent)
		for i := range concurrent {
			wg.Add(1)
			go func() {
				defer wg.Done()
				req := openai.ChatCompletionRequest{
					Model:     chatModel,
					Messages:  []openai.ChatCompletionMessage{{Role: "user", Content: "request " + string(rune('a'+i%26))}},
					MaxTokens: 8,
					Stream:    i%2 == 0,
				}
				if req.Stream {
					s, err := client.CreateChatCompletionStream(ctx, req)
					if err != nil {
						errs <- err
						return
					}
					defer s.Close()
					for {
						if _, err := s.Recv(); err != nil {
							if !errors.Is(err, io.EOF) {
								errs <- err
							}
							return
						}
					}
				}
				if _, err := client.CreateChatCompletion(ctx, req); err != nil {
					errs <- err
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})
}

func TestSimClusterThroughOpenAISDK(t *testing.T) {
	c := startGateway(t)
	c.addSimAgent("sim-a", "t4")
	c.addSimAgent("sim-b", "3090")
	c.waitNodes(2)
	checkOpenAIPath(t, c.url, "llama3.2:1b", "nomic-embed-text", 40)
}
