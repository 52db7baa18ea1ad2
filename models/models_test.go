package models

import (
	"errors"
	"go/build"
	"math"
	"strings"
	"testing"
)

func within(got, want, tol float64) bool { return math.Abs(got-want) <= tol*want }

func mustGPU(t *testing.T, key string) GPUProfile {
	t.Helper()
	p, ok := LookupGPU(key)
	if !ok {
		t.Fatalf("LookupGPU(%q) not found", key)
	}
	return p
}

func mustModel(t *testing.T, name string) ModelSpec {
	t.Helper()
	s, ok := LookupModel(name)
	if !ok {
		t.Fatalf("LookupModel(%q) not found", name)
	}
	return s
}

// The calibration points the speed model must reproduce within ±10%: llama.cpp Llama-3-8B
// Q4_K_M decode on RTX 3090 (111.74 tok/s measured), A40 (≈89) and T4 (≈38, derived from bandwidth).
func TestDecodeCalibration(t *testing.T) {
	spec := mustModel(t, "llama3.1:8b")
	for _, tc := range []struct {
		gpu  string
		want float64
	}{
		{"3090", 112},
		{"a40", 89},
		{"t4", 38},
	} {
		t.Run(tc.gpu, func(t *testing.T) {
			got := DecodeTokensPerSecond(mustGPU(t, tc.gpu), spec)
			if !within(got, tc.want, 0.10) {
				t.Errorf("decode %s = %.1f tok/s, want %.0f ± 10%%", tc.gpu, got, tc.want)
			}
		})
	}
}

func TestPrefillCalibration(t *testing.T) {
	spec := mustModel(t, "llama3.1:8b")
	// llama-bench pp1024 on an RTX 3090: 3865 tok/s.
	if got := PrefillTokensPerSecond(mustGPU(t, "3090"), spec); !within(got, 3865, 0.10) {
		t.Errorf("prefill 3090 = %.0f tok/s, want 3865 ± 10%%", got)
	}
	// Prefill is always far faster than decode, and a bigger model is slower on the same GPU.
	for _, g := range GPUProfiles() {
		if p, d := PrefillTokensPerSecond(g, spec), DecodeTokensPerSecond(g, spec); p < 10*d {
			t.Errorf("%s: prefill %.0f not ≫ decode %.0f", g.Key, p, d)
		}
		big := mustModel(t, "llama3.1:70b")
		if DecodeTokensPerSecond(g, big) >= DecodeTokensPerSecond(g, spec) || PrefillTokensPerSecond(g, big) >= PrefillTokensPerSecond(g, spec) {
			t.Errorf("%s: 70b not slower than 8b", g.Key)
		}
	}
}

func TestSpeedZeroWhenFiguresMissing(t *testing.T) {
	g := mustGPU(t, "t4")
	if DecodeTokensPerSecond(g, ModelSpec{}) != 0 || PrefillTokensPerSecond(g, ModelSpec{}) != 0 {
		t.Error("speed of an empty spec is not 0")
	}
	if DecodeTokensPerSecond(GPUProfile{}, mustModel(t, "llama3.1:8b")) != 0 {
		t.Error("speed on an empty profile is not 0")
	}
}

func TestGPUProfilesComplete(t *testing.T) {
	want := []string{"t4", "a40", "3090", "l4", "a100", "h100"}
	ps := GPUProfiles()
	if len(ps) != len(want) {
		t.Fatalf("got %d profiles, want %d", len(ps), len(want))
	}
	for i, p := range ps {
		if p.Key != want[i] {
			t.Errorf("profile %d key %q, want %q", i, p.Key, want[i])
		}
		if p.Name == "" || p.VRAMBytes < 15<<30 || p.MemoryBandwidthGBs <= 0 || p.FP16TFLOPS <= 0 ||
			p.PowerLimitWatts <= p.IdlePowerWatts || p.IdlePowerWatts <= 0 || p.BoostClockMHz == 0 {
			t.Errorf("profile %s incomplete: %+v", p.Key, p)
		}
		if !strings.Contains(p.Source, "datasheet") && !strings.Contains(p.Source, "whitepaper") {
			t.Errorf("profile %s source names no NVIDIA spec sheet: %q", p.Key, p.Source)
		}
		if !strings.Contains(p.Source, "llama.cpp") {
			t.Errorf("profile %s source names no llama.cpp calibration: %q", p.Key, p.Source)
		}
	}
	// Callers get copies.
	ps[0].Aliases[0] = "mutated"
	ps[0].Key = "mutated"
	if p := mustGPU(t, "t4"); p.Aliases[0] == "mutated" {
		t.Error("GPUProfiles shares alias storage with the table")
	}
}

func TestLookupGPU(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string
		ok   bool
	}{
		{"t4", "t4", true},
		{" T4 ", "t4", true},
		{"RTX3090", "3090", true},
		{"rtx-3090", "3090", true},
		{"a100-80gb", "a100", true},
		{"h100", "h100", true},
		{"v100", "", false},
		{"", "", false},
	} {
		p, ok := LookupGPU(tc.in)
		if ok != tc.ok || p.Key != tc.want {
			t.Errorf("LookupGPU(%q) = %q, %v; want %q, %v", tc.in, p.Key, ok, tc.want, tc.ok)
		}
	}
}

func TestParseGPUList(t *testing.T) {
	type g struct {
		key   string
		count int
	}
	for _, tc := range []struct {
		in      string
		want    []g
		wantErr string
	}{
		{in: "2xt4,a40,3090", want: []g{{"t4", 2}, {"a40", 1}, {"3090", 1}}},
		{in: " 4X3090 ", want: []g{{"3090", 4}}},
		{in: "3*a40", want: []g{{"a40", 3}}},
		{in: "t4, t4 ,2xt4", want: []g{{"t4", 4}}},
		{in: "rtx3090,h100", want: []g{{"3090", 1}, {"h100", 1}}},
		{in: "", wantErr: "empty"},
		{in: "   ", wantErr: "empty"},
		{in: "t4,,a40", wantErr: "entry 2 is empty"},
		{in: "t4,", wantErr: "entry 2 is empty"},
		{in: "0xt4", wantErr: "count must be 1..64"},
		{in: "65xt4", wantErr: "count must be 1..64"},
		{in: "99999999999999999999xt4", wantErr: "count must be 1..64"},
		{in: "2x", wantErr: "count without a GPU name"},
		{in: "v100", wantErr: `unknown GPU "v100" (known: t4, a40, 3090, l4, a100, h100)`},
		{in: "2xv100", wantErr: `unknown GPU "v100"`},
		{in: "x3090", wantErr: `unknown GPU "x3090"`},
		{in: "-1xt4", wantErr: `unknown GPU "-1xt4"`},
		{in: "64xt4,64xa40,64x3090,64xl4,1xh100", wantErr: "more than 256 GPUs"},
		{in: "40xt4,40xt4", wantErr: "more than 64 t4 GPUs"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseGPUList(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
				}
				if !errors.Is(err, ErrBadGPUList) {
					t.Errorf("err %v does not wrap ErrBadGPUList", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %d groups, want %d", len(got), len(tc.want))
			}
			for i := range got {
				if got[i].Profile.Key != tc.want[i].key || got[i].Count != tc.want[i].count {
					t.Errorf("group %d = %s×%d, want %s×%d", i, got[i].Profile.Key, got[i].Count, tc.want[i].key, tc.want[i].count)
				}
			}
		})
	}
}

func TestExpandAndFormatGPUs(t *testing.T) {
	groups, err := ParseGPUList("2xt4,a40")
	if err != nil {
		t.Fatal(err)
	}
	gpus := ExpandGPUs(groups)
	if len(gpus) != 3 || gpus[0].Key != "t4" || gpus[1].Key != "t4" || gpus[2].Key != "a40" {
		t.Errorf("ExpandGPUs = %v", gpus)
	}
	if s := FormatGPUList(groups); s != "2xt4,a40" {
		t.Errorf("FormatGPUList = %q", s)
	}
}

func FuzzParseGPUList(f *testing.F) {
	for _, s := range []string{"2xt4,a40,3090", "t4", "", ",", "0xt4", "64xh100", "2X rtx3090", "3*l4,a100", "1x", "9999999999999999999999x3090"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		groups, err := ParseGPUList(s)
		if err != nil {
			if !errors.Is(err, ErrBadGPUList) {
				t.Fatalf("error %v does not wrap ErrBadGPUList", err)
			}
			if groups != nil {
				t.Fatal("groups with an error")
			}
			return
		}
		if len(groups) == 0 {
			t.Fatal("no groups and no error")
		}
		total := 0
		for _, g := range groups {
			if g.Count < 1 || g.Count > MaxGPUsPerGroup {
				t.Fatalf("count %d out of range", g.Count)
			}
			if _, ok := LookupGPU(g.Profile.Key); !ok {
				t.Fatalf("unknown profile %q", g.Profile.Key)
			}
			total += g.Count
		}
		if total > MaxGPUsPerList {
			t.Fatalf("total %d", total)
		}
		// What parsed formats back into something that parses to the same groups.
		again, err := ParseGPUList(FormatGPUList(groups))
		if err != nil {
			t.Fatalf("round trip of %q: %v", FormatGPUList(groups), err)
		}
		if FormatGPUList(again) != FormatGPUList(groups) {
			t.Fatalf("round trip %q != %q", FormatGPUList(again), FormatGPUList(groups))
		}
	})
}

func TestCatalogue(t *testing.T) {
	want := map[string]bool{
		"llama3.2:1b": false, "llama3.2:3b": false, "llama3.1:8b": false, "qwen2.5:7b": false,
		"qwen2.5:14b": false, "mistral:7b": false, "gemma2:9b": false, "llama3.1:70b": false,
		"qwen2.5:3b": false, "gemma2:2b": false, "phi3:mini": false,
		"nomic-embed-text:latest": true, "all-minilm:latest": true,
	}
	cat := Catalogue()
	if len(cat) != len(want) {
		t.Fatalf("catalogue has %d models, want %d", len(cat), len(want))
	}
	for _, s := range cat {
		emb, ok := want[s.Name]
		if !ok {
			t.Errorf("unexpected model %q", s.Name)
			continue
		}
		if s.Embedding != emb {
			t.Errorf("%s: Embedding = %v", s.Name, s.Embedding)
		}
		if s.Family == "" || s.ParameterCount <= 0 || s.Quantization == "" || s.WeightsBytes == 0 ||
			s.Layers <= 0 || s.KVHeads <= 0 || s.HeadDim <= 0 || s.ContextLength <= 0 {
			t.Errorf("%s incomplete: %+v", s.Name, s)
		}
		if NormalizeName(s.Name) != s.Name {
			t.Errorf("catalogue name %q is not normalised", s.Name)
		}
		// Q4 weights are about half a byte per parameter; F16 two; Q8 one. A spec far off that is a typo.
		bpp := float64(s.WeightsBytes) / s.ParameterCount
		if bpp < 0.5 || bpp > 2.2 {
			t.Errorf("%s: %.2f bytes per parameter", s.Name, bpp)
		}
	}
	if s := mustModel(t, "nomic-embed-text"); s.EmbeddingDim != 768 {
		t.Errorf("nomic-embed-text dim %d", s.EmbeddingDim)
	}
	if s := mustModel(t, "all-minilm"); s.EmbeddingDim != 384 {
		t.Errorf("all-minilm dim %d", s.EmbeddingDim)
	}
	cat[2].Aliases[0] = "mutated"
	if _, ok := LookupModel("mutated"); ok {
		t.Error("Catalogue shares alias storage with the table")
	}
}

func TestLookupModel(t *testing.T) {
	for _, tc := range []struct {
		in, want string
	}{
		{"llama3.1:8b", "llama3.1:8b"},
		{"llama3.1", "llama3.1:8b"},
		{"llama3.1:latest", "llama3.1:8b"},
		{"LLAMA3.1:8B", "llama3.1:8b"},
		{"registry.ollama.ai/library/llama3.1:8b", "llama3.1:8b"},
		{"library/qwen2.5", "qwen2.5:7b"},
		{"llama3.2", "llama3.2:3b"},
		{"nomic-embed-text", "nomic-embed-text:latest"},
		{"nomic-embed-text:v1.5", "nomic-embed-text:latest"},
		{"all-minilm:l6-v2", "all-minilm:latest"},
		{"mistral", "mistral:7b"},
		{"gemma2", "gemma2:9b"},
		{"qwen2.5:14b", "qwen2.5:14b"},
		{"llama3.1:70b", "llama3.1:70b"},
		{"gpt-4o", ""},
		{"llama3.1:405b", ""},
		{"qwen2.5:14b-instruct", ""},
		{"", ""},
	} {
		s, ok := LookupModel(tc.in)
		if ok != (tc.want != "") || s.Name != tc.want {
			t.Errorf("LookupModel(%q) = %q, %v; want %q", tc.in, s.Name, ok, tc.want)
		}
	}
}

func TestNormalizeName(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"llama3.1", "llama3.1:latest"},
		{"llama3.1:8b", "llama3.1:8b"},
		{" Llama3.1:8B ", "llama3.1:8b"},
		{"llama3.1:", "llama3.1:latest"},
		{"registry.ollama.ai/library/mistral", "mistral:latest"},
		{"library/mistral:7b", "mistral:7b"},
		{"user/model", "user/model:latest"},
		{"myhost:5000/team/model", "myhost:5000/team/model:latest"},
		{"myhost:5000/team/model:q4", "myhost:5000/team/model:q4"},
		{"", ""},
		{"   ", ""},
	} {
		if got := NormalizeName(tc.in); got != tc.want {
			t.Errorf("NormalizeName(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func FuzzNormalizeName(f *testing.F) {
	for _, s := range []string{"llama3.1", "a:b", "registry.ollama.ai/library/x", "library/library/x", "h:1/", ":", "/", "@x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n := NormalizeName(s)
		if NormalizeName(n) != n {
			t.Fatalf("not idempotent: %q → %q → %q", s, n, NormalizeName(n))
		}
		if _, ok := LookupModel(s); ok && n == "" {
			t.Fatalf("empty name %q found a model", s)
		}
	})
}

func TestParameterSize(t *testing.T) {
	for _, tc := range []struct{ name, want string }{
		{"llama3.1:8b", "8.0B"},
		{"llama3.1:70b", "70.6B"},
		{"qwen2.5:14b", "14.8B"},
		{"nomic-embed-text", "137M"},
		{"all-minilm", "23M"},
	} {
		if got := mustModel(t, tc.name).ParameterSize(); got != tc.want {
			t.Errorf("%s: ParameterSize = %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestEstimateVRAM(t *testing.T) {
	l8 := mustModel(t, "llama3.1:8b")
	for _, tc := range []struct {
		name      string
		spec      ModelSpec
		ctx, slot int
		want      uint64
	}{
		// 4.92 GB + 2·32·8·128·4096·2·4 (2 GiB) + 512 MiB.
		{"llama3.1:8b 4k×4", l8, 4096, 4, 4_920_000_000 + 2<<30 + 512<<20},
		{"llama3.1:8b 4k×1", l8, 4096, 1, 4_920_000_000 + 512<<20 + 512<<20},
		{"defaults", l8, 0, 0, 4_920_000_000 + 512<<20 + 512<<20},
		// qwen2.5:7b has 4 KV heads: 2·28·4·128·8192·2 = 448 MiB per slot.
		{"qwen2.5:7b 8k×2", mustModel(t, "qwen2.5:7b"), 8192, 2, 4_680_000_000 + 2*448<<20 + 512<<20},
		// gemma2's trained context is 8192: a bigger request is capped.
		{"gemma2 capped", mustModel(t, "gemma2:9b"), 1 << 20, 1, 5_440_000_000 + 2*42*8*256*8192*2 + 512<<20},
		{"embedding", mustModel(t, "nomic-embed-text"), 8192, 4, 274_000_000 + 128<<20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := EstimateVRAM(tc.spec, tc.ctx, tc.slot); got != tc.want {
				t.Errorf("EstimateVRAM = %d, want %d", got, tc.want)
			}
		})
	}
	// More slots or context never need less memory.
	if EstimateVRAM(l8, 8192, 4) <= EstimateVRAM(l8, 4096, 4) || EstimateVRAM(l8, 4096, 8) <= EstimateVRAM(l8, 4096, 4) {
		t.Error("estimate does not grow with context and slots")
	}
}

// What fits where is the point of the estimator: check the facts a planner relies on.
func TestFits(t *testing.T) {
	for _, tc := range []struct {
		model, gpu string
		fits       bool
	}{
		{"llama3.1:8b", "t4", true},
		{"qwen2.5:14b", "t4", true},
		{"qwen2.5:14b", "3090", true},
		{"llama3.1:70b", "a40", false},
		{"llama3.1:70b", "h100", true},
		{"llama3.1:70b", "3090", false},
	} {
		need := EstimateVRAM(mustModel(t, tc.model), DefaultContextLength, 4)
		if got := need <= mustGPU(t, tc.gpu).VRAMBytes; got != tc.fits {
			t.Errorf("%s (%d MiB) on %s: fits = %v, want %v", tc.model, need>>20, tc.gpu, got, tc.fits)
		}
	}
}

// models is a leaf: it imports nothing of herd and nothing that does I/O.
func TestImportsNoIO(t *testing.T) {
	pkg, err := build.ImportDir(".", 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, imp := range pkg.Imports {
		if strings.HasPrefix(imp, "github.com/herd-llm/herd") && imp != "github.com/herd-llm/herd/models" {
			t.Errorf("models imports %s", imp)
		}
		for _, banned := range []string{"net", "os", "io/fs", "net/http", "os/exec", "database/sql"} {
			if imp == banned || strings.HasPrefix(imp, banned+"/") {
				t.Errorf("models imports %s (no I/O in models)", imp)
			}
		}
	}
}
