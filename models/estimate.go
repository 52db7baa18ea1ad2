package models

// Defaults and constants of the VRAM estimator.
const (
	// DefaultContextLength is the per-slot context EstimateVRAM assumes when given none; it is
	// Ollama's default num_ctx.
	DefaultContextLength = 4096
	// ComputeOverheadBytes is the fixed allowance for the runner's compute buffers (the graph's
	// scratch tensors, output logits, CUDA context) of a generative model. llama.cpp sizes these at
	// a few hundred MiB for 1B–70B models at a 4k context; 512 MiB covers that with some headroom.
	ComputeOverheadBytes = 512 << 20
	// EmbeddingOverheadBytes is the same allowance for an embedding (encoder) model, whose graph
	// is far smaller.
	EmbeddingOverheadBytes = 128 << 20
	// kvBytesPerElement is the size of one KV cache element: f16, llama.cpp's and Ollama's default.
	kvBytesPerElement = 2
)

// KVCacheBytes is the KV cache of one model instance: keys and values (2) for every layer, KV head
// and head dimension, for contextLen positions in each of parallelSlots slots, in f16 (2 bytes).
// contextLen ≤ 0 means DefaultContextLength; it is capped at the model's trained context.
// parallelSlots ≤ 0 means 1. Embedding models keep no cache between requests: 0.
func KVCacheBytes(spec ModelSpec, contextLen, parallelSlots int) uint64 {
	if spec.Embedding {
		return 0
	}
	if contextLen <= 0 {
		contextLen = DefaultContextLength
	}
	if spec.ContextLength > 0 && contextLen > spec.ContextLength {
		contextLen = spec.ContextLength
	}
	if parallelSlots <= 0 {
		parallelSlots = 1
	}
	return 2 * uint64(max(spec.Layers, 0)) * uint64(max(spec.KVHeads, 0)) * uint64(max(spec.HeadDim, 0)) *
		uint64(contextLen) * kvBytesPerElement * uint64(parallelSlots)
}

// EstimateVRAM is the GPU memory a model needs once loaded, as Ollama allocates it:
//
//	weights + KV cache + fixed overhead
//
// where the KV cache is 2 × layers × kv_heads × head_dim × ctx × 2 bytes (f16) × slots (see
// KVCacheBytes; Ollama allocates num_ctx for each of its OLLAMA_NUM_PARALLEL slots up front) and
// the overhead is ComputeOverheadBytes (EmbeddingOverheadBytes for embedding models). Example:
// llama3.1:8b at a 4096 context with 4 slots is 4.92 GB + 2.15 GB + 0.54 GB ≈ 7.6 GB.
func EstimateVRAM(spec ModelSpec, contextLen, parallelSlots int) uint64 {
	overhead := uint64(ComputeOverheadBytes)
	if spec.Embedding {
		overhead = EmbeddingOverheadBytes
	}
	return spec.WeightsBytes + KVCacheBytes(spec, contextLen, parallelSlots) + overhead
}

func decodeEfficiency(gpu GPUProfile) float64 {
	if gpu.DecodeEfficiency > 0 {
		return gpu.DecodeEfficiency
	}
	return DefaultDecodeEfficiency
}

func prefillEfficiency(gpu GPUProfile) float64 {
	if gpu.PrefillEfficiency > 0 {
		return gpu.PrefillEfficiency
	}
	return DefaultPrefillEfficiency
}

// DecodeTokensPerSecond is the single-request decode speed of spec on gpu. Decode at batch 1 is
// memory bound: every token reads all the weights once, so
//
//	tok/s ≈ efficiency × bandwidth / weights bytes
//
// with the profile's DecodeEfficiency (DefaultDecodeEfficiency when unset). The KV cache read is
// left out: at the contexts chat uses it is a few percent of the weights. 0 when either side
// lacks the figures.
func DecodeTokensPerSecond(gpu GPUProfile, spec ModelSpec) float64 {
	if gpu.MemoryBandwidthGBs <= 0 || spec.WeightsBytes == 0 {
		return 0
	}
	return decodeEfficiency(gpu) * gpu.MemoryBandwidthGBs * 1e9 / float64(spec.WeightsBytes)
}

// PrefillTokensPerSecond is the prompt-processing speed of spec on gpu. Prefill is compute bound:
// each token costs about 2 × parameters FLOPs, so
//
//	tok/s ≈ efficiency × FP16 FLOPS / (2 × parameters)
//
// with the profile's PrefillEfficiency (DefaultPrefillEfficiency when unset). 0 when either side
// lacks the figures.
func PrefillTokensPerSecond(gpu GPUProfile, spec ModelSpec) float64 {
	if gpu.FP16TFLOPS <= 0 || spec.ParameterCount <= 0 {
		return 0
	}
	return prefillEfficiency(gpu) * gpu.FP16TFLOPS * 1e12 / (2 * spec.ParameterCount)
}
