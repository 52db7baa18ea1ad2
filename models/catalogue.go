package models

import (
	"fmt"
	"slices"
	"strings"
)

// catalogue lists common Ollama models. Sizes are the weights files as the Ollama library lists
// them (default quantization of that tag); architecture figures (layers, KV heads, head size,
// trained context) come from each model's published config. Never handed out directly.
var catalogue = []ModelSpec{
	{
		Name: "llama3.2:1b", Family: "llama", ParameterCount: 1.24e9, Quantization: "Q8_0",
		WeightsBytes: 1_320_000_000, Layers: 16, KVHeads: 8, HeadDim: 64, ContextLength: 131072,
	},
	{
		Name: "llama3.2:3b", Aliases: []string{"llama3.2"}, Family: "llama", ParameterCount: 3.21e9, Quantization: "Q4_K_M",
		WeightsBytes: 2_020_000_000, Layers: 28, KVHeads: 8, HeadDim: 128, ContextLength: 131072,
	},
	{
		Name: "llama3.1:8b", Aliases: []string{"llama3.1"}, Family: "llama", ParameterCount: 8.03e9, Quantization: "Q4_K_M",
		WeightsBytes: 4_920_000_000, Layers: 32, KVHeads: 8, HeadDim: 128, ContextLength: 131072,
	},
	{
		Name: "qwen2.5:7b", Aliases: []string{"qwen2.5"}, Family: "qwen2", ParameterCount: 7.62e9, Quantization: "Q4_K_M",
		WeightsBytes: 4_680_000_000, Layers: 28, KVHeads: 4, HeadDim: 128, ContextLength: 32768,
	},
	{
		Name: "qwen2.5:14b", Family: "qwen2", ParameterCount: 14.8e9, Quantization: "Q4_K_M",
		WeightsBytes: 8_990_000_000, Layers: 48, KVHeads: 8, HeadDim: 128, ContextLength: 32768,
	},
	{
		Name: "mistral:7b", Aliases: []string{"mistral"}, Family: "llama", ParameterCount: 7.25e9, Quantization: "Q4_K_M",
		WeightsBytes: 4_370_000_000, Layers: 32, KVHeads: 8, HeadDim: 128, ContextLength: 32768,
	},
	{
		Name: "gemma2:9b", Aliases: []string{"gemma2"}, Family: "gemma2", ParameterCount: 9.24e9, Quantization: "Q4_0",
		WeightsBytes: 5_440_000_000, Layers: 42, KVHeads: 8, HeadDim: 256, ContextLength: 8192,
	},
	{
		Name: "qwen2.5:3b", Family: "qwen2", ParameterCount: 3.09e9, Quantization: "Q4_K_M",
		WeightsBytes: 1_900_000_000, Layers: 36, KVHeads: 2, HeadDim: 128, ContextLength: 32768,
	},
	{
		Name: "gemma2:2b", Family: "gemma2", ParameterCount: 2.61e9, Quantization: "Q4_0",
		WeightsBytes: 1_600_000_000, Layers: 26, KVHeads: 4, HeadDim: 256, ContextLength: 8192,
	},
	{
		Name: "phi3:mini", Aliases: []string{"phi3:3.8b", "phi3"}, Family: "phi3", ParameterCount: 3.82e9, Quantization: "Q4_0",
		WeightsBytes: 2_200_000_000, Layers: 32, KVHeads: 32, HeadDim: 96, ContextLength: 4096,
	},
	{
		Name: "llama3.1:70b", Family: "llama", ParameterCount: 70.6e9, Quantization: "Q4_K_M",
		WeightsBytes: 42_500_000_000, Layers: 80, KVHeads: 8, HeadDim: 128, ContextLength: 131072,
	},
	{
		Name: "nomic-embed-text:latest", Aliases: []string{"nomic-embed-text:v1.5"}, Family: "nomic-bert",
		ParameterCount: 137e6, Quantization: "F16", WeightsBytes: 274_000_000,
		Layers: 12, KVHeads: 12, HeadDim: 64, ContextLength: 2048, Embedding: true, EmbeddingDim: 768,
	},
	{
		Name: "all-minilm:latest", Aliases: []string{"all-minilm:22m", "all-minilm:l6-v2"}, Family: "bert",
		ParameterCount: 22.6e6, Quantization: "F16", WeightsBytes: 46_000_000,
		Layers: 6, KVHeads: 12, HeadDim: 32, ContextLength: 512, Embedding: true, EmbeddingDim: 384,
	},
}

func cloneSpec(s ModelSpec) ModelSpec {
	s.Aliases = slices.Clone(s.Aliases)
	return s
}

// Catalogue returns the built-in model specs, a fresh copy each call, in a stable order.
func Catalogue() []ModelSpec {
	out := make([]ModelSpec, len(catalogue))
	for i, s := range catalogue {
		out[i] = cloneSpec(s)
	}
	return out
}

// LookupModel finds a catalogue model by name or alias. Names are compared after NormalizeName,
// so "llama3.1", "llama3.1:latest" and "LLAMA3.1:8B" all find llama3.1:8b.
func LookupModel(name string) (ModelSpec, bool) {
	n := NormalizeName(name)
	if n == "" {
		return ModelSpec{}, false
	}
	for _, s := range catalogue {
		if NormalizeName(s.Name) == n {
			return cloneSpec(s), true
		}
	}
	for _, s := range catalogue {
		for _, a := range s.Aliases {
			if NormalizeName(a) == n {
				return cloneSpec(s), true
			}
		}
	}
	return ModelSpec{}, false
}

// Ollama's default registry and namespace, which its model names may spell out or leave off.
const (
	defaultRegistryPrefix = "registry.ollama.ai/library/"
	defaultLibraryPrefix  = "library/"
)

// NormalizeName puts a model name in the form Ollama stores it: trimmed, lower-case, without the
// default registry and namespace ("registry.ollama.ai/library/"), and with a tag (":latest" when
// the name has none). A colon that belongs to a registry host ("host:5000/m") is not a tag. The
// empty name stays empty. NormalizeName is idempotent.
func NormalizeName(name string) string {
	n := strings.ToLower(strings.TrimSpace(name))
	if n == "" {
		return ""
	}
	for {
		m := strings.TrimSpace(strings.TrimPrefix(strings.TrimPrefix(n, defaultRegistryPrefix), defaultLibraryPrefix))
		if m == n {
			break
		}
		n = m
	}
	if n == "" {
		return ""
	}
	last := n[strings.LastIndexByte(n, '/')+1:]
	if last == "" {
		return n
	}
	if strings.HasSuffix(last, ":") {
		return n + "latest"
	}
	if !strings.Contains(last, ":") && !strings.Contains(last, "@") {
		return n + ":latest"
	}
	return n
}

// ParameterSize formats ParameterCount as Ollama reports it: "8.0B", "137M".
func (s ModelSpec) ParameterSize() string {
	switch {
	case s.ParameterCount >= 1e9:
		return fmt.Sprintf("%.1fB", s.ParameterCount/1e9)
	case s.ParameterCount >= 1e6:
		return fmt.Sprintf("%.0fM", s.ParameterCount/1e6)
	case s.ParameterCount > 0:
		return fmt.Sprintf("%.0fK", s.ParameterCount/1e3)
	default:
		return ""
	}
}
