package loadtest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// ScenarioBatchMix runs the same interactive load twice on fresh simulated clusters, once alone
// and once while a large bulk job runs through /v1/batches, and reports the share of the
// cluster's tokens/s the batch took and what it cost the interactive tail.
const ScenarioBatchMix = "batch-mix"

// Defaults of the batch-mix scenario, in simulated time. The interactive rate is well under the
// cluster's capacity for chat-short (so the idle run meets its SLO easily and any harm is the
// batch's), and the batch is far larger than the window (it never runs dry while measured).
const (
	BatchMixDefaultRPS      = 3.0
	BatchMixDefaultDuration = 40 * time.Second
	BatchMixDefaultLines    = 2000
	BatchMixDefaultSimSpeed = 4.0
	// batchMixWarmup is when the batch is submitted, into the run; the windows compared start
	// batchMixSettle after it, when its lines fill whatever slots interactive work leaves free.
	batchMixWarmup = 2 * time.Second
	batchMixSettle = 3 * time.Second
)

// BatchMixRun is one of the two runs, in simulated units.
type BatchMixRun struct {
	// Name is "idle" (no batch) or "with_batch".
	Name string `json:"name"`
	// WindowS is the measured window [from, to) into the run, simulated seconds.
	WindowFromS float64 `json:"window_from_s"`
	WindowToS   float64 `json:"window_to_s"`
	// Interactive figures over the requests sent in the window.
	Requests        int       `json:"requests"`
	Errors          int       `json:"errors"`
	WithinSLO       float64   `json:"within_slo"`
	TTFT            Quantiles `json:"ttft_ms"`
	TPOT            Quantiles `json:"tpot_ms"`
	InteractiveTokS float64   `json:"interactive_tok_s"`
	// Batch figures over the window (zero in the idle run).
	BatchLinesDone float64 `json:"batch_lines_done"`
	BatchTokS      float64 `json:"batch_tok_s"`
	// BatchShare is BatchTokS ÷ (BatchTokS + InteractiveTokS): the share of the tokens the
	// cluster produced in the window that went to the batch.
	BatchShare float64      `json:"batch_share"`
	Batch      *BatchReport `json:"batch,omitempty"`
}

// BatchMixReport compares interactive service with and without a bulk job. Every figure is
// simulated, in simulated units.
type BatchMixReport struct {
	Scenario   string      `json:"scenario"`
	Simulated  bool        `json:"simulated"`
	GPUs       string      `json:"gpus"`
	Policy     string      `json:"policy"`
	Model      string      `json:"model"`
	Workload   string      `json:"workload"`
	RPS        float64     `json:"rps"`
	DurationS  float64     `json:"duration_s"`
	SimSpeed   float64     `json:"sim_speed"`
	Seed       uint64      `json:"seed"`
	SLO        SLO         `json:"slo"`
	BatchLines int         `json:"batch_lines"`
	BatchMax   int         `json:"batch_max_tokens"`
	Idle       BatchMixRun `json:"idle"`
	WithBatch  BatchMixRun `json:"with_batch"`
	// TTFTP99Ratio is the interactive p99 TTFT with the batch ÷ without.
	TTFTP99Ratio float64 `json:"ttft_p99_ratio"`

	idleRun, batchRun *Report
}

var _ ScenarioReport = (*BatchMixReport)(nil)

func runBatchMix(ctx context.Context, o ScenarioOptions) (*BatchMixReport, error) {
	speed := o.SimSpeed
	if speed <= 0 {
		speed = BatchMixDefaultSimSpeed
	}
	l := o.Load
	if l.Concurrency > 0 || l.ramped() {
		return nil, fmt.Errorf("%w: batch-mix runs an open-loop interactive rate: no --ramp or --concurrency", ErrBadOptions)
	}
	if l.Workload != "" && l.Workload != WorkloadChatShort && l.Workload != WorkloadMixed {
		return nil, fmt.Errorf("%w: batch-mix's interactive traffic is chat-short (the bulk job's lines are too), not %s", ErrBadOptions, l.Workload)
	}
	if l.RPS == 0 {
		l.RPS = BatchMixDefaultRPS
	}
	if l.Duration <= 0 {
		l.Duration = BatchMixDefaultDuration
	}
	if l.SLOTTFT == 0 && l.SLOTPOT == 0 {
		l.SLOTTFT, l.SLOTPOT = CapacityDefaultSLOTTFT, CapacityDefaultSLOTPOT
	}
	if l.BatchLines <= 0 {
		l.BatchLines = BatchMixDefaultLines
	}
	if l.Duration <= batchMixWarmup+batchMixSettle+time.Second {
		return nil, fmt.Errorf("%w: batch-mix needs a duration over %s", ErrBadOptions, batchMixWarmup+batchMixSettle+time.Second)
	}
	gpus := o.GPUs
	if gpus == "" {
		gpus = HeteroDefaultGPUs
	}
	policy := "herd"
	if len(o.Policies) > 0 {
		policy = o.Policies[0]
	}
	d := l.withDefaults()
	rep := &BatchMixReport{
		Scenario: ScenarioBatchMix, Simulated: true, GPUs: gpus, Policy: policy, Model: d.Model,
		Workload: string(WorkloadChatShort), RPS: l.RPS, DurationS: l.Duration.Seconds(), SimSpeed: speed,
		Seed: d.Seed, SLO: SLO{TTFTMs: ms(l.SLOTTFT), TPOTMs: ms(l.SLOTPOT)}, BatchLines: l.BatchLines,
		BatchMax: defaultMaxTokens(WorkloadChatShort),
	}
	from, to := batchMixWarmup+batchMixSettle, l.Duration
	for _, withBatch := range []bool{false, true} {
		name := "idle"
		run := l
		run.Workload = WorkloadChatShort
		if withBatch {
			name, run.Workload = "with_batch", WorkloadMixed
		}
		progressf(o.Progress, "== batch-mix: %s, policy %s on a fresh SIMULATED cluster %s (sim speed %g×)", name, policy, gpus, speed)
		copts := SimClusterOptions{Binary: o.Binary, GPUs: gpus, Models: []string{d.Model}, Policy: policy, SimSpeed: speed,
			AgentArgs: []string{"--agent-heartbeat-interval", heartbeatFor(speed).String()}}
		if o.LogDir != "" {
			copts.LogDir, copts.KeepLogs = filepath.Join(o.LogDir, "batch-mix-"+name), true
			if err := os.MkdirAll(copts.LogDir, 0o755); err != nil {
				return rep, err
			}
		}
		cl, err := StartSimCluster(ctx, copts)
		if err != nil {
			return rep, fmt.Errorf("%s: starting the simulated cluster: %w", name, err)
		}
		run.Target, run.Label, run.Simulated, run.Progress, run.Events = cl.URL, name, true, o.Progress, nil
		run.RPS = l.RPS * speed
		run.Duration = scaleDur(l.Duration, speed)
		run.SLOTTFT, run.SLOTPOT = scaleDur(l.SLOTTFT, speed), scaleDur(l.SLOTPOT, speed)
		run.BatchAt = scaleDur(batchMixWarmup, speed)
		run.BatchPoll = max(scaleDur(time.Second, speed), 100*time.Millisecond)
		run.BatchWait = time.Millisecond // the window is what is measured; the batch need not finish
		if run.RequestTimeout <= 0 {
			run.RequestTimeout = scaleDur(2*time.Minute, speed)
		}
		r, err := Run(ctx, run)
		stopErr := cl.Stop()
		if err != nil {
			return rep, fmt.Errorf("%s: %w", name, err)
		}
		if stopErr != nil {
			progressf(o.Progress, "   stopping the cluster: %v", stopErr)
		}
		br := batchMixRun(name, r, scaleDur(from, speed), scaleDur(to, speed), speed, rep.BatchMax)
		if withBatch {
			rep.WithBatch, rep.batchRun = br, r
		} else {
			rep.Idle, rep.idleRun = br, r
		}
	}
	if rep.Idle.TTFT.P99 > 0 {
		rep.TTFTP99Ratio = round3(rep.WithBatch.TTFT.P99 / rep.Idle.TTFT.P99)
	}
	return rep, nil
}

// batchMixRun summarises run r over the wall window [from, to) in simulated units.
func batchMixRun(name string, r *Report, from, to time.Duration, speed float64, batchMax int) BatchMixRun {
	w := r.Window(from, to)
	secs := (to - from).Seconds() * speed // simulated seconds of the window
	br := BatchMixRun{
		Name: name, WindowFromS: round3(from.Seconds() * speed), WindowToS: round3(to.Seconds() * speed),
		Requests: w.Sent, Errors: w.Failed,
		TTFT:            Quantiles{P50: round3(w.TTFT.P50 * speed), P90: round3(w.TTFT.P90 * speed), P99: round3(w.TTFT.P99 * speed)},
		TPOT:            Quantiles{P50: round3(w.TPOT.P50 * speed), P90: round3(w.TPOT.P90 * speed), P99: round3(w.TPOT.P99 * speed)},
		InteractiveTokS: round3(float64(w.OutputTokens) / secs),
	}
	if w.Sent > 0 {
		br.WithinSLO = round3(float64(w.GoodRequests) / float64(w.Sent))
	}
	if b := r.Batch; b != nil {
		br.Batch = b
		// The bulk job's lines all ask for batchMax tokens, and simulated nodes produce exactly
		// max_tokens, so lines completed × batchMax is the batch's output.
		br.BatchLinesDone = round3(b.CompletedBetween(from.Seconds(), to.Seconds()))
		br.BatchTokS = round3(br.BatchLinesDone * float64(batchMax) / secs)
	}
	if tot := br.BatchTokS + br.InteractiveTokS; tot > 0 {
		br.BatchShare = round3(br.BatchTokS / tot)
	}
	return br
}

// WriteJSON implements ScenarioReport.
func (b *BatchMixReport) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(b)
}

// WriteText implements ScenarioReport: the two runs side by side, as a markdown table.
func (b *BatchMixReport) WriteText(w io.Writer) error {
	var s strings.Builder
	fmt.Fprintf(&s, "### Interactive vs batch — SIMULATED cluster %s, policy %s (every figure is simulated)\n\n", b.GPUs, b.Policy)
	fmt.Fprintf(&s, "Interactive chat-short at Poisson %g req/s for %gs, seed %d, SLO TTFT ≤ %gms TPOT ≤ %gms; with_batch adds a bulk job of %d lines (max_tokens %d) through /v1/batches at %gs. ",
		b.RPS, b.DurationS, b.Seed, b.SLO.TTFTMs, b.SLO.TPOTMs, b.BatchLines, b.BatchMax, batchMixWarmup.Seconds())
	fmt.Fprintf(&s, "Both runs measured over the window %g–%gs on fresh clusters; simulated time (sim speed %g×).\n\n", b.Idle.WindowFromS, b.Idle.WindowToS, b.SimSpeed)
	s.WriteString("| run | interactive req | within SLO | TTFT p50 / p90 / p99 ms | TPOT p50 / p99 ms | interactive tok/s | batch tok/s | batch share of tok/s | errors |\n")
	s.WriteString("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, r := range []BatchMixRun{b.Idle, b.WithBatch} {
		fmt.Fprintf(&s, "| %s | %d | %.1f%% | %.0f / %.0f / %.0f | %.1f / %.1f | %.0f | %.0f | %.1f%% | %d |\n",
			r.Name, r.Requests, 100*r.WithinSLO, r.TTFT.P50, r.TTFT.P90, r.TTFT.P99, r.TPOT.P50, r.TPOT.P99,
			r.InteractiveTokS, r.BatchTokS, 100*r.BatchShare, r.Errors)
	}
	if b.TTFTP99Ratio > 0 && !math.IsInf(b.TTFTP99Ratio, 0) {
		fmt.Fprintf(&s, "\n- interactive p99 TTFT with the batch ÷ idle = %.2f× (simulated)\n", b.TTFTP99Ratio)
	}
	if bt := b.WithBatch.Batch; bt != nil {
		fmt.Fprintf(&s, "- batch: %d/%d lines done, %d failed, status %s at the end of the run", bt.Completed, bt.Lines, bt.Failed, bt.Status)
		if bt.Error != "" && !bt.Finished {
			s.WriteString(" (still running when the interactive run ended, as intended: it is larger than the window)")
		}
		s.WriteByte('\n')
	}
	_, err := io.WriteString(w, s.String())
	return err
}

// WriteSVG implements ScenarioReport: both runs' interactive requests in one plot.
func (b *BatchMixReport) WriteSVG(w io.Writer) error {
	var runs []*Report
	for _, r := range []*Report{b.idleRun, b.batchRun} {
		if r != nil {
			runs = append(runs, r)
		}
	}
	return WriteSVG(w, fmt.Sprintf("batch-mix: interactive chat-short on %s, idle vs with a %d-line batch (wall clock at sim speed %g×)", b.GPUs, b.BatchLines, b.SimSpeed), runs...)
}
