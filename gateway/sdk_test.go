package gateway

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	openai "github.com/sashabaranov/go-openai"
)

// TestOpenAISDK talks to the gateway with an OpenAI client library, as an app would: the wire
// format, streams and errors must decode there without special cases.
func TestOpenAISDK(t *testing.T) {
	g := newCoreGW(t, nil)
	a := newWireAgent(t, "a", wireOK)
	g.beat("a", a.srv.URL, 4, testModel)
	cfg := openai.DefaultConfig(testAPIKey)
	cfg.BaseURL = g.srv.URL + "/v1"
	cfg.HTTPClient = g.srv.Client()
	client := openai.NewClientWithConfig(cfg)
	ctx := context.Background()

	list, err := client.ListModels(ctx)
	if err != nil || len(list.Models) != 1 || list.Models[0].ID != testModel || list.Models[0].OwnedBy != ownerHerd {
		t.Fatalf("ListModels = %+v, %v", list, err)
	}

	msgs := []openai.ChatCompletionMessage{{Role: openai.ChatMessageRoleUser, Content: "hi"}}
	resp, err := client.CreateChatCompletion(ctx, openai.ChatCompletionRequest{Model: testModel, Messages: msgs})
	if err != nil || len(resp.Choices) != 1 || resp.Choices[0].Message.Content != "hello from a" || resp.Usage.TotalTokens != 8 {
		t.Fatalf("CreateChatCompletion = %+v, %v", resp, err)
	}
	if resp.Header().Get("X-Herd-Node") != "a" {
		t.Errorf("X-Herd-Node = %q", resp.Header().Get("X-Herd-Node"))
	}

	stream, err := client.CreateChatCompletionStream(ctx, openai.ChatCompletionRequest{
		Model: testModel, Messages: msgs, Stream: true, StreamOptions: &openai.StreamOptions{IncludeUsage: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	var text strings.Builder
	var usage *openai.Usage
	for {
		chunk, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("stream: %v", err)
		}
		if len(chunk.Choices) > 0 {
			text.WriteString(chunk.Choices[0].Delta.Content)
		}
		if chunk.Usage != nil {
			usage = chunk.Usage
		}
	}
	stream.Close()
	if text.String() != strings.Join(wireWords, "") || usage == nil || usage.CompletionTokens != len(wireWords) {
		t.Fatalf("stream gave %q, usage %+v", text.String(), usage)
	}

	_, err = client.CreateChatCompletion(ctx, openai.ChatCompletionRequest{Model: "gpt-nope", Messages: msgs})
	var apiErr *openai.APIError
	if !errors.As(err, &apiErr) || apiErr.HTTPStatusCode != 404 || apiErr.Code != "model_not_found" {
		t.Fatalf("unknown model: %v, want an APIError 404 model_not_found", err)
	}

	bad := openai.DefaultConfig("sk-wrong-key-000000000")
	bad.BaseURL, bad.HTTPClient = cfg.BaseURL, cfg.HTTPClient
	_, err = openai.NewClientWithConfig(bad).ListModels(ctx)
	if !errors.As(err, &apiErr) || apiErr.HTTPStatusCode != 401 || apiErr.Code != "invalid_api_key" {
		t.Fatalf("wrong key: %v, want an APIError 401 invalid_api_key", err)
	}

	// A stream that breaks midway surfaces as an error in the SDK, not as a silent end.
	a2 := newWireAgent(t, "b", wireMidStream)
	// Node a moves to the new agent's address only once its heartbeats went stale (3 intervals
	// of an hour here): a live node's ID is never taken over.
	g.clock.Advance(4 * time.Hour)
	g.beat("a", a2.srv.URL, 4, testModel)
	stream, err = client.CreateChatCompletionStream(ctx, openai.ChatCompletionRequest{Model: testModel, Messages: msgs, Stream: true})
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	var got int
	for {
		_, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			t.Fatalf("stream ended cleanly after %d chunks; want the mid-stream error", got)
		}
		if err != nil {
			if !strings.Contains(err.Error(), "failed mid-stream") {
				t.Fatalf("stream error %v does not carry the gateway's message", err)
			}
			break
		}
		got++
	}
	if got != 2 {
		t.Errorf("got %d chunks before the error, want 2", got)
	}
}
