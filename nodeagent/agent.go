// Package nodeagent is the herd agent: the process that runs on each GPU host in front of the
// local model server. It serves the inference routes to the gateway (passing the backend's bytes
// through unchanged and unbuffered), manages models (pull, load, unload, delete, export and
// air-gapped copy from a peer agent), samples GPU telemetry and the backend's model list off the
// request path, and pushes a heartbeat with all of it to a gateway.
//
// Decisions:
//   - One cluster token authenticates everything, compared in constant time; there are no
//     per-route scopes because only gateways and peer agents talk to an agent.
//   - The agent counts in-flight requests itself (per model, from a cheap scan of the body's
//     "model") and reports queued = in-flight − slots, unless the backend keeps its own queue
//     (LoadReporter).
//   - Tokens per second are learned from responses as they pass: usage.completion_tokens from the
//     end of the body (streams without include_usage: the number of chunks that carried text)
//     over the decode time (first to last byte of a stream; the whole request otherwise, which
//     includes prefill), smoothed with an EWMA per model. A backend's own figure wins when it
//     has one.
//   - A backend that cannot list its models leaves the heartbeat with no models and a
//     BackendError, so the gateway stops sending it work rather than trusting a stale list.
//   - Failures to reach a gateway are logged when they start and when they stop, not each beat.
//   - Gateways (Config.GatewayURLs, or one load-balanced URL) are tried in order, starting with
//     the one that last accepted a heartbeat; the first to accept it is enough when it answers
//     that its registry is shared (Redis: every gateway reads it). A gateway whose registry is
//     its own (embedded, or Redis unreachable) answers "local", and the agent then sends the
//     heartbeat to every other gateway in its list as well.
//   - Heartbeats go out whole (JSON) only when their static part changed (agentapi.StaticHash:
//     identity, backend facts, GPU names and sizes, the model list) or the gateway does not hold
//     it yet; otherwise as a telemetry-only agentapi.HeartbeatDelta (agentapi.HeartbeatLink, one
//     per gateway). A gateway that holds no base answers 412 and gets the full heartbeat at once;
//     one that does not announce deltas (older) gets full heartbeats only.
//   - Each start of the agent has its own instance ID, sent in every heartbeat and logged only
//     as agentapi.InstanceFingerprint. A gateway refuses (409 node_id_conflict) an instance
//     claiming a node ID another live instance holds (at any address, so a restarted agent too
//     waits until its previous start has been silent for the stale window); the agent then logs
//     an error naming the holder and keeps trying every interval, so it takes the ID over once
//     the holder stops. It does not exit: a supervisor
//     would only restart it into the same refusal.
package nodeagent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/herd-llm/herd/clock"
	"github.com/herd-llm/herd/nodeagent/agentapi"
)

// ewmaAlpha weighs a new tokens/s sample against the history: recent enough to follow a node
// getting busier, smooth enough that one odd request does not swing the scheduler.
const ewmaAlpha = 0.3

// sampleTimeout bounds one telemetry or model-list sample so a hung backend cannot stall the
// sampler forever.
const sampleTimeout = 5 * time.Second

// shutdownGrace is how long Run lets in-flight requests finish after its context ends.
const shutdownGrace = 15 * time.Second

// Option configures an Agent.
type Option func(*Agent)

// WithLogger sets the agent's logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(a *Agent) { a.log = l } }

// WithClock sets the clock used for timings (default the system clock); tests pass a fake one
// to make measured speeds exact.
func WithClock(c clock.Clock) Option { return func(a *Agent) { a.clock = c } }

// Agent is one node's agent. Create it with New, serve it with Run (or mount Handler yourself).
type Agent struct {
	cfg       Config
	backend   Backend
	ts        TelemetrySource
	log       *slog.Logger
	clock     clock.Clock
	hc        *http.Client
	tracer    trace.Tracer // nil: tracing off (tracing.go)
	slots     int
	hostname  string
	startedAt time.Time
	// instance identifies this start of the agent (Heartbeat.InstanceID).
	instance string
	handler  http.Handler

	mu         sync.Mutex
	advertise  string
	gpus       []agentapi.GPU
	telErr     string
	models     []agentapi.Model
	backendErr string
	draining   bool
	inFlight   int
	stats      map[string]*modelStats
}

// modelStats is what the agent itself measured for one model name as requests named it.
type modelStats struct {
	inFlight   int
	tps        float64
	prefillTPS float64
	// conc is the mean number of requests in flight on the model while the measured ones ran
	// (EWMA of the mean of the counts at each one's start and end, itself included).
	conc     float64
	lastUsed time.Time
	// prompt and cached count prompt tokens served and the part the backend's cache held.
	prompt, cached int64
}

// New returns an agent for backend, reading GPUs from ts (nil: no GPUs). Zero fields of cfg take
// DefaultConfig's values; the result must pass Validate.
func New(cfg Config, b Backend, ts TelemetrySource, opts ...Option) (*Agent, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if b == nil {
		return nil, errors.New("agent: backend is nil")
	}
	a := &Agent{
		cfg:     cfg,
		backend: b,
		ts:      ts,
		log:     slog.Default(),
		clock:   clock.System{},
		stats:   map[string]*modelStats{},
		gpus:    []agentapi.GPU{},
		models:  []agentapi.Model{},
	}
	for _, o := range opts {
		o(a)
	}
	switch {
	case cfg.Certs != nil:
		a.hc = agentapi.HTTPClient(cfg.Certs.ClientTLS())
	case cfg.GatewayTLS != nil:
		a.hc = agentapi.HTTPClient(cfg.GatewayTLS)
	default:
		a.hc = agentapi.DefaultHTTPClient()
	}
	a.log = a.log.With("component", "agent", "node", cfg.NodeID)
	a.hostname, _ = os.Hostname()
	a.startedAt = a.clock.Now()
	a.instance = newInstanceID()
	a.slots = cfg.Slots
	if a.slots == 0 {
		if sc, ok := b.(SlotCounter); ok {
			a.slots = sc.Slots()
		}
	}
	if a.slots <= 0 {
		a.slots = DefaultSlots
	}
	a.advertise = strings.TrimRight(cfg.Advertise, "/")
	if a.advertise == "" {
		a.advertise = a.schemed(deriveAdvertise(cfg.Listen))
	}
	a.handler = a.routes()
	return a, nil
}

// Handler returns the agent's HTTP API (all routes behind the cluster token).
func (a *Agent) Handler() http.Handler { return a.handler }

// Advertise returns the URL the agent tells gateways to reach it at.
func (a *Agent) Advertise() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.advertise
}

// Slots returns how many requests the node serves at once.
func (a *Agent) Slots() int { return a.slots }

// Run serves the agent's API on ln (nil: listen on Config.Listen), samples telemetry and the
// model list, and sends heartbeats, until ctx is done; then it stops accepting requests, lets
// in-flight ones finish (up to a grace period) and returns nil. It returns an error if the
// listener or server fails.
func (a *Agent) Run(ctx context.Context, ln net.Listener) error {
	if ln == nil {
		var err error
		ln, err = net.Listen("tcp", a.cfg.Listen)
		if err != nil {
			return fmt.Errorf("agent: listen: %w", err)
		}
	}
	a.mu.Lock()
	if a.advertise == "" {
		a.advertise = a.schemed(deriveAdvertise(ln.Addr().String()))
	}
	advertise := a.advertise
	a.mu.Unlock()

	srv := &http.Server{
		Handler:           a.handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelWarn),
	}
	serveErr := make(chan error, 1)
	if a.cfg.Certs != nil {
		// HTTPS with HTTP/2: a gateway's thousands of streams share a few connections.
		var p http.Protocols
		p.SetHTTP1(true)
		p.SetHTTP2(true)
		srv.Protocols = &p
		srv.TLSConfig = a.cfg.Certs.ServerTLS()
		srv.HTTP2 = &http.HTTP2Config{MaxConcurrentStreams: maxStreamsPerConn}
		go func() { serveErr <- srv.ServeTLS(ln, "", "") }()
	} else {
		// Plain HTTP/1.1, and HTTP/2 without TLS (h2c) for a client that speaks it (a gateway
		// with --agent-h2c, or one this agent told so with --h2c).
		var p http.Protocols
		p.SetHTTP1(true)
		p.SetUnencryptedHTTP2(true)
		srv.Protocols = &p
		srv.HTTP2 = &http.HTTP2Config{MaxConcurrentStreams: maxStreamsPerConn}
		go func() { serveErr <- srv.Serve(ln) }()
	}
	a.log.Info("agent serving", "addr", ln.Addr().String(), "advertise", advertise,
		"backend", a.backend.Kind(), "simulated", a.backend.Simulated(), "slots", a.slots, "gateways", a.cfg.GatewayURLs)
	if len(a.cfg.GatewayURLs) == 0 {
		a.log.Warn("no gateway configured: not sending heartbeats")
	}

	loops, stopLoops := context.WithCancel(ctx)
	defer stopLoops()
	var wg sync.WaitGroup
	wg.Go(func() {
		// The first heartbeat should carry real data, so sample once before the loops start.
		a.Refresh(loops)
		var inner sync.WaitGroup
		inner.Go(func() { a.sampleLoop(loops, a.sampleGPUs) })
		inner.Go(func() { a.sampleLoop(loops, a.sampleModels) })
		if len(a.cfg.GatewayURLs) > 0 {
			inner.Go(func() { a.heartbeatLoop(loops) })
			if a.cfg.Certs != nil {
				inner.Go(func() {
					a.cfg.Certs.renewLoop(loops, a.hc, a.cfg.GatewayURLs, advertise, a.clock.Now, a.log)
				})
			}
		}
		inner.Wait()
	})

	var err error
	select {
	case <-ctx.Done():
	case err = <-serveErr:
		err = fmt.Errorf("agent: serve: %w", err)
	}
	stopLoops()
	wg.Wait()
	if err != nil {
		return err
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if serr := srv.Shutdown(sctx); serr != nil {
		a.log.Warn("graceful shutdown timed out; closing connections", "err", serr)
		_ = srv.Close()
	}
	if serr := <-serveErr; serr != nil && !errors.Is(serr, http.ErrServerClosed) {
		return fmt.Errorf("agent: serve: %w", serr)
	}
	a.log.Info("agent stopped")
	return nil
}

// Refresh samples GPUs and the backend's model list now. Run does this on its own schedule;
// model-management routes call it after they change what is resident.
func (a *Agent) Refresh(ctx context.Context) {
	a.sampleGPUs(ctx)
	a.sampleModels(ctx)
}

func (a *Agent) sampleLoop(ctx context.Context, sample func(context.Context)) {
	t := time.NewTicker(a.cfg.TelemetryInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			sample(ctx)
		}
	}
}

func (a *Agent) sampleGPUs(ctx context.Context) {
	var gpus []agentapi.GPU
	var telErr string
	if a.ts == nil {
		telErr = "no telemetry source configured"
	} else {
		sctx, cancel := context.WithTimeout(ctx, sampleTimeout)
		var err error
		gpus, err = a.ts.GPUs(sctx)
		cancel()
		switch {
		case err != nil:
			if ctx.Err() != nil {
				return // shutting down: keep the last good sample
			}
			gpus, telErr = nil, err.Error()
		case len(gpus) == 0:
			if r, ok := a.ts.(TelemetryReasoner); ok {
				telErr = r.Reason()
			}
		}
	}
	if gpus == nil {
		gpus = []agentapi.GPU{}
	}
	a.mu.Lock()
	prev := a.telErr
	a.gpus, a.telErr = gpus, telErr
	a.mu.Unlock()
	if telErr != prev {
		if telErr != "" {
			a.log.Warn("GPU telemetry", "problem", telErr)
		} else {
			a.log.Info("GPU telemetry ok", "gpus", len(gpus))
		}
	}
}

func (a *Agent) sampleModels(ctx context.Context) {
	sctx, cancel := context.WithTimeout(ctx, sampleTimeout)
	models, err := a.backend.Models(sctx)
	cancel()
	backendErr := ""
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		models, backendErr = nil, err.Error()
	}
	if models == nil {
		models = []agentapi.Model{}
	}
	a.mu.Lock()
	prev := a.backendErr
	a.models, a.backendErr = models, backendErr
	a.mu.Unlock()
	if backendErr != prev {
		if backendErr != "" {
			a.log.Warn("backend cannot list models", "err", backendErr)
		} else {
			a.log.Info("backend answers again", "models", len(models))
		}
	}
}

// Heartbeat returns the node's current state: the latest samples plus live request counts.
func (a *Agent) Heartbeat(ctx context.Context) agentapi.Heartbeat {
	now := a.clock.Now()
	lr, ownLoad := a.backend.(LoadReporter)
	var bInFlight, bQueued int
	if ownLoad {
		// Asked outside a.mu: the backend has its own locks.
		bInFlight, bQueued = lr.InFlight()
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	hb := agentapi.Heartbeat{
		NodeID:          a.cfg.NodeID,
		InstanceID:      a.instance,
		Address:         a.advertise,
		Backend:         a.backend.Kind(),
		Engine:          backendEngine(a.backend),
		MaxLoadedModels: backendMaxLoaded(a.backend),
		Simulated:       a.backend.Simulated(),
		Version:         a.cfg.Version,
		Hostname:        a.hostname,
		GPUs:            append([]agentapi.GPU(nil), a.gpus...),
		TelemetryError:  a.telErr,
		Models:          make([]agentapi.Model, 0, len(a.models)),
		BackendError:    a.backendErr,
		Draining:        a.draining,
		Slots:           a.slots,
		IntervalMS:      a.cfg.HeartbeatInterval.Milliseconds(),
		SentAt:          now,
		StartedAt:       a.startedAt,
		H2C:             a.cfg.H2C && a.cfg.Certs == nil,
	}
	if hb.GPUs == nil {
		hb.GPUs = []agentapi.GPU{}
	}
	for _, m := range a.models {
		if st := a.statsFor(m.Name); st != nil {
			if m.TokensPerSecond == 0 {
				m.TokensPerSecond = st.tps
			}
			if m.PrefillTokensPerSecond == 0 {
				m.PrefillTokensPerSecond = st.prefillTPS
			}
			if m.Concurrency == 0 && m.TokensPerSecond == st.tps {
				m.Concurrency = st.conc
			}
			if m.InFlight == 0 {
				m.InFlight = st.inFlight
			}
			m.PromptTokens, m.CachedPromptTokens = st.prompt, st.cached
			if st.lastUsed.After(m.LastUsed) {
				m.LastUsed = st.lastUsed
			}
		}
		hb.Models = append(hb.Models, m)
	}
	if ownLoad {
		hb.InFlight, hb.Queued = bInFlight, bQueued
	} else {
		hb.InFlight = a.inFlight
		hb.Queued = max(0, a.inFlight-a.slots)
	}
	return hb
}

// statsFor finds the agent's measurements for a backend model name. Requests are counted under
// the backend's name the gateway sends (agentapi.HeaderModel), so no spelling needs mending
// here. The caller holds a.mu.
func (a *Agent) statsFor(name string) *modelStats { return a.stats[name] }

// begin counts a request in and returns how many are in flight on its model, itself included.
func (a *Agent) begin(model string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.inFlight++
	st := a.stats[model]
	if st == nil {
		st = &modelStats{}
		a.stats[model] = st
	}
	st.inFlight++
	return st.inFlight
}

// end closes a request begun at start, when startConc were in flight on its model, and learns
// from what the meter saw.
func (a *Agent) end(model string, start time.Time, startConc int, m *meterWriter) {
	now := a.clock.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	a.inFlight--
	st := a.stats[model]
	conc := float64(startConc+st.inFlight) / 2
	st.inFlight--
	st.lastUsed = now
	if learn(st, start, m) {
		st.conc = ewma(st.conc, conc)
	}
	if st.inFlight == 0 && st.tps == 0 && st.prefillTPS == 0 && !a.knownModel(model) {
		// Names that are not the backend's and never produced output (typos, unknown models)
		// are not kept: the map stays bounded by the models this node really has or served.
		delete(a.stats, model)
	}
}

// knownModel reports whether the backend's last model list has name. The caller holds a.mu.
func (a *Agent) knownModel(name string) bool {
	for _, m := range a.models {
		if m.Name == name {
			return true
		}
	}
	return false
}

// learn folds one response's speed into st and reports whether it measured a decode speed. It
// also counts the response's prompt tokens and the part of them the backend's cache held.
//
// Prefill speed is learned as the speed of a cold prompt, which is what the gateway's wait
// model and its prefix scorer divide by: where the backend reports cached tokens, only the
// uncached part counts; where it does not (Ollama), a prompt read much faster than the cold
// speed learned so far was mostly a cache hit and is not learned from (the cold speed moves
// down fast and up only on samples near it), and the hit is estimated as the part of the prompt
// the cold speed could not have evaluated in the time it took.
func learn(st *modelStats, start time.Time, m *meterWriter) bool {
	if m.status/100 != 2 || m.bytes == 0 {
		return false
	}
	tokens, ok := m.tokens()
	if !ok || tokens <= 0 {
		return false
	}
	var tps float64
	p, pok := m.promptTokens()
	if pok && p > 0 {
		cached, cok := m.cachedTokens()
		d, dok := m.promptEvalSeconds()
		if !dok && m.stream {
			// Time to the first token: prefill, plus any wait for a slot.
			d, dok = m.firstToken().Sub(start).Seconds(), true
		}
		if dok && d > 0 {
			switch {
			case cok:
				if u := p - min(cached, p); u > 0 {
					st.prefillTPS = ewma(st.prefillTPS, float64(u)/d)
				}
			default:
				cached = estimateCached(st, p, d)
			}
		}
		st.prompt += p
		st.cached += min(max(cached, 0), p)
	}
	if m.stream {
		// Decode speed: the span from the first token to the last byte covers the tokens after
		// the first; the time to the first token is prefill (plus any wait for a slot).
		if d := m.lastByte.Sub(m.firstToken()).Seconds(); tokens >= 2 && d > 0 {
			tps = float64(tokens-1) / d
		}
	} else if d := m.lastByte.Sub(start).Seconds(); d > 0 {
		tps = float64(tokens) / d
	}
	if tps > 0 {
		st.tps = ewma(st.tps, tps)
		return true
	}
	return false
}

// hitSpeedup is how much faster than the cold prefill speed a prompt must be read to count as a
// cache hit rather than a measurement of the cold speed.
const hitSpeedup = 1.5

// estimateCached is, for a backend that does not report cached tokens, the part of a p-token
// prompt that its cache must have held for the prompt to take d seconds at st's cold prefill
// speed; it also learns the cold speed from samples that are not hits.
func estimateCached(st *modelStats, p int64, d float64) int64 {
	rate := float64(p) / d
	switch {
	case st.prefillTPS == 0 || rate <= st.prefillTPS:
		st.prefillTPS = ewma(st.prefillTPS, rate)
		return 0
	case rate <= hitSpeedup*st.prefillTPS:
		st.prefillTPS = ewma(st.prefillTPS, rate)
		return 0
	}
	uncached := int64(d * st.prefillTPS)
	return max(p-uncached, 0)
}

func ewma(prev, sample float64) float64 {
	if prev == 0 {
		return sample
	}
	return prev + ewmaAlpha*(sample-prev)
}

// maxStreamsPerConn is how many requests one gateway connection may carry at once over HTTP/2
// (Go's default is 250): far above a node's slots, so one connection holds a gateway's queue.
const maxStreamsPerConn = 4096

// schemed turns a derived http:// advertise URL into https:// when the agent serves TLS.
func (a *Agent) schemed(u string) string {
	if a.cfg.Certs != nil {
		if rest, ok := strings.CutPrefix(u, "http://"); ok {
			return "https://" + rest
		}
	}
	return u
}

// newInstanceID returns 16 random bytes in hex; the fallback keeps an agent without entropy
// distinct from its previous start.
func newInstanceID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return fmt.Sprintf("t%x-p%d", time.Now().UnixNano(), os.Getpid())
	}
	return hex.EncodeToString(b[:])
}

// InstanceID returns the ID of this start of the agent, sent in every heartbeat.
func (a *Agent) InstanceID() string { return a.instance }

// gatewayLink is the agent's log state for one gateway: failures and refusals are logged when
// they start and when they end.
type gatewayLink struct {
	url                 string
	failing, everOK     bool
	refused             bool
	revoked             bool
	failures            int
	lastRefusalLoggedAt time.Time
	// beats sends the heartbeats, as deltas once the gateway holds the full one.
	beats agentapi.HeartbeatLink
}

// heartbeatLoop sends a heartbeat every interval until ctx is done: to the gateway that accepted
// the last one, else to the next in the list that does, and to every gateway when the accepting
// one's registry is not shared (see the package doc).
func (a *Agent) heartbeatLoop(ctx context.Context) {
	links := make([]*gatewayLink, len(a.cfg.GatewayURLs))
	for i, g := range a.cfg.GatewayURLs {
		links[i] = &gatewayLink{url: g, beats: agentapi.HeartbeatLink{URL: g, HC: a.hc}}
	}
	primary := 0
	beat := func() {
		hb := a.Heartbeat(ctx)
		hb.StaticHash = agentapi.StaticHash(&hb) // once for every gateway it goes to
		for i := range links {
			j := (primary + i) % len(links)
			reply, err := a.sendHeartbeat(ctx, links[j], hb)
			if err != nil {
				if isConflict(err) {
					return // the ID is refused; another gateway of a shared registry refuses it too
				}
				continue
			}
			if j != primary && len(links) > 1 {
				a.log.Info("heartbeats now go to another gateway", "gateway", links[j].url, "previous", links[primary].url)
				primary = j
			}
			a.mu.Lock()
			changed := a.draining != reply.Draining
			a.draining = reply.Draining
			a.mu.Unlock()
			if changed {
				a.log.Info("gateway drain state", "gateway", links[j].url, "draining", reply.Draining)
			}
			if reply.Registry == agentapi.RegistryShared {
				return
			}
			// Only that gateway saw it: tell the others too.
			var wg sync.WaitGroup
			for k, l := range links {
				if k != j {
					wg.Go(func() { _, _ = a.sendHeartbeat(ctx, l, hb) })
				}
			}
			wg.Wait()
			return
		}
	}
	beat()
	t := time.NewTicker(a.cfg.HeartbeatInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			beat()
		}
	}
}

func isConflict(err error) bool {
	var ae *agentapi.APIError
	return errors.As(err, &ae) && ae.Status == http.StatusConflict && ae.Code == agentapi.CodeNodeIDConflict
}

// sendHeartbeat sends hb to one gateway and logs the link's changes of state.
func (a *Agent) sendHeartbeat(ctx context.Context, l *gatewayLink, hb agentapi.Heartbeat) (agentapi.HeartbeatReply, error) {
	log := a.log.With("gateway", l.url)
	timeout := min(max(2*a.cfg.HeartbeatInterval, time.Second), 10*time.Second)
	sctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	token := a.cfg.ClusterToken
	if a.cfg.Certs != nil {
		token = "" // the client certificate says who this node is
	}
	reply, err := l.beats.Send(sctx, token, hb)
	if err != nil {
		if ctx.Err() != nil {
			return reply, err
		}
		if isConflict(err) {
			now := a.clock.Now()
			if !l.refused || now.Sub(l.lastRefusalLoggedAt) >= time.Minute {
				log.Error("gateway refused this agent: its node id is held by another live agent; "+
					"this node gets no work until that agent stops (retrying every interval) or this one gets another --node-id",
					"instance_fp", agentapi.InstanceFingerprint(a.instance), "err", err)
				l.lastRefusalLoggedAt = now
			}
			l.refused = true
			return reply, err
		}
		var ae *agentapi.APIError
		if errors.As(err, &ae) && ae.Code == agentapi.CodeNodeRevoked {
			if !l.revoked {
				log.Error("this node's certificates were revoked: gateways refuse it; remove the --data folder and join again with a new join token", "err", err)
			}
			l.revoked = true
			return reply, err
		}
		l.failures++
		if !l.failing {
			l.failing = true
			log.Warn("heartbeat failed; retrying every interval", "err", err)
		}
		return reply, err
	}
	switch {
	case l.refused:
		log.Info("node id acquired: heartbeat accepted", "instance_fp", agentapi.InstanceFingerprint(a.instance))
	case l.failing:
		log.Info("heartbeat accepted again", "failed_beats", l.failures)
	case !l.everOK:
		log.Info("heartbeat accepted", "registry", reply.Registry)
	}
	l.failing, l.refused, l.everOK, l.failures = false, false, true, 0
	return reply, nil
}

// engineNamer is a Backend that knows the model server behind it (Heartbeat.Engine).
type engineNamer interface{ Engine() string }

// backendEngine is the engine b names, or "" when it does not say.
func backendEngine(b Backend) string {
	if e, ok := b.(engineNamer); ok {
		return e.Engine()
	}
	return ""
}

// maxLoadedNamer is a Backend that knows how many models it keeps resident at most.
type maxLoadedNamer interface{ MaxLoadedModels() int }

// backendMaxLoaded is the bound b names, or 0 when it does not say.
func backendMaxLoaded(b Backend) int {
	if m, ok := b.(maxLoadedNamer); ok {
		return max(m.MaxLoadedModels(), 0)
	}
	return 0
}
