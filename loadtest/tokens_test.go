package loadtest

import (
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

func TestParseTokenDist(t *testing.T) {
	good := []struct {
		in   string
		want TokenDist
		mean float64
		max  int
	}{
		{"512", TokenDist{Kind: "fixed", A: 512}, 512, 512},
		{" fixed:64 ", TokenDist{Kind: "fixed", A: 64}, 64, 64},
		{"uniform:100:900", TokenDist{Kind: "uniform", A: 100, B: 900}, 500, 900},
		{"UNIFORM:5:5", TokenDist{Kind: "uniform", A: 5, B: 5}, 5, 5},
		{"normal:300:50", TokenDist{Kind: "normal", A: 300, B: 50}, 300, 500},
		{"lognormal:600:300", TokenDist{Kind: "lognormal", A: 600, B: 300}, 600, 2400},
	}
	for _, tc := range good {
		d, err := ParseTokenDist(tc.in)
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		if d != tc.want || d.Mean() != tc.mean || d.Max() != tc.max {
			t.Errorf("%q: %+v mean %v max %d, want %+v mean %v max %d", tc.in, d, d.Mean(), d.Max(), tc.want, tc.mean, tc.max)
		}
		if back, err := ParseTokenDist(d.String()); err != nil || back != d {
			t.Errorf("%q: String %q does not parse back (%v)", tc.in, d.String(), err)
		}
	}
	for _, in := range []string{"", "0", "-3", "uniform:9:3", "uniform:0:3", "uniform:1", "normal:0:1", "zipf:1:2",
		"fixed:1:2", "NaN", "inf", "uniform:1:x", "2000000", "lognormal:10:-1"} {
		if _, err := ParseTokenDist(in); !errors.Is(err, ErrBadOptions) {
			t.Errorf("%q: err %v, want ErrBadOptions", in, err)
		}
	}
}

func TestTokenDistSample(t *testing.T) {
	for _, s := range []string{"64", "uniform:10:20", "normal:300:100", "lognormal:600:300"} {
		d, _ := ParseTokenDist(s)
		r := rand.New(rand.NewPCG(1, 2))
		sum, n := 0.0, 20000
		for range n {
			v := d.Sample(r)
			if v < 1 || v > d.Max() {
				t.Fatalf("%s: sample %d outside [1, %d]", s, v, d.Max())
			}
			sum += float64(v)
		}
		if mean := sum / float64(n); math.Abs(mean-d.Mean()) > 0.03*d.Mean()+0.5 {
			t.Errorf("%s: sample mean %.1f, want about %v", s, mean, d.Mean())
		}
	}
}

func FuzzParseTokenDist(f *testing.F) {
	for _, s := range []string{"512", "uniform:1:9", "normal:3:1", "lognormal:600:300", "x:1", "::", "1e300"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseTokenDist(s)
		if err != nil {
			if !errors.Is(err, ErrBadOptions) {
				t.Fatalf("%q: error %v does not wrap ErrBadOptions", s, err)
			}
			return
		}
		if d.Max() < 1 || d.Mean() < 1 {
			t.Fatalf("%q: %+v has max %d mean %v", s, d, d.Max(), d.Mean())
		}
		r := rand.New(rand.NewPCG(3, 4))
		for range 8 {
			if v := d.Sample(r); v < 1 || v > d.Max() {
				t.Fatalf("%q: sample %d outside [1, %d]", s, v, d.Max())
			}
		}
		if back, err := ParseTokenDist(d.String()); err != nil || back != d {
			t.Fatalf("%q: %+v → %q does not parse back: %v", s, d, d.String(), err)
		}
	})
}

func TestSyntheticWorkload(t *testing.T) {
	o := Options{Workload: WorkloadSynthetic, Seed: 9, Stream: true,
		PromptTokens: TokenDist{Kind: "uniform", A: 100, B: 300}, OutputTokens: TokenDist{Kind: "uniform", A: 16, B: 48}}
	g := newGenerator(o.withDefaults())
	if g.maxOutputTokens() != 48 {
		t.Errorf("max output %d", g.maxOutputTokens())
	}
	seenMax := map[int]bool{}
	for i := range uint64(200) {
		var req chatRequest
		if err := json.Unmarshal(g.body(i), &req); err != nil {
			t.Fatal(err)
		}
		if req.MaxTokens < 16 || req.MaxTokens > 48 {
			t.Fatalf("request %d: max_tokens %d outside the distribution", i, req.MaxTokens)
		}
		seenMax[req.MaxTokens] = true
		n := len(req.Messages[0].Content)
		if n < 100*synthBytesPerToken-1 || n > 300*synthBytesPerToken+16 {
			t.Fatalf("request %d: prompt of %d bytes for 100–300 tokens", i, n)
		}
		if !strings.HasSuffix(req.Messages[0].Content, ".") {
			t.Fatalf("request %d: prompt %q", i, req.Messages[0].Content[max(0, n-20):])
		}
	}
	if len(seenMax) < 10 {
		t.Errorf("only %d distinct output lengths in 200 requests", len(seenMax))
	}
	if string(g.body(7)) != string(newGenerator(o.withDefaults()).body(7)) {
		t.Error("the same seed and index gave different bodies")
	}
	o.MaxTokens = 5
	if g := newGenerator(o.withDefaults()); g.maxOutputTokens() != 5 || g.outputTokens(3) != 5 {
		t.Error("MaxTokens should override the output distribution")
	}
}
