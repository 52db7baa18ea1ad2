package registry

import (
	"testing"

	"github.com/herd-llm/herd/nodeagent/agentapi"
)

func TestModelName(t *testing.T) {
	for _, tt := range []struct{ backend, in, want string }{
		{agentapi.BackendOpenAI, "Qwen/Qwen2.5-0.5B-Instruct", "Qwen/Qwen2.5-0.5B-Instruct"},
		{agentapi.BackendOpenAI, " meta-llama/Llama-3.1-8B ", "meta-llama/Llama-3.1-8B"},
		{agentapi.BackendOpenAI, "llama3", "llama3"},
		{agentapi.BackendOllama, "Llama3", "llama3:latest"},
		{agentapi.BackendOllama, "registry.ollama.ai/library/qwen2.5:7b", "qwen2.5:7b"},
		{agentapi.BackendSim, "nomic-embed-text", "nomic-embed-text:latest"},
	} {
		if got := ModelName(tt.backend, tt.in); got != tt.want {
			t.Errorf("ModelName(%s, %q) = %q, want %q", tt.backend, tt.in, got, tt.want)
		}
	}
}
