package loadtest

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"
)

// Scenario names.
const (
	// ScenarioHetero runs one seeded workload against a fresh simulated T4 + A40 + RTX 3090
	// cluster per scheduling policy and compares them.
	ScenarioHetero = "hetero"
	// ScenarioOverhead compares requests sent straight to the fake backend with requests sent
	// through a herd gateway and agent in front of it.
	ScenarioOverhead = "overhead"
	// ScenarioFault is hetero with the herd policy only and one agent killed half way.
	ScenarioFault = "fault"
)

// scenarios is where every scenario is registered: RunScenario dispatches on it and Scenarios
// lists it, so the list the CLI prints cannot drift from what runs. In the order help lists them.
var scenarios = []struct {
	name string
	run  func(ctx context.Context, name string, o ScenarioOptions) (ScenarioReport, error)
}{
	{ScenarioHetero, func(ctx context.Context, name string, o ScenarioOptions) (ScenarioReport, error) {
		return report(runHetero(ctx, name, o))
	}},
	{ScenarioOverhead, func(ctx context.Context, _ string, o ScenarioOptions) (ScenarioReport, error) {
		return report(runOverhead(ctx, o))
	}},
	{ScenarioFault, func(ctx context.Context, name string, o ScenarioOptions) (ScenarioReport, error) {
		return report(runFault(ctx, name, o))
	}},
	{ScenarioCapacity, func(ctx context.Context, _ string, o ScenarioOptions) (ScenarioReport, error) {
		return report(runCapacity(ctx, o))
	}},
	{ScenarioBatchMix, func(ctx context.Context, _ string, o ScenarioOptions) (ScenarioReport, error) {
		return report(runBatchMix(ctx, o))
	}},
	{ScenarioScale, func(ctx context.Context, _ string, o ScenarioOptions) (ScenarioReport, error) {
		return report(runScale(ctx, o))
	}},
}

// report returns a scenario's report as a ScenarioReport: nil on error, so a caller never holds
// an interface around a nil pointer.
func report[R ScenarioReport](r R, err error) (ScenarioReport, error) {
	if err != nil {
		return nil, err
	}
	return r, nil
}

// Scenarios lists the scenario names RunScenario accepts.
func Scenarios() []string {
	names := make([]string, len(scenarios))
	for i, sc := range scenarios {
		names[i] = sc.name
	}
	return names
}

// Defaults of the hetero scenario, chosen so that the simulated cluster runs close to saturation
// (where the choice of node matters) and one policy takes about half a minute. Measured with
// shared-prefix at sim speed 2: a ramp showed queues building past about 5.5 req/s, and at 6 req/s
// offered every policy served only 5.2–5.4 (queues grew for the whole run); 5 req/s is just under
// that knee.
const (
	HeteroDefaultGPUs     = "t4,a40,3090"
	HeteroDefaultWorkload = WorkloadSharedPrefix
	HeteroDefaultRPS      = 5.0
	HeteroDefaultDuration = 30 * time.Second
	HeteroDefaultSimSpeed = 2.0
	HeteroDefaultSLOTTFT  = 2 * time.Second
	HeteroDefaultSLOTPOT  = 100 * time.Millisecond
)

// DefaultPolicies are the policies hetero compares, baselines first.
var DefaultPolicies = []string{"round_robin", "least_inflight", "herd"}

// ScenarioOptions configures RunScenario. Zero values take each scenario's defaults.
type ScenarioOptions struct {
	// Binary is the herd binary scenarios start processes from (default: this executable).
	Binary string
	// Load is the workload (hetero and fault). Target, Label, Simulated and Events are set by
	// the scenario; zero Workload, RPS (with no ramp and no concurrency), Duration and SLOs take
	// the scenario's defaults. Stream is used as given.
	Load Options
	// Policies are compared by hetero, in this order (default DefaultPolicies; fault: herd).
	Policies []string
	// GPUs is the simulated cluster, one agent per comma-separated group (default "t4,a40,3090").
	GPUs string
	// SimSpeed is every agent's --sim-speed (default HeteroDefaultSimSpeed).
	SimSpeed float64
	// KillNodeAt, when positive, kills one agent (SIGKILL) that far into each run (fault:
	// default half the duration). KillNode names it (default: the last agent).
	KillNodeAt time.Duration
	KillNode   string
	// Rounds and RoundDuration shape the overhead scenario: each case alternates direct and herd
	// rounds of RoundDuration, Rounds times (default 3 × 5s).
	Rounds        int
	RoundDuration time.Duration
	// Search bounds the capacity scenario's search per policy (defaults: start at
	// CapacityDefaultStartRPS, CapacityDefaultProbes probes, DefaultSearchTolerance).
	Search SearchOptions
	// Attainment is the share of requests the capacity scenario wants within the SLO (default 0.9).
	Attainment float64
	// Progress receives progress lines (nil: quiet).
	Progress io.Writer
	// LogDir keeps the started processes' logs there (default: a temporary directory, removed).
	LogDir string
	// Nodes are the fleet sizes the scale scenario measures (default ScaleDefaultNodes), and
	// HeartbeatWindow how long it measures heartbeats alone (default ScaleDefaultHeartbeatS).
	Nodes           []int
	HeartbeatWindow time.Duration
	// RedisURL, when set, makes the scale scenario also measure two gateways sharing that Redis.
	RedisURL string
}

// ScenarioReport is a scenario's result, printable in three forms.
type ScenarioReport interface {
	// WriteText writes a readable table.
	WriteText(w io.Writer) error
	// WriteJSON writes the JSON document.
	WriteJSON(w io.Writer) error
	// WriteSVG writes a plot.
	WriteSVG(w io.Writer) error
}

var (
	_ ScenarioReport = (*HeteroReport)(nil)
	_ ScenarioReport = (*OverheadReport)(nil)
)

// RunScenario runs the named scenario (see Scenarios). It starts the processes it needs from the
// herd binary and stops them before returning, whatever happens.
func RunScenario(ctx context.Context, name string, o ScenarioOptions) (ScenarioReport, error) {
	for _, sc := range scenarios {
		if sc.name == name {
			return sc.run(ctx, name, o)
		}
	}
	return nil, fmt.Errorf("%w: unknown scenario %q (want %s)", ErrBadOptions, name, strings.Join(Scenarios(), ", "))
}

// runFault is hetero with the herd policy and chat-short by default, and one agent killed
// half way through the run unless KillNodeAt says when.
func runFault(ctx context.Context, name string, o ScenarioOptions) (*HeteroReport, error) {
	if len(o.Policies) == 0 {
		o.Policies = []string{"herd"}
	}
	if o.Load.Workload == "" {
		o.Load.Workload = WorkloadChatShort
	}
	if o.KillNodeAt <= 0 {
		d := o.Load.Duration
		if d <= 0 {
			d = HeteroDefaultDuration
		}
		o.KillNodeAt = d / 2
	}
	return runHetero(ctx, name, o)
}

// PolicyResult is one policy's line of the hetero comparison.
type PolicyResult struct {
	Name           string         `json:"name"`
	GoodputRPS     float64        `json:"goodput_rps"`
	ThroughputRPS  float64        `json:"throughput_rps"`
	ThroughputTokS float64        `json:"throughput_tok_s"`
	TTFTP50Ms      float64        `json:"ttft_p50_ms"`
	TTFTP99Ms      float64        `json:"ttft_p99_ms"`
	TPOTP50Ms      float64        `json:"tpot_p50_ms"`
	TPOTP99Ms      float64        `json:"tpot_p99_ms"`
	E2EP50Ms       float64        `json:"e2e_p50_ms"`
	E2EP99Ms       float64        `json:"e2e_p99_ms"`
	Requests       int            `json:"requests"`
	Succeeded      int            `json:"succeeded"`
	Errors         int            `json:"errors"`
	ErrorKinds     map[string]int `json:"error_kinds"`
	Nodes          map[string]int `json:"nodes"`
	Fault          *FaultReport   `json:"fault,omitempty"`
	// Run is the full report of this policy's run.
	Run *Report `json:"run"`
}

// FaultReport splits a run at the moment a node was killed.
type FaultReport struct {
	// Node is the killed node's id; AtS when it was killed, into the run.
	Node      string  `json:"node"`
	AtS       float64 `json:"at_s"`
	KillError string  `json:"kill_error,omitempty"`
	// Before and After cover the requests sent before and after the kill.
	Before FaultWindow `json:"before"`
	After  FaultWindow `json:"after"`
}

// FaultWindow is what happened on one side of a fault.
type FaultWindow struct {
	Requests   int            `json:"requests"`
	Succeeded  int            `json:"succeeded"`
	Errors     map[string]int `json:"errors"`
	Nodes      map[string]int `json:"nodes"`
	TTFTP99Ms  float64        `json:"ttft_p99_ms"`
	GoodputRPS float64        `json:"goodput_rps"`
}

// HeteroReport compares policies on the same workload and the same simulated cluster.
type HeteroReport struct {
	Scenario    string         `json:"scenario"`
	Simulated   bool           `json:"simulated"`
	GPUs        string         `json:"gpus"`
	Nodes       []string       `json:"nodes"`
	Model       string         `json:"model"`
	Workload    string         `json:"workload"`
	Stream      bool           `json:"stream"`
	Mode        Mode           `json:"mode"`
	RPS         float64        `json:"rps,omitempty"`
	RampFrom    float64        `json:"ramp_from,omitempty"`
	RampTo      float64        `json:"ramp_to,omitempty"`
	Concurrency int            `json:"concurrency,omitempty"`
	DurationS   float64        `json:"duration_s"`
	SimSpeed    float64        `json:"sim_speed"`
	Seed        uint64         `json:"seed"`
	SLO         SLO            `json:"slo"`
	Policies    []PolicyResult `json:"policies"`
}
