package loadtest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// ScenarioCapacity searches, per policy, the highest Poisson arrival rate at which a target share
// of requests meets both the TTFT and the TPOT SLO (DistServe's "goodput"), on fresh simulated
// clusters.
const ScenarioCapacity = "capacity"

// Defaults of the capacity scenario. Rates, durations and latencies are in simulated time (see
// SimProbe): the SLOs are those of an interactive chat service on this hardware, the probes long
// enough that a queue building at an overloaded node shows in the tail (30 simulated seconds are
// about 100–200 requests at the rates that matter here) and short enough that a search of every
// policy fits in a few minutes of wall time at sim speed 4.
const (
	CapacityDefaultAttainment    = 0.9
	CapacityDefaultSLOTTFT       = 2 * time.Second
	CapacityDefaultSLOTPOT       = 100 * time.Millisecond
	CapacityDefaultProbeDuration = 30 * time.Second
	CapacityDefaultSimSpeed      = 4.0
	CapacityDefaultStartRPS      = 2.0
	CapacityDefaultProbes        = 7
	// CapacityDefaultEngine: the simulated nodes behave like Ollama (slot-local prompt caches,
	// OLLAMA_MAX_LOADED_MODELS), the server herd is built around.
	CapacityDefaultEngine = "ollama"
)

// SimProbe runs capacity probes, each on a fresh simulated cluster started from the herd binary,
// so that no probe inherits a queue, a warm cache or a learned speed from the one before.
//
// Time scale: the cluster runs SimSpeed times faster than the hardware it models, and every
// duration the probe sets is scaled with it, so that the figures it reports are those of the
// modelled hardware. Rates given to and reported by Run are simulated requests/s (the load
// generator sends SimSpeed times as many per wall second); the probe's Duration and the SLOs are
// simulated time (divided by SimSpeed on the wall clock); the agents heartbeat every
// 1s ÷ SimSpeed; latencies and tokens/s are converted back (× SimSpeed and ÷ SimSpeed). What
// the sim does not model — the gateway's and the network's own few milliseconds — is scaled up
// with the rest, a small pessimism at high speeds.
type SimProbe struct {
	// Binary is the herd binary (default: this executable).
	Binary string
	// GPUs is the cluster, one agent per comma-separated group ("t4,a40,3090").
	GPUs string
	// Policy is the gateway's scheduling policy.
	Policy string
	// SimSpeed is the time scale (default CapacityDefaultSimSpeed).
	SimSpeed float64
	// Load is the workload: Workload, Model, Stream, MaxTokens, Seed, Conversations, Turns, the
	// synthetic token distributions; Duration (default CapacityDefaultProbeDuration) and the SLOs
	// (defaults CapacityDefaultSLOTTFT and CapacityDefaultSLOTPOT) in simulated time. RPS, ramps,
	// Concurrency, Target and Events are set by the probe.
	Load Options
	// Attainment is the share of requests that must meet the SLO (default 0.9).
	Attainment float64
	// LogDir, when set, keeps each probe's process logs in a subdirectory.
	LogDir string
	// Engine is the model server the simulated nodes behave like (default CapacityDefaultEngine).
	Engine string
	// Progress receives one line per probe (nil: quiet).
	Progress io.Writer

	probes int
}

// CapacityPoint is what one probe measured, in simulated units.
type CapacityPoint struct {
	// RateRPS is the offered Poisson rate; Pass whether Attainment reached the target.
	RateRPS    float64 `json:"rate_rps"`
	Pass       bool    `json:"pass"`
	Attainment float64 `json:"attainment"`
	// Requests were sent, Good met both SLOs, Errors failed.
	Requests int `json:"requests"`
	Good     int `json:"good"`
	Errors   int `json:"errors"`
	// ErrorKinds counts failures by kind.
	ErrorKinds map[string]int `json:"error_kinds,omitempty"`
	// ThroughputRPS and TokS are successful requests and output tokens per simulated second.
	ThroughputRPS float64 `json:"throughput_rps"`
	TokS          float64 `json:"tok_s"`
	// TTFT and TPOT are in simulated milliseconds.
	TTFT Quantiles `json:"ttft_ms"`
	TPOT Quantiles `json:"tpot_ms"`
	// Nodes counts requests by serving node.
	Nodes map[string]int `json:"nodes,omitempty"`
	// Engine is what the simulated engines' logs say they did in the measured window: prompt
	// tokens evaluated (prefill done after their caches), reused, and model loads.
	Engine EngineStats `json:"engine"`
	// PrefillPerRequest is Engine.PrefillTokens per prefill; LoadsPer1k model loads per 1,000
	// requests sent in the window.
	PrefillPerRequest float64 `json:"prefill_tokens_per_request"`
	LoadsPer1k        float64 `json:"model_loads_per_1k_requests"`
	// WallS is how long the probe took on the wall clock, cluster start and stop included.
	WallS float64 `json:"wall_s"`
}

func (pt *CapacityPoint) setEngine(st EngineStats) {
	pt.Engine = st
	if st.Prefills > 0 {
		pt.PrefillPerRequest = round3(float64(st.PrefillTokens) / float64(st.Prefills))
	}
	if pt.Requests > 0 {
		pt.LoadsPer1k = round3(1000 * float64(st.ModelLoads) / float64(pt.Requests))
	}
}

// Quantiles are the p50, p90 and p99 of a latency, in milliseconds.
type Quantiles struct {
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
}

func (p *SimProbe) speed() float64 {
	if p.SimSpeed > 0 {
		return p.SimSpeed
	}
	return CapacityDefaultSimSpeed
}

func (p *SimProbe) attainment() float64 {
	if p.Attainment > 0 {
		return p.Attainment
	}
	return CapacityDefaultAttainment
}

// load returns the probe's workload with the simulated defaults filled in (simulated time).
func (p *SimProbe) load() Options {
	l := p.Load
	if l.Duration <= 0 {
		switch l.Workload {
		case WorkloadMultiTurn:
			l.Duration = 0 // per rate: MultiTurnWarmUp + MultiTurnMeasured (Run)
		case WorkloadMultiModel:
			l.Duration = MultiModelProbe
		default:
			l.Duration = CapacityDefaultProbeDuration
		}
	}
	if l.WarmUp <= 0 {
		switch l.Workload {
		case WorkloadMultiModel:
			l.WarmUp = min(MultiModelWarmUp, l.Duration/4)
		}
	}
	if l.Workload == WorkloadMultiModel && len(l.Models) == 0 {
		l.Models = MultiModelModels()
	}

	if l.SLOTTFT == 0 && l.SLOTPOT == 0 {
		l.SLOTTFT, l.SLOTPOT = CapacityDefaultSLOTTFT, CapacityDefaultSLOTPOT
		if l.Workload == WorkloadMultiModel {
			l.SLOTTFT = MultiModelSLOTTFT
		}
	}
	if l.Workload == "" {
		l.Workload = WorkloadSharedPrefix
	}
	if l.Model == "" {
		l.Model = DefaultModel
	}
	return l
}

func scaleDur(d time.Duration, f float64) time.Duration { return time.Duration(float64(d) / f) }

// Run probes rate (simulated requests/s) on a fresh cluster and returns what it measured.
func (p *SimProbe) Run(ctx context.Context, rate float64) (*CapacityPoint, error) {
	if !(rate > 0) || math.IsInf(rate, 0) {
		return nil, fmt.Errorf("%w: probe rate %v", ErrBadOptions, rate)
	}
	speed := p.speed()
	l := p.load()
	if l.Workload == WorkloadMultiTurn {
		// Warm-up and probe length follow the rate (one think time of warm-up).
		if l.WarmUp <= 0 {
			l.WarmUp = MultiTurnWarmUp(rate)
		}
		if l.Duration <= 0 {
			l.Duration = l.WarmUp + MultiTurnMeasured
		}
		if l.WarmUp >= l.Duration {
			l.WarmUp = l.Duration / 3
		}
	}
	p.probes++
	began := time.Now()
	engine := p.Engine
	if engine == "" {
		engine = CapacityDefaultEngine
	}
	copts := SimClusterOptions{
		Binary: p.Binary, GPUs: p.GPUs, Models: []string{l.Model}, Policy: p.Policy, SimSpeed: speed,
		AgentArgs:  []string{"--agent-heartbeat-interval", heartbeatFor(speed).String(), "--sim-engine", engine},
		EngineLogs: true,
	}
	if speed != 1 {
		// The gateway's prior of how fast a node loads a model is in real seconds; the
		// simulated nodes load speed times faster (their disk is simLoadBytesPerSecond, their
		// runners start in simLoadStartSeconds, both in simulated time). Tell it, as an operator
		// configures the disks of a real cluster: the scheduler weighs a load against a wait.
		cfgFile, err := gatewayLoadConfig("", speed)
		if err != nil {
			return nil, err
		}
		defer os.Remove(cfgFile)
		copts.GatewayArgs = append(copts.GatewayArgs, "--config", cfgFile)
	}
	switch l.Workload {
	case WorkloadMultiTurn:
		copts.AgentArgs = append(copts.AgentArgs, "--sim-context", strconv.Itoa(MultiTurnContext))
	case WorkloadMultiModel:
		// Nothing resident at start; every node keeps one model loaded at a time.
		copts.Models, copts.Preload = l.Models, []string{}
		copts.AgentArgs = append(copts.AgentArgs, "--sim-max-loaded-models", strconv.Itoa(MultiModelMaxLoaded))
	}
	if p.LogDir != "" {
		copts.LogDir, copts.KeepLogs = filepath.Join(p.LogDir, fmt.Sprintf("%s-%s-probe%d", sanitize(p.GPUs), p.Policy, p.probes)), true
		if err := os.MkdirAll(copts.LogDir, 0o755); err != nil {
			return nil, err
		}
	}
	cl, err := StartSimCluster(ctx, copts)
	if err != nil {
		return nil, fmt.Errorf("starting the simulated cluster %s: %w", p.GPUs, err)
	}
	// A request that meets both SLOs ends by TTFT + max tokens × TPOT; one still running then
	// has failed already, so the run need not wait longer for it.
	g := newGenerator(l.withDefaults())
	bound := l.SLOTTFT + time.Duration(g.maxOutputTokens())*l.SLOTPOT
	if l.SLOTTFT == 0 || l.SLOTPOT == 0 {
		bound = 2 * time.Minute
	}
	run := l
	run.Target, run.Label, run.Simulated, run.Events, run.Progress = cl.URL, p.Policy, true, nil, nil
	run.RPS, run.RampFrom, run.RampTo, run.Concurrency = rate*speed, 0, 0, 0
	run.Duration = scaleDur(l.Duration, speed)
	run.WarmUp = scaleDur(l.WarmUp, speed)
	run.SLOTTFT, run.SLOTPOT = scaleDur(l.SLOTTFT, speed), scaleDur(l.SLOTPOT, speed)
	run.RequestTimeout = scaleDur(bound, speed) + time.Second
	run.DrainTimeout = run.RequestTimeout + time.Second
	runStart := time.Now()
	r, err := Run(ctx, run)
	// What the engines did in the measured window, from their own logs (the cluster's log
	// directory goes with Stop).
	engineStats, engErr := cl.EngineStats(runStart.Add(run.WarmUp))
	stopErr := cl.Stop()
	if err != nil {
		return nil, fmt.Errorf("probe at %.3g req/s: %w", rate, err)
	}
	if engErr != nil {
		return nil, fmt.Errorf("probe at %.3g req/s: %w", rate, engErr)
	}
	if stopErr != nil {
		progressf(p.Progress, "   stopping the cluster: %v", stopErr)
	}
	pt := capacityPoint(r, rate, speed, p.attainment())
	pt.setEngine(engineStats)
	pt.WallS = round3(time.Since(began).Seconds())
	verdict := "FAIL"
	if pt.Pass {
		verdict = "pass"
	}
	progressf(p.Progress, "   %-14s %-16s %6.3g req/s: %5.1f%% within SLO (%d/%d) %s  prefill %.0f tok/req, %d loads  [SIMULATED, %.0fs wall]",
		p.Policy, p.GPUs, rate, 100*pt.Attainment, pt.Good, pt.Requests, verdict, pt.PrefillPerRequest, pt.Engine.ModelLoads, pt.WallS)
	return pt, nil
}

// heartbeatFor is the agents' heartbeat interval at a time scale: a simulated second, but never
// under 100ms of wall time.
// The simulated nodes' load speed (nodeagent/sim: weights from a 2 GB/s disk, then the runner's
// start of about a second), as the gateway's scheduler configuration names it.
const (
	simLoadBytesPerSecond = 2e9
	simLoadStartSeconds   = 1.0
)

// gatewayLoadConfig writes a gateway configuration file whose scheduler load prior matches
// simulated nodes running speed times faster than real time, and returns its path (in dir, or
// the system's temporary directory when dir is empty).
func gatewayLoadConfig(dir string, speed float64) (string, error) {
	f, err := os.CreateTemp(dir, "herd-gateway-*.yaml")
	if err != nil {
		return "", err
	}
	_, err = fmt.Fprintf(f, "gateway:\n  scheduler:\n    load_bytes_per_second: %g\n    load_start_seconds: %g\n",
		simLoadBytesPerSecond*speed, simLoadStartSeconds/speed)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(f.Name())
		return "", err
	}
	return f.Name(), nil
}

func heartbeatFor(speed float64) time.Duration {
	return max(scaleDur(time.Second, speed).Round(time.Millisecond), 100*time.Millisecond)
}

func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r == ',' || r == '/' || r == ' ' {
			return '_'
		}
		return r
	}, s)
}

// capacityPoint converts a wall-clock report at speed into simulated units.
func capacityPoint(r *Report, rate, speed, target float64) *CapacityPoint {
	pt := &CapacityPoint{
		RateRPS: rate, Requests: r.Sent, Good: r.GoodRequests, Errors: r.Failed, ErrorKinds: r.Errors,
		ThroughputRPS: round3(r.ThroughputRPS / speed), TokS: round3(r.OutputTokS / speed),
		TTFT:  Quantiles{P50: round3(r.TTFT.P50 * speed), P90: round3(r.TTFT.P90 * speed), P99: round3(r.TTFT.P99 * speed)},
		TPOT:  Quantiles{P50: round3(r.TPOT.P50 * speed), P90: round3(r.TPOT.P90 * speed), P99: round3(r.TPOT.P99 * speed)},
		Nodes: r.Nodes,
	}
	if len(pt.ErrorKinds) == 0 {
		pt.ErrorKinds = nil
	}
	if r.Sent > 0 {
		pt.Attainment = round3(float64(r.GoodRequests) / float64(r.Sent))
	}
	pt.Pass = r.Sent > 0 && float64(r.GoodRequests) >= target*float64(r.Sent)
	return pt
}

// CapacitySearch runs SearchCapacity with p's probes and returns the points probed with the
// search's outcome.
func CapacitySearch(ctx context.Context, p *SimProbe, o SearchOptions) (*CapacityResult, error) {
	var points []*CapacityPoint
	res, err := SearchCapacity(ctx, o, func(ctx context.Context, rate float64) (Probe, error) {
		pt, err := p.Run(ctx, rate)
		if err != nil {
			return Probe{}, err
		}
		points = append(points, pt)
		return Probe{Pass: pt.Pass, Attainment: pt.Attainment}, nil
	})
	cr := &CapacityResult{Policy: p.Policy, CapacityRPS: round3(res.CapacityRPS), FailRPS: round3(res.FailRPS), Bounded: res.Bounded()}
	for _, pt := range points {
		cr.Probes = append(cr.Probes, *pt)
	}
	if res.Best >= 0 {
		b := points[res.Best]
		cr.TokS, cr.ThroughputRPS, cr.Attainment, cr.TTFT, cr.TPOT, cr.Nodes = b.TokS, b.ThroughputRPS, b.Attainment, b.TTFT, b.TPOT, b.Nodes
		cr.PrefillTokens, cr.CachedTokens, cr.ModelLoads = b.Engine.PrefillTokens, b.Engine.CachedTokens, b.Engine.ModelLoads
		cr.PrefillPerRequest, cr.LoadsPer1k = b.PrefillPerRequest, b.LoadsPer1k
	}
	return cr, err
}

// CapacityResult is one policy's capacity at the SLO.
type CapacityResult struct {
	Policy string `json:"policy"`
	// CapacityRPS is the highest rate that passed (0: none did); FailRPS the lowest that failed
	// above it (0: none did, the capacity is only a lower bound); Bounded says which.
	CapacityRPS float64 `json:"capacity_rps"`
	FailRPS     float64 `json:"fail_rps,omitempty"`
	Bounded     bool    `json:"bounded"`
	// The rest is measured by the probe at CapacityRPS.
	ThroughputRPS float64        `json:"throughput_rps"`
	TokS          float64        `json:"tok_s"`
	Attainment    float64        `json:"attainment"`
	TTFT          Quantiles      `json:"ttft_ms"`
	TPOT          Quantiles      `json:"tpot_ms"`
	Nodes         map[string]int `json:"nodes,omitempty"`
	// PrefillTokens are the prompt tokens the engines evaluated in the measured window of the
	// probe at CapacityRPS (after their prompt caches), CachedTokens those they reused;
	// ModelLoads the models they loaded; PrefillPerRequest and LoadsPer1k the same per request.
	PrefillTokens     int64   `json:"prefill_tokens"`
	CachedTokens      int64   `json:"cached_tokens"`
	ModelLoads        int     `json:"model_loads"`
	PrefillPerRequest float64 `json:"prefill_tokens_per_request"`
	LoadsPer1k        float64 `json:"model_loads_per_1k_requests"`
	// Probes are every probe of the search, in the order run.
	Probes []CapacityPoint `json:"probes"`
}

// CapacityRatio compares herd's capacity with a baseline's.
type CapacityRatio struct {
	Policy   string  `json:"policy"`
	Baseline string  `json:"baseline"`
	Ratio    float64 `json:"ratio"`
}

// CapacityReport is the capacity scenario's result. Every figure is simulated, in simulated
// units (see SimProbe).
type CapacityReport struct {
	Scenario  string  `json:"scenario"`
	Simulated bool    `json:"simulated"`
	GPUs      string  `json:"gpus"`
	Model     string  `json:"model"`
	Workload  string  `json:"workload"`
	Engine    string  `json:"engine"`
	WarmUpS   float64 `json:"warm_up_s,omitempty"`
	// WarmUpRule says how the warm-up follows the rate when it does (multi-turn).
	WarmUpRule     string           `json:"warm_up_rule,omitempty"`
	Stream         bool             `json:"stream"`
	Seed           uint64           `json:"seed"`
	SimSpeed       float64          `json:"sim_speed"`
	SLO            SLO              `json:"slo"`
	Attainment     float64          `json:"attainment_target"`
	ProbeDurationS float64          `json:"probe_duration_s"`
	MaxProbes      int              `json:"max_probes"`
	Tolerance      float64          `json:"tolerance"`
	Policies       []CapacityResult `json:"policies"`
	Ratios         []CapacityRatio  `json:"ratios,omitempty"`
	// WallS is the wall time of the whole scenario.
	WallS float64 `json:"wall_s"`
}

var _ ScenarioReport = (*CapacityReport)(nil)

// runCapacity searches each policy's capacity on fresh clusters.
func runCapacity(ctx context.Context, o ScenarioOptions) (*CapacityReport, error) {
	began := time.Now()
	policies := o.Policies
	if len(policies) == 0 {
		policies = DefaultPolicies
	}
	gpus := o.GPUs
	if gpus == "" {
		gpus = HeteroDefaultGPUs
		if o.Load.Workload == WorkloadMultiModel {
			gpus = MultiModelGPUs
		}
	}
	if len(GPUGroups(gpus)) == 0 {
		return nil, fmt.Errorf("%w: no GPU groups in %q", ErrBadOptions, gpus)
	}
	if o.Load.Concurrency > 0 || o.Load.ramped() || o.Load.RPS != 0 {
		return nil, fmt.Errorf("%w: the capacity scenario chooses the rates itself: no --rps, --ramp or --concurrency", ErrBadOptions)
	}
	if o.Load.Workload == WorkloadMixed {
		return nil, fmt.Errorf("%w: the capacity scenario needs an interactive workload, not mixed", ErrBadOptions)
	}
	if !(o.Attainment >= 0 && o.Attainment <= 1) {
		return nil, fmt.Errorf("%w: attainment %v: want a share in (0, 1]", ErrBadOptions, o.Attainment)
	}
	probeTmpl := SimProbe{Binary: o.Binary, GPUs: gpus, SimSpeed: o.SimSpeed, Load: o.Load, Attainment: o.Attainment, LogDir: o.LogDir, Progress: o.Progress, Engine: o.Engine}
	l := probeTmpl.load()
	check := l.withDefaults()
	check.RPS = 1 // the search sets the rates; check the rest of the workload
	if err := check.validateArrivals(); err != nil {
		return nil, err
	}
	so := o.Search
	if so.Start <= 0 {
		so.Start = CapacityDefaultStartRPS
	}
	if so.MaxProbes <= 0 {
		so.MaxProbes = CapacityDefaultProbes
	}
	if so.Min <= 0 && (o.Load.Workload == WorkloadMultiTurn || o.Load.Workload == WorkloadMultiModel) {
		// These probes are long, and a policy that fails at every rate (the prefill of a cold
		// 8k-token conversation takes longer than the TTFT SLO on a slow GPU, whatever the load)
		// should not spend its budget halving down to start ÷ 64.
		so.Min = so.Start / 8
	}
	so, err := so.withDefaults()
	if err != nil {
		return nil, err
	}
	d := l.withDefaults()
	engine := o.Engine
	if engine == "" {
		engine = CapacityDefaultEngine
	}
	model := d.Model
	if d.Workload == WorkloadMultiModel {
		model = strings.Join(d.Models, ",")
	}
	rep := &CapacityReport{
		Scenario: ScenarioCapacity, Simulated: true, GPUs: gpus, Model: model, Workload: string(d.Workload), Engine: engine,
		WarmUpS: d.WarmUp.Seconds(),
		Stream:  d.Stream, Seed: d.Seed, SimSpeed: probeTmpl.speed(), SLO: SLO{TTFTMs: ms(d.SLOTTFT), TPOTMs: ms(d.SLOTPOT)},
		Attainment: probeTmpl.attainment(), ProbeDurationS: d.Duration.Seconds(), MaxProbes: so.MaxProbes, Tolerance: so.Tolerance,
	}
	if d.Workload == WorkloadMultiTurn && o.Load.Duration <= 0 {
		rep.ProbeDurationS = MultiTurnMeasured.Seconds()
		rep.WarmUpRule = "one mean think time (48 users ÷ rate), 30–120 s, before the probe's " + MultiTurnMeasured.String() + " measured"
	}
	for _, policy := range policies {
		progressf(o.Progress, "== capacity: policy %s on fresh SIMULATED clusters %s (sim speed %g×, figures in simulated time)", policy, gpus, rep.SimSpeed)
		p := probeTmpl
		p.Policy = policy
		cr, err := CapacitySearch(ctx, &p, so)
		if cr != nil {
			rep.Policies = append(rep.Policies, *cr)
		}
		if err != nil {
			rep.WallS = round3(time.Since(began).Seconds())
			return rep, fmt.Errorf("policy %s: %w", policy, err)
		}
	}
	rep.Ratios = capacityRatios(rep.Policies)
	rep.WallS = round3(time.Since(began).Seconds())
	return rep, nil
}

// capacityRatios divides herd's capacity by each other policy's.
func capacityRatios(ps []CapacityResult) []CapacityRatio {
	var herd *CapacityResult
	for i := range ps {
		if ps[i].Policy == "herd" {
			herd = &ps[i]
		}
	}
	if herd == nil {
		return nil
	}
	var out []CapacityRatio
	for _, p := range ps {
		if p.Policy == herd.Policy || p.CapacityRPS <= 0 {
			continue
		}
		out = append(out, CapacityRatio{Policy: herd.Policy, Baseline: p.Policy, Ratio: round3(herd.CapacityRPS / p.CapacityRPS)})
	}
	return out
}

// WriteJSON implements ScenarioReport.
func (c *CapacityReport) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(c)
}

// capacityText formats a capacity: "≥ x" when no failing rate bounds it.
func capacityText(r CapacityResult) string {
	s := strconv.FormatFloat(r.CapacityRPS, 'f', 2, 64)
	if !r.Bounded {
		s = "≥ " + s
	}
	return s
}

// WriteText implements ScenarioReport: a markdown table, policies side by side.
func (c *CapacityReport) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "### Capacity at SLO — SIMULATED cluster %s (every figure is simulated)\n\n", c.GPUs)
	fmt.Fprintf(&b, "Highest Poisson rate at which ≥ %g%% of requests meet TTFT ≤ %gms and TPOT ≤ %gms; workload %s, model %s, engine %s, stream %v, seed %d, warm-up %gs left out. ",
		100*c.Attainment, c.SLO.TTFTMs, c.SLO.TPOTMs, c.Workload, c.Model, c.Engine, c.Stream, c.Seed, c.WarmUpS)
	fmt.Fprintf(&b, "Bisection over fresh clusters, ≤ %d probes of %gs per policy, tolerance %g%%; simulated time (sim speed %g×: rates, tok/s and latencies are in simulated units).\n\n",
		c.MaxProbes, c.ProbeDurationS, 100*c.Tolerance, c.SimSpeed)
	if c.WarmUpRule != "" {
		fmt.Fprintf(&b, "Warm-up: %s.\n\n", c.WarmUpRule)
	}
	b.WriteString("| policy | capacity req/s | tok/s | within SLO | TTFT p50 / p90 / p99 ms | TPOT p50 / p90 / p99 ms | first failing req/s | probes | prefill tok/req | loads / 1k req |\n")
	b.WriteString("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, p := range c.Policies {
		fail := "-"
		if p.Bounded {
			fail = strconv.FormatFloat(p.FailRPS, 'f', 2, 64)
		}
		fmt.Fprintf(&b, "| %s | %s | %.0f | %.1f%% | %.0f / %.0f / %.0f | %.1f / %.1f / %.1f | %s | %d | %.0f | %.1f |\n",
			p.Policy, capacityText(p), p.TokS, 100*p.Attainment, p.TTFT.P50, p.TTFT.P90, p.TTFT.P99,
			p.TPOT.P50, p.TPOT.P90, p.TPOT.P99, fail, len(p.Probes), p.PrefillPerRequest, p.LoadsPer1k)
	}
	if len(c.Ratios) > 0 {
		b.WriteByte('\n')
		for _, r := range c.Ratios {
			fmt.Fprintf(&b, "- capacity %s ÷ %s = %.2f× (simulated)\n", r.Policy, r.Baseline, r.Ratio)
		}
	}
	if c.WallS > 0 {
		fmt.Fprintf(&b, "\n(wall time %.0fs)\n", c.WallS)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteSVG implements ScenarioReport: the share of requests within the SLO against the offered
// rate for every probe of every policy, the target as a dashed line, and the capacities as bars.
func (c *CapacityReport) WriteSVG(w io.Writer) error {
	var series []rateSeries
	for _, p := range c.Policies {
		s := rateSeries{name: p.Policy, capacity: p.CapacityRPS, bounded: p.Bounded}
		for _, pt := range p.Probes {
			s.points = append(s.points, ratePoint{rate: pt.RateRPS, attainment: pt.Attainment, pass: pt.Pass})
		}
		series = append(series, s)
	}
	title := fmt.Sprintf("capacity at SLO on %s", c.GPUs)
	sub := fmt.Sprintf("highest Poisson rate with ≥ %g%% of requests within TTFT ≤ %gms and TPOT ≤ %gms; %s, %s, seed %d, simulated time",
		100*c.Attainment, c.SLO.TTFTMs, c.SLO.TPOTMs, c.Workload, c.Model, c.Seed)
	return writeCapacitySVG(w, title, sub, "offered rate (simulated req/s)", "capacity (simulated req/s)", c.Attainment, series)
}
