package models

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

const mib = 1 << 20

// Calibration defaults for the speed model. DecodeTokensPerSecond and PrefillTokensPerSecond use
// them when a profile leaves its own efficiency at zero.
const (
	// DefaultDecodeEfficiency is the fraction of peak memory bandwidth llama.cpp turns into decode
	// on GDDR boards at batch 1. 0.6 reproduces the published llama-bench figures for
	// Llama-3-8B Q4_K_M (4.92 GB of weights): RTX 3090 111.7 tok/s (model: 114), A40 ≈ 89
	// (model: 85).
	DefaultDecodeEfficiency = 0.6
	// DefaultPrefillEfficiency is the fraction of dense FP16 tensor throughput llama.cpp reaches in
	// prompt processing. 0.45 reproduces the RTX 3090's pp1024 of 3865 tok/s on Llama-3-8B Q4_K_M
	// (model: 3979).
	DefaultPrefillEfficiency = 0.45
)

// benchSource names the llama.cpp measurements the speed model is calibrated against.
const benchSource = "llama.cpp llama-bench, Llama-3-8B Q4_K_M (github.com/XiongjieDai/GPU-Benchmarks-on-LLM-Inference): " +
	"RTX 3090 tg1024 111.74 tok/s, pp1024 3865 tok/s; A40 tg ≈ 89 tok/s"

// gpuProfiles is the built-in table. VRAMBytes is the total NVML reports (what nvidia-smi prints
// as "MiB" total), which is a little below the datasheet size where ECC or firmware reserve some.
// It is never handed out directly: GPUProfiles and LookupGPU return copies.
var gpuProfiles = []GPUProfile{
	{
		Key: "t4", Name: "Tesla T4", Aliases: []string{"tesla-t4", "nvidia-t4"},
		VRAMBytes: 15360 * mib, MemoryBandwidthGBs: 320, FP16TFLOPS: 65,
		PowerLimitWatts: 70, IdlePowerWatts: 9, BoostClockMHz: 1590, ECC: true,
		Source: "NVIDIA T4 datasheet: 16 GB GDDR6, 320 GB/s, 65 TFLOPS FP16 tensor (mixed precision), 70 W, " +
			"1590 MHz boost; NVML total 15360 MiB. Decode derived from bandwidth at the default efficiency " +
			"(≈38 tok/s on Llama-3-8B Q4_K_M); " + benchSource,
	},
	{
		Key: "a40", Name: "NVIDIA A40", Aliases: []string{"nvidia-a40"},
		VRAMBytes: 46068 * mib, MemoryBandwidthGBs: 696, FP16TFLOPS: 149.7,
		PowerLimitWatts: 300, IdlePowerWatts: 30, BoostClockMHz: 1740, ECC: true,
		Source: "NVIDIA A40 datasheet: 48 GB GDDR6 with ECC, 696 GB/s, 149.7 TFLOPS FP16 tensor dense " +
			"(299.4 sparse), 300 W, 1740 MHz boost; NVML total 46068 MiB; " + benchSource,
	},
	{
		Key: "3090", Name: "NVIDIA GeForce RTX 3090", Aliases: []string{"rtx3090", "rtx-3090", "geforce-rtx-3090"},
		VRAMBytes: 24576 * mib, MemoryBandwidthGBs: 936, FP16TFLOPS: 142,
		PowerLimitWatts: 350, IdlePowerWatts: 25, BoostClockMHz: 1695, ECC: false,
		Source: "NVIDIA Ampere GA102 whitepaper, GeForce RTX 3090: 24 GB GDDR6X, 936 GB/s, 142 TFLOPS FP16 " +
			"tensor dense with FP16 accumulate (71 with FP32 accumulate; llama.cpp's cuBLAS path accumulates " +
			"in FP16), 350 W, 1695 MHz boost, no ECC; NVML total 24576 MiB; " + benchSource,
	},
	{
		Key: "l4", Name: "NVIDIA L4", Aliases: []string{"nvidia-l4"},
		VRAMBytes: 23034 * mib, MemoryBandwidthGBs: 300, FP16TFLOPS: 121,
		PowerLimitWatts: 72, IdlePowerWatts: 16, BoostClockMHz: 2040, ECC: true,
		Source: "NVIDIA L4 datasheet: 24 GB GDDR6, 300 GB/s, 121 TFLOPS FP16 tensor dense (242 sparse), " +
			"72 W, 2040 MHz boost; NVML total 23034 MiB. Not benchmarked here: default efficiencies; " + benchSource,
	},
	{
		Key: "a100", Name: "NVIDIA A100-SXM4-80GB", Aliases: []string{"a100-80gb", "a100-sxm", "a100-sxm4-80gb"},
		VRAMBytes: 81920 * mib, MemoryBandwidthGBs: 2039, FP16TFLOPS: 312,
		PowerLimitWatts: 400, IdlePowerWatts: 60, BoostClockMHz: 1410, ECC: true,
		DecodeEfficiency: 0.37, PrefillEfficiency: 0.27,
		Source: "NVIDIA A100 datasheet (80GB SXM): 80 GB HBM2e, 2039 GB/s, 312 TFLOPS FP16 tensor dense, " +
			"400 W, 1410 MHz boost; NVML total 81920 MiB. llama.cpp reaches a smaller share of HBM " +
			"bandwidth at batch 1: decode efficiency 0.37 from llama.cpp Q4_K_M runs " +
			"(pavlokhmel.com LLM throughput benchmark on 13 GPUs: Gemma-4-31B 43 tok/s, Qwen3.5-9B 123 tok/s), " +
			"prefill efficiency 0.27 scaled from the A100/3090 pp ratio of the LLaMA 2 7B runs in " + benchSource,
	},
	{
		Key: "h100", Name: "NVIDIA H100 80GB HBM3", Aliases: []string{"h100-sxm", "h100-sxm5", "h100-80gb"},
		VRAMBytes: 81559 * mib, MemoryBandwidthGBs: 3350, FP16TFLOPS: 989,
		PowerLimitWatts: 700, IdlePowerWatts: 70, BoostClockMHz: 1980, ECC: true,
		DecodeEfficiency: 0.35, PrefillEfficiency: 0.16,
		Source: "NVIDIA H100 datasheet (SXM5): 80 GB HBM3, 3.35 TB/s, 989 TFLOPS FP16 tensor dense " +
			"(1979 sparse), 700 W, 1980 MHz boost; NVML total 81559 MiB. Decode efficiency 0.35 from llama.cpp " +
			"Q4_K_M runs (pavlokhmel.com LLM throughput benchmark on 13 GPUs: Gemma-4-31B 68 tok/s, " +
			"Qwen3.5-9B 190 tok/s), prefill efficiency 0.16 scaled from the H100 PCIe/3090 pp ratio of the " +
			"LLaMA 2 7B runs in " + benchSource,
	},
}

func cloneGPU(p GPUProfile) GPUProfile {
	p.Aliases = slices.Clone(p.Aliases)
	return p
}

// GPUProfileNamed finds a built-in profile by the name NVML reports ("Tesla T4"), case-insensitively,
// copying only the one found: the gateway asks for every GPU of every heartbeat.
func GPUProfileNamed(name string) (GPUProfile, bool) {
	for i := range gpuProfiles {
		if strings.EqualFold(gpuProfiles[i].Name, name) {
			return cloneGPU(gpuProfiles[i]), true
		}
	}
	return GPUProfile{}, false
}

// GPUProfiles returns the built-in GPU profiles, a fresh copy each call, in a stable order.
func GPUProfiles() []GPUProfile {
	out := make([]GPUProfile, len(gpuProfiles))
	for i, p := range gpuProfiles {
		out[i] = cloneGPU(p)
	}
	return out
}

// LookupGPU finds a profile by key or alias, case-insensitively ("T4", "rtx3090").
func LookupGPU(key string) (GPUProfile, bool) {
	k := strings.ToLower(strings.TrimSpace(key))
	if k == "" {
		return GPUProfile{}, false
	}
	for _, p := range gpuProfiles {
		if p.Key == k || slices.Contains(p.Aliases, k) {
			return cloneGPU(p), true
		}
	}
	return GPUProfile{}, false
}

// GPUGroup is Count identical GPUs of one profile, as a GPU list names them ("2xt4").
type GPUGroup struct {
	Profile GPUProfile
	Count   int
}

// Limits on what ParseGPUList accepts, so that a typo cannot ask the simulator for a million GPUs.
const (
	// MaxGPUsPerGroup bounds the count of one entry.
	MaxGPUsPerGroup = 64
	// MaxGPUsPerList bounds the sum of all counts in one list.
	MaxGPUsPerList = 256
)

// ErrBadGPUList is wrapped by every error ParseGPUList returns.
var ErrBadGPUList = errors.New("bad GPU list")

// ParseGPUList parses a comma-separated GPU list such as "2xt4,a40,3090": each entry is a profile
// key or alias, optionally prefixed by a count and "x" (or "*"). Whitespace around entries is
// ignored and keys are case-insensitive. Groups come back in the order given; a profile named
// twice keeps its first position and the counts add up.
func ParseGPUList(s string) ([]GPUGroup, error) {
	if strings.TrimSpace(s) == "" {
		return nil, fmt.Errorf("%w: empty (want e.g. %q)", ErrBadGPUList, "2xt4,a40,3090")
	}
	var groups []GPUGroup
	total := 0
	for i, raw := range strings.Split(s, ",") {
		entry := strings.TrimSpace(raw)
		if entry == "" {
			return nil, fmt.Errorf("%w: entry %d is empty", ErrBadGPUList, i+1)
		}
		count, key, err := splitCount(entry)
		if err != nil {
			return nil, fmt.Errorf("%w: entry %q: %w", ErrBadGPUList, entry, err)
		}
		p, ok := LookupGPU(key)
		if !ok {
			return nil, fmt.Errorf("%w: entry %q: unknown GPU %q (known: %s)", ErrBadGPUList, entry, key, strings.Join(gpuKeys(), ", "))
		}
		total += count
		if total > MaxGPUsPerList {
			return nil, fmt.Errorf("%w: more than %d GPUs in all", ErrBadGPUList, MaxGPUsPerList)
		}
		if j := slices.IndexFunc(groups, func(g GPUGroup) bool { return g.Profile.Key == p.Key }); j >= 0 {
			groups[j].Count += count
			if groups[j].Count > MaxGPUsPerGroup {
				return nil, fmt.Errorf("%w: more than %d %s GPUs", ErrBadGPUList, MaxGPUsPerGroup, p.Key)
			}
			continue
		}
		groups = append(groups, GPUGroup{Profile: p, Count: count})
	}
	return groups, nil
}

// splitCount splits "2xt4" into 2 and "t4"; an entry without a count prefix is one GPU.
func splitCount(entry string) (int, string, error) {
	digits := 0
	for digits < len(entry) && entry[digits] >= '0' && entry[digits] <= '9' {
		digits++
	}
	if digits == 0 || digits == len(entry) || (entry[digits] != 'x' && entry[digits] != 'X' && entry[digits] != '*') {
		// No count prefix: the whole entry is the key (this is how "3090" stays a key).
		return 1, entry, nil
	}
	key := strings.TrimSpace(entry[digits+1:])
	if key == "" {
		return 0, "", errors.New("count without a GPU name")
	}
	n, err := strconv.Atoi(entry[:digits])
	if err != nil || n < 1 || n > MaxGPUsPerGroup {
		return 0, "", fmt.Errorf("count must be 1..%d", MaxGPUsPerGroup)
	}
	return n, key, nil
}

func gpuKeys() []string {
	keys := make([]string, len(gpuProfiles))
	for i, p := range gpuProfiles {
		keys[i] = p.Key
	}
	return keys
}

// FormatGPUList writes groups back in the syntax ParseGPUList reads ("2xt4,a40").
func FormatGPUList(groups []GPUGroup) string {
	parts := make([]string, len(groups))
	for i, g := range groups {
		if g.Count == 1 {
			parts[i] = g.Profile.Key
		} else {
			parts[i] = strconv.Itoa(g.Count) + "x" + g.Profile.Key
		}
	}
	return strings.Join(parts, ",")
}

// ExpandGPUs lists one profile per physical GPU, in group order: the shape a simulated node takes.
func ExpandGPUs(groups []GPUGroup) []GPUProfile {
	var out []GPUProfile
	for _, g := range groups {
		for range g.Count {
			out = append(out, cloneGPU(g.Profile))
		}
	}
	return out
}
