package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.opentelemetry.io/otel/attribute"
	"golang.org/x/sync/errgroup"

	"github.com/herd-llm/herd/discovery"
	"github.com/herd-llm/herd/gateway"
	"github.com/herd-llm/herd/models"
	"github.com/herd-llm/herd/nodeagent"
	"github.com/herd-llm/herd/nodeagent/agentapi"
	"github.com/herd-llm/herd/nodeagent/backend"
	"github.com/herd-llm/herd/nodeagent/sim"
	"github.com/herd-llm/herd/nodeagent/telemetry"
)

// document is the YAML configuration file: one section per process role.
type document struct {
	Gateway gateway.Config `yaml:"gateway"`
	Agent   agentSection   `yaml:"agent"`
	Log     logSection     `yaml:"log"`
}

type logSection struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

// agentSection is the agent's configuration plus the choice and settings of its backend.
type agentSection struct {
	nodeagent.Config `yaml:",inline"`
	Backend          string   `yaml:"backend"`
	OllamaURL        string   `yaml:"ollama_url"`
	OllamaModelsDir  string   `yaml:"ollama_models_dir"`
	OpenAIURL        string   `yaml:"openai_url"`
	OpenAIKey        string   `yaml:"openai_key"`
	SimGPUs          string   `yaml:"sim_gpus"`
	SimModels        []string `yaml:"sim_models"`
	SimPreload       []string `yaml:"sim_preload"`
	SimSpeed         float64  `yaml:"sim_speed"`
	SimSeed          int64    `yaml:"sim_seed"`
	// Join is the gateway URL to join the closed cluster through, with Token (a join token);
	// DataDir keeps the node's key and certificates; CAFile adds roots for reaching gateways in
	// token mode; Insecure allows plain HTTP on a non-loopback listener (lab mode).
	Join     string `yaml:"join"`
	Token    string `yaml:"token"`
	DataDir  string `yaml:"data_dir"`
	CAFile   string `yaml:"ca_file"`
	Insecure bool   `yaml:"insecure"`
	// SimEngine is the model server the simulated node behaves like (sim.Engines); "" is vllm.
	SimEngine string `yaml:"sim_engine"`
	// SimMaxLoadedModels bounds the simulated node's resident models (0: the engine's default).
	SimMaxLoadedModels int `yaml:"sim_max_loaded_models"`
	// SimContext is the simulated node's per-slot context window in tokens (0: 4096).
	SimContext int `yaml:"sim_context"`
	// SimEngineLog, when set, is a file the simulated node appends its prefill and load lines to
	// (Ollama's debug-log format), for load tests that count the prefill done.
	SimEngineLog string `yaml:"sim_engine_log"`
	// OllamaMaxLoadedModels is the Ollama server's OLLAMA_MAX_LOADED_MODELS (0: unknown), which
	// its API does not report: the gateway's scheduler needs it to know that a load evicts.
	OllamaMaxLoadedModels int `yaml:"ollama_max_loaded_models"`
}

func defaultDocument() document {
	return document{
		Gateway: gateway.DefaultConfig(),
		Agent: agentSection{
			Config:     nodeagent.DefaultConfig(),
			Backend:    "auto",
			OllamaURL:  "http://127.0.0.1:11434",
			SimGPUs:    "3090",
			SimModels:  []string{"llama3.2:1b", "llama3.1:8b", "qwen2.5:7b", "nomic-embed-text"},
			SimPreload: []string{"llama3.2:1b"},
			SimSpeed:   1,
			SimSeed:    1,
			DataDir:    "./herd-agent-data",
		},
		Log: logSection{Level: "info", Format: "text"},
	}
}

func commonFlags(fs *pflag.FlagSet, doc *document) {
	fs.String("config", "", "YAML configuration file (also HERD_CONFIG)")
	fs.StringVar(&doc.Log.Level, "log-level", doc.Log.Level, "log level: debug, info, warn, error")
	fs.StringVar(&doc.Log.Format, "log-format", doc.Log.Format, "log format: text or json")
}

func gatewayFlags(fs *pflag.FlagSet, g *gateway.Config) {
	fs.StringVar(&g.Listen, "listen", g.Listen, "address to serve the OpenAI API on")
	fs.StringVar(&g.DataDir, "data", g.DataDir, "data directory (files, batches, embedded store)")
	fs.StringVar(&g.ClusterToken, "cluster-token", g.ClusterToken, "shared secret between gateway and agents: the weaker lab mode (with TLS, agents join with herd nodes join-token instead)")
	listFlag(fs, &g.APIKeys, "api-keys", "client API keys ('Authorization: Bearer KEY'): tenants with scopes inference and batch, not admin")
	listFlag(fs, &g.AdminKeys, "admin-keys", "admin API keys: tenants with scopes inference, batch and admin (/admin/v1)")
	fs.Int64Var(&g.MaxBodyBytes, "max-body-bytes", g.MaxBodyBytes, "largest request body accepted on the inference routes (and batch input line)")
	fs.DurationVar(&g.BodyReadTimeout, "body-read-timeout", g.BodyReadTimeout, "longest a client may pause while sending a request body (400 past it)")
	fs.DurationVar(&g.ReadHeaderTimeout, "read-header-timeout", g.ReadHeaderTimeout, "longest wait for a request's headers")
	fs.DurationVar(&g.IdleTimeout, "idle-timeout", g.IdleTimeout, "idle keep-alive connections are closed after this long")
	fs.Int64Var(&g.BodyMinRate, "body-min-rate", g.BodyMinRate, "least average rate (bytes/s) a request body must keep after its first --body-read-timeout (400 below it; negative: none)")
	fs.DurationVar(&g.BodyMaxDuration, "body-max-duration", g.BodyMaxDuration, "longest a request body may take in all (400 past it; negative: no bound)")
	fs.IntVar(&g.MaxConnections, "max-connections", g.MaxConnections, "client connections held at once; more are closed at once (negative: no cap)")
	fs.IntVar(&g.MaxConnectionsPerClient, "max-connections-per-client", g.MaxConnectionsPerClient, "connections one client address holds at once (behind --trusted-proxies: requests in flight per forwarded client; negative: no cap)")
	listFlag(fs, &g.TrustedProxies, "trusted-proxies", "addresses or CIDRs of load balancers / reverse proxies whose X-Forwarded-For names the client")
	fs.StringVar(&g.MetricsToken, "metrics-token", g.MetricsToken, "bearer token that may read /metrics besides admin keys (Prometheus's scrape token)")
	fs.StringVar(&g.AuditLog, "audit-log", g.AuditLog, "also append audit records (admin actions and refusals) to this file as JSON lines")
	fs.StringVar(&g.Scheduler.Policy, "policy", g.Scheduler.Policy, "scheduling policy: herd, least_inflight, round_robin or chwbl (KubeAI's consistent hashing with bounded loads)")
	fs.IntVar(&g.MaxAttempts, "max-attempts", g.MaxAttempts, "nodes one request is tried on before the client sees an error")
	fs.DurationVar(&g.HeartbeatInterval, "heartbeat-interval", g.HeartbeatInterval, "expected agent heartbeat interval (3 missed: node out of the schedule)")
	fs.IntVar(&g.QueueSize, "queue-size", g.QueueSize, "requests that may wait for a node, per model")
	fs.DurationVar(&g.QueueTimeout, "queue-timeout", g.QueueTimeout, "longest a request waits for a node")
	fs.DurationVar(&g.HistoryInterval, "history-interval", g.HistoryInterval, "how often the dashboard's in-process history samples the cluster")
	fs.DurationVar(&g.HistoryWindow, "history-window", g.HistoryWindow, "how far back the dashboard's in-process history reaches")
	fs.StringVar(&g.PresetsFile, "presets", g.PresetsFile, "YAML file of presets (offline custom GPTs)")
	fs.Var(replicasValue{&g.MinReplicas}, "min-replicas", "keep this many resident copies of models warm, e.g. llama3.1:8b=2")
	fs.DurationVar(&g.FirstByteTimeout, "first-byte-timeout", g.FirstByteTimeout, "longest wait for an agent's response headers before trying another node")
	fs.DurationVar(&g.StreamIdleTimeout, "stream-idle-timeout", g.StreamIdleTimeout, "longest silence inside an agent's response before it counts as failed")
	fs.BoolVar(&g.AgentH2C, "agent-h2c", g.AgentH2C, "speak HTTP/2 without TLS (h2c) to agents at http:// URLs: many streams share a few connections")
	fs.DurationVar(&g.StallTimeout, "stall-timeout", g.StallTimeout, "silence inside a stream after which it counts as failed when the node's heartbeat is late too (then continued on another node)")
	fs.BoolVar(&g.NoContinuation, "no-continuation", g.NoContinuation, "do not continue a stream on another node when its node fails midway (end it with an error event)")
	fs.StringVar(&g.RedisURL, "redis-url", g.RedisURL, "keep the node registry, files metadata, batches, presets, API keys and rate-limit counters in Redis (redis://host:6379/0) so several gateways share them")
	fs.BoolVar(&g.MDNS, "mdns", g.MDNS, "announce this gateway on the LAN over mDNS (_herd._tcp, with the cluster CA's fingerprint) so that agents started with --join auto find it")
	fs.StringVar(&g.FilesURL, "files-url", g.FilesURL, "keep bulk file contents in S3-compatible storage (s3://bucket/prefix?endpoint=http://host:9000; credentials from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY) instead of the data dir, so several gateways need no shared filesystem")
	fs.DurationVar(&g.RegistryOutageGrace, "registry-outage-grace", g.RegistryOutageGrace, "with --redis-url: how long nodes stay scheduled from the last view while Redis is unreachable (0: 30s)")
	fs.StringVar(&g.GatewayID, "gateway-id", g.GatewayID, "this gateway's name on the batch queue, unique per gateway and stable across restarts (default: host name and listen port)")
	fs.DurationVar(&g.Batch.ClaimTimeout, "batch-claim-timeout", g.Batch.ClaimTimeout, "how long a batch claim may go unrenewed before another gateway takes the batch over (0: 30s)")
	fs.Int64Var(&g.Batch.MaxFileBytes, "max-file-bytes", g.Batch.MaxFileBytes, "largest bulk file accepted (0: 200 MB)")
	fs.IntVar(&g.Batch.MaxFileLines, "max-file-lines", g.Batch.MaxFileLines, "most lines in a bulk file (0: 50,000)")
	fs.IntVar(&g.Batch.Concurrency, "batch-concurrency", g.Batch.Concurrency, "batch lines in flight at once (0: 8)")
	fs.DurationVar(&g.Batch.ModelGrace, "batch-model-grace", g.Batch.ModelGrace, "after the gateway starts, how long a batch naming a model no node has reported waits for nodes to report in before it fails validation (0: 10s or 3 heartbeat intervals, whichever is longer; negative: no wait)")
	tracingFlags(fs, &g.Tracing)
	fs.BoolVar(&g.TLS, "tls", g.TLS, "serve HTTPS with a certificate from the cluster CA even on loopback (any other address serves HTTPS unless --insecure)")
	fs.StringVar(&g.TLSCert, "tls-cert", g.TLSCert, "certificate file for the client front (PEM; reloaded when it changes); default: one from the cluster CA")
	fs.StringVar(&g.TLSKey, "tls-key", g.TLSKey, "private key file of --tls-cert (PEM)")
	listFlag(fs, &g.TLSHosts, "tls-hosts", "extra host names and addresses for the gateway's certificate from the cluster CA")
	fs.BoolVar(&g.Insecure, "insecure", g.Insecure, "serve plain HTTP on a non-loopback address: API keys, tokens and prompts cross the network in the clear")
	fs.StringVar(&g.CASecret, "ca-secret", g.CASecret, "with --redis-url: the secret that seals the cluster CA's key in Redis (same on every gateway, at least 16 characters)")
	fs.DurationVar(&g.NodeCertTTL, "node-cert-ttl", g.NodeCertTTL, "life of the certificates joining nodes get (0: 720h); agents renew at two thirds")
}

func agentFlags(fs *pflag.FlagSet, a *agentSection, withGateway bool) {
	fs.StringVar(&a.Backend, "backend", a.Backend, "backend: auto, ollama, openai or sim")
	fs.StringVar(&a.OllamaURL, "ollama-url", a.OllamaURL, "Ollama's URL (keep it on the node's loopback)")
	fs.IntVar(&a.OllamaMaxLoadedModels, "ollama-max-loaded-models", a.OllamaMaxLoadedModels, "the Ollama server's OLLAMA_MAX_LOADED_MODELS, which its API does not tell (0: unknown); the gateway then knows a load there evicts")
	fs.StringVar(&a.OllamaModelsDir, "ollama-models", a.OllamaModelsDir, "Ollama's models directory, for air-gapped copies (default $OLLAMA_MODELS or ~/.ollama/models)")
	fs.StringVar(&a.OpenAIURL, "openai-url", a.OpenAIURL, "base URL of an OpenAI-compatible server (vLLM, llama.cpp server)")
	fs.StringVar(&a.OpenAIKey, "openai-key", a.OpenAIKey, "API key for the OpenAI-compatible server")
	fs.StringVar(&a.SimGPUs, "sim-gpus", a.SimGPUs, "simulated GPUs, e.g. t4 or 2xt4,a40 (profiles: "+strings.Join(gpuKeys(), ", ")+")")
	listFlag(fs, &a.SimModels, "sim-models", "models on the simulated node's disk")
	listFlag(fs, &a.SimPreload, "sim-preload", "models resident on the simulated GPUs at start")
	fs.Float64Var(&a.SimSpeed, "sim-speed", a.SimSpeed, "simulated time runs this many times faster than real time")
	fs.Int64Var(&a.SimSeed, "sim-seed", a.SimSeed, "seed of the simulated node's generated text")
	fs.StringVar(&a.SimEngine, "sim-engine", a.SimEngine, "model server the simulated node behaves like: "+strings.Join(sim.Engines(), " or ")+" (prompt caches, usage, eviction; default vllm)")
	fs.IntVar(&a.SimMaxLoadedModels, "sim-max-loaded-models", a.SimMaxLoadedModels, "most models the simulated node keeps loaded, as OLLAMA_MAX_LOADED_MODELS (0: the engine's default)")
	fs.IntVar(&a.SimContext, "sim-context", a.SimContext, "context window per slot of the simulated node, tokens (0: 4096)")
	fs.StringVar(&a.SimEngineLog, "sim-engine-log", a.SimEngineLog, "append the simulated node's prefill and model-load lines (Ollama's debug-log format) to this file")
	fs.StringVar(&a.NodeID, "node-id", a.NodeID, "this node's id (default: the hostname)")
	fs.IntVar(&a.Slots, "slots", a.Slots, "requests the backend serves at once (0: ask the backend)")
	fs.DurationVar(&a.HeartbeatInterval, "agent-heartbeat-interval", a.HeartbeatInterval, "how often the agent reports to the gateway")
	if withGateway {
		fs.StringVar(&a.Listen, "listen", a.Listen, "address the agent serves on")
		fs.StringVar(&a.Advertise, "advertise", a.Advertise, "URL the gateway uses to reach this agent (default: from --listen)")
		listFlag(fs, &a.GatewayURLs, "gateway", "gateway URL(s) to heartbeat to, tried in order (one load-balanced URL also works)")
		fs.StringVar(&a.ClusterToken, "cluster-token", a.ClusterToken, "shared secret between gateway and agents (the weaker lab mode; see --join)")
		fs.StringVar(&a.Join, "join", a.Join, "join the closed cluster through this gateway (https URL, or auto: find it on the LAN by mDNS) with --token; later starts use the certificates in --data")
		fs.StringVar(&a.Token, "token", a.Token, "join token from herd nodes join-token (pins the cluster CA by its fingerprint)")
		fs.StringVar(&a.DataDir, "data", a.DataDir, "agent data directory: the node's private key (0600) and certificates")
		fs.StringVar(&a.CAFile, "ca-file", a.CAFile, "token mode: extra CA certificate (PEM) to trust for https gateways")
		fs.BoolVar(&a.H2C, "h2c", a.H2C, "plain HTTP on loopback: let the gateway proxy to this agent over HTTP/2 without TLS (off: HTTP/1.1)")
		fs.BoolVar(&a.Insecure, "insecure", a.Insecure, "serve plain HTTP on a non-loopback address (the cluster token and prompts cross the network in the clear)")
		tracingFlags(fs, &a.Tracing)
	}
}

func gpuKeys() []string {
	var keys []string
	for _, p := range models.GPUProfiles() {
		keys = append(keys, p.Key)
	}
	return keys
}

func newGatewayCmd() *cobra.Command {
	doc := defaultDocument()
	return gatewayCmd(&doc)
}

// gatewayCmd binds the gateway command's flags to doc.
func gatewayCmd(doc *document) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "gateway",
		Short: "Run the gateway: the OpenAI-compatible endpoint, scheduler and batch runner",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := layerConfig(cmd, doc); err != nil {
				return err
			}
			log, err := newLogger(doc.Log.Level, doc.Log.Format)
			if err != nil {
				return err
			}
			return runGateway(cmd.Context(), doc.Gateway, log, nil)
		},
	}
	commonFlags(cmd.Flags(), doc)
	gatewayFlags(cmd.Flags(), &doc.Gateway)
	return cmd
}

// runGateway serves until ctx is done. ready, if not nil, receives the bound address once listening.
func runGateway(ctx context.Context, cfg gateway.Config, log *slog.Logger, ready chan<- string) error {
	cfg.Version = herdVersion()
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("gateway config: %w", err)
	}
	tp, stopTracing, err := setupTracing(ctx, cfg.Tracing, "herd-gateway", log)
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	defer stopTracing()
	srv, err := gateway.New(cfg, gateway.WithLogger(log), gateway.WithTracerProvider(tp.TracerProvider()))
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	addr := ln.Addr().String()
	scheme := "http"
	if cfg.TLSEnabled() {
		scheme = "https"
		log.Info("TLS on: clients and agents reach this gateway over HTTPS; agents join with herd nodes join-token", "ca_fingerprint", srv.CAFingerprint(), "cluster_token_mode", cfg.ClusterToken != "")
	} else if !isLoopback(cfg.Listen) {
		log.Warn("INSECURE: serving plain HTTP on a non-loopback address (--insecure): API keys, the cluster token and every prompt and answer cross the network in the clear", "listen", addr)
	}
	log.Info("gateway listening", "url", scheme+"://"+addr+"/v1", "policy", cfg.Scheduler.Policy, "data", cfg.DataDir)
	if cfg.MDNS {
		fp := ""
		if cfg.TLSEnabled() {
			fp = srv.CAFingerprint()
		}
		if ann, err := announceGateway(cfg, addr, scheme, fp); err != nil {
			// Discovery is a convenience: agents can still be given the URL.
			log.Warn("mDNS announcement failed: agents must be given this gateway's URL", "err", err)
		} else {
			defer ann.Close()
			log.Info("announced on the LAN over mDNS", "service", discovery.ServiceType, "ca_fingerprint", fp)
		}
	}
	if ready != nil {
		ready <- addr
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return srv.Run(gctx) })
	g.Go(func() error { return srv.Serve(gctx, ln) })
	err = g.Wait()
	if cerr := srv.Close(); cerr != nil && err == nil {
		err = cerr
	}
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

func newAgentCmd() *cobra.Command {
	doc := defaultDocument()
	doc.Agent.Backend = "ollama"
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run a node agent in front of this machine's model server",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := layerConfig(cmd, &doc); err != nil {
				return err
			}
			log, err := newLogger(doc.Log.Level, doc.Log.Format)
			if err != nil {
				return err
			}
			return runAgent(cmd.Context(), doc.Agent, log, nil)
		},
	}
	commonFlags(cmd.Flags(), &doc)
	agentFlags(cmd.Flags(), &doc.Agent, true)
	return cmd
}

// runAgent builds the backend and telemetry source the section asks for and serves until ctx is done.
// agentReady tells herd up which backend the local agent ended up with.
type agentReady struct {
	backend   string
	simulated bool
}

func runAgent(ctx context.Context, a agentSection, log *slog.Logger, ready chan<- agentReady) error {
	if a.NodeID == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("agent: no --node-id and no hostname: %w", err)
		}
		a.NodeID = h
	}
	a.Version = herdVersion()
	if err := checkAgentModes(a); err != nil {
		return err
	}
	if err := resolveJoinAuto(ctx, &a, log); err != nil {
		return err
	}
	b, ts, closeFn, err := buildBackend(ctx, a, log, nvml.New())
	if err != nil {
		return err
	}
	defer closeFn()
	ln, err := net.Listen("tcp", a.Listen)
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	certs, err := agentCerts(ctx, &a, ln, log)
	if err != nil {
		ln.Close()
		return err
	}
	if certs == nil && !a.Insecure && !isLoopback(ln.Addr().String()) {
		ln.Close()
		return fmt.Errorf("agent: refusing plain HTTP on non-loopback %s: join the cluster (--join URL --token TOKEN) for TLS, or pass --insecure for the lab mode (the cluster token and prompts then cross the network in the clear)", ln.Addr())
	}
	if certs == nil && a.Insecure && !isLoopback(ln.Addr().String()) {
		log.Warn("INSECURE: agent serving plain HTTP on a non-loopback address (--insecure): the cluster token and every prompt and answer cross the network in the clear", "listen", ln.Addr().String())
	}
	if host, _, err := net.SplitHostPort(ln.Addr().String()); a.Advertise == "" && err == nil && !net.ParseIP(host).IsUnspecified() {
		a.Advertise = "http://" + ln.Addr().String()
		if certs != nil {
			a.Advertise = "https://" + ln.Addr().String()
		}
	}
	// With an unspecified listen host (":9090") and no --advertise, the agent advertises the
	// machine's first LAN address itself.
	cfg := a.Config
	cfg.Certs = certs
	tp, stopTracing, err := setupTracing(ctx, cfg.Tracing, "herd-agent", log, attribute.String("herd.node", cfg.NodeID))
	if err != nil {
		ln.Close()
		return fmt.Errorf("agent: %w", err)
	}
	defer stopTracing()
	if cfg.GatewayTLS, err = tokenModeTLS(a); err != nil {
		ln.Close()
		return err
	}
	ag, err := nodeagent.New(cfg, b, ts, nodeagent.WithLogger(log), nodeagent.WithTracerProvider(tp.TracerProvider()))
	if err != nil {
		ln.Close()
		return fmt.Errorf("agent config: %w", err)
	}
	log.Info("agent listening", "node", cfg.NodeID, "listen", ln.Addr().String(), "advertise", cfg.Advertise, "backend", b.Kind(), "simulated", b.Simulated(), "gateways", cfg.GatewayURLs)
	if ready != nil {
		ready <- agentReady{backend: b.Kind(), simulated: b.Simulated()}
	}
	err = ag.Run(ctx, ln)
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// buildBackend constructs the backend and its telemetry source. Real backends read GPUs through
// NVML (no driver: no GPUs, said once) from lib; the simulated node is its own telemetry source.
func buildBackend(ctx context.Context, a agentSection, log *slog.Logger, lib nvml.Interface) (nodeagent.Backend, nodeagent.TelemetrySource, func(), error) {
	kind := a.Backend
	if kind == "auto" {
		if kind = backend.Detect(ctx, nil, a.OllamaURL); kind == agentapi.BackendOllama {
			log.Info("backend auto: Ollama answers, using it", "url", a.OllamaURL)
		} else {
			log.Warn("backend auto: no Ollama answers at "+a.OllamaURL+": using a SIMULATED GPU node — its text is generated and its figures are simulated", "sim_gpus", a.SimGPUs)
		}
	}
	switch kind {
	case agentapi.BackendSim:
		groups, err := models.ParseGPUList(a.SimGPUs)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("--sim-gpus: %w", err)
		}
		cfg := sim.Config{
			NodeID: a.NodeID, GPUs: models.ExpandGPUs(groups), Models: a.SimModels, Preload: a.SimPreload,
			SpeedFactor: a.SimSpeed, Seed: a.SimSeed, Engine: a.SimEngine, MaxLoadedModels: a.SimMaxLoadedModels,
			ContextLength: a.SimContext,
		}
		closeLog := func() {}
		if a.SimEngineLog != "" {
			f, err := os.OpenFile(a.SimEngineLog, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
			if err != nil {
				return nil, nil, nil, fmt.Errorf("--sim-engine-log: %w", err)
			}
			cfg.EngineLog, closeLog = f, func() { f.Close() }
		}
		n, err := sim.New(cfg)
		if err != nil {
			closeLog()
			return nil, nil, nil, fmt.Errorf("sim: %w", err)
		}
		return n, n, closeLog, nil
	case agentapi.BackendOllama:
		b, err := backend.NewOllama(backend.OllamaConfig{URL: a.OllamaURL, ModelsDir: a.OllamaModelsDir, MaxLoadedModels: a.OllamaMaxLoadedModels})
		if err != nil {
			return nil, nil, nil, err
		}
		ts := telemetry.NewNVML(lib, log)
		return b, ts, func() { ts.Close() }, nil
	case agentapi.BackendOpenAI:
		if a.OpenAIURL == "" {
			return nil, nil, nil, errors.New("--backend openai needs --openai-url")
		}
		b, err := backend.NewOpenAICompat(a.OpenAIURL, a.OpenAIKey)
		if err != nil {
			return nil, nil, nil, err
		}
		ts := telemetry.NewNVML(lib, log)
		return b, ts, func() { ts.Close() }, nil
	}
	return nil, nil, nil, fmt.Errorf("unknown backend %q (want auto, ollama, openai or sim)", a.Backend)
}

func newUpCmd() *cobra.Command {
	doc := defaultDocument()
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Run a gateway and one local agent in one process (the embedded single-machine setup)",
		Long: "herd up runs the gateway and a local agent in one process. With --backend auto (the default)\n" +
			"it uses Ollama when one answers on 127.0.0.1:11434 and otherwise a simulated GPU node,\n" +
			"and says which.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := layerConfig(cmd, &doc); err != nil {
				return err
			}
			log, err := newLogger(doc.Log.Level, doc.Log.Format)
			if err != nil {
				return err
			}
			return runUp(cmd.Context(), doc, log, cmd.OutOrStdout())
		},
	}
	commonFlags(cmd.Flags(), &doc)
	gatewayFlags(cmd.Flags(), &doc.Gateway)
	agentFlags(cmd.Flags(), &doc.Agent, false)
	return cmd
}

func runUp(ctx context.Context, doc document, log *slog.Logger, out interface{ Write([]byte) (int, error) }) error {
	if doc.Gateway.ClusterToken == "" {
		// Gateway and agent share this process; a random token keeps the agent's loopback port closed to others.
		var b [16]byte
		if _, err := rand.Read(b[:]); err != nil {
			return err
		}
		doc.Gateway.ClusterToken = hex.EncodeToString(b[:])
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	gwReady := make(chan string, 1)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return runGateway(gctx, doc.Gateway, log.With("role", "gateway"), gwReady) })
	var gwAddr string
	select {
	case gwAddr = <-gwReady:
	case <-gctx.Done():
		return g.Wait()
	}
	a := doc.Agent
	if a.Tracing.IsZero() {
		// One set of tracing flags serves both halves of herd up; each keeps its service name.
		a.Tracing = doc.Gateway.Tracing
		a.Tracing.ServiceName = ""
	}
	a.Listen = "127.0.0.1:0"
	a.ClusterToken = doc.Gateway.ClusterToken
	a.GatewayURLs = []string{"http://" + gwAddr}
	scheme := "http"
	if doc.Gateway.TLSEnabled() {
		// The local agent stays in token mode on loopback and trusts the cluster CA for the
		// gateway's HTTPS.
		scheme = "https"
		a.GatewayURLs = []string{"https://" + gwAddr}
		a.CAFile = filepath.Join(doc.Gateway.DataDir, "pki", "ca.crt")
	}
	if a.NodeID == "" {
		if h, err := os.Hostname(); err == nil {
			a.NodeID = h
		}
	}
	agReady := make(chan agentReady, 1)
	g.Go(func() error { return runAgent(gctx, a, log.With("role", "agent"), agReady) })
	select {
	case r := <-agReady:
		fmt.Fprintf(out, "\nherd is up: point the OpenAI SDK at  %s://%s/v1\n", scheme, gwAddr)
		if r.simulated {
			fmt.Fprintf(out, "  backend: SIMULATED GPU node (%s) — no Ollama answered on %s; text is generated, figures are simulated\n", a.SimGPUs, a.OllamaURL)
		} else {
			fmt.Fprintf(out, "  backend: %s\n", r.backend)
		}
		if scheme == "https" {
			ca := filepath.Join(doc.Gateway.DataDir, "pki", "ca.crt")
			fmt.Fprintf(out, "  dashboard: https://%[1]s/   metrics: https://%[1]s/metrics   (trust %[2]s)\n  curl --cacert %[2]s https://%[1]s/v1/models\n  herd nodes --url https://%[1]s --ca-file %[2]s\n\n", gwAddr, ca)
		} else {
			fmt.Fprintf(out, "  dashboard: http://%[1]s/   metrics: http://%[1]s/metrics\n  curl http://%[1]s/v1/models\n  herd nodes --url http://%[1]s\n\n", gwAddr)
		}
	case <-gctx.Done():
	}
	return g.Wait()
}
