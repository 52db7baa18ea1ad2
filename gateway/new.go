package gateway

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"github.com/herd-llm/herd/gateway/prefixcache"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/herd-llm/herd/clock"
	"github.com/herd-llm/herd/gateway/admin"
	"github.com/herd-llm/herd/gateway/agents"
	"github.com/herd-llm/herd/gateway/dashboard"
	"github.com/herd-llm/herd/gateway/presets"
	"github.com/herd-llm/herd/gateway/replicas"

	"github.com/herd-llm/herd/gateway/admission"
	"github.com/herd-llm/herd/gateway/history"

	"github.com/gin-gonic/gin"
	"go.opentelemetry.io/otel/trace"

	"github.com/herd-llm/herd/gateway/ratelimit"
	"github.com/herd-llm/herd/gateway/registry"
	"github.com/herd-llm/herd/nodeagent/agentapi"
	"github.com/herd-llm/herd/scheduler"
)

// core is the request path's part of the Server: what New builds for auth, admission and the
// proxy.
type core struct {
	clock     Clock
	transport http.RoundTripper
	adm       *admission.Admission

	// keys are the tenants (API keys); limiter counts their requests and tokens.
	keys        *keyring
	limiter     rateLimiter
	clusterKeys keySet
	// metricsKeys holds the scrape token (Config.MetricsToken), if any.
	metricsKeys keySet
	// agentAuth is the Authorization header the gateway sends agents (shared, read-only).
	agentAuth []string

	// seq numbers requests; seed makes this gateway's request IDs and tie-break seeds its own.
	seq  atomic.Uint64
	seed uint64

	started time.Time
	urls    urlCache
	// tracer makes the request path's spans; nil when tracing is off (tracing.go).
	tracer trace.Tracer
	// calls pools per-request state (*call).
	calls sync.Pool
	// bigBufs pools the relay's large copy buffers (*[relayBig]byte), taken only while an
	// answer arrives faster than a call's small buffer holds (proxy.go).
	bigBufs sync.Pool
	// prefix models what each node's engine holds in its prompt cache: matched before every
	// Pick, told where every request went.
	prefix *prefixcache.Index
	// chwbl is true under the chwbl policy, whose key the request path then computes.
	chwbl bool
	// herd is true under the herd policy, which weighs evictions by the models' demand, measured
	// by demand.
	herd   bool
	demand demandMeter
	// tpb learns each model's prompt tokens per byte of request JSON from the answers' usage.
	tpb tokensPerByte
}

// Option adjusts what New builds.
type Option func(*options)

type options struct {
	log            *slog.Logger
	clock          Clock
	transport      http.RoundTripper
	tracerProvider trace.TracerProvider
}

// WithLogger sets the logger (default slog.Default()). Requests are logged at Debug, one line
// each; failed attempts and 5xx at Warn.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.log = l } }

// Clock is the gateway's time source (herd's one clock.Clock); tests inject a fake one. It is
// the clock of the registry and of admission deadlines.
type Clock = clock.Clock

var _ admission.Source = (*registry.Registry)(nil)

// WithClock sets the clock of the registry and of admission deadlines (default: the system clock).
func WithClock(c Clock) Option { return func(o *options) { o.clock = c } }

// WithTransport sets the round tripper the gateway reaches agents with (default: a transport tuned
// for many long-lived streams to a few hosts).
func WithTransport(rt http.RoundTripper) Option { return func(o *options) { o.transport = rt } }

// withDefaults replaces c's zero fields with DefaultConfig's.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Listen == "" {
		c.Listen = d.Listen
	}
	if c.DataDir == "" {
		c.DataDir = d.DataDir
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = d.MaxBodyBytes
	}
	if c.ReadHeaderTimeout == 0 {
		c.ReadHeaderTimeout = d.ReadHeaderTimeout
	}
	if c.BodyReadTimeout == 0 {
		c.BodyReadTimeout = d.BodyReadTimeout
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = d.IdleTimeout
	}
	if c.BodyMinRate == 0 {
		c.BodyMinRate = d.BodyMinRate
	}
	if c.BodyMaxDuration == 0 {
		c.BodyMaxDuration = d.BodyMaxDuration
	}
	if c.MaxConnections == 0 {
		c.MaxConnections = d.MaxConnections
	}
	if c.MaxConnectionsPerClient == 0 {
		c.MaxConnectionsPerClient = d.MaxConnectionsPerClient
	}
	if c.Batch.MaxLineBytes == 0 {
		c.Batch.MaxLineBytes = c.MaxBodyBytes
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = d.HeartbeatInterval
	}
	if c.Scheduler.Policy == "" {
		c.Scheduler.Policy = d.Scheduler.Policy
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = d.MaxAttempts
	}
	if c.FirstByteTimeout == 0 {
		c.FirstByteTimeout = d.FirstByteTimeout
	}
	if c.StreamIdleTimeout == 0 {
		c.StreamIdleTimeout = d.StreamIdleTimeout
	}
	if c.StallTimeout == 0 {
		c.StallTimeout = d.StallTimeout
	}
	if c.QueueSize == 0 {
		c.QueueSize = d.QueueSize
	}
	if c.QueueTimeout == 0 {
		c.QueueTimeout = d.QueueTimeout
	}
	if c.HistoryInterval == 0 {
		c.HistoryInterval = d.HistoryInterval
	}
	if c.HistoryWindow == 0 {
		c.HistoryWindow = d.HistoryWindow
	}
	return c
}

// New builds a gateway from cfg: registry, scheduler, admission, the bulk engine (store, presets,
// batches) and the routes. Zero fields of cfg take DefaultConfig's values. Call Run for the
// background work and Serve to serve; Close releases the store if Run is never called.
func New(cfg Config, opts ...Option) (*Server, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("gateway: config: %w", err)
	}
	o := options{log: slog.Default(), clock: clock.System{}}
	for _, opt := range opts {
		opt(&o)
	}
	sched, err := scheduler.New(cfg.Scheduler)
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	rcfg := registry.DefaultConfig()
	rcfg.HeartbeatInterval = cfg.HeartbeatInterval
	rcfg.Learner = sched.Config().LearnerConfig()
	if cfg.RegistryOutageGrace > 0 {
		rcfg.OutageGrace = cfg.RegistryOutageGrace
	}
	reg := registry.New(rcfg, o.clock)
	reg.SetLogger(o.log.With("component", "registry"))
	timing := newSchedTiming()
	reg.SetBuildObserver(timing.observeSnapshot)

	s := &Server{cfg: cfg, log: o.log, registry: reg, sched: sched, agents: agents.NewPool(cfg.ClusterToken, reg.Nodes)}
	if cfg.RedisURL != "" {
		shared, err := registry.OpenRedis(context.Background(), cfg.RedisURL, "")
		if err != nil {
			return nil, fmt.Errorf("gateway: %w", err)
		}
		reg.Share(shared)
		s.sharedReg = shared
		// The first read fills the registry before the first request is served.
		reg.SyncShared(context.Background())
	}
	if err := s.initTLS(context.Background(), o.clock.Now); err != nil {
		s.closeShared()
		return nil, err
	}
	if tc := s.agentClientTLS(); tc != nil {
		s.agents.SetHTTPClient(agentapi.HTTPClient(tc))
	}
	s.core = core{
		clock:       o.clock,
		transport:   o.transport,
		clusterKeys: newKeySet([]string{cfg.ClusterToken}),
		agentAuth:   []string{"Bearer " + cfg.ClusterToken},
		seed:        randomSeed(),
		started:     o.clock.Now(),
		tracer:      tracerFrom(o.tracerProvider),
		prefix:      prefixcache.New(cfg.PrefixCache),
		chwbl:       sched.Config().Policy == scheduler.PolicyCHWBL,
		herd:        sched.Config().Policy == scheduler.PolicyHerd,
	}
	if s.core.transport == nil {
		if cfg.AgentH2C && s.pki == nil {
			// Every plain-HTTP agent over h2c (the gateway's own switch).
			s.core.transport = withAgentH2C(newAgentTransport())
		} else {
			s.h2cHosts = &sync.Map{}
			s.core.transport = newAgentRoundTripper(s.agentClientTLS(), s.h2cHosts)
		}
	}
	s.core.adm = admission.New(reg, timing.timed(sched.Pick), o.clock, admission.Config{
		QueueSize: cfg.QueueSize, QueueTimeout: cfg.QueueTimeout, Poll: cfg.HeartbeatInterval, Scheduler: sched.Config(),
	})
	s.metrics = newMetrics(reg, s.core.adm, o.clock.Now)
	s.metrics.reg.MustRegister(timing.collectors()...)
	s.timing = timing
	if s.conns, err = newConnLimits(cfg, o.log); err != nil {
		s.closeShared()
		return nil, fmt.Errorf("gateway: %w", err)
	}
	s.proxied = &proxied{l: s.conns, in: map[netip.Addr]int{}}
	s.metrics.reg.MustRegister(s.conns.collectors()...)
	if s.audit, err = openAuditLog(cfg.AuditLog, o.log, s.conns); err != nil {
		s.closeShared()
		return nil, fmt.Errorf("gateway: %w", err)
	}
	s.core.metricsKeys = newKeySet([]string{cfg.MetricsToken})
	s.history = history.New(cfg.HistoryInterval, cfg.HistoryWindow)
	if err := s.initBulk(context.Background()); err != nil {
		s.closeShared()
		_ = s.audit.Close()
		return nil, err
	}
	if err := s.initTenants(context.Background(), o.clock); err != nil {
		_ = s.closeBulk()
		_ = s.audit.Close()
		return nil, err
	}
	if s.core.keys.table().noKeys() && !isLoopbackListen(cfg.Listen) {
		_ = s.Close()
		return nil, fmt.Errorf("gateway: no API key configured or stored: refusing to listen on non-loopback address %q "+
			"(set tenants, api_keys or admin_keys (HERD_API_KEYS, HERD_ADMIN_KEYS), or create an admin key through /admin/v1/keys on a loopback listener first)", cfg.Listen)
	}
	s.engine = s.routes()
	return s, nil
}

// Run does the gateway's background work (the batch runner, preset refresh) until ctx is done,
// then closes the store. Serve may run before, during and after it.
func (s *Server) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	if len(s.cfg.MinReplicas) > 0 || len(s.cfg.Replicas) > 0 {
		// Joined like the rest: Run returns (and the store closes) only after the controller and
		// the loads it started have stopped.
		wg.Go(func() {
			replicas.New(s.registry, s.sched, s.agents, s.log, s.cfg.MinReplicas, s.cfg.ReplicaInterval).
				WithDemand(s.cfg.Replicas, s.waitingByModel, s.registry).Run(ctx)
		})
	}
	wg.Go(func() { s.registry.RunShared(ctx) })
	wg.Go(func() { s.recordHistory(ctx) })
	wg.Go(func() { s.core.keys.keep(ctx, s.log) })
	if s.pki != nil {
		wg.Go(func() { s.pki.Run(ctx) })
	}
	s.runBulk(ctx)
	wg.Wait()
	s.closeShared()
	_ = s.audit.Close()
	if err := s.closeBulk(); err != nil {
		return fmt.Errorf("gateway: close store: %w", err)
	}
	return nil
}

// Close releases what New opened (the store, the shared registry's connections) when Run was
// never called; after Run it does nothing.
func (s *Server) Close() error {
	s.closeShared()
	if s.audit != nil {
		_ = s.audit.Close()
	}
	return s.closeBulk()
}

func (s *Server) closeShared() {
	if s.pki != nil {
		_ = s.pki.Close()
		s.pki = nil
	}
	if s.sharedReg != nil {
		_ = s.sharedReg.Close()
		s.sharedReg = nil
	}
}

// initTenants builds the tenant table from the configuration and the stored keys, and the rate
// limiter: in Redis when the store is, else in memory.
func (s *Server) initTenants(ctx context.Context, clock Clock) error {
	keys, err := newKeyring(s.cfg, s.bulkStore)
	if err != nil {
		return fmt.Errorf("gateway: tenants: %w", err)
	}
	if err := keys.reload(ctx); err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	s.core.keys = keys
	if s.cfg.RedisURL != "" {
		rl, err := ratelimit.OpenRedis(ctx, s.cfg.RedisURL)
		if err != nil {
			return fmt.Errorf("gateway: %w", err)
		}
		s.core.limiter, s.limiterClose = rl, rl.Close
	} else {
		s.core.limiter = ratelimit.NewMemory(clock.Now)
	}
	return nil
}

// ListenAndServe listens on Config.Listen and serves, with the background work, until ctx is done.
func (s *Server) ListenAndServe(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("gateway: listen: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	runErr := make(chan error, 1)
	go func() { runErr <- s.Run(ctx) }()
	err = s.Serve(ctx, ln)
	cancel()
	return errors.Join(err, <-runErr)
}

// routes builds the gin engine.
func (s *Server) routes() *gin.Engine {
	gin.SetMode(gin.ReleaseMode)
	e := gin.New()
	e.Use(s.recovery())
	e.NoRoute(func(c *gin.Context) {
		if strings.HasPrefix(c.Request.URL.Path, "/api/") {
			markOllama(c)
			abortWithError(c, notFound("", "", "herd does not serve %s %s (Ollama routes served: /api/chat, /api/generate, /api/embed, /api/embeddings, /api/tags, /api/ps, /api/show, /api/version; manage models with herd models)", c.Request.Method, c.Request.URL.Path))
			return
		}
		abortWithError(c, notFound("", "", "Invalid URL (%s %s)", c.Request.Method, c.Request.URL.Path))
	})

	e.GET("/healthz", s.accessLog(), s.handleHealthz)
	e.GET("/readyz", s.accessLog(), s.handleReadyz)
	e.GET("/metrics", s.metricsAuth(), gin.WrapH(s.metrics.handler()))
	dashboard.Register(e, handleOllamaRoot)

	v1 := e.Group("/v1")
	// The inference routes authenticate (scope inference) and log one line per request
	// themselves, with the scheduling decision.
	v1.POST("/chat/completions", s.handleInference(agentapi.PathChatCompletions))
	v1.POST("/completions", s.handleInference(agentapi.PathCompletions))
	v1.POST("/embeddings", s.handleInference(agentapi.PathEmbeddings))
	v1.POST("/responses", s.handleInference(agentapi.PathResponses))
	models := v1.Group("", s.accessLog(), s.requireScope(scopeInference|scopeBatch))
	models.GET("/models", s.handleOpenAIListModels)
	// Model names may contain slashes ("org/model"), hence the catch-all.
	models.GET("/models/*id", s.handleOpenAIGetModel)
	stored := v1.Group("", s.accessLog(), s.requireScope(scopeInference))
	stored.GET("/responses/*id", s.handleStoredResponse)
	stored.DELETE("/responses/*id", s.handleStoredResponse)
	stored.POST("/responses/:id/cancel", s.handleStoredResponse)
	s.registerBatchRoutes(v1.Group("", s.accessLog(), s.requireScope(scopeBatch)))
	s.registerOllamaRoutes(e)

	adminGroup := e.Group("/admin/v1", s.accessLog(), s.audit.middleware(), s.requireScope(scopeAdmin))
	admin.New(s.registry, s.sched, s.agents, s.log).
		WithClock(s.core.clock.Now, s.cfg.HeartbeatInterval).
		WithQueue(queueView{s.core.adm}, s.history).
		WithRequests(explainRequests{s}).
		Register(adminGroup)
	presets.NewHandlers(s.presets, s.core.clock.Now).Register(adminGroup)
	s.registerKeyRoutes(adminGroup)

	internal := e.Group("/internal/v1", s.nodeAuth())
	s.registerInternalRoutes(internal)
	s.registerPKIRoutes(e, internal, adminGroup)
	return e
}

// recovery turns a panic in a handler into a 500 in the OpenAI shape (when nothing was written
// yet) and a Warn log line with the stack. http.ErrAbortHandler passes through: it is how a
// handler aborts a response it can no longer complete.
func (s *Server) recovery() gin.HandlerFunc {
	return func(c *gin.Context) {
		defer func() {
			r := recover()
			if r == nil {
				return
			}
			if r == http.ErrAbortHandler {
				panic(r)
			}
			s.log.Warn("panic in handler", "method", c.Request.Method, "path", c.Request.URL.Path, "panic", r, "stack", string(debug.Stack()))
			if c.Writer.Written() {
				panic(http.ErrAbortHandler)
			}
			abortWithError(c, &APIError{Status: http.StatusInternalServerError, Type: errServer, Code: "internal_error", Message: "The server had an error while processing your request."})
		}()
		c.Next()
	}
}

// accessLog logs one line per request: Debug, or Warn for a 5xx.
func (s *Server) accessLog() gin.HandlerFunc {
	return func(c *gin.Context) {
		start := s.core.clock.Now()
		c.Next()
		status := c.Writer.Status()
		level := slog.LevelDebug
		if status >= 500 {
			level = slog.LevelWarn
		}
		if !s.log.Enabled(c.Request.Context(), level) {
			return
		}
		s.log.LogAttrs(c.Request.Context(), level, "request",
			slog.String("method", c.Request.Method), slog.String("path", c.Request.URL.Path),
			slog.Int("status", status), slog.Duration("latency", s.core.clock.Now().Sub(start)))
	}
}

type healthBody struct {
	Status  string `json:"status"`
	Version string `json:"version"`
}

// handleHealthz is liveness: the process answers.
func (s *Server) handleHealthz(c *gin.Context) {
	c.JSON(http.StatusOK, healthBody{Status: "ok", Version: s.cfg.Version})
}

type readyBody struct {
	Status string `json:"status"`
	Nodes  int    `json:"nodes"`
}

// handleReadyz is readiness: at least one node's heartbeat is fresh.
func (s *Server) handleReadyz(c *gin.Context) {
	snap := s.registry.Snapshot()
	live := 0
	for i := range snap.Nodes {
		if !snap.Nodes[i].Stale {
			live++
		}
	}
	if live == 0 {
		msg := "Not ready: no node is registered with the gateway."
		if len(snap.Nodes) > 0 {
			msg = fmt.Sprintf("Not ready: all %d registered nodes have stale heartbeats.", len(snap.Nodes))
		}
		abortWithError(c, unavailable("%s", msg))
		return
	}
	c.JSON(http.StatusOK, readyBody{Status: "ready", Nodes: live})
}

// newAgentTransport returns the transport for agents: many idle connections per host (a few
// hosts, many concurrent streams), no compression (SSE must not be buffered by a gzip layer, and
// bodies are forwarded as is), and no proxy from the environment (agents are on the LAN).
//
// It has no ResponseHeaderTimeout: each attempt's own timer already bounds the wait for headers
// and first byte (FirstByteTimeout), and a second timer per request would only cost. Buffers are
// modest because every pooled connection holds both; larger reads and writes bypass them.
func newAgentTransport() *http.Transport {
	return &http.Transport{
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		DisableCompression:    true,
		ExpectContinueTimeout: 0,
		WriteBufferSize:       8 << 10,
		ReadBufferSize:        16 << 10,
	}
}

// withAgentH2C makes t speak HTTP/2 with prior knowledge on http:// agent URLs (h2c). HTTP/1 is
// left out of the protocols on purpose: with both, Go's transport would choose HTTP/1.1 for
// http://. How many streams share a connection is the agent's setting (4096); past it the
// transport opens another. It pings an idle connection so that a dead agent is noticed in seconds.
func withAgentH2C(t *http.Transport) *http.Transport {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	p.SetHTTP2(true)
	t.Protocols = &p
	t.HTTP2 = &http.HTTP2Config{
		SendPingTimeout: 15 * time.Second,
		PingTimeout:     5 * time.Second,
	}
	return t
}

// randomSeed returns 64 random bits; the fallback keeps the gateway working without entropy.
func randomSeed() uint64 {
	var b [8]byte
	if _, err := io.ReadFull(rand.Reader, b[:]); err != nil {
		return uint64(time.Now().UnixNano())
	}
	return binary.LittleEndian.Uint64(b[:])
}

// waitingByModel is the requests waiting in this gateway's queue per model, both classes, for
// the replica controller's demand.
func (s *Server) waitingByModel() map[string]int {
	out := map[string]int{}
	for _, q := range s.core.adm.QueueDepths() {
		out[q.Model] += q.Waiting
	}
	return out
}
