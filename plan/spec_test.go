package plan

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/herd-llm/herd/models"
)

func loadtestPrice(gpu string, usd float64) models.NodePrice {
	return models.NodePrice{GPU: gpu, PriceUSD: usd}
}

func TestValidate(t *testing.T) {
	cases := []struct {
		name string
		edit func(*Spec)
		want string // "" = valid
	}{
		{"defaults", func(*Spec) {}, ""},
		{"no rate", func(s *Spec) { s.Workload.RPS = -1 }, "workload.rps"},
		{"unknown model", func(s *Spec) { s.Workload.Model = "gpt-9" }, "not in the model catalogue"},
		{"embedding model", func(s *Spec) { s.Workload.Model = "nomic-embed-text" }, "embedding"},
		{"bad prompt dist", func(s *Spec) { s.Workload.PromptTokens = "zipf:1" }, "prompt_tokens"},
		{"bad output dist", func(s *Spec) { s.Workload.OutputTokens = "uniform:9:1" }, "output_tokens"},
		{"too long for the context", func(s *Spec) { s.Workload.PromptTokens = "4000" }, "context"},
		{"negative SLO", func(s *Spec) { s.Workload.SLO.TPOT = -time.Millisecond }, "slo"},
		{"attainment over 1", func(s *Spec) { s.Workload.Attainment = 1.5 }, "attainment"},
		{"unknown GPU", func(s *Spec) { s.GPUs = []string{"v100"} }, "unknown GPU"},
		{"catalogue unknown GPU", func(s *Spec) { s.Catalogue = []models.NodePrice{{GPU: "tpu", PriceUSD: 1}} }, "catalogue[0]"},
		{"catalogue free GPU", func(s *Spec) { s.Catalogue = []models.NodePrice{{GPU: "t4"}} }, "price_usd"},
		{"too many nodes", func(s *Spec) { s.MaxNodes = 1000 }, "max_nodes"},
		{"contention over 1", func(s *Spec) { s.Contention = 2 }, "contention"},
		{"probe too short", func(s *Spec) { s.ProbeDuration = time.Millisecond }, "probe_duration"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := DefaultSpec()
			tc.edit(&s)
			err := s.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ErrBadSpec) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err %v, want ErrBadSpec mentioning %q", err, tc.want)
			}
		})
	}
}

func TestParseSpec(t *testing.T) {
	file := `
workload:
  rps: 7.5
  model: qwen2.5:7b
  prompt_tokens: uniform:100:900
  output_tokens: "128"
  slo: {ttft: 1500ms, tpot: 80ms}
  attainment: 0.95
gpus: [t4, l4, a100]
catalogue:
  - gpu: l4
    price_usd: 5000
    host_power_watts: 80
    source: quote from our supplier
max_nodes: 8
electricity_usd_per_kwh: 0.3
verify: 2
probe_duration: 20s
`
	s := DefaultSpec()
	if err := ParseSpec([]byte(file), &s); err != nil {
		t.Fatal(err)
	}
	w := s.Workload
	if w.RPS != 7.5 || w.Model != "qwen2.5:7b" || w.OutputTokens != "128" || w.SLO.TTFT != 1500*time.Millisecond || w.Attainment != 0.95 {
		t.Errorf("workload %+v", w)
	}
	if len(s.GPUs) != 3 || len(s.Catalogue) != 1 || s.Catalogue[0].HostPowerWatts != 80 || s.MaxNodes != 8 || s.ProbeDuration != 20*time.Second {
		t.Errorf("spec %+v", s)
	}
	if s.AmortizeYears != DefaultAmortizeYears {
		t.Errorf("a field the file does not name lost its default: %v", s.AmortizeYears)
	}
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"workload: {rps: fast}", "nope: 1", "workload:\n  slo: {ttft: soon}", "a: 1\n---\nb: 2", "[1, 2"} {
		s := DefaultSpec()
		if err := ParseSpec([]byte(bad), &s); !errors.Is(err, ErrBadSpec) {
			t.Errorf("%q: err %v", bad, err)
		}
	}
	if err := ParseSpec(nil, &s); err != nil {
		t.Errorf("empty file: %v", err)
	}
}

func TestParseCatalogue(t *testing.T) {
	for _, in := range []string{
		"- {gpu: t4, price_usd: 4000}\n- {gpu: h100, price_usd: 35000, source: list price}\n",
		"catalogue:\n  - {gpu: t4, price_usd: 4000}\n  - {gpu: h100, price_usd: 35000}\n",
	} {
		list, err := ParseCatalogue([]byte(in))
		if err != nil || len(list) != 2 || list[1].GPU != "h100" || list[0].PriceUSD != 4000 {
			t.Errorf("%q: %+v %v", in, list, err)
		}
	}
	if _, err := ParseCatalogue([]byte("- {gpu: t4, cost: 4}")); !errors.Is(err, ErrBadSpec) {
		t.Errorf("unknown key: err %v", err)
	}
}

func FuzzParseSpec(f *testing.F) {
	for _, s := range []string{
		"workload: {rps: 3, prompt_tokens: '512', output_tokens: uniform:1:9}",
		"gpus: [t4]\ncatalogue: [{gpu: t4, price_usd: 1}]",
		"max_nodes: -1", "workload: {slo: {ttft: 1s, tpot: 1ms}}", "", "~", "[]",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s := DefaultSpec()
		if err := ParseSpec(data, &s); err != nil {
			if !errors.Is(err, ErrBadSpec) {
				t.Fatalf("error %v does not wrap ErrBadSpec", err)
			}
			return
		}
		if err := s.Validate(); err != nil {
			if !errors.Is(err, ErrBadSpec) {
				t.Fatalf("validation error %v does not wrap ErrBadSpec", err)
			}
			return
		}
		// A valid spec plans without panicking and without simulation.
		s.Verify = -1
		s.MaxNodes, s.MaxMixNodes = min(s.MaxNodes, 4), min(s.MaxMixNodes, 3)
		if _, err := Run(t.Context(), s, nil, nil); err != nil {
			t.Fatalf("valid spec failed to plan: %v", err)
		}
	})
}

func FuzzParseCatalogue(f *testing.F) {
	for _, s := range []string{"- {gpu: t4, price_usd: 4000}", "catalogue: [{gpu: h100, price_usd: 1}]", "- 1", "{}", ""} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		list, err := ParseCatalogue(data)
		if err != nil {
			if !errors.Is(err, ErrBadSpec) {
				t.Fatalf("error %v does not wrap ErrBadSpec", err)
			}
			return
		}
		s := DefaultSpec()
		s.Catalogue = list
		if err := s.Validate(); err != nil && !errors.Is(err, ErrBadSpec) {
			t.Fatalf("validation error %v does not wrap ErrBadSpec", err)
		}
	})
}
