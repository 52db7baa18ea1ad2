package main

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/shared"
)

// weatherSchema is the tool the openai-go checks declare.
var weatherSchema = shared.FunctionParameters{
	"type": "object",
	"properties": map[string]any{
		"city": map[string]any{"type": "string", "minLength": 1},
		"unit": map[string]any{"type": "string", "enum": []string{"celsius", "fahrenheit"}},
		"days": map[string]any{"type": "integer", "minimum": 1, "maximum": 7},
	},
	"required":             []string{"city", "unit", "days"},
	"additionalProperties": false,
}

// checkWeatherArgs checks a call's arguments against weatherSchema.
func checkWeatherArgs(t *testing.T, raw string) {
	t.Helper()
	var a map[string]any
	if err := json.Unmarshal([]byte(raw), &a); err != nil || len(a) != 3 {
		t.Fatalf("arguments %q: %v", raw, err)
	}
	city, _ := a["city"].(string)
	unit, _ := a["unit"].(string)
	days, _ := a["days"].(float64)
	if city == "" || (unit != "celsius" && unit != "fahrenheit") || days != float64(int(days)) || days < 1 || days > 7 {
		t.Errorf("arguments %q do not fit the schema", raw)
	}
}

// TestOpenAIGoToolsOnSim: openai-go v3 through the real binary on a simulated node: a required
// tool call, a named one streamed and put together by the SDK's accumulator, the tool's result
// answered in text, JSON that fits a json_schema response format, and a parameter out of range
// refused with a 400 naming it.
func TestOpenAIGoToolsOnSim(t *testing.T) {
	herdBinary(t)
	c := startGateway(t)
	c.addSimAgent("sim-1", "t4", "--sim-speed", "50")
	c.waitNodes(1)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	client := sdkV3(c.url)
	tools := []openai.ChatCompletionToolUnionParam{
		openai.ChatCompletionFunctionTool(shared.FunctionDefinitionParam{Name: "get_time", Parameters: shared.FunctionParameters{"type": "object"}}),
		openai.ChatCompletionFunctionTool(shared.FunctionDefinitionParam{Name: "get_weather", Parameters: weatherSchema, Strict: openai.Bool(true)}),
	}
	ask := []openai.ChatCompletionMessageParamUnion{openai.UserMessage("What is the weather in Oslo?")}

	r, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model: "llama3.2:1b", Messages: ask, Tools: tools,
		ToolChoice: openai.ToolChoiceOptionFunctionToolChoice(openai.ChatCompletionNamedToolChoiceFunctionParam{Name: "get_weather"}),
	})
	if err != nil {
		t.Fatal(err)
	}
	ch := r.Choices[0]
	if ch.FinishReason != "tool_calls" || len(ch.Message.ToolCalls) != 1 || ch.Message.ToolCalls[0].Function.Name != "get_weather" {
		t.Fatalf("choice %+v", ch)
	}
	call := ch.Message.ToolCalls[0]
	checkWeatherArgs(t, call.Function.Arguments)

	// The tool's result goes back; the model answers in text.
	r2, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model: "llama3.2:1b", Tools: tools, MaxTokens: openai.Int(12),
		Messages: append(ask, ch.Message.ToParam(), openai.ToolMessage(`{"temperature":12}`, call.ID)),
	})
	if err != nil {
		t.Fatal(err)
	}
	if m := r2.Choices[0].Message; len(m.ToolCalls) != 0 || m.Content == "" {
		t.Errorf("after the tool result: %+v", m)
	}

	// Streamed, with tool_choice required: the SDK's accumulator reports the finished call.
	stream := client.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
		Model: "llama3.2:1b", Messages: ask, Tools: tools,
		ToolChoice: openai.ChatCompletionToolChoiceOptionUnionParam{OfAuto: openai.String("required")},
	})
	var acc openai.ChatCompletionAccumulator
	var finished []openai.FinishedChatCompletionToolCall
	for stream.Next() {
		acc.AddChunk(stream.Current())
		if tc, ok := acc.JustFinishedToolCall(); ok {
			finished = append(finished, tc)
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if len(finished) != 1 || acc.Choices[0].FinishReason != "tool_calls" || finished[0].ID == "" {
		t.Fatalf("streamed calls %+v, finish %q", finished, acc.Choices[0].FinishReason)
	}
	if finished[0].Name == "get_weather" {
		checkWeatherArgs(t, finished[0].Arguments)
	} else if !json.Valid([]byte(finished[0].Arguments)) {
		t.Errorf("get_time arguments %q", finished[0].Arguments)
	}

	// response_format json_schema: the content is JSON that fits.
	r3, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model: "llama3.2:1b", Messages: ask,
		ResponseFormat: openai.ChatCompletionNewParamsResponseFormatUnion{OfJSONSchema: &shared.ResponseFormatJSONSchemaParam{
			JSONSchema: shared.ResponseFormatJSONSchemaJSONSchemaParam{Name: "weather", Strict: openai.Bool(true), Schema: weatherSchema},
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	checkWeatherArgs(t, r3.Choices[0].Message.Content)

	// A parameter out of OpenAI's range is a 400 naming it.
	_, err = client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "llama3.2:1b", Messages: ask, TopP: openai.Float(1.5)})
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 400 || apiErr.Param != "top_p" || apiErr.Code != "decimal_above_max_value" {
		t.Errorf("top_p 1.5: %v", err)
	}
}
