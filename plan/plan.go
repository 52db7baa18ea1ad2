package plan

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/herd-llm/herd/loadtest"
	"github.com/herd-llm/herd/models"
)

// NodeCount is Count nodes of one GPU type in an option.
type NodeCount struct {
	GPU   string `json:"gpu"`
	Count int    `json:"count"`
}

// Estimate is the analytic side of an option.
type Estimate struct {
	// CapacityRPS is the rate the option should sustain within the SLO (Headroom included).
	CapacityRPS float64 `json:"capacity_rps"`
	// Meets is CapacityRPS ≥ the workload's rate.
	Meets bool `json:"meets"`
	// Why says what limits an option that cannot meet the SLO at all ("" otherwise).
	Why string `json:"why,omitempty"`
}

// Verification is the simulated side of an option: a capacity search at that size.
type Verification struct {
	// Simulated is always true: the figures come from a simulated cluster.
	Simulated bool `json:"simulated"`
	// CapacityRPS is the highest rate that passed (0: none did); Bounded says whether a failing
	// rate was found above it (otherwise it is a lower bound).
	CapacityRPS float64 `json:"capacity_rps"`
	Bounded     bool    `json:"bounded"`
	// FailRPS is the lowest rate that failed above CapacityRPS (0: none did).
	FailRPS float64 `json:"fail_rps,omitempty"`
	// Pass is CapacityRPS ≥ the workload's rate.
	Pass bool `json:"pass"`
	// TokS, TTFT and TPOT were measured by the probe at CapacityRPS.
	TokS float64            `json:"tok_s"`
	TTFT loadtest.Quantiles `json:"ttft_ms"`
	TPOT loadtest.Quantiles `json:"tpot_ms"`
	// Probes lists every probe.
	Probes []loadtest.CapacityPoint `json:"probes"`
	// Error says why the verification could not run.
	Error string `json:"error,omitempty"`
}

// Option is one cluster to buy.
type Option struct {
	// Name is the node list in GPU-list form ("4xt4,a40").
	Name  string      `json:"name"`
	Nodes []NodeCount `json:"nodes"`
	// NodeCount is the number of machines.
	NodeCount int `json:"node_count"`
	// CapexUSD is the purchase price.
	CapexUSD float64 `json:"capex_usd"`
	// PowerW is the draw serving the workload; PeakPowerW at full load.
	PowerW     float64 `json:"power_w"`
	PeakPowerW float64 `json:"peak_power_w"`
	// TokS is the output tokens/s the workload asks for (rate × mean output).
	TokS float64 `json:"tok_s"`
	// KWhPerMTok and USDPerMTok are energy and cost (capex amortised + electricity) per million
	// output tokens at the workload's rate.
	KWhPerMTok float64 `json:"kwh_per_mtok"`
	USDPerMTok float64 `json:"usd_per_mtok"`
	// Estimate is the analytic answer; Verified the simulated one (nil: not verified).
	Estimate Estimate      `json:"estimate"`
	Verified *Verification `json:"verified,omitempty"`
	// Verdict is "pass" (verified), "fail" (verified), "likely" (estimated to pass, not
	// verified) or "no" (estimated not to).
	Verdict string `json:"verdict"`
}

// Verifier runs the simulated check of an option.
type Verifier interface {
	Verify(ctx context.Context, o *Option, w VerifyWorkload) (*Verification, error)
}

// VerifyWorkload is what a Verifier needs to know about the workload and the search.
type VerifyWorkload struct {
	RPS          float64
	Model        string
	PromptTokens loadtest.TokenDist
	OutputTokens loadtest.TokenDist
	SLO          SLO
	Attainment   float64
	// Probes bounds the search; ProbeDuration is each probe's length in simulated seconds;
	// SimSpeed the time scale; Seed the workload's seed.
	Probes        int
	ProbeDuration float64
	SimSpeed      float64
	Seed          uint64
	// CapacityEstimateRPS is the option's analytic capacity, a hint for the search.
	CapacityEstimateRPS float64
}

// Result is a plan: the options ranked, cheapest passing first.
type Result struct {
	// Simulated is true: verified figures come from simulated clusters.
	Simulated bool `json:"simulated"`
	// Workload and the cost model, as planned for.
	Workload             Workload `json:"workload"`
	ElectricityUSDPerKWh float64  `json:"electricity_usd_per_kwh"`
	AmortizeYears        float64  `json:"amortize_years"`
	SimSpeed             float64  `json:"sim_speed"`
	// Prices are the node prices used, by GPU.
	Prices []models.NodePrice `json:"prices"`
	// Considered is how many options were enumerated; Verified how many were simulated.
	Considered int `json:"considered"`
	Verified   int `json:"verified"`
	// Options are the Top best, ranked, followed by any verified option ranked below them.
	Options []Option `json:"options"`
	// Recommendation is the name of the cheapest verified-passing option ("" when none).
	Recommendation string `json:"recommendation"`
}

// nodeModel is the analytic per-node figures for one GPU type.
type nodeModel struct {
	profile models.GPUProfile
	price   models.NodePrice
	rate    float64 // requests/s within the SLO, before headroom; 0: cannot meet it
	why     string
}

// perNode estimates one node of gpu for the workload.
func (p *parsed) perNode(g models.GPUProfile) nodeModel {
	nm := nodeModel{profile: g, price: p.prices[g.Key]}
	if need := models.EstimateVRAM(p.model, contextTokens, p.Slots); need > g.VRAMBytes {
		nm.why = fmt.Sprintf("%s needs %.1f GB, the %s has %.1f GB", p.model.Name, float64(need)/1e9, g.Key, float64(g.VRAMBytes)/1e9)
		return nm
	}
	tps := models.DecodeTokensPerSecond(g, p.model)
	pre := models.PrefillTokensPerSecond(g, p.model)
	if tps <= 0 || pre <= 0 {
		nm.why = "no speed figures for the " + g.Key
		return nm
	}
	tpot := p.Workload.SLO.TPOT.Seconds()
	streams := 0
	for k := 1; k <= p.Slots; k++ {
		if (1+p.Contention*float64(k-1))/tps <= tpot {
			streams = k
		}
	}
	if streams == 0 {
		nm.why = fmt.Sprintf("one stream decodes at %.0f ms/token, over the TPOT SLO", 1000/tps)
		return nm
	}
	prefill := p.prompt.Mean() / pre
	if prefill > p.Workload.SLO.TTFT.Seconds()/2 {
		nm.why = fmt.Sprintf("prefill of a mean prompt takes %.2fs, over half the TTFT SLO", prefill)
		return nm
	}
	service := prefill + p.output.Mean()*(1+p.Contention*float64(streams-1))/tps
	nm.rate = float64(streams) / service
	return nm
}

// enumerate lists the options: 1..MaxNodes of each type and every two-type mix of up to
// MaxMixNodes nodes.
func (p *parsed) enumerate() []Option {
	var out []Option
	for _, g := range p.gpus {
		for n := 1; n <= p.MaxNodes; n++ {
			out = append(out, Option{Nodes: []NodeCount{{GPU: g.Key, Count: n}}})
		}
	}
	for i, a := range p.gpus {
		for _, b := range p.gpus[i+1:] {
			for na := 1; na < p.MaxMixNodes; na++ {
				for nb := 1; na+nb <= p.MaxMixNodes; nb++ {
					out = append(out, Option{Nodes: []NodeCount{{GPU: a.Key, Count: na}, {GPU: b.Key, Count: nb}}})
				}
			}
		}
	}
	return out
}

// cost fills an option's name, capex, estimate and cost figures; capacity is the rate used for
// the utilisation (verified when known, else the estimate).
func (p *parsed) cost(o *Option, per map[string]nodeModel) {
	var parts []string
	o.NodeCount, o.CapexUSD = 0, 0
	raw := 0.0
	var whys []string
	for _, nc := range o.Nodes {
		nm := per[nc.GPU]
		o.NodeCount += nc.Count
		o.CapexUSD += float64(nc.Count) * nm.price.PriceUSD
		raw += float64(nc.Count) * nm.rate
		if nm.why != "" {
			whys = append(whys, nm.why)
		}
		if nc.Count == 1 {
			parts = append(parts, nc.GPU)
		} else {
			parts = append(parts, strconv.Itoa(nc.Count)+"x"+nc.GPU)
		}
	}
	o.Name = strings.Join(parts, ",")
	o.Estimate = Estimate{CapacityRPS: round(raw * p.Headroom)}
	o.Estimate.Meets = o.Estimate.CapacityRPS >= p.Workload.RPS
	if raw == 0 {
		o.Estimate.Why = strings.Join(whys, "; ")
	}
	// The utilisation's capacity: the verified bracket's middle when the search found both ends
	// (its passing end alone is often just the rate probed first), else what passed, else the
	// estimate before headroom.
	capacity := raw
	if v := o.Verified; v != nil && v.Error == "" {
		switch {
		case v.FailRPS > v.CapacityRPS && v.CapacityRPS > 0:
			capacity = (v.CapacityRPS + v.FailRPS) / 2
		case v.CapacityRPS > 0 && !v.Bounded:
			capacity = max(v.CapacityRPS, raw)
		default:
			capacity = v.CapacityRPS
		}
	}
	u := 1.0
	if capacity > 0 {
		u = min(p.Workload.RPS/capacity, 1)
	}
	o.PowerW, o.PeakPowerW = 0, 0
	for _, nc := range o.Nodes {
		nm := per[nc.GPU]
		g := nm.profile
		n := float64(nc.Count)
		o.PowerW += n * (nm.price.HostPowerWatts + g.IdlePowerWatts + (g.PowerLimitWatts-g.IdlePowerWatts)*u)
		o.PeakPowerW += n * (nm.price.HostPowerWatts + g.PowerLimitWatts)
	}
	o.PowerW, o.PeakPowerW = round(o.PowerW), round(o.PeakPowerW)
	served := p.Workload.RPS
	if v := o.Verified; v != nil && v.Error == "" && !v.Pass {
		served = min(served, v.CapacityRPS) // what it was seen to serve within the SLO
	} else if v == nil && !o.Estimate.Meets {
		served = min(served, raw*p.Headroom)
	}
	o.TokS = round(served * p.output.Mean())
	if o.TokS > 0 {
		perMTokS := 1e6 / o.TokS // seconds to make a million tokens
		o.KWhPerMTok = round(o.PowerW * perMTokS / 3.6e6)
		capexPerS := o.CapexUSD / (p.AmortizeYears * 365.25 * 24 * 3600)
		o.USDPerMTok = round((capexPerS + o.PowerW/1000*p.ElectricityUSDPerKWh/3600) * perMTokS)
	}
	switch {
	case o.Verified != nil && o.Verified.Error == "" && o.Verified.Pass:
		o.Verdict = "pass"
	case o.Verified != nil && o.Verified.Error == "":
		o.Verdict = "fail"
	case o.Estimate.Meets:
		o.Verdict = "likely"
	default:
		o.Verdict = "no"
	}
}

func round(v float64) float64 { return math.Round(v*1000) / 1000 }

// verdictRank orders verdicts: verified passes first, then unverified likely ones, then
// verified failures, then the rest.
func verdictRank(v string) int {
	switch v {
	case "pass":
		return 0
	case "likely":
		return 1
	case "fail":
		return 2
	}
	return 3
}

func rank(opts []Option) {
	slices.SortStableFunc(opts, func(a, b Option) int {
		return cmp.Or(
			cmp.Compare(verdictRank(a.Verdict), verdictRank(b.Verdict)),
			cmp.Compare(a.CapexUSD, b.CapexUSD),
			cmp.Compare(a.PowerW, b.PowerW),
			cmp.Compare(a.NodeCount, b.NodeCount),
			strings.Compare(a.Name, b.Name),
		)
	})
}

// Progress receives one line per verification step (nil: quiet).
type Progress func(format string, args ...any)

// Run plans spec: it enumerates, estimates and ranks the options, verifies the cheapest ones
// the estimate passes with v (nil: no verification), and returns the Top options.
func Run(ctx context.Context, spec Spec, v Verifier, progress Progress) (*Result, error) {
	p, err := spec.parse()
	if err != nil {
		return nil, err
	}
	if progress == nil {
		progress = func(string, ...any) {}
	}
	per := map[string]nodeModel{}
	for _, g := range p.gpus {
		per[g.Key] = p.perNode(g)
	}
	opts := p.enumerate()
	for i := range opts {
		p.cost(&opts[i], per)
	}
	rank(opts)
	res := &Result{
		Simulated: true, Workload: p.Workload, ElectricityUSDPerKWh: p.ElectricityUSDPerKWh, AmortizeYears: p.AmortizeYears,
		SimSpeed: p.SimSpeed, Considered: len(opts),
	}
	for _, g := range p.gpus {
		res.Prices = append(res.Prices, per[g.Key].price)
	}
	if v != nil && p.Verify > 0 {
		vw := VerifyWorkload{
			RPS: p.Workload.RPS, Model: p.model.Name, PromptTokens: p.prompt, OutputTokens: p.output, SLO: p.Workload.SLO,
			Attainment: p.Workload.Attainment, Probes: p.VerifyProbes, ProbeDuration: p.ProbeDuration.Seconds(),
			SimSpeed: p.SimSpeed, Seed: p.Seed,
		}
		passed := 0
		for i := range opts {
			o := &opts[i]
			if passed >= p.Verify || res.Verified >= p.VerifyMax {
				break
			}
			if o.Verdict != "likely" || o.NodeCount > p.MaxSimNodes {
				continue
			}
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			progress("== plan: verifying %s ($%.0f, estimated %.2f req/s) on a SIMULATED cluster", o.Name, o.CapexUSD, o.Estimate.CapacityRPS)
			vw.CapacityEstimateRPS = o.Estimate.CapacityRPS
			ver, err := v.Verify(ctx, o, vw)
			if err != nil {
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				ver = &Verification{Simulated: true, Error: err.Error()}
			}
			o.Verified = ver
			res.Verified++
			p.cost(o, per)
			if o.Verdict == "pass" {
				passed++
			}
		}
		rank(opts)
	}
	for _, o := range opts {
		if o.Verdict == "pass" {
			res.Recommendation = o.Name
			break
		}
	}
	// The Top best, and every verified option beyond them: a failed verification is news.
	res.Options = slices.Clone(opts[:min(len(opts), p.Top)])
	for _, o := range opts[min(len(opts), p.Top):] {
		if o.Verified != nil {
			res.Options = append(res.Options, o)
		}
	}
	return res, nil
}
