package loadtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"
)

// Overhead scenario defaults.
const (
	OverheadDefaultRounds        = 3
	OverheadDefaultRoundDuration = 5 * time.Second
	overheadConcurrency          = 50
	overheadRPS                  = 200
	overheadNodeID               = "fake-node"
	// overheadSlots is the agent's --slots: above the concurrency, as a real OpenAI-compatible
	// server (vLLM batches hundreds of sequences) would be configured. With the agent's default
	// of 4, the gateway's admission would hold 46 of the 50 requests in its queue, and the
	// scenario would measure that queue rather than what herd's path costs.
	overheadSlots = 2 * overheadConcurrency
)

// OverheadCase is one workload measured on one side (direct or through herd). Latencies in ms.
type OverheadCase struct {
	// RPS is successful requests per second of measured time.
	RPS   float64 `json:"rps"`
	P50Ms float64 `json:"p50_ms"`
	P99Ms float64 `json:"p99_ms"`
	// TTFTP50Ms is the median time to first token (streaming case only).
	TTFTP50Ms float64 `json:"ttft_p50_ms,omitempty"`
	// CPUUsPerReq is CPU time per request of the side's own processes: for herd, gateway +
	// agent; for direct, the load test process (fake backend + load generator together).
	CPUUsPerReq float64 `json:"cpu_us_per_req"`
	// RSSMiB is the peak resident memory of the same processes during the rounds.
	RSSMiB float64 `json:"rss_mib"`
	// GatewayCPUUsPerReq … AgentRSSMiB break herd's figures down by process (herd side only).
	GatewayCPUUsPerReq float64 `json:"gateway_cpu_us_per_req,omitempty"`
	AgentCPUUsPerReq   float64 `json:"agent_cpu_us_per_req,omitempty"`
	GatewayRSSMiB      float64 `json:"gateway_rss_mib,omitempty"`
	AgentRSSMiB        float64 `json:"agent_rss_mib,omitempty"`
	// LoadtestCPUUsPerReq is the load test process's CPU per request (fake backend + generator),
	// on either side, for reference.
	LoadtestCPUUsPerReq float64        `json:"loadtest_cpu_us_per_req"`
	Requests            int            `json:"requests"`
	Errors              int            `json:"errors"`
	ErrorKinds          map[string]int `json:"error_kinds,omitempty"`
}

// OverheadCases holds the three cases of one side.
type OverheadCases struct {
	NonstreamC50  OverheadCase `json:"nonstream_c50"`
	StreamC50     OverheadCase `json:"stream_c50"`
	NonstreamR200 OverheadCase `json:"nonstream_r200"`
}

func (c *OverheadCases) get(key string) *OverheadCase {
	switch key {
	case "nonstream_c50":
		return &c.NonstreamC50
	case "stream_c50":
		return &c.StreamC50
	default:
		return &c.NonstreamR200
	}
}

// OverheadDelta is herd − direct for each case, in ms.
type OverheadDelta struct {
	NonstreamC50  float64 `json:"nonstream_c50"`
	StreamC50     float64 `json:"stream_c50"`
	NonstreamR200 float64 `json:"nonstream_r200"`
}

// OverheadReport compares the fake backend reached directly with the same backend reached
// through a herd gateway and agent.
type OverheadReport struct {
	Scenario  string `json:"scenario"`
	Simulated bool   `json:"simulated"`
	// Backend describes what answered the requests.
	Backend string `json:"backend"`
	Chunks  int    `json:"stream_chunks"`
	// AgentSlots is the agent's --slots (requests it takes at once).
	AgentSlots int     `json:"agent_slots,omitempty"`
	Rounds     int     `json:"rounds"`
	RoundS     float64 `json:"round_s"`
	// CPUs is the number of CPUs of the machine it ran on; everything shared them.
	CPUs     int               `json:"cpus"`
	CPUScope map[string]string `json:"cpu_scope"`
	Direct   OverheadCases     `json:"direct"`
	Herd     OverheadCases     `json:"herd"`
	// AddedP50Ms and AddedP99Ms are herd's latency minus direct's.
	AddedP50Ms OverheadDelta `json:"added_p50_ms"`
	AddedP99Ms OverheadDelta `json:"added_p99_ms"`

	plots [2]*Report
}

var overheadCaseKeys = []string{"nonstream_c50", "stream_c50", "nonstream_r200"}

// overheadSide is one way to reach the backend.
type overheadSide struct {
	name   string
	url    string
	client *http.Client
	pids   []int // whose CPU and RSS are the side's
}

// roundTotals accumulates one case on one side over its rounds.
type roundTotals struct {
	samples []Sample
	elapsed time.Duration
	cpu     map[int]time.Duration
	rss     map[int]uint64
}

func runOverhead(ctx context.Context, o ScenarioOptions) (*OverheadReport, error) {
	rounds, roundDur := o.Rounds, o.RoundDuration
	if rounds <= 0 {
		rounds = OverheadDefaultRounds
	}
	if roundDur <= 0 {
		roundDur = OverheadDefaultRoundDuration
	}
	bin, err := binaryOf(o)
	if err != nil {
		return nil, err
	}
	fake, err := StartFake("127.0.0.1:0", FaultOK, FakeOptions{})
	if err != nil {
		return nil, err
	}
	defer fake.Close()

	sc, err := newScratch(o, "overhead", "overhead")
	if err != nil {
		return nil, err
	}
	defer sc.remove()
	tmp, logDir, token := sc.dir, sc.logDir, sc.token
	progressf(o.Progress, "== overhead: fake backend at %s; starting a herd gateway and an agent in front of it", fake.URL)
	gw, gwURL, err := startListening(ctx, "gateway", bin, []string{"gateway", "--data", filepath.Join(tmp, "data"),
		"--cluster-token", token, "--log-level", "warn"}, "", logDir, "/healthz")
	if err != nil {
		return nil, fmt.Errorf("starting the gateway: %w", err)
	}
	defer gw.Stop(10 * time.Second)
	ag, _, err := startListening(ctx, "agent "+overheadNodeID, bin, []string{"agent", "--gateway", gwURL,
		"--cluster-token", token, "--node-id", overheadNodeID, "--backend", "openai", "--openai-url", fake.URL,
		"--slots", strconv.Itoa(overheadSlots), "--log-level", "warn"}, "", logDir, "")
	if err != nil {
		return nil, fmt.Errorf("starting the agent: %w", err)
	}
	defer ag.Stop(5 * time.Second)
	if err := waitServing(ctx, gwURL, []*Process{gw, ag}, 60*time.Second); err != nil {
		return nil, err
	}

	self := os.Getpid()
	direct := &overheadSide{name: "direct", url: fake.URL, client: NewHTTPClient(256), pids: []int{self}}
	herd := &overheadSide{name: "herd", url: gwURL, client: NewHTTPClient(256), pids: []int{gw.PID, ag.PID}}
	defer direct.client.CloseIdleConnections()
	defer herd.client.CloseIdleConnections()

	rep := &OverheadReport{
		Scenario: ScenarioOverhead, Simulated: false,
		Backend: "loadtest fake OpenAI backend in the load test process (fixed text, 20 chunks, no model): " +
			"the figures are herd's own cost, not a model's",
		Chunks: 20, AgentSlots: overheadSlots, Rounds: rounds, RoundS: roundDur.Seconds(), CPUs: runtime.NumCPU(),
		CPUScope: map[string]string{
			"direct": "the load test process itself: fake backend + load generator (no separate backend process exists)",
			"herd":   "the herd gateway and agent processes together (/proc/PID/stat utime+stime)",
		},
	}
	for _, key := range overheadCaseKeys {
		base := Options{
			Model: DefaultFakeModel, Workload: WorkloadChatShort, Seed: o.Load.Seed,
			Duration: roundDur, RequestTimeout: 30 * time.Second, DrainTimeout: 10 * time.Second,
		}
		switch key {
		case "nonstream_c50":
			base.Concurrency = overheadConcurrency
		case "stream_c50":
			base.Concurrency, base.Stream = overheadConcurrency, true
		case "nonstream_r200":
			base.RPS = overheadRPS
		}
		totals := map[string]*roundTotals{}
		for _, side := range []*overheadSide{direct, herd} {
			totals[side.name] = &roundTotals{cpu: map[int]time.Duration{}, rss: map[int]uint64{}}
			// Warm up connections and the gateway's view of the node; not measured.
			warm := base
			warm.Duration = min(time.Second, roundDur)
			if _, err := side.run(ctx, warm, nil, nil); err != nil {
				return rep, err
			}
		}
		for r := range rounds {
			order := []*overheadSide{direct, herd}
			if r%2 == 1 {
				order = []*overheadSide{herd, direct}
			}
			for _, side := range order {
				opts := base
				opts.Seed = base.Seed + uint64(r)
				progressf(o.Progress, "   %s round %d/%d: %s", key, r+1, rounds, side.name)
				if _, err := side.run(ctx, opts, totals[side.name], append([]int{self}, side.pids...)); err != nil {
					return rep, err
				}
			}
		}
		for _, side := range []*overheadSide{direct, herd} {
			c := caseResult(totals[side.name], side, self, key == "stream_c50")
			if side == direct {
				*rep.Direct.get(key) = c
			} else {
				*rep.Herd.get(key) = c
			}
		}
		d, h := rep.Direct.get(key), rep.Herd.get(key)
		switch key {
		case "nonstream_c50":
			rep.AddedP50Ms.NonstreamC50, rep.AddedP99Ms.NonstreamC50 = round3(h.P50Ms-d.P50Ms), round3(h.P99Ms-d.P99Ms)
		case "stream_c50":
			rep.AddedP50Ms.StreamC50, rep.AddedP99Ms.StreamC50 = round3(h.P50Ms-d.P50Ms), round3(h.P99Ms-d.P99Ms)
		case "nonstream_r200":
			rep.AddedP50Ms.NonstreamR200, rep.AddedP99Ms.NonstreamR200 = round3(h.P50Ms-d.P50Ms), round3(h.P99Ms-d.P99Ms)
			for i, side := range []*overheadSide{direct, herd} {
				t := totals[side.name]
				plot := summarize(t.samples, t.elapsed, Options{Label: side.name, Target: side.url, Model: DefaultFakeModel, RPS: overheadRPS})
				plot.samples = t.samples
				rep.plots[i] = plot
			}
		}
	}
	return rep, nil
}

// run runs one round against the side. With totals, it measures CPU and peak RSS of pids and
// adds the round to totals.
func (s *overheadSide) run(ctx context.Context, o Options, t *roundTotals, pids []int) (*Report, error) {
	o.Target, o.Client, o.Label = s.url, s.client, s.name
	var before map[int]time.Duration
	var stop func()
	if t != nil {
		before = cpuOf(pids)
		stop = sampleRSS(pids, t.rss)
	}
	r, err := Run(ctx, o)
	if t != nil {
		stop()
		for pid, v := range cpuOf(pids) {
			t.cpu[pid] += v - before[pid]
		}
	}
	if err != nil {
		return nil, fmt.Errorf("overhead %s round: %w", s.name, err)
	}
	if t != nil {
		// Rounds restart their clocks at 0; the plot shows them overlaid, which is what a
		// comparison of distributions wants.
		t.samples = append(t.samples, r.samples...)
		t.elapsed += time.Duration(r.DurationS * float64(time.Second))
	}
	return r, nil
}

// cpuOf reads the CPU time of each pid; unreadable ones are left out.
func cpuOf(pids []int) map[int]time.Duration {
	m := map[int]time.Duration{}
	for _, pid := range pids {
		if v, err := ProcCPU(pid); err == nil {
			m[pid] = v
		}
	}
	return m
}

// sampleRSS records the peak VmRSS of pids into peak every 100ms until the returned function is
// called.
func sampleRSS(pids []int, peak map[int]uint64) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	sample := func() {
		mu.Lock()
		defer mu.Unlock()
		for _, pid := range pids {
			if v, err := ProcRSS(pid); err == nil && v > peak[pid] {
				peak[pid] = v
			}
		}
	}
	sample()
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				sample()
			}
		}
	}()
	return func() {
		close(done)
		wg.Wait()
		sample()
	}
}

func caseResult(t *roundTotals, side *overheadSide, self int, stream bool) OverheadCase {
	var lat, ttft []time.Duration
	c := OverheadCase{ErrorKinds: map[string]int{}}
	for i := range t.samples {
		s := &t.samples[i]
		c.Requests++
		if !s.OK() {
			c.Errors++
			c.ErrorKinds[string(s.Err)]++
			continue
		}
		lat = append(lat, s.Latency)
		ttft = append(ttft, s.TTFT)
	}
	if len(c.ErrorKinds) == 0 {
		c.ErrorKinds = nil
	}
	ld := distOf(lat)
	c.P50Ms, c.P99Ms = ld.P50, ld.P99
	if stream {
		c.TTFTP50Ms = distOf(ttft).P50
	}
	if sec := t.elapsed.Seconds(); sec > 0 {
		c.RPS = round3(float64(len(lat)) / sec)
	}
	perReq := func(d time.Duration) float64 {
		if c.Requests == 0 {
			return 0
		}
		return math.Round(float64(d.Microseconds())/float64(c.Requests)*10) / 10
	}
	mib := func(b uint64) float64 { return math.Round(float64(b)/(1<<20)*10) / 10 }
	c.LoadtestCPUUsPerReq = perReq(t.cpu[self])
	if side.name == "direct" {
		c.CPUUsPerReq, c.RSSMiB = c.LoadtestCPUUsPerReq, mib(t.rss[self])
		return c
	}
	gw, ag := side.pids[0], side.pids[1]
	c.GatewayCPUUsPerReq, c.AgentCPUUsPerReq = perReq(t.cpu[gw]), perReq(t.cpu[ag])
	c.CPUUsPerReq = perReq(t.cpu[gw] + t.cpu[ag])
	c.GatewayRSSMiB, c.AgentRSSMiB = mib(t.rss[gw]), mib(t.rss[ag])
	c.RSSMiB = mib(t.rss[gw] + t.rss[ag])
	return c
}

// waitServing waits until the gateway answers a chat request for the fake model with a 200:
// the agent has registered and its models are known.
func waitServing(ctx context.Context, gwURL string, procs []*Process, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	body := fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":"ping"}],"max_tokens":4}`, DefaultFakeModel)
	client := &http.Client{Timeout: 5 * time.Second}
	last := "no answer yet"
	for {
		for _, p := range procs {
			if ok, _ := p.Exited(); ok {
				return p.failure("exited while the overhead cluster was starting")
			}
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, gwURL+"/v1/chat/completions", strings.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err == nil {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("HTTP %d: %s", resp.StatusCode, errorMessage(b))
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			return errors.Join(fmt.Errorf("gateway not serving the fake model after %s: %s", timeout, last), procs[0].failure("is the gateway"))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// WriteJSON implements ScenarioReport.
func (r *OverheadReport) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteText implements ScenarioReport.
func (r *OverheadReport) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "overhead scenario — direct to a fake OpenAI backend vs through a herd gateway + agent (real processes; fake model, not simulated GPUs)\n")
	fmt.Fprintf(&b, "%d CPUs shared by everything; each case alternates direct and herd rounds, %d × %gs per side; agent --slots %d\n\n", r.CPUs, r.Rounds, r.RoundS, r.AgentSlots)
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "case\tside\treq/s\tp50 ms\tp99 ms\tTTFT p50 ms\tCPU µs/req\tRSS MiB\terrors\tadded p50 ms\tadded p99 ms")
	deltas := map[string][2]float64{
		"nonstream_c50":  {r.AddedP50Ms.NonstreamC50, r.AddedP99Ms.NonstreamC50},
		"stream_c50":     {r.AddedP50Ms.StreamC50, r.AddedP99Ms.StreamC50},
		"nonstream_r200": {r.AddedP50Ms.NonstreamR200, r.AddedP99Ms.NonstreamR200},
	}
	for _, key := range overheadCaseKeys {
		for _, side := range []string{"direct", "herd"} {
			c := r.Direct.get(key)
			added := "\t"
			if side == "herd" {
				c = r.Herd.get(key)
				added = fmt.Sprintf("%+.3f\t%+.3f", deltas[key][0], deltas[key][1])
			}
			ttft := "-"
			if c.TTFTP50Ms > 0 {
				ttft = fmt.Sprintf("%.3f", c.TTFTP50Ms)
			}
			fmt.Fprintf(tw, "%s\t%s\t%.0f\t%.3f\t%.3f\t%s\t%.0f\t%.1f\t%d\t%s\n", key, side, c.RPS, c.P50Ms, c.P99Ms, ttft, c.CPUUsPerReq, c.RSSMiB, c.Errors, added)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(&b, "\nCPU and RSS: direct = %s;\n  herd = %s.\n", r.CPUScope["direct"], r.CPUScope["herd"])
	fmt.Fprintf(&b, "herd by process (CPU µs/req gateway + agent, RSS MiB gateway + agent):")
	for _, key := range overheadCaseKeys {
		c := r.Herd.get(key)
		fmt.Fprintf(&b, "\n  %s: %.0f + %.0f µs, %.1f + %.1f MiB (load test process alongside: %.0f µs/req)", key,
			c.GatewayCPUUsPerReq, c.AgentCPUUsPerReq, c.GatewayRSSMiB, c.AgentRSSMiB, c.LoadtestCPUUsPerReq)
	}
	b.WriteByte('\n')
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteSVG implements ScenarioReport: the 200 req/s open-loop case, direct and herd overlaid.
func (r *OverheadReport) WriteSVG(w io.Writer) error {
	runs := slices.DeleteFunc(slices.Clone(r.plots[:]), func(p *Report) bool { return p == nil })
	return WriteSVG(w, fmt.Sprintf("overhead: non-streaming, %d req/s open loop, direct vs herd (rounds overlaid)", overheadRPS), runs...)
}
