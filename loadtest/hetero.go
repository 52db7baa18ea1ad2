package loadtest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// runHetero runs the same seeded workload against a fresh simulated cluster per policy.
func runHetero(ctx context.Context, name string, o ScenarioOptions) (*HeteroReport, error) {
	load := o.Load
	if load.Workload == "" {
		load.Workload = HeteroDefaultWorkload
	}
	if load.Concurrency == 0 && load.RPS == 0 && !load.ramped() {
		load.RPS = HeteroDefaultRPS
	}
	if load.Duration <= 0 {
		load.Duration = HeteroDefaultDuration
	}
	if load.SLOTTFT == 0 && load.SLOTPOT == 0 {
		load.SLOTTFT, load.SLOTPOT = HeteroDefaultSLOTTFT, HeteroDefaultSLOTPOT
	}
	if load.Model == "" {
		load.Model = DefaultModel
	}
	load.Events = nil
	policies := o.Policies
	if len(policies) == 0 {
		policies = DefaultPolicies
	}
	gpus := o.GPUs
	if gpus == "" {
		gpus = HeteroDefaultGPUs
	}
	groups := GPUGroups(gpus)
	if len(groups) == 0 {
		return nil, fmt.Errorf("%w: no GPU groups in %q", ErrBadOptions, gpus)
	}
	speed := o.SimSpeed
	if speed <= 0 {
		speed = HeteroDefaultSimSpeed
	}
	var nodeIDs []string
	for i, g := range groups {
		nodeIDs = append(nodeIDs, fmt.Sprintf("sim%d-%s", i+1, g))
	}
	kill := o.KillNode
	if o.KillNodeAt > 0 {
		if kill == "" {
			kill = nodeIDs[len(nodeIDs)-1]
		} else if !slices.Contains(nodeIDs, kill) {
			return nil, fmt.Errorf("%w: node %q to kill is not one of %v", ErrBadOptions, kill, nodeIDs)
		}
	}
	if err := load.withDefaults().validateArrivals(); err != nil {
		return nil, err
	}
	d := load.withDefaults()
	rep := &HeteroReport{
		Scenario: name, Simulated: true, GPUs: gpus, Nodes: nodeIDs, Model: d.Model,
		Workload: string(d.Workload), Stream: d.Stream, Mode: d.mode(), Concurrency: d.Concurrency,
		DurationS: d.Duration.Seconds(), SimSpeed: speed, Seed: d.Seed,
		SLO: SLO{TTFTMs: ms(d.SLOTTFT), TPOTMs: ms(d.SLOTPOT)},
	}
	if d.mode() == ModeOpenLoop {
		if d.ramped() {
			rep.RampFrom, rep.RampTo = d.RampFrom, d.RampTo
		} else {
			rep.RPS = d.RPS
		}
	}
	for _, policy := range policies {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		progressf(o.Progress, "== %s: policy %s on a fresh SIMULATED cluster %s (sim speed %g×)", name, policy, gpus, speed)
		copts := SimClusterOptions{Binary: o.Binary, GPUs: gpus, Models: []string{d.Model}, Policy: policy, SimSpeed: speed}
		if o.LogDir != "" {
			copts.LogDir, copts.KeepLogs = filepath.Join(o.LogDir, name+"-"+policy), true
			if err := os.MkdirAll(copts.LogDir, 0o755); err != nil {
				return rep, err
			}
		}
		cl, err := StartSimCluster(ctx, copts)
		if err != nil {
			return rep, fmt.Errorf("policy %s: starting the simulated cluster: %w", policy, err)
		}
		run := load
		run.Target, run.Label, run.Simulated, run.Progress = cl.URL, policy, true, o.Progress
		if o.KillNodeAt > 0 {
			run.Events = []Event{{At: o.KillNodeAt, Name: "kill " + kill, Do: func() error { return cl.KillNode(kill) }}}
		}
		r, err := Run(ctx, run)
		stopErr := cl.Stop()
		if err != nil {
			return rep, fmt.Errorf("policy %s: %w", policy, err)
		}
		if stopErr != nil {
			progressf(o.Progress, "   stopping the cluster: %v", stopErr)
		}
		pr := policyResult(policy, r)
		if o.KillNodeAt > 0 {
			pr.Fault = faultReport(r, kill)
		}
		rep.Policies = append(rep.Policies, pr)
	}
	return rep, nil
}

// validateArrivals checks the arrival settings of o without needing a target.
func (o Options) validateArrivals() error {
	o.Target = "http://placeholder"
	return o.validate()
}

func policyResult(name string, r *Report) PolicyResult {
	return PolicyResult{
		Name: name, GoodputRPS: r.GoodputRPS, ThroughputRPS: r.ThroughputRPS, ThroughputTokS: r.OutputTokS,
		TTFTP50Ms: r.TTFT.P50, TTFTP99Ms: r.TTFT.P99, TPOTP50Ms: r.TPOT.P50, TPOTP99Ms: r.TPOT.P99,
		E2EP50Ms: r.E2E.P50, E2EP99Ms: r.E2E.P99,
		Requests: r.Sent, Succeeded: r.Succeeded, Errors: r.Failed, ErrorKinds: r.Errors, Nodes: r.Nodes,
		Run: r,
	}
}

// faultReport splits r at the kill event.
func faultReport(r *Report, node string) *FaultReport {
	fr := &FaultReport{Node: node}
	at := time.Duration(-1)
	for _, e := range r.Events {
		if e.Name == "kill "+node {
			fr.AtS, fr.KillError = e.AtS, e.Error
			at = time.Duration(e.AtS * float64(time.Second))
		}
	}
	if at < 0 {
		fr.KillError = "the run ended before the kill was due"
		at = time.Duration(math.MaxInt64)
	}
	fr.Before = faultWindow(r.Window(0, at))
	fr.After = faultWindow(r.Window(at, time.Duration(math.MaxInt64)))
	return fr
}

func faultWindow(w *Report) FaultWindow {
	return FaultWindow{
		Requests: w.Sent, Succeeded: w.Succeeded, Errors: w.Errors, Nodes: w.Nodes,
		TTFTP99Ms: w.TTFT.P99, GoodputRPS: w.GoodputRPS,
	}
}

// WriteJSON implements ScenarioReport.
func (h *HeteroReport) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(h)
}

// WriteText implements ScenarioReport: the policies side by side.
func (h *HeteroReport) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s scenario — SIMULATED cluster %s (nodes %s, sim speed %g×): every figure below is simulated\n",
		h.Scenario, h.GPUs, strings.Join(h.Nodes, ", "), h.SimSpeed)
	arrivals := fmt.Sprintf("open loop, Poisson %g req/s", h.RPS)
	switch {
	case h.Mode == ModeClosedLoop:
		arrivals = fmt.Sprintf("closed loop, concurrency %d", h.Concurrency)
	case h.RampFrom > 0 || h.RampTo > 0:
		arrivals = fmt.Sprintf("open loop, Poisson ramp %g → %g req/s", h.RampFrom, h.RampTo)
	}
	fmt.Fprintf(&b, "workload %s, model %s, %s, %gs per policy, stream %v, seed %d, SLO TTFT ≤ %gms TPOT ≤ %gms\n\n",
		h.Workload, h.Model, arrivals, h.DurationS, h.Stream, h.Seed, h.SLO.TTFTMs, h.SLO.TPOTMs)
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "policy\tgoodput req/s\treq/s\ttok/s\tTTFT p50 ms\tTTFT p99 ms\tTPOT p50 ms\tE2E p99 ms\terrors\trequests by node")
	for _, p := range h.Policies {
		fmt.Fprintf(tw, "%s\t%.2f\t%.2f\t%.1f\t%.0f\t%.0f\t%.1f\t%.0f\t%s\t%s\n", p.Name, p.GoodputRPS, p.ThroughputRPS,
			p.ThroughputTokS, p.TTFTP50Ms, p.TTFTP99Ms, p.TPOTP50Ms, p.E2EP99Ms, countsText(p.Errors, p.ErrorKinds), mapText(p.Nodes))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, p := range h.Policies {
		if p.Run != nil && p.Run.Batch != nil {
			bt := p.Run.Batch
			fmt.Fprintf(&b, "\n%s: batch of %d lines submitted at %.1fs: %s, %d/%d completed, %d failed", p.Name, bt.Lines, bt.SubmittedAtS, bt.Status, bt.Completed, bt.Total, bt.Failed)
			if bt.Finished {
				fmt.Fprintf(&b, ", done after %.1fs", bt.DurationS)
			}
			if bt.Error != "" {
				fmt.Fprintf(&b, " (%s)", bt.Error)
			}
			b.WriteByte('\n')
		}
		if f := p.Fault; f != nil {
			fmt.Fprintf(&b, "\n%s: killed %s (SIGKILL) at %.1fs", p.Name, f.Node, f.AtS)
			if f.KillError != "" {
				fmt.Fprintf(&b, " (%s)", f.KillError)
			}
			fmt.Fprintf(&b, "\n  before: %d requests, %d ok, errors %s, by node %s\n", f.Before.Requests, f.Before.Succeeded, mapText(f.Before.Errors), mapText(f.Before.Nodes))
			fmt.Fprintf(&b, "  after:  %d requests, %d ok, errors %s, by node %s\n", f.After.Requests, f.After.Succeeded, mapText(f.After.Errors), mapText(f.After.Nodes))
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteSVG implements ScenarioReport: every policy's run in one plot.
func (h *HeteroReport) WriteSVG(w io.Writer) error {
	var runs []*Report
	for _, p := range h.Policies {
		if p.Run != nil {
			runs = append(runs, p.Run)
		}
	}
	return WriteSVG(w, fmt.Sprintf("%s: %s on %s", h.Scenario, h.Workload, h.GPUs), runs...)
}

func countsText(total int, kinds map[string]int) string {
	if total == 0 {
		return "0"
	}
	return fmt.Sprintf("%d (%s)", total, mapText(kinds))
}

func mapText(m map[string]int) string {
	if len(m) == 0 {
		return "-"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s=%d", k, m[k]))
	}
	return strings.Join(parts, " ")
}

func progressf(w io.Writer, format string, args ...any) {
	if w != nil {
		fmt.Fprintf(w, format+"\n", args...)
	}
}
