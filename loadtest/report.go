package loadtest

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// SLO is the service level goodput is measured against, in milliseconds (0: not checked).
type SLO struct {
	TTFTMs float64 `json:"ttft_ms"`
	TPOTMs float64 `json:"tpot_ms"`
}

// EventMark records an Event that fired.
type EventMark struct {
	Name  string  `json:"name"`
	AtS   float64 `json:"at_s"`
	Error string  `json:"error,omitempty"`
}

// Report is what one run measured. Latencies are in milliseconds, rates per second of the run's
// wall time (DurationS).
type Report struct {
	Label     string `json:"label,omitempty"`
	Simulated bool   `json:"simulated"`
	Target    string `json:"target"`
	Model     string `json:"model"`
	Workload  string `json:"workload"`
	Mode      Mode   `json:"mode"`
	Stream    bool   `json:"stream"`
	// RPS is the configured Poisson rate; RampFrom/RampTo the configured ramp; OfferedRPS the
	// arrivals actually scheduled ÷ Duration (open loop).
	RPS         float64 `json:"rps,omitempty"`
	RampFrom    float64 `json:"ramp_from,omitempty"`
	RampTo      float64 `json:"ramp_to,omitempty"`
	OfferedRPS  float64 `json:"offered_rps,omitempty"`
	Concurrency int     `json:"concurrency,omitempty"`
	Seed        uint64  `json:"seed"`
	// Users is the multi-turn workload's number of users; WarmUpS the start of the run left out
	// of every figure (requests sent before it are not counted).
	Users   int     `json:"users,omitempty"`
	WarmUpS float64 `json:"warm_up_s,omitempty"`
	// DurationS is the wall time from the start to the last request's end.
	DurationS float64 `json:"duration_s"`

	Sent      int `json:"sent"`
	Succeeded int `json:"succeeded"`
	Failed    int `json:"failed"`
	// GoodRequests succeeded within the SLO.
	GoodRequests int `json:"good_requests"`

	ThroughputRPS float64 `json:"throughput_rps"`
	OutputTokS    float64 `json:"output_tok_s"`
	GoodputRPS    float64 `json:"goodput_rps"`
	SLO           SLO     `json:"slo"`
	PromptTokens  int     `json:"prompt_tokens"`
	OutputTokens  int     `json:"output_tokens"`

	TTFT Dist `json:"ttft_ms"`
	TPOT Dist `json:"tpot_ms"`
	ITL  Dist `json:"itl_ms"`
	E2E  Dist `json:"e2e_ms"`

	// Errors counts failed requests by ErrorKind; ErrorSamples are the first distinct messages.
	Errors       map[string]int `json:"errors"`
	ErrorSamples []string       `json:"error_samples,omitempty"`
	// Nodes counts requests by the X-Herd-Node header of their response.
	Nodes  map[string]int `json:"nodes,omitempty"`
	Events []EventMark    `json:"events,omitempty"`
	Batch  *BatchReport   `json:"batch,omitempty"`

	samples []Sample
}

// Samples returns every request's measurement, in the workload's order (by Index).
func (r *Report) Samples() []Sample { return r.samples }

// Window summarises the requests sent in [from, to) as a report of its own (rates per second of
// that window). It is how a run is split before and after an event.
func (r *Report) Window(from, to time.Duration) *Report {
	var in []Sample
	var end time.Duration
	for _, s := range r.samples {
		if s.Start >= from && s.Start < to {
			in = append(in, s)
			end = max(end, s.Start+s.Latency)
		}
	}
	o := r.options()
	w := summarize(in, max(end-from, 0), o)
	w.samples = in
	return w
}

// options rebuilds the options that label a report, for derived reports.
func (r *Report) options() Options {
	return Options{
		Label: r.Label, Simulated: r.Simulated, Target: r.Target, Model: r.Model,
		Workload: Workload(r.Workload), Stream: r.Stream, RPS: r.RPS, RampFrom: r.RampFrom,
		RampTo: r.RampTo, Concurrency: r.Concurrency, Seed: r.Seed,
		SLOTTFT: time.Duration(r.SLO.TTFTMs * float64(time.Millisecond)),
		SLOTPOT: time.Duration(r.SLO.TPOTMs * float64(time.Millisecond)),
	}
}

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// simulatedTag is appended to headings of figures measured on a simulated cluster.
func simulatedTag(sim bool) string {
	if sim {
		return " [SIMULATED cluster: figures are simulated]"
	}
	return ""
}

// WriteText writes the report as a readable table.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	title := "load test"
	if r.Label != "" {
		title += " — " + r.Label
	}
	fmt.Fprintf(&b, "%s%s\n", title, simulatedTag(r.Simulated))
	fmt.Fprintf(&b, "  target %s  model %s  workload %s  stream %v  seed %d\n", r.Target, r.Model, r.Workload, r.Stream, r.Seed)
	switch {
	case r.Mode == ModeClosedLoop:
		fmt.Fprintf(&b, "  closed loop, concurrency %d", r.Concurrency)
	case r.RampFrom > 0 || r.RampTo > 0:
		fmt.Fprintf(&b, "  open loop, Poisson ramp %g → %g req/s", r.RampFrom, r.RampTo)
	default:
		fmt.Fprintf(&b, "  open loop, Poisson %g req/s (offered %.2f)", r.RPS, r.OfferedRPS)
	}
	fmt.Fprintf(&b, ", %.1fs\n\n", r.DurationS)

	fmt.Fprintf(&b, "  requests   sent %d  ok %d  failed %d\n", r.Sent, r.Succeeded, r.Failed)
	fmt.Fprintf(&b, "  throughput %.2f req/s  %.1f output tok/s\n", r.ThroughputRPS, r.OutputTokS)
	slo := "no SLO set"
	if r.SLO.TTFTMs > 0 || r.SLO.TPOTMs > 0 {
		var parts []string
		if r.SLO.TTFTMs > 0 {
			parts = append(parts, fmt.Sprintf("TTFT ≤ %gms", r.SLO.TTFTMs))
		}
		if r.SLO.TPOTMs > 0 {
			parts = append(parts, fmt.Sprintf("TPOT ≤ %gms", r.SLO.TPOTMs))
		}
		slo = strings.Join(parts, ", ")
	}
	fmt.Fprintf(&b, "  goodput    %.2f req/s (%d requests within %s)\n\n", r.GoodputRPS, r.GoodRequests, slo)

	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "  ms\tn\tmean\tp50\tp90\tp99\tmax\t")
	row := func(name string, d Dist) {
		fmt.Fprintf(tw, "  %s\t%d\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t\n", name, d.N, d.Mean, d.P50, d.P90, d.P99, d.Max)
	}
	row("TTFT", r.TTFT)
	if r.Stream {
		row("TPOT", r.TPOT)
		row("ITL", r.ITL)
	}
	row("end-to-end", r.E2E)
	if err := tw.Flush(); err != nil {
		return err
	}
	if !r.Stream {
		b.WriteString("  (not streaming: TTFT is the whole response; no TPOT or ITL)\n")
	}
	if len(r.Errors) > 0 {
		b.WriteString("\n  errors")
		for _, k := range slices.Sorted(maps.Keys(r.Errors)) {
			fmt.Fprintf(&b, "  %s %d", k, r.Errors[k])
		}
		b.WriteByte('\n')
		for _, m := range r.ErrorSamples {
			fmt.Fprintf(&b, "    e.g. %s\n", m)
		}
	}
	if len(r.Nodes) > 0 {
		b.WriteString("\n  requests by node")
		for _, k := range slices.Sorted(maps.Keys(r.Nodes)) {
			fmt.Fprintf(&b, "  %s %d", k, r.Nodes[k])
		}
		b.WriteByte('\n')
	}
	for _, e := range r.Events {
		fmt.Fprintf(&b, "\n  event at %.1fs: %s", e.AtS, e.Name)
		if e.Error != "" {
			fmt.Fprintf(&b, " (failed: %s)", e.Error)
		}
	}
	if len(r.Events) > 0 {
		b.WriteByte('\n')
	}
	if bt := r.Batch; bt != nil {
		fmt.Fprintf(&b, "\n  batch %s: %d lines submitted at %.1fs, status %s", bt.ID, bt.Lines, bt.SubmittedAtS, bt.Status)
		if bt.Finished {
			fmt.Fprintf(&b, " after %.1fs", bt.DurationS)
		}
		fmt.Fprintf(&b, ", %d/%d completed, %d failed", bt.Completed, bt.Total, bt.Failed)
		if bt.Error != "" {
			fmt.Fprintf(&b, " (%s)", bt.Error)
		}
		b.WriteByte('\n')
	}
	_, err := io.WriteString(w, b.String())
	return err
}
