package loadtest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"
)

// ScenarioScale measures how the gateway's own cost grows with the fleet: a gateway (or two on
// Redis) and a fake fleet of N nodes in another process heartbeating at 1 Hz, per fleet size.
const ScenarioScale = "scale"

// Defaults of the scale scenario. The heartbeat window is long enough to hold ten heartbeats of
// every node; the load window sends requests over every model by Zipf popularity.
var ScaleDefaultNodes = []int{10, 100, 1000}

const (
	ScaleDefaultSettle      = 5 * time.Second
	ScaleDefaultHeartbeatS  = 10 * time.Second
	ScaleDefaultLoad        = 10 * time.Second
	ScaleDefaultConcurrency = 32
	scaleAdminCalls         = 20
)

// ScaleFleet is what one fleet size cost the gateway.
type ScaleFleet struct {
	// Nodes is the fleet's size; Gateways how many gateways shared it (2: on Redis).
	Nodes    int `json:"nodes"`
	Gateways int `json:"gateways"`
	// HeartbeatCPUPct is the gateway processes' CPU (utime+stime, summed over the gateways) while
	// only heartbeats arrive, in percent of one core. HeartbeatsPerS is the rate they ingested.
	HeartbeatCPUPct float64 `json:"heartbeat_cpu_pct"`
	HeartbeatsPerS  float64 `json:"heartbeats_per_s"`
	// PickP50US and PickP99US are the scheduler's Pick time under the request load, from the
	// gateway's own histogram (herd_scheduler_pick_seconds, interpolated within a bucket).
	PickP50US float64 `json:"pick_p50_us"`
	PickP99US float64 `json:"pick_p99_us"`
	// SnapshotP50US, SnapshotP99US and SnapshotBuildsPerS describe full snapshot builds over
	// both windows (herd_registry_snapshot_build_seconds).
	SnapshotP50US      float64 `json:"snapshot_build_p50_us"`
	SnapshotP99US      float64 `json:"snapshot_build_p99_us"`
	SnapshotBuildsPerS float64 `json:"snapshot_builds_per_s"`
	// RSSMiB is the first gateway's resident memory after the heartbeat window; RSSLoadMiB after
	// the request load.
	RSSMiB     float64 `json:"rss_mib"`
	RSSLoadMiB float64 `json:"rss_after_load_mib"`
	// AdminNodesP50Ms and AdminNodesP99Ms time GET /admin/v1/nodes (sequential calls).
	AdminNodesP50Ms float64 `json:"admin_nodes_p50_ms"`
	AdminNodesP99Ms float64 `json:"admin_nodes_p99_ms"`
	// Requests, Errors and RPS describe the request load (closed loop, non-streaming chat).
	Requests int     `json:"requests"`
	Errors   int     `json:"errors"`
	RPS      float64 `json:"rps"`
}

// ScaleReport is the scale scenario's result.
type ScaleReport struct {
	Scenario string `json:"scenario"`
	// Backend says what answered: the fake fleet, not a model.
	Backend     string       `json:"backend"`
	CPUs        int          `json:"cpus"`
	HeartbeatS  float64      `json:"heartbeat_window_s"`
	LoadS       float64      `json:"load_window_s"`
	Concurrency int          `json:"concurrency"`
	Fleets      []ScaleFleet `json:"fleets"`
	// RSSPerNodeKiB is the gateway's RSS growth per node from the smallest to the largest
	// single-gateway fleet.
	RSSPerNodeKiB float64 `json:"rss_per_node_kib"`
}

var _ ScenarioReport = (*ScaleReport)(nil)

func runScale(ctx context.Context, o ScenarioOptions) (*ScaleReport, error) {
	sizes := o.Nodes
	if len(sizes) == 0 {
		sizes = ScaleDefaultNodes
	}
	hbWin, loadWin := o.HeartbeatWindow, o.Load.Duration
	if hbWin <= 0 {
		hbWin = ScaleDefaultHeartbeatS
	}
	if loadWin <= 0 {
		loadWin = ScaleDefaultLoad
	}
	conc := o.Load.Concurrency
	if conc <= 0 {
		conc = ScaleDefaultConcurrency
	}
	bin, err := binaryOf(o)
	if err != nil {
		return nil, err
	}
	rep := &ScaleReport{Scenario: ScenarioScale, CPUs: runtime.NumCPU(), HeartbeatS: hbWin.Seconds(),
		LoadS: loadWin.Seconds(), Concurrency: conc,
		Backend: fmt.Sprintf("fake fleet in its own process: %d GPUs a node (fixed telemetry with noise; full heartbeat first, then deltas), %d of %d models a node by Zipf popularity (s=%g), fake OpenAI answers; no model runs",
			FleetDefaultGPUs, FleetDefaultModelsPerNode, FleetDefaultModels, FleetDefaultZipfS)}
	gateways := []int{1}
	if o.RedisURL != "" {
		gateways = append(gateways, 2)
	}
	for _, g := range gateways {
		for _, n := range sizes {
			progressf(o.Progress, "== scale: %d nodes, %d gateway(s)", n, g)
			f, err := scaleFleet(ctx, bin, o, n, g, hbWin, loadWin, conc)
			if err != nil {
				return rep, fmt.Errorf("%d nodes: %w", n, err)
			}
			rep.Fleets = append(rep.Fleets, f)
		}
	}
	var lo, hi *ScaleFleet
	for i := range rep.Fleets {
		f := &rep.Fleets[i]
		if f.Gateways != 1 {
			continue
		}
		if lo == nil || f.Nodes < lo.Nodes {
			lo = f
		}
		if hi == nil || f.Nodes > hi.Nodes {
			hi = f
		}
	}
	if lo != nil && hi != nil && hi.Nodes > lo.Nodes {
		rep.RSSPerNodeKiB = round3((hi.RSSMiB - lo.RSSMiB) * 1024 / float64(hi.Nodes-lo.Nodes))
	}
	return rep, nil
}

// scaleFleet starts gws gateways (on Redis when more than one) and a fleet of n nodes, and
// measures them.
func scaleFleet(ctx context.Context, bin string, o ScenarioOptions, n, gws int, hbWin, loadWin time.Duration, conc int) (ScaleFleet, error) {
	res := ScaleFleet{Nodes: n, Gateways: gws}
	sc, err := newScratch(o, "scale", fmt.Sprintf("scale-%d-%d", n, gws))
	if err != nil {
		return res, err
	}
	defer sc.remove()
	tmp, logDir, token := sc.dir, sc.logDir, sc.token
	var urls []string
	var pids []int
	for i := range gws {
		args := []string{"gateway", "--data", filepath.Join(tmp, fmt.Sprintf("data%d", i)), "--cluster-token", token, "--log-level", "warn"}
		if gws > 1 {
			args = append(args, "--redis-url", o.RedisURL)
		}
		gw, u, err := startListening(ctx, fmt.Sprintf("gateway %d", i), bin, args, "", logDir, "/healthz")
		if err != nil {
			return res, fmt.Errorf("starting a gateway: %w", err)
		}
		defer gw.Stop(10 * time.Second)
		urls, pids = append(urls, u), append(pids, gw.PID)
	}
	fleet, _, err := startListening(ctx, "fleet", bin, []string{"fake-fleet", "--gateway", strings.Join(urls, ","),
		"--cluster-token", token, "--nodes", strconv.Itoa(n), "--seed", strconv.FormatUint(o.Load.Seed, 10)}, "", logDir, "/healthz")
	if err != nil {
		return res, fmt.Errorf("starting the fleet: %w", err)
	}
	defer fleet.Stop(5 * time.Second)
	hc := NewHTTPClient(conc + 4)
	defer hc.CloseIdleConnections()
	if err := waitNodes(ctx, hc, urls[0], n, 60*time.Second); err != nil {
		return res, err
	}
	sleepCtx(ctx, ScaleDefaultSettle)

	// Heartbeats only.
	before := metricsOf(ctx, hc, urls)
	cpu0 := sumCPU(pids)
	t0 := time.Now()
	sleepCtx(ctx, hbWin)
	el := time.Since(t0)
	res.HeartbeatCPUPct = round3(100 * (sumCPU(pids) - cpu0).Seconds() / el.Seconds())
	mid := metricsOf(ctx, hc, urls)
	res.HeartbeatsPerS = round3((mid.heartbeats - before.heartbeats) / el.Seconds())
	if rss, err := ProcRSS(pids[0]); err == nil {
		res.RSSMiB = round3(float64(rss) / (1 << 20))
	}
	var admin []time.Duration
	for range scaleAdminCalls {
		s := time.Now()
		if err := getOK(ctx, hc, urls[0]+"/admin/v1/nodes"); err != nil {
			return res, err
		}
		admin = append(admin, time.Since(s))
	}
	slices.Sort(admin)
	res.AdminNodesP50Ms, res.AdminNodesP99Ms = round3(ms(Percentile(admin, 50))), round3(ms(Percentile(admin, 99)))

	// Requests over the models the fleet holds (the fleet's layout is a function of its seed), by
	// Zipf popularity, spread over the gateways.
	held := map[int]bool{}
	for _, ms := range fleetLayout(FleetOptions{Nodes: n, Seed: o.Load.Seed}.withDefaults()) {
		for _, m := range ms {
			held[m] = true
		}
	}
	loadStart := metricsOf(ctx, hc, urls)
	var reqs, errs atomic.Int64
	lctx, cancel := context.WithTimeout(ctx, loadWin)
	var wg sync.WaitGroup
	for w := range conc {
		wg.Go(func() {
			r := mrand.New(mrand.NewPCG(o.Load.Seed, uint64(w)))
			z := mrand.NewZipf(r, FleetDefaultZipfS, 1, FleetDefaultModels-1)
			for lctx.Err() == nil {
				m := int(z.Uint64())
				for !held[m] {
					m = int(z.Uint64())
				}
				body := fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":"hello"}],"max_tokens":8}`, FleetModel(m))
				err := postOK(lctx, hc, urls[w%len(urls)]+"/v1/chat/completions", body)
				if lctx.Err() != nil {
					return
				}
				reqs.Add(1)
				if err != nil {
					errs.Add(1)
				}
			}
		})
	}
	wg.Wait()
	cancel()
	end := metricsOf(ctx, hc, urls)
	res.Requests, res.Errors = int(reqs.Load()), int(errs.Load())
	res.RPS = round3(float64(res.Requests) / loadWin.Seconds())
	pick := end.pick.sub(loadStart.pick)
	res.PickP50US, res.PickP99US = round3(pick.quantile(0.5)*1e6), round3(pick.quantile(0.99)*1e6)
	snap := end.snapshot.sub(before.snapshot)
	res.SnapshotP50US, res.SnapshotP99US = round3(snap.quantile(0.5)*1e6), round3(snap.quantile(0.99)*1e6)
	res.SnapshotBuildsPerS = round3(snap.count / (el + loadWin).Seconds())
	if rss, err := ProcRSS(pids[0]); err == nil {
		res.RSSLoadMiB = round3(float64(rss) / (1 << 20))
	}
	return res, nil
}

func sumCPU(pids []int) time.Duration {
	var t time.Duration
	for _, p := range pids {
		c, _ := ProcCPU(p)
		t += c
	}
	return t
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// waitNodes waits until the gateway at u lists n nodes.
func waitNodes(ctx context.Context, hc *http.Client, u string, n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	got := 0
	for time.Now().Before(deadline) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u+"/admin/v1/nodes", nil)
		if resp, err := hc.Do(req); err == nil {
			var list struct {
				Nodes []json.RawMessage `json:"nodes"`
			}
			_ = json.NewDecoder(resp.Body).Decode(&list)
			resp.Body.Close()
			if got = len(list.Nodes); got >= n {
				return nil
			}
		}
		sleepCtx(ctx, 500*time.Millisecond)
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return fmt.Errorf("gateway lists %d of %d nodes after %s", got, n, timeout)
}

func getOK(ctx context.Context, hc *http.Client, u string) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: HTTP %d", u, resp.StatusCode)
	}
	return nil
}

func postOK(ctx context.Context, hc *http.Client, u, body string) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("HTTP %d: %s", resp.StatusCode, errorMessage(b))
	}
	return nil
}

// hist is a cumulative Prometheus histogram: upper bounds and counts.
type hist struct {
	le    []float64
	cum   []float64
	count float64
}

func (h hist) sub(o hist) hist {
	out := hist{le: h.le, cum: slices.Clone(h.cum), count: h.count - o.count}
	for i := range out.cum {
		if i < len(o.cum) {
			out.cum[i] -= o.cum[i]
		}
	}
	return out
}

// quantile interpolates linearly within the bucket that holds q, as Prometheus's
// histogram_quantile does.
func (h hist) quantile(q float64) float64 {
	if h.count <= 0 || len(h.le) == 0 {
		return 0
	}
	rank := q * h.count
	prevLe, prevCum := 0.0, 0.0
	for i, le := range h.le {
		if h.cum[i] >= rank {
			if le > 1e300 { // +Inf: the largest finite bound is all that can be said
				return prevLe
			}
			in := h.cum[i] - prevCum
			if in <= 0 {
				return le
			}
			return prevLe + (le-prevLe)*(rank-prevCum)/in
		}
		prevLe, prevCum = le, h.cum[i]
	}
	return prevLe
}

type gatewayMetrics struct {
	pick, snapshot hist
	heartbeats     float64
}

// metricsOf scrapes and sums the gateways' scheduler histograms and heartbeat counters.
func metricsOf(ctx context.Context, hc *http.Client, urls []string) gatewayMetrics {
	var m gatewayMetrics
	for _, u := range urls {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u+"/metrics", nil)
		resp, err := hc.Do(req)
		if err != nil {
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		one := parseScaleMetrics(b)
		m.pick = addHist(m.pick, one.pick)
		m.snapshot = addHist(m.snapshot, one.snapshot)
		m.heartbeats += one.heartbeats
	}
	return m
}

func addHist(a, b hist) hist {
	if len(a.le) == 0 {
		return b
	}
	for i := range a.cum {
		if i < len(b.cum) {
			a.cum[i] += b.cum[i]
		}
	}
	a.count += b.count
	return a
}

// parseScaleMetrics reads the few series the scale scenario needs from Prometheus's text format.
func parseScaleMetrics(b []byte) gatewayMetrics {
	var m gatewayMetrics
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		name, rest, ok := strings.Cut(line, " ")
		if !ok || strings.HasPrefix(line, "#") {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
		if err != nil {
			continue
		}
		var h *hist
		switch {
		case strings.HasPrefix(name, "herd_scheduler_pick_seconds"):
			h = &m.pick
		case strings.HasPrefix(name, "herd_registry_snapshot_build_seconds"):
			h = &m.snapshot
		case strings.HasPrefix(name, "herd_heartbeats_total"):
			m.heartbeats += v
			continue
		default:
			continue
		}
		switch {
		case strings.Contains(name, "_bucket{"):
			_, le, _ := strings.Cut(name, `le="`)
			le, _, _ = strings.Cut(le, `"`)
			bound, err := strconv.ParseFloat(le, 64)
			if le == "+Inf" {
				bound, err = 1e308, nil
			}
			if err == nil {
				h.le, h.cum = append(h.le, bound), append(h.cum, v)
			}
		case strings.HasSuffix(name, "_count"):
			h.count = v
		}
	}
	return m
}

// WriteJSON implements ScenarioReport.
func (r *ScaleReport) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteText implements ScenarioReport.
func (r *ScaleReport) WriteText(w io.Writer) error {
	fmt.Fprintf(w, "scale: %s\n%d CPUs; heartbeat window %gs, request load %gs at concurrency %d\n\n",
		r.Backend, r.CPUs, r.HeartbeatS, r.LoadS, r.Concurrency)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "nodes\tgateways\thb/s\thb CPU %\tpick p50 µs\tpick p99 µs\tsnap p50 µs\tsnap p99 µs\tsnap/s\tRSS MiB\tRSS load MiB\tadmin p50 ms\tadmin p99 ms\treq/s\terrors\t")
	for _, f := range r.Fleets {
		fmt.Fprintf(tw, "%d\t%d\t%.0f\t%.2f\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t%.2f\t%.2f\t%.0f\t%d\t\n",
			f.Nodes, f.Gateways, f.HeartbeatsPerS, f.HeartbeatCPUPct, f.PickP50US, f.PickP99US, f.SnapshotP50US,
			f.SnapshotP99US, f.SnapshotBuildsPerS, f.RSSMiB, f.RSSLoadMiB, f.AdminNodesP50Ms, f.AdminNodesP99Ms, f.RPS, f.Errors)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "\ngateway RSS growth: %.1f KiB per node\n", r.RSSPerNodeKiB)
	return err
}

// WriteSVG implements ScenarioReport: the scale scenario has no plot; it writes nothing.
func (r *ScaleReport) WriteSVG(io.Writer) error { return nil }
