// Package plan answers "what should I buy for this workload": from a workload (request rate,
// prompt and output token distributions, model, SLO) and a hardware catalogue with prices and
// power, it enumerates cluster options (homogeneous node counts and mixes of two GPU types),
// estimates analytically which can meet the SLO, verifies the cheapest candidates by a capacity
// search on a simulated cluster of that size (loadtest's capacity probes), and ranks them by cost,
// with power, energy and cost per million tokens.
//
// Decisions worth knowing:
//
//   - A node is one machine with one GPU, the unit herd schedules; prices are per node
//     (models.NodePrices, overridable by a catalogue file).
//   - The analytic estimate is deliberately simpler than the simulator, so that verification
//     tests it rather than repeats it: a node runs Slots streams, each decoding at the GPU
//     profile's single-stream speed slowed by Contention per other busy stream, as many streams as
//     the TPOT SLO allows; its rate is streams ÷ (prefill + decode time of a mean request); the
//     cluster's is Headroom × the sum over nodes (herd routes by speed, so a mix adds up).
//   - Verification runs the real herd binary on a simulated cluster (one simulated agent per
//     node) with the synthetic workload; an option passes when its verified capacity reaches the
//     workload's rate. Every verified figure is simulated and printed as such.
//   - Power at the workload's rate is, per node, the host's draw plus the GPU's idle power plus
//     (board limit − idle) × utilisation, the utilisation being rate ÷ capacity (verified when
//     known). Cost per million tokens adds the capex spread evenly over AmortizeYears of
//     round-the-clock service to the electricity.
package plan

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/herd-llm/herd/loadtest"
	"github.com/herd-llm/herd/models"
)

// ErrBadSpec wraps every validation failure of a Spec.
var ErrBadSpec = errors.New("plan: bad spec")

// Workload is what the cluster must serve.
type Workload struct {
	// RPS is the mean request rate (Poisson arrivals).
	RPS float64 `yaml:"rps" json:"rps"`
	// Model is the model every request asks for (a models catalogue name).
	Model string `yaml:"model" json:"model"`
	// PromptTokens and OutputTokens are token distributions in loadtest.ParseTokenDist's form
	// ("512", "uniform:100:900", "lognormal:600:300").
	PromptTokens string `yaml:"prompt_tokens" json:"prompt_tokens"`
	OutputTokens string `yaml:"output_tokens" json:"output_tokens"`
	// SLO is what each request must meet, Attainment the share of requests that must.
	SLO        SLO     `yaml:"slo" json:"slo"`
	Attainment float64 `yaml:"attainment" json:"attainment"`
}

// SLO is a latency target per request.
type SLO struct {
	TTFT time.Duration `yaml:"ttft" json:"ttft"`
	TPOT time.Duration `yaml:"tpot" json:"tpot"`
}

// Spec is a planning question: the workload, the hardware to choose from and the cost model. It
// is what a plan file holds (YAML, the keys of the yaml tags) and what herd plan's flags set.
type Spec struct {
	Workload Workload `yaml:"workload" json:"workload"`
	// GPUs are the GPU types to consider (profile keys; default every one with a price).
	GPUs []string `yaml:"gpus" json:"gpus"`
	// Catalogue overrides or adds node prices (by GPU key).
	Catalogue []models.NodePrice `yaml:"catalogue" json:"catalogue,omitempty"`
	// MaxNodes bounds homogeneous options; MaxMixNodes bounds two-type mixes (0: no mixes
	// beyond the default, which is min(MaxNodes, 6)).
	MaxNodes    int `yaml:"max_nodes" json:"max_nodes"`
	MaxMixNodes int `yaml:"max_mix_nodes" json:"max_mix_nodes"`
	// ElectricityUSDPerKWh prices energy; AmortizeYears spreads the capex.
	ElectricityUSDPerKWh float64 `yaml:"electricity_usd_per_kwh" json:"electricity_usd_per_kwh"`
	AmortizeYears        float64 `yaml:"amortize_years" json:"amortize_years"`
	// Slots, Contention and Headroom shape the analytic estimate (defaults 4, 0.25, 0.8).
	Slots      int     `yaml:"slots" json:"slots"`
	Contention float64 `yaml:"contention" json:"contention"`
	Headroom   float64 `yaml:"headroom" json:"headroom"`
	// Verify is how many passing candidates to verify by simulation (0: default 3; negative:
	// none); VerifyMax bounds verifications in all (default 2 × Verify); VerifyProbes bounds the
	// probes of each (default 3); ProbeDuration is each probe's length in simulated time (default
	// 30s); SimSpeed the simulation's time scale (default 4); MaxSimNodes the largest option
	// simulated (default 12).
	Verify        int           `yaml:"verify" json:"verify"`
	VerifyMax     int           `yaml:"verify_max" json:"verify_max"`
	VerifyProbes  int           `yaml:"verify_probes" json:"verify_probes"`
	ProbeDuration time.Duration `yaml:"probe_duration" json:"probe_duration"`
	SimSpeed      float64       `yaml:"sim_speed" json:"sim_speed"`
	MaxSimNodes   int           `yaml:"max_sim_nodes" json:"max_sim_nodes"`
	// Seed seeds the simulated workload.
	Seed uint64 `yaml:"seed" json:"seed"`
	// Top is how many options the report lists (default 10).
	Top int `yaml:"top" json:"top"`
}

// Defaults of a Spec.
const (
	DefaultRPS                  = 4.0
	DefaultPromptTokens         = "lognormal:600:300"
	DefaultOutputTokens         = "uniform:64:256"
	DefaultMaxNodes             = 12
	DefaultElectricityUSDPerKWh = 0.15
	DefaultAmortizeYears        = 3.0
	DefaultSlots                = 4
	DefaultContention           = 0.25
	DefaultHeadroom             = 0.8
	DefaultVerify               = 3
	DefaultVerifyProbes         = 3
	DefaultProbeDuration        = 30 * time.Second
	DefaultSimSpeed             = 4.0
	DefaultMaxSimNodes          = 12
	DefaultTop                  = 10
	// contextTokens is the simulated nodes' context window (models.DefaultContextLength): a
	// prompt and its output must fit in it.
	contextTokens = models.DefaultContextLength
	// maxRPS bounds the workload's rate, so that a typo cannot plan for a million requests/s.
	maxRPS = 10000
)

// DefaultSpec is the spec herd plan starts from.
func DefaultSpec() Spec {
	return Spec{
		Workload: Workload{
			RPS: DefaultRPS, Model: loadtest.DefaultModel, PromptTokens: DefaultPromptTokens, OutputTokens: DefaultOutputTokens,
			SLO: SLO{TTFT: loadtest.CapacityDefaultSLOTTFT, TPOT: loadtest.CapacityDefaultSLOTPOT}, Attainment: loadtest.CapacityDefaultAttainment,
		},
		MaxNodes: DefaultMaxNodes, ElectricityUSDPerKWh: DefaultElectricityUSDPerKWh, AmortizeYears: DefaultAmortizeYears,
		Slots: DefaultSlots, Contention: DefaultContention, Headroom: DefaultHeadroom,
		Verify: DefaultVerify, VerifyProbes: DefaultVerifyProbes, ProbeDuration: DefaultProbeDuration,
		SimSpeed: DefaultSimSpeed, MaxSimNodes: DefaultMaxSimNodes, Seed: 1, Top: DefaultTop,
	}
}

// withDefaults fills zero fields from DefaultSpec.
func (s Spec) withDefaults() Spec {
	d := DefaultSpec()
	w := &s.Workload
	if w.RPS == 0 {
		w.RPS = d.Workload.RPS
	}
	if w.Model == "" {
		w.Model = d.Workload.Model
	}
	if w.PromptTokens == "" {
		w.PromptTokens = d.Workload.PromptTokens
	}
	if w.OutputTokens == "" {
		w.OutputTokens = d.Workload.OutputTokens
	}
	if w.SLO.TTFT == 0 && w.SLO.TPOT == 0 {
		w.SLO = d.Workload.SLO
	}
	if w.Attainment == 0 {
		w.Attainment = d.Workload.Attainment
	}
	for _, f := range []struct {
		p *float64
		v float64
	}{{&s.ElectricityUSDPerKWh, d.ElectricityUSDPerKWh}, {&s.AmortizeYears, d.AmortizeYears}, {&s.Contention, d.Contention},
		{&s.Headroom, d.Headroom}, {&s.SimSpeed, d.SimSpeed}} {
		if *f.p == 0 {
			*f.p = f.v
		}
	}
	for _, f := range []struct {
		p *int
		v int
	}{{&s.MaxNodes, d.MaxNodes}, {&s.Slots, d.Slots}, {&s.Verify, d.Verify}, {&s.VerifyProbes, d.VerifyProbes},
		{&s.MaxSimNodes, d.MaxSimNodes}, {&s.Top, d.Top}} {
		if *f.p == 0 {
			*f.p = f.v
		}
	}
	if s.MaxMixNodes == 0 {
		s.MaxMixNodes = min(s.MaxNodes, 6)
	}
	if s.VerifyMax == 0 {
		s.VerifyMax = 2 * max(s.Verify, 0)
	}
	if s.ProbeDuration == 0 {
		s.ProbeDuration = d.ProbeDuration
	}
	return s
}

// parsed is a validated spec with its distributions and catalogue resolved.
type parsed struct {
	Spec
	prompt, output loadtest.TokenDist
	model          models.ModelSpec
	prices         map[string]models.NodePrice
	gpus           []models.GPUProfile
}

// Validate reports everything wrong with s (after defaults), joined.
func (s Spec) Validate() error {
	_, err := s.parse()
	return err
}

func (s Spec) parse() (*parsed, error) {
	s = s.withDefaults()
	p := &parsed{Spec: s, prices: map[string]models.NodePrice{}}
	var errs []string
	bad := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	w := s.Workload
	if !(w.RPS > 0) || w.RPS > maxRPS || math.IsInf(w.RPS, 0) {
		bad("workload.rps must be in (0, %d], got %v", maxRPS, w.RPS)
	}
	var ok bool
	if p.model, ok = models.LookupModel(w.Model); !ok {
		bad("workload.model %q is not in the model catalogue", w.Model)
	} else if p.model.Embedding {
		bad("workload.model %q is an embedding model: plan sizes chat workloads", w.Model)
	}
	var err error
	if p.prompt, err = loadtest.ParseTokenDist(w.PromptTokens); err != nil {
		bad("workload.prompt_tokens: %v", strings.TrimPrefix(err.Error(), loadtest.ErrBadOptions.Error()+": "))
	}
	if p.output, err = loadtest.ParseTokenDist(w.OutputTokens); err != nil {
		bad("workload.output_tokens: %v", strings.TrimPrefix(err.Error(), loadtest.ErrBadOptions.Error()+": "))
	}
	if err == nil && p.prompt.Kind != "" && p.prompt.Max()+p.output.Max() >= contextTokens {
		bad("the longest prompt (%d tokens) and output (%d) must fit the simulated nodes' %d-token context", p.prompt.Max(), p.output.Max(), contextTokens)
	}
	if w.SLO.TTFT <= 0 || w.SLO.TPOT <= 0 {
		bad("workload.slo needs a positive ttft and tpot, got %s and %s", w.SLO.TTFT, w.SLO.TPOT)
	}
	if !(w.Attainment > 0 && w.Attainment <= 1) {
		bad("workload.attainment must be in (0, 1], got %v", w.Attainment)
	}
	for _, np := range models.NodePrices() {
		p.prices[np.GPU] = np
	}
	for i, np := range s.Catalogue {
		g, ok := models.LookupGPU(np.GPU)
		switch {
		case !ok:
			bad("catalogue[%d]: unknown GPU %q", i, np.GPU)
			continue
		case !(np.PriceUSD > 0) || math.IsInf(np.PriceUSD, 0):
			bad("catalogue[%d] (%s): price_usd must be positive, got %v", i, np.GPU, np.PriceUSD)
			continue
		case np.HostPowerWatts < 0 || math.IsNaN(np.HostPowerWatts) || math.IsInf(np.HostPowerWatts, 0):
			bad("catalogue[%d] (%s): host_power_watts must be ≥ 0, got %v", i, np.GPU, np.HostPowerWatts)
			continue
		}
		np.GPU = g.Key
		if np.HostPowerWatts == 0 {
			np.HostPowerWatts = models.DefaultHostPowerWatts
		}
		if np.Source == "" {
			np.Source = "catalogue file"
		}
		p.prices[g.Key] = np
	}
	gpus := s.GPUs
	if len(gpus) == 0 {
		for _, g := range models.GPUProfiles() {
			if _, ok := p.prices[g.Key]; ok {
				gpus = append(gpus, g.Key)
			}
		}
	}
	seen := map[string]bool{}
	for _, k := range gpus {
		g, ok := models.LookupGPU(k)
		if !ok {
			bad("gpus: unknown GPU %q", k)
			continue
		}
		if _, ok := p.prices[g.Key]; !ok {
			bad("gpus: %s has no price (add it to the catalogue)", g.Key)
			continue
		}
		if !seen[g.Key] {
			seen[g.Key] = true
			p.gpus = append(p.gpus, g)
		}
	}
	for _, f := range []struct {
		name   string
		v, max int
	}{{"max_nodes", s.MaxNodes, 64}, {"max_mix_nodes", s.MaxMixNodes, 64}, {"slots", s.Slots, 64}, {"verify_probes", s.VerifyProbes, 20},
		{"max_sim_nodes", s.MaxSimNodes, 32}, {"top", s.Top, 1000}} {
		if f.v < 1 || f.v > f.max {
			bad("%s must be in 1..%d, got %d", f.name, f.max, f.v)
		}
	}
	if s.Verify > 20 || s.VerifyMax > 40 || s.VerifyMax < 0 {
		bad("verify must be ≤ 20 and verify_max in 0..40, got %d and %d", s.Verify, s.VerifyMax)
	}
	for _, f := range []struct {
		name     string
		v, lo, h float64
	}{{"electricity_usd_per_kwh", s.ElectricityUSDPerKWh, 0, 100}, {"amortize_years", s.AmortizeYears, 0.01, 50},
		{"contention", s.Contention, 0, 1}, {"headroom", s.Headroom, 0.01, 1}, {"sim_speed", s.SimSpeed, 0.01, 100}} {
		if !(f.v >= f.lo && f.v <= f.h) {
			bad("%s must be in [%g, %g], got %v", f.name, f.lo, f.h, f.v)
		}
	}
	if s.ProbeDuration < time.Second || s.ProbeDuration > 10*time.Minute {
		bad("probe_duration must be in 1s..10m, got %s", s.ProbeDuration)
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("%w: %s", ErrBadSpec, strings.Join(errs, "; "))
	}
	return p, nil
}
