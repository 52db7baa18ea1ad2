package loadtest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
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

// ScenarioStreams holds thousands of slow SSE streams open through one gateway and one agent
// and measures what each costs.
const ScenarioStreams = "streams"

// Streams scenario defaults: ten thousand streams, each a token a second (a slow GPU's long
// answer), opened at a thousand a second; a probe stream of 200 tokens at a fast GPU's speed
// (a token every 5 ms: with no pause at all, several tokens arrive in one read and the gaps
// measure the socket, not the path), ten times through herd and ten times directly, alternating.
const (
	StreamsDefaultCount       = 10000
	StreamsDefaultInterval    = time.Second
	StreamsDefaultOpenRate    = 1000
	StreamsDefaultProbeRounds = 10
	streamsProbeTokens        = 200
	streamsProbeInterval      = 5 * time.Millisecond
	// streamsProbeModel is served by the fake without its chunk delay.
	streamsProbeModel = "fake-probe"
	// streamsSettle is how long the streams run once all are open before memory is read, so
	// that every stream has passed a few tokens through every buffer on its way.
	streamsSettle = 3 * time.Second
	// streamsSpareFiles is what a process needs beside one socket per stream (listeners,
	// logs, the few gateway↔agent connections).
	streamsSpareFiles = 256
)

// StreamsProcess is one herd process's cost: before the streams (base) and with them open.
type StreamsProcess struct {
	// RSSBaseMiB and RSSMiB are VmRSS before and with the streams open.
	RSSBaseMiB float64 `json:"rss_base_mib"`
	RSSMiB     float64 `json:"rss_mib"`
	// HeapBaseMiB and HeapMiB are go_memstats_heap_inuse_bytes from the process's /metrics.
	HeapBaseMiB float64 `json:"heap_base_mib"`
	HeapMiB     float64 `json:"heap_mib"`
	// GoroutinesBase and Goroutines are go_goroutines from /metrics.
	GoroutinesBase int `json:"goroutines_base"`
	Goroutines     int `json:"goroutines"`
	// OpenFiles counts /proc/PID/fd with the streams open: one socket per client stream on the
	// gateway, one per backend stream on the agent, and only a few between them (h2c).
	OpenFiles int `json:"open_files"`
	// RSSKiBPerStream, HeapKiBPerStream and GoroutinesPerStream are (with − base) / open streams.
	RSSKiBPerStream     float64 `json:"rss_kib_per_stream"`
	HeapKiBPerStream    float64 `json:"heap_kib_per_stream"`
	GoroutinesPerStream float64 `json:"goroutines_per_stream"`
	// CPUPct is the process's CPU while the streams were open, in percent of one core.
	CPUPct float64 `json:"cpu_pct"`
}

// StreamsProbe is the inter-token latency of a full-speed stream beside the slow ones.
type StreamsProbe struct {
	// Tokens per probe stream, and Rounds of it on each side (alternating direct and herd).
	Tokens int `json:"tokens"`
	Rounds int `json:"rounds"`
	// IntervalMs is the fake backend's pause between two of the probe's tokens.
	IntervalMs float64 `json:"interval_ms"`
	// DirectP50Ms … HerdP99Ms are inter-token gaps (between two content chunks as the client
	// reads them) straight from the fake backend and through the gateway and agent.
	DirectP50Ms float64 `json:"direct_itl_p50_ms"`
	DirectP99Ms float64 `json:"direct_itl_p99_ms"`
	HerdP50Ms   float64 `json:"herd_itl_p50_ms"`
	HerdP99Ms   float64 `json:"herd_itl_p99_ms"`
	// AddedP50Ms and AddedP99Ms are herd − direct.
	AddedP50Ms float64 `json:"added_itl_p50_ms"`
	AddedP99Ms float64 `json:"added_itl_p99_ms"`
	Errors     int     `json:"errors"`
}

// StreamsReport is the streams scenario's result. Per-stream figures divide by Open, the streams
// that had sent their first token and were still open when memory was read.
type StreamsReport struct {
	Scenario string `json:"scenario"`
	// Backend describes what answered (the loadtest fake in a process of its own).
	Backend string `json:"backend"`
	// Streams asked for; Open when measured; Failed never opened or ended early.
	Streams int `json:"streams"`
	Open    int `json:"open"`
	Failed  int `json:"failed"`
	// TokenIntervalS is the fake backend's pause between two tokens of a slow stream.
	TokenIntervalS float64 `json:"token_interval_s"`
	// TokensPerS is the slow streams' tokens the load generator received per second while all
	// were open: about Open / TokenIntervalS when herd keeps up.
	TokensPerS float64 `json:"tokens_per_s"`
	// OpenS is how long opening them took.
	OpenS float64 `json:"open_s"`
	// NoFile is the open-files limit every process ran with (soft raised to the hard limit).
	NoFile uint64 `json:"nofile_limit"`
	// AgentTransport is how the gateway reached the agent ("h2c": HTTP/2 without TLS).
	AgentTransport string         `json:"agent_transport"`
	CPUs           int            `json:"cpus"`
	Gateway        StreamsProcess `json:"gateway"`
	Agent          StreamsProcess `json:"agent"`
	// KiBPerStream is gateway + agent RSS growth per open stream; HeapKiBPerStream the same of
	// their Go heaps; GoroutinesPerStream of their goroutines.
	KiBPerStream        float64        `json:"kib_per_stream"`
	HeapKiBPerStream    float64        `json:"heap_kib_per_stream"`
	GoroutinesPerStream float64        `json:"goroutines_per_stream"`
	Probe               StreamsProbe   `json:"probe"`
	ErrorKinds          map[string]int `json:"error_kinds,omitempty"`
}

var _ ScenarioReport = (*StreamsReport)(nil)

// streamsProc is a started process and where to read its metrics.
type streamsProc struct {
	p          *Process
	metricsURL string
	token      string
}

func runStreams(ctx context.Context, o ScenarioOptions) (*StreamsReport, error) {
	n := o.Streams
	if n <= 0 {
		n = StreamsDefaultCount
	}
	interval := o.StreamInterval
	if interval <= 0 {
		interval = StreamsDefaultInterval
	}
	rounds := o.Rounds
	if rounds <= 0 {
		rounds = StreamsDefaultProbeRounds
	}
	nofile, err := raiseNoFile(uint64(n + streamsSpareFiles))
	if err != nil {
		return nil, err
	}
	bin, err := binaryOf(o)
	if err != nil {
		return nil, err
	}
	sc, err := newScratch(o, "streams", "streams")
	if err != nil {
		return nil, err
	}
	defer sc.remove()
	tmp, logDir, token := sc.dir, sc.logDir, sc.token

	// The fake backend runs in a process of its own: it holds a socket per stream, and so does
	// the load generator; together they would pass the open-files limit.
	fake, fakeURL, err := startListening(ctx, "fake backend", bin, []string{"fake-backend",
		"--chunks", "1000000", "--chunk-delay", interval.String(),
		"--models", DefaultFakeModel + "," + streamsProbeModel, "--fast-models", streamsProbeModel,
		"--fast-chunk-delay", streamsProbeInterval.String()}, "", logDir, "/v1/models")
	if err != nil {
		return nil, fmt.Errorf("starting the fake backend: %w", err)
	}
	defer fake.Stop(5 * time.Second)
	progressf(o.Progress, "== streams: fake backend (a token every %s) at %s; starting a gateway (--agent-h2c) and an agent", interval, fakeURL)
	gw, gwURL, err := startListening(ctx, "gateway", bin, []string{"gateway", "--data", filepath.Join(tmp, "data"),
		"--cluster-token", token, "--log-level", "warn", "--agent-h2c",
		"--queue-size", strconv.Itoa(n + 100), "--stream-idle-timeout", (10*interval + time.Minute).String(),
		// Every stream is a client connection of the one generator: above the default caps.
		"--max-connections", strconv.Itoa(n + 256), "--max-connections-per-client", "-1"}, "", logDir, "/healthz")
	if err != nil {
		return nil, fmt.Errorf("starting the gateway: %w", err)
	}
	defer gw.Stop(10 * time.Second)
	ag, agURL, err := startListening(ctx, "agent streams-node", bin, []string{"agent", "--gateway", gwURL,
		"--cluster-token", token, "--node-id", "streams-node", "--backend", "openai", "--openai-url", fakeURL,
		"--slots", strconv.Itoa(n + 100), "--log-level", "warn"}, "", logDir, "/healthz")
	if err != nil {
		return nil, fmt.Errorf("starting the agent: %w", err)
	}
	defer ag.Stop(5 * time.Second)
	if err := waitServing(ctx, gwURL, []*Process{fake, gw, ag}, 60*time.Second); err != nil {
		return nil, err
	}
	gwp := streamsProc{p: gw, metricsURL: gwURL + "/metrics"}
	agp := streamsProc{p: ag, metricsURL: agURL + "/metrics", token: token}

	rep := &StreamsReport{
		Scenario: ScenarioStreams, Streams: n, TokenIntervalS: interval.Seconds(), NoFile: nofile,
		Backend: "loadtest fake OpenAI backend in a process of its own (fixed text, no model), a token every " +
			interval.String() + " on the slow streams and every " + streamsProbeInterval.String() + " on the probe's",
		AgentTransport: "h2c", CPUs: runtime.NumCPU(), ErrorKinds: map[string]int{},
	}
	rep.Probe.Tokens, rep.Probe.Rounds, rep.Probe.IntervalMs = streamsProbeTokens, rounds, ms(streamsProbeInterval)

	probeClient := NewHTTPClient(4)
	defer probeClient.CloseIdleConnections()
	// Warm the probe's path once on each side, then read the processes at rest.
	for _, u := range []string{fakeURL, gwURL} {
		if _, err := probeITL(ctx, probeClient, u, streamsProbeTokens); err != nil {
			return nil, fmt.Errorf("warm-up probe to %s: %w", u, err)
		}
	}
	runtime.GC()
	gwBase, err := gwp.read(ctx)
	if err != nil {
		return nil, err
	}
	agBase, err := agp.read(ctx)
	if err != nil {
		return nil, err
	}

	// Open the slow streams.
	load := newStreamLoad(gwURL, n)
	defer load.client.CloseIdleConnections()
	sctx, stopStreams := context.WithCancel(ctx)
	defer stopStreams()
	progressf(o.Progress, "   opening %d streams at %d/s", n, StreamsDefaultOpenRate)
	start := time.Now()
	var wg sync.WaitGroup
	tick := time.NewTicker(time.Second / StreamsDefaultOpenRate)
	for i := 0; i < n; i++ {
		wg.Go(func() { load.stream(sctx) })
		select {
		case <-tick.C:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
	}
	tick.Stop()
	// Wait for every first token (or failure), bounded.
	deadline := time.Now().Add(30*time.Second + 3*interval)
	for load.opened.Load()+load.failed.Load() < int64(n) && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(50 * time.Millisecond)
	}
	rep.OpenS = round3(time.Since(start).Seconds())
	progressf(o.Progress, "   %d open, %d failed after %.1fs; letting them run %s", load.opened.Load(), load.failed.Load(), rep.OpenS, streamsSettle)
	cpu0 := cpuOf([]int{gw.PID, ag.PID})
	tok0, t0 := load.tokens.Load(), time.Now()
	sleepCtx(ctx, streamsSettle)
	tok1, t1 := load.tokens.Load(), time.Now()
	cpu1 := cpuOf([]int{gw.PID, ag.PID})
	rep.TokensPerS = round3(float64(tok1-tok0) / t1.Sub(t0).Seconds())
	rep.Open = int(load.opened.Load() - load.ended.Load())
	gwNow, err := gwp.read(ctx)
	if err != nil {
		return nil, err
	}
	agNow, err := agp.read(ctx)
	if err != nil {
		return nil, err
	}
	rep.Gateway = streamsProcess(gwBase, gwNow, rep.Open, cpu1[gw.PID]-cpu0[gw.PID], t1.Sub(t0))
	rep.Agent = streamsProcess(agBase, agNow, rep.Open, cpu1[ag.PID]-cpu0[ag.PID], t1.Sub(t0))
	if rep.Open > 0 {
		rep.KiBPerStream = round3((gwNow.rss + agNow.rss - gwBase.rss - agBase.rss) / 1024 / float64(rep.Open))
		rep.HeapKiBPerStream = round3((gwNow.heap + agNow.heap - gwBase.heap - agBase.heap) / 1024 / float64(rep.Open))
		rep.GoroutinesPerStream = round3(float64(gwNow.goroutines+agNow.goroutines-gwBase.goroutines-agBase.goroutines) / float64(rep.Open))
	}

	// The probe, alternating sides, while the slow streams keep flowing.
	var direct, herd []time.Duration
	for r := range rounds {
		sides := []string{fakeURL, gwURL}
		if r%2 == 1 {
			slices.Reverse(sides)
		}
		for _, u := range sides {
			gaps, err := probeITL(ctx, probeClient, u, streamsProbeTokens)
			if err != nil {
				rep.Probe.Errors++
				rep.ErrorKinds["probe: "+errorKind(err)]++
				continue
			}
			if u == fakeURL {
				direct = append(direct, gaps...)
			} else {
				herd = append(herd, gaps...)
			}
		}
	}
	progressf(o.Progress, "   probe done (%d rounds a side); closing the streams", rounds)
	stopStreams()
	wg.Wait()
	rep.Failed = int(load.failed.Load())
	load.mu.Lock()
	for k, v := range load.errs {
		rep.ErrorKinds[k] += v
	}
	load.mu.Unlock()
	slices.Sort(direct)
	slices.Sort(herd)
	p := &rep.Probe
	p.DirectP50Ms, p.DirectP99Ms = ms(Percentile(direct, 50)), ms(Percentile(direct, 99))
	p.HerdP50Ms, p.HerdP99Ms = ms(Percentile(herd, 50)), ms(Percentile(herd, 99))
	p.AddedP50Ms, p.AddedP99Ms = round3(p.HerdP50Ms-p.DirectP50Ms), round3(p.HerdP99Ms-p.DirectP99Ms)
	for _, pr := range []*Process{fake, gw, ag} {
		if ok, _ := pr.Exited(); ok {
			return rep, pr.failure("exited during the streams scenario")
		}
	}
	if rep.Open == 0 {
		return rep, fmt.Errorf("streams: no stream was open when measured (%d failed: %v)", rep.Failed, rep.ErrorKinds)
	}
	return rep, nil
}

// errorKind is a short, stable label of err for counting.
func errorKind(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.As(err, &ne):
		return "net"
	}
	s := err.Error()
	if i := strings.IndexByte(s, ':'); i > 0 {
		s = s[:i]
	}
	return s
}

// procReading is what one read of a process gives.
type procReading struct {
	rss, heap  float64 // bytes
	goroutines int
	files      int
}

// read samples the process's RSS and open files from /proc and its heap and goroutines from
// its /metrics.
func (s streamsProc) read(ctx context.Context) (procReading, error) {
	var r procReading
	rss, err := ProcRSS(s.p.PID)
	if err != nil {
		return r, err
	}
	r.rss = float64(rss)
	if fds, err := os.ReadDir("/proc/" + strconv.Itoa(s.p.PID) + "/fd"); err == nil {
		r.files = len(fds)
	}
	mctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(mctx, http.MethodGet, s.metricsURL, nil)
	if err != nil {
		return r, err
	}
	if s.token != "" {
		req.Header.Set("Authorization", "Bearer "+s.token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return r, fmt.Errorf("reading %s: %w", s.metricsURL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return r, fmt.Errorf("reading %s: status %d: %w", s.metricsURL, resp.StatusCode, err)
	}
	heap, ok1 := promValue(body, "go_memstats_heap_inuse_bytes")
	g, ok2 := promValue(body, "go_goroutines")
	if !ok1 || !ok2 {
		return r, fmt.Errorf("%s lacks go_memstats_heap_inuse_bytes or go_goroutines", s.metricsURL)
	}
	r.heap, r.goroutines = heap, int(g)
	return r, nil
}

// promValue finds an unlabelled sample of name in a Prometheus text exposition.
func promValue(body []byte, name string) (float64, bool) {
	for line := range bytes.Lines(body) {
		rest, ok := bytes.CutPrefix(line, []byte(name+" "))
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(string(rest)), 64)
		return v, err == nil
	}
	return 0, false
}

func streamsProcess(base, now procReading, open int, cpu, over time.Duration) StreamsProcess {
	p := StreamsProcess{
		RSSBaseMiB: round3(base.rss / (1 << 20)), RSSMiB: round3(now.rss / (1 << 20)),
		HeapBaseMiB: round3(base.heap / (1 << 20)), HeapMiB: round3(now.heap / (1 << 20)),
		GoroutinesBase: base.goroutines, Goroutines: now.goroutines, OpenFiles: now.files,
	}
	if over > 0 {
		p.CPUPct = round3(100 * cpu.Seconds() / over.Seconds())
	}
	if open > 0 {
		p.RSSKiBPerStream = round3((now.rss - base.rss) / 1024 / float64(open))
		p.HeapKiBPerStream = round3((now.heap - base.heap) / 1024 / float64(open))
		p.GoroutinesPerStream = round3(float64(now.goroutines-base.goroutines) / float64(open))
	}
	return p
}

// streamLoad holds the slow streams: one HTTP/1.1 connection each, as a client SDK would.
type streamLoad struct {
	client                        *http.Client
	url                           string
	body                          []byte
	opened, failed, ended, tokens atomic.Int64
	mu                            sync.Mutex
	errs                          map[string]int
}

func newStreamLoad(gwURL string, n int) *streamLoad {
	c := NewHTTPClient(n)
	tr := c.Transport.(*http.Transport)
	// Small buffers: ten thousand connections each hold both.
	tr.ReadBufferSize, tr.WriteBufferSize = 4<<10, 4<<10
	body := fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":"tell a long story"}],"max_tokens":1000000,"stream":true}`, DefaultFakeModel)
	return &streamLoad{client: c, url: gwURL + "/v1/chat/completions", body: []byte(body), errs: map[string]int{}}
}

func (l *streamLoad) fail(kind string) {
	l.failed.Add(1)
	l.mu.Lock()
	l.errs[kind]++
	l.mu.Unlock()
}

// stream sends one slow streaming request and reads it until ctx ends it.
func (l *streamLoad) stream(ctx context.Context) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, l.url, bytes.NewReader(l.body))
	if err != nil {
		l.fail("request")
		return
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := l.client.Do(req)
	if err != nil {
		if ctx.Err() == nil {
			l.fail(errorKind(err))
		}
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		l.fail("status " + strconv.Itoa(resp.StatusCode))
		return
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 1024), 64<<10)
	first := true
	for sc.Scan() {
		if !bytes.HasPrefix(sc.Bytes(), []byte("data: {")) || !bytes.Contains(sc.Bytes(), []byte(`"content":"tok `)) {
			continue
		}
		l.tokens.Add(1)
		if first {
			first = false
			l.opened.Add(1)
		}
	}
	if ctx.Err() != nil {
		return // closed by the scenario
	}
	if first {
		l.fail("ended before the first token")
		return
	}
	l.ended.Add(1)
	l.mu.Lock()
	l.errs["ended early"]++
	l.mu.Unlock()
}

// probeITL streams tokens chunks of the probe model from base and returns the gaps between
// consecutive content chunks as the client reads them.
func probeITL(ctx context.Context, c *http.Client, base string, tokens int) ([]time.Duration, error) {
	body := fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":"probe"}],"max_tokens":%d,"stream":true}`, streamsProbeModel, tokens)
	pctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(pctx, http.MethodPost, base+"/v1/chat/completions", strings.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status %d", resp.StatusCode)
	}
	gaps := make([]time.Duration, 0, tokens)
	var last time.Time
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if !bytes.Contains(sc.Bytes(), []byte(`"content":"tok `)) {
			continue
		}
		now := time.Now()
		if !last.IsZero() {
			gaps = append(gaps, now.Sub(last))
		}
		last = now
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(gaps) != tokens-1 {
		return nil, fmt.Errorf("probe got %d tokens, want %d", len(gaps)+1, tokens)
	}
	return gaps, nil
}

// WriteText implements ScenarioReport.
func (r *StreamsReport) WriteText(w io.Writer) error {
	fmt.Fprintf(w, "streams scenario — %d slow SSE streams (a token every %gs) through one gateway and one agent (gateway↔agent %s); %s\n",
		r.Streams, r.TokenIntervalS, r.AgentTransport, r.Backend)
	fmt.Fprintf(w, "%d CPUs shared by everything; open-files limit %d; %d open when measured, %d failed; opened in %.1fs; %.0f tokens/s received\n\n",
		r.CPUs, r.NoFile, r.Open, r.Failed, r.OpenS, r.TokensPerS)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "process\tRSS MiB base→open\theap MiB base→open\tgoroutines base→open\topen files\tRSS KiB/stream\theap KiB/stream\tgoroutines/stream\tCPU %")
	for _, p := range []struct {
		name string
		p    StreamsProcess
	}{{"gateway", r.Gateway}, {"agent", r.Agent}} {
		fmt.Fprintf(tw, "%s\t%.1f→%.1f\t%.1f→%.1f\t%d→%d\t%d\t%.1f\t%.1f\t%.2f\t%.0f\n", p.name,
			p.p.RSSBaseMiB, p.p.RSSMiB, p.p.HeapBaseMiB, p.p.HeapMiB, p.p.GoroutinesBase, p.p.Goroutines,
			p.p.OpenFiles, p.p.RSSKiBPerStream, p.p.HeapKiBPerStream, p.p.GoroutinesPerStream, p.p.CPUPct)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "gateway + agent per stream: %.1f KiB RSS, %.1f KiB heap, %.2f goroutines\n", r.KiBPerStream, r.HeapKiBPerStream, r.GoroutinesPerStream)
	p := r.Probe
	fmt.Fprintf(w, "probe (%d tokens, one every %s, %d rounds a side): ITL p50 %.3f ms direct, %.3f ms through herd (+%.3f); p99 %.3f direct, %.3f through herd (%+.3f); %d probe errors\n",
		p.Tokens, streamsProbeInterval, p.Rounds, p.DirectP50Ms, p.HerdP50Ms, p.AddedP50Ms, p.DirectP99Ms, p.HerdP99Ms, p.AddedP99Ms, p.Errors)
	if len(r.ErrorKinds) > 0 {
		fmt.Fprintf(w, "errors: %v\n", r.ErrorKinds)
	}
	return nil
}

// WriteJSON implements ScenarioReport.
func (r *StreamsReport) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteSVG implements ScenarioReport: a bar per process of the memory a stream costs.
func (r *StreamsReport) WriteSVG(w io.Writer) error {
	var b strings.Builder
	b.WriteString(`<svg xmlns="http://www.w3.org/2000/svg" width="480" height="160" font-family="sans-serif" font-size="12">`)
	fmt.Fprintf(&b, `<text x="10" y="20">KiB of RSS per stream, %d streams</text>`, r.Open)
	top := max(r.Gateway.RSSKiBPerStream, r.Agent.RSSKiBPerStream, 1)
	for i, p := range []struct {
		name string
		v    float64
	}{{"gateway", r.Gateway.RSSKiBPerStream}, {"agent", r.Agent.RSSKiBPerStream}} {
		y := 40 + i*50
		wd := max(300*p.v/top, 0)
		fmt.Fprintf(&b, `<text x="10" y="%d">%s</text><rect x="80" y="%d" width="%.1f" height="24" fill="#4a7"/><text x="%.1f" y="%d">%.1f</text>`,
			y+16, p.name, y, wd, 86+wd, y+16, p.v)
	}
	b.WriteString(`</svg>`)
	_, err := io.WriteString(w, b.String())
	return err
}
