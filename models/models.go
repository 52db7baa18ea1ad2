// Package models holds facts the rest of herd reasons with: GPU profiles (VRAM, memory bandwidth,
// compute, price, with the published sources they come from), model specs with a VRAM estimator,
// and presets, the "offline custom GPTs" (base model + system prompt + default parameters).
// It imports nothing of herd and does no I/O beyond parsing bytes it is handed.
package models

// GPUProfile describes one GPU model well enough to simulate it and to plan placement.
type GPUProfile struct {
	// Key is the short name used on command lines: "t4", "a40", "3090", "l4", "a100", "h100".
	Key  string `json:"key" yaml:"key"`
	Name string `json:"name" yaml:"name"`
	// VRAMBytes is the memory size.
	VRAMBytes uint64 `json:"vram_bytes" yaml:"vram_bytes"`
	// MemoryBandwidthGBs is the peak memory bandwidth in GB/s; decode speed follows from it.
	MemoryBandwidthGBs float64 `json:"memory_bandwidth_gbs" yaml:"memory_bandwidth_gbs"`
	// FP16TFLOPS is the dense FP16 tensor throughput; prefill speed follows from it.
	FP16TFLOPS float64 `json:"fp16_tflops" yaml:"fp16_tflops"`
	// PowerLimitWatts is the board power limit.
	PowerLimitWatts float64 `json:"power_limit_watts" yaml:"power_limit_watts"`
	// Source names the published figures the profile comes from.
	Source string `json:"source" yaml:"source"`
	// Aliases are other spellings ParseGPUList accepts ("rtx3090").
	Aliases []string `json:"aliases,omitempty" yaml:"aliases,omitempty"`
	// IdlePowerWatts is the board power at idle with a driver loaded.
	IdlePowerWatts float64 `json:"idle_power_watts" yaml:"idle_power_watts"`
	// BoostClockMHz is the SM boost clock.
	BoostClockMHz uint32 `json:"boost_clock_mhz" yaml:"boost_clock_mhz"`
	// ECC is true when the board has ECC memory NVML can report on (GeForce boards do not).
	ECC bool `json:"ecc" yaml:"ecc"`
	// DecodeEfficiency and PrefillEfficiency are the fractions of peak memory bandwidth and FP16
	// tensor throughput llama.cpp reaches on this board at batch 1; 0 means the defaults
	// (DefaultDecodeEfficiency, DefaultPrefillEfficiency).
	DecodeEfficiency  float64 `json:"decode_efficiency,omitempty" yaml:"decode_efficiency,omitempty"`
	PrefillEfficiency float64 `json:"prefill_efficiency,omitempty" yaml:"prefill_efficiency,omitempty"`
	// PCIeGBs is the host-to-GPU link's nominal bandwidth in one direction, GB/s (PCIe 3.0 x16
	// 15.75, 4.0 x16 31.5, 5.0 x16 63); model loads copy the weights over it. 0 means
	// DefaultPCIeGBs.
	PCIeGBs float64 `json:"pcie_gbs,omitempty" yaml:"pcie_gbs,omitempty"`
}

// ModelSpec describes a model well enough to estimate its memory and speed.
type ModelSpec struct {
	// Name as clients ask for it ("llama3.1:8b").
	Name string `json:"name" yaml:"name"`
	// Aliases are other names that resolve to this model ("llama3.1" → "llama3.1:8b"); they are
	// compared after NormalizeName, so "llama3.1" and "llama3.1:latest" are the same alias.
	Aliases []string `json:"aliases,omitempty" yaml:"aliases,omitempty"`
	// Family ("llama"), ParameterCount (8.03e9), Quantization ("Q4_K_M").
	Family         string  `json:"family" yaml:"family"`
	ParameterCount float64 `json:"parameter_count" yaml:"parameter_count"`
	Quantization   string  `json:"quantization" yaml:"quantization"`
	// WeightsBytes is the size of the weights file.
	WeightsBytes uint64 `json:"weights_bytes" yaml:"weights_bytes"`
	// Layers, KVHeads and HeadDim size the KV cache; ContextLength is the default context.
	Layers        int `json:"layers" yaml:"layers"`
	KVHeads       int `json:"kv_heads" yaml:"kv_heads"`
	HeadDim       int `json:"head_dim" yaml:"head_dim"`
	ContextLength int `json:"context_length" yaml:"context_length"`
	// Embedding is true for embedding-only models; EmbeddingDim is their output size.
	Embedding    bool `json:"embedding,omitempty" yaml:"embedding,omitempty"`
	EmbeddingDim int  `json:"embedding_dim,omitempty" yaml:"embedding_dim,omitempty"`
}
