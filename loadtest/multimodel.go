package loadtest

import (
	"math"
	"slices"
	"sort"
	"time"
)

// The multi-model workload's parameters, pinned so that every run and every policy sees the same
// requests (with the same seed).
const (
	// MultiModelZipfS is the Zipf exponent of model popularity: model k (1-based, in
	// MultiModelModels order) is asked for in proportion to 1/k^s; with 8 models and s = 1 the
	// first gets 37% of the requests and the last 4.6%.
	MultiModelZipfS = 1.0
	// MultiModelPromptMinWords and MultiModelPromptMaxWords size each single-turn prompt
	// (≈ 140–560 simulated tokens).
	MultiModelPromptMinWords = 100
	MultiModelPromptMaxWords = 400
	// MultiModelMaxTokens is each request's max_tokens.
	MultiModelMaxTokens = 128
	// MultiModelMaxLoaded is the simulated nodes' OLLAMA_MAX_LOADED_MODELS: with 4 nodes, 4 of
	// the 8 models fit at once.
	MultiModelMaxLoaded = 1
	// MultiModelGPUs is the scenario's default cluster: 4 heterogeneous nodes.
	MultiModelGPUs = "t4,a40,3090,l4"
	// MultiModelSLOTTFT is the capacity scenario's TTFT SLO for this workload. With 4 of the 8
	// models loaded at a time, about a quarter of the requests (the Zipf tail: 23%) ask for a
	// model loaded nowhere, and a load takes 2–4 s on these nodes: at the usual 2 s every policy
	// fails at every rate. 10 s lets a request wait for one load (and a little queue), not for a
	// node that keeps swapping models; capacity then measures how much swapping a policy causes.
	MultiModelSLOTTFT = 10 * time.Second
)

// Capacity-probe timing of the two conversation-scale workloads, in simulated time: long enough
// that conversations run through their turns and model placement settles before measuring.
const (
	// MultiTurnMeasured is how long a multi-turn probe measures after its warm-up
	// (MultiTurnWarmUp: users start at random turns, so the whole range of context lengths up to
	// 8.5k tokens is in flight from the start).
	MultiTurnMeasured = 150 * time.Second
	// MultiModelProbe is a multi-model probe: 30 s of warm-up (the first loads of the popular
	// models; no model is resident at start), then 120 s measured.
	MultiModelProbe  = 150 * time.Second
	MultiModelWarmUp = 30 * time.Second
)

// MultiModelModels are the multi-model workload's eight models, most popular first: small and
// mid-size chat models of five families, each resident on one node at a time.
func MultiModelModels() []string {
	return []string{"llama3.1:8b", "qwen2.5:7b", "llama3.2:3b", "mistral:7b", "gemma2:2b", "phi3:mini", "qwen2.5:3b", "llama3.2:1b"}
}

// zipfCDF is the cumulative distribution of ranks 1..n with weights 1/k^s.
func zipfCDF(n int, s float64) []float64 {
	cdf := make([]float64, n)
	total := 0.0
	for k := range n {
		total += 1 / math.Pow(float64(k+1), s)
		cdf[k] = total
	}
	for k := range cdf {
		cdf[k] /= total
	}
	return cdf
}

// zipfPick maps u in [0, 1) to a rank index by the cumulative distribution.
func zipfPick(cdf []float64, u float64) int {
	i := sort.SearchFloat64s(cdf, u)
	return min(i, len(cdf)-1)
}

// zipfShares returns the share of each rank (for reports and tests).
func zipfShares(n int, s float64) []float64 {
	cdf := zipfCDF(n, s)
	out := slices.Clone(cdf)
	for k := len(out) - 1; k > 0; k-- {
		out[k] -= out[k-1]
	}
	return out
}
