// Package gateway is herd's front door: an HTTP server (gin) that speaks the OpenAI API (and the
// admin API) to clients, places each request on a node agent through the scheduler, proxies the
// response back chunk by chunk, fails over before the first byte, and runs bulk jobs.
package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"github.com/herd-llm/herd/gateway/prefixcache"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/herd-llm/herd/gateway/agents"
	"github.com/herd-llm/herd/gateway/clusterpki"

	"github.com/gin-gonic/gin"

	"github.com/herd-llm/herd/gateway/batch"
	"github.com/herd-llm/herd/gateway/history"
	"github.com/herd-llm/herd/gateway/presets"
	"github.com/herd-llm/herd/gateway/registry"
	"github.com/herd-llm/herd/gateway/s3files"
	"github.com/herd-llm/herd/gateway/store"
	"github.com/herd-llm/herd/scheduler"
	"github.com/herd-llm/herd/tracing"
)

// Config is the gateway's configuration. Zero values are replaced by DefaultConfig's.
type Config struct {
	// Listen is the address the gateway serves on ("127.0.0.1:8080").
	Listen string `yaml:"listen"`
	// DataDir holds files, batches and the embedded store.
	DataDir string `yaml:"data_dir"`
	// ClusterToken authenticates agents to the gateway and the gateway to agents: the weaker lab
	// mode. With TLS on, agents join with a join token instead and are known by their
	// certificates (tls.go); the token may then be left empty, which closes the cluster to it.
	ClusterToken string `yaml:"cluster_token"`
	// TLS serves HTTPS with certificates from the cluster CA even on a loopback address. A
	// gateway on any other address serves HTTPS unless Insecure says otherwise.
	TLS bool `yaml:"tls"`
	// TLSCert and TLSKey are files of the certificate the client front serves (reloaded when they
	// change); empty: a certificate issued by the cluster CA.
	TLSCert string `yaml:"tls_cert"`
	TLSKey  string `yaml:"tls_key"`
	// TLSHosts are extra names and addresses of the gateway for its certificate from the cluster
	// CA (the listen address, this host's addresses and name, and localhost are always in it).
	TLSHosts []string `yaml:"tls_hosts"`
	// Insecure serves plain HTTP on a non-loopback address: tokens and prompts cross the network
	// in the clear. The gateway says so loudly at start.
	Insecure bool `yaml:"insecure"`
	// CASecret seals the cluster CA's private key in Redis (with RedisURL and TLS); the same on
	// every gateway, at least 16 characters. It never goes to Redis.
	CASecret string `yaml:"ca_secret"`
	// NodeCertTTL is the life of the certificates nodes get when they join (0: 30 days); agents
	// renew at two thirds of it.
	NodeCertTTL time.Duration `yaml:"node_cert_ttl"`
	// Tenants are the API keys clients send as "Authorization: Bearer KEY", each with a name,
	// scopes and rate limits (see tenants.go). With no key at all (here, APIKeys, AdminKeys or
	// stored through /admin/v1/keys) the gateway is open, and only listens on loopback.
	Tenants []TenantConfig `yaml:"tenants"`
	// APIKeys is a shorthand: each becomes a tenant with scopes inference and batch (not admin).
	APIKeys []string `yaml:"api_keys"`
	// AdminKeys is a shorthand: each becomes a tenant with scopes inference, batch and admin.
	AdminKeys []string `yaml:"admin_keys"`
	// MaxBodyBytes bounds request bodies on the inference routes (413 past it), and a line of a
	// batch input file (unless batch.max_line_bytes says otherwise).
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// ReadHeaderTimeout bounds the wait for a request's headers.
	ReadHeaderTimeout time.Duration `yaml:"read_header_timeout"`
	// BodyReadTimeout bounds the silence while a client sends a request body: no data for that
	// long and the request is cut (400). It is renewed as data arrives, so large uploads on
	// slow links still go through.
	BodyReadTimeout time.Duration `yaml:"body_read_timeout"`
	// BodyMinRate (bytes/s) is the least average rate a request body must arrive at after its
	// first BodyReadTimeout: the body's deadline is BodyReadTimeout plus the time its bytes so far
	// take at this rate, from the end of the headers, so a client trickling bytes cannot renew the
	// idle timeout forever. 0: the default (1024); negative: no minimum rate.
	BodyMinRate int64 `yaml:"body_min_rate"`
	// BodyMaxDuration bounds the whole time a request body may take (400 past it). 0: the default
	// (15 minutes); negative: no bound.
	BodyMaxDuration time.Duration `yaml:"body_max_duration"`
	// IdleTimeout closes a keep-alive connection that carries no request for that long.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// MaxConnections caps the client connections the gateway holds at once; one more is closed
	// at once. 0: the default (8192); negative: no cap.
	MaxConnections int `yaml:"max_connections"`
	// MaxConnectionsPerClient caps the connections one client address holds at once (and, behind
	// a trusted proxy, the requests one forwarded client has in flight: 429 past it). 0: the
	// default (256); negative: no cap.
	MaxConnectionsPerClient int `yaml:"max_connections_per_client"`
	// TrustedProxies are the addresses or CIDRs of load balancers and reverse proxies in front of
	// the gateway: their X-Forwarded-For names the client (anyone else's is ignored) and their own
	// connections are not capped per address.
	TrustedProxies []string `yaml:"trusted_proxies"`
	// MetricsToken, when set, is a bearer token that may read /metrics (a Prometheus scrape token)
	// besides admin keys. /metrics needs one of them as soon as any API key exists; with no key at
	// all (a loopback-only open gateway) it is open like everything else.
	MetricsToken string `yaml:"metrics_token"`
	// AuditLog, when set, is a file that audit records (admin actions and refusals, audit.go) are
	// appended to as JSON lines, besides the gateway's log.
	AuditLog string `yaml:"audit_log"`
	// HeartbeatInterval is the interval agents are expected to beat at; 3 missed ones make a node stale.
	HeartbeatInterval time.Duration `yaml:"heartbeat_interval"`
	// Scheduler chooses the policy.
	Scheduler scheduler.Config `yaml:"scheduler"`
	// PrefixCache sizes the gateway's model of the engines' prompt caches (gateway/prefixcache)
	// where the engines do not say.
	PrefixCache prefixcache.Config `yaml:"prefix_cache"`
	// MaxAttempts bounds how many nodes one request is tried on before the client sees an error.
	MaxAttempts int `yaml:"max_attempts"`
	// FirstByteTimeout bounds the wait for an agent's response headers.
	FirstByteTimeout time.Duration `yaml:"first_byte_timeout"`
	// StreamIdleTimeout bounds the silence between two reads of an agent's response body; past
	// it the response is failed (mid-stream: an SSE error event) rather than left hanging.
	StreamIdleTimeout time.Duration `yaml:"stream_idle_timeout"`
	// AgentH2C makes the request path speak HTTP/2 without TLS (h2c, prior knowledge) to agents
	// at http:// URLs, so thousands of concurrent streams to one agent share a few connections
	// instead of holding one socket (and two buffers) each. Every herd agent serves h2c beside
	// HTTP/1.1; it is off by default because a plain HTTP/1.1 server behind an agent URL (an
	// older agent, a test double) would refuse the HTTP/2 preface.
	AgentH2C bool `yaml:"agent_h2c"`
	// StallTimeout is the shorter silence after which a stream whose node's heartbeat is late
	// counts as failed (a stopped or cut-off node), so that it is continued elsewhere soon.
	StallTimeout time.Duration `yaml:"stall_timeout"`
	// NoContinuation turns off continuing a broken stream on another node: it then ends with an
	// error event (clients can also ask for that per request, X-Herd-No-Continue).
	NoContinuation bool `yaml:"no_continuation"`
	// QueueSize bounds requests waiting for a node per model; QueueTimeout bounds their wait.
	QueueSize    int           `yaml:"queue_size"`
	QueueTimeout time.Duration `yaml:"queue_timeout"`
	// MinReplicas keeps that many resident copies of a model warm across the cluster (model →
	// count), loaded where the placement planner finds room, re-checked every ReplicaInterval.
	MinReplicas map[string]int `yaml:"min_replicas"`
	// Replicas scales the listed models by demand (model → min and max resident copies): the
	// replica controller adds a replica while a model's requests outnumber its replicas' slots
	// and drops an idle one when the rest would run at most half full (scheduler.Scale), every
	// ReplicaInterval, never outside [min, max].
	Replicas        map[string]scheduler.ReplicaBounds `yaml:"replicas"`
	ReplicaInterval time.Duration                      `yaml:"replica_interval"`
	// PresetsFile is an optional YAML file of presets loaded at start.
	PresetsFile string `yaml:"presets_file"`
	// RedisURL ("redis://host:6379/0"), when set, keeps files metadata, batches and presets in
	// Redis so several gateways share them (file contents stay in DataDir, a shared volume,
	// unless FilesURL puts them in object storage). Empty: an embedded bbolt file in DataDir.
	RedisURL string `yaml:"redis_url"`
	// FilesURL ("s3://bucket/prefix?endpoint=http://host:9000"), when set, keeps bulk file
	// contents in S3-compatible storage (gateway/s3files) instead of DataDir/files, so several
	// gateways need no shared filesystem. Credentials come from AWS_ACCESS_KEY_ID and
	// AWS_SECRET_ACCESS_KEY. Empty: the data dir.
	FilesURL string `yaml:"files_url"`
	// MDNS announces the gateway on the LAN over mDNS/DNS-SD (_herd._tcp, with the cluster CA's
	// fingerprint), so that agents started with --join auto find it (discovery package).
	MDNS bool `yaml:"mdns"`
	// HistoryInterval and HistoryWindow size the in-process history the dashboard charts (one
	// sample per interval, window long).
	HistoryInterval time.Duration `yaml:"history_interval"`
	HistoryWindow   time.Duration `yaml:"history_window"`
	// With RedisURL the node registry is shared too: any gateway accepts a heartbeat, every
	// gateway sees every node. RegistryOutageGrace is how long, while Redis is unreachable, the
	// nodes that were fresh before stay in the schedule without news of them (0: 30s).
	RegistryOutageGrace time.Duration `yaml:"registry_outage_grace"`
	// GatewayID names this gateway on the batch work queue; unique per gateway and stable across
	// its restarts, so a restarted gateway resumes its own batches at once instead of waiting for
	// their claims to time out. Default: the host name and the listen port.
	GatewayID string `yaml:"gateway_id"`
	// Batch bounds files and batches and tunes the batch runner; zero values take batch.DefaultConfig's.
	Batch batch.Config `yaml:"batch"`
	// Tracing configures OpenTelemetry traces (off unless an endpoint is set here or in the
	// OTEL_* environment); the process sets the provider up and passes it with WithTracerProvider.
	Tracing tracing.Config `yaml:"tracing"`
	// Version is reported by /healthz.
	Version string `yaml:"-"`
}

// DefaultConfig returns the configuration the gateway runs with when nothing is set.
func DefaultConfig() Config {
	return Config{
		Listen:                  "127.0.0.1:8080",
		DataDir:                 "./herd-data",
		MaxBodyBytes:            32 << 20,
		ReadHeaderTimeout:       10 * time.Second,
		BodyReadTimeout:         30 * time.Second,
		IdleTimeout:             2 * time.Minute,
		BodyMinRate:             1024,
		BodyMaxDuration:         15 * time.Minute,
		MaxConnections:          8192,
		MaxConnectionsPerClient: 256,
		HeartbeatInterval:       time.Second,
		Scheduler:               scheduler.DefaultConfig(),
		MaxAttempts:             3,
		FirstByteTimeout:        120 * time.Second,
		StreamIdleTimeout:       60 * time.Second,
		StallTimeout:            5 * time.Second,
		QueueSize:               256,
		QueueTimeout:            60 * time.Second,
		HistoryInterval:         5 * time.Second,
		HistoryWindow:           10 * time.Minute,
	}
}

// Validate reports a configuration the gateway cannot run with.
func (c Config) Validate() error {
	var errs []error
	if c.Listen == "" {
		errs = append(errs, errors.New("listen address is empty"))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("data dir is empty"))
	}
	if err := c.validateTLS(); err != nil {
		errs = append(errs, err)
	}
	if c.FilesURL != "" {
		if _, err := s3files.ParseURL(c.FilesURL); err != nil {
			errs = append(errs, err)
		}
	}
	if c.MaxBodyBytes <= 0 {
		errs = append(errs, errors.New("max body bytes must be positive"))
	}
	if c.HeartbeatInterval <= 0 {
		errs = append(errs, errors.New("heartbeat interval must be positive"))
	}
	if c.MaxAttempts < 1 {
		errs = append(errs, errors.New("max attempts must be at least 1"))
	}
	if c.HistoryInterval <= 0 || c.HistoryWindow < c.HistoryInterval || c.HistoryWindow/c.HistoryInterval > history.MaxSamples {
		errs = append(errs, fmt.Errorf("history: interval %s and window %s must be positive, the window at least one interval and at most %d of them",
			c.HistoryInterval, c.HistoryWindow, history.MaxSamples))
	}
	if c.RegistryOutageGrace < 0 {
		errs = append(errs, errors.New("registry outage grace must not be negative"))
	}
	if c.Batch.ClaimTimeout < 0 {
		errs = append(errs, errors.New("batch claim timeout must not be negative"))
	}
	if err := c.Scheduler.Validate(); err != nil {
		errs = append(errs, err)
	}
	for model, b := range c.Replicas {
		if b.Min < 0 || b.Max < 0 || (b.Max > 0 && b.Max < b.Min) {
			errs = append(errs, fmt.Errorf("replicas: %s: want 0 ≤ min ≤ max (max 0: min), got min %d max %d", model, b.Min, b.Max))
		}
	}
	if err := c.Tracing.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.ReadHeaderTimeout < 0 || c.BodyReadTimeout < 0 || c.IdleTimeout < 0 || c.StallTimeout < 0 {
		errs = append(errs, errors.New("timeouts must not be negative"))
	}
	if _, err := parseTrustedProxies(c.TrustedProxies); err != nil {
		errs = append(errs, err)
	}
	names := map[string]bool{}
	for _, t := range c.Tenants {
		if err := t.validate(); err != nil {
			errs = append(errs, err)
		} else if names[t.Name] {
			errs = append(errs, fmt.Errorf("tenant name %q is used twice", t.Name))
		}
		names[t.Name] = true
	}
	// A non-loopback listener needs a key; keys stored through /admin/v1/keys count too, so New
	// checks that once it has read the store.
	return errors.Join(errs...)
}

// isLoopbackListen reports whether addr ("host:port") only accepts loopback connections.
func isLoopbackListen(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Server is a running gateway's HTTP side.
type Server struct {
	cfg    Config
	log    *slog.Logger
	engine *gin.Engine

	// Owned by the request path (gateway core).
	registry *registry.Registry
	// sharedReg is the Redis node table behind registry (nil: embedded registry).
	sharedReg *registry.RedisShared
	sched     *scheduler.Scheduler
	core      core

	// conns caps client connections (conns.go); proxied caps requests through trusted proxies.
	conns   *connLimits
	proxied *proxied
	// audit writes the audit records (audit.go).
	audit *auditLog

	// Owned by admin/metrics.
	metrics *metrics
	// timing times Pick and snapshot builds and counts heartbeats (what the fleet costs).
	timing  *schedTiming
	history *history.Ring
	// agents caches one agent client per node address, for admin and the replica controller.
	agents *agents.Pool
	// pki is the cluster CA and the node certificates' checks (nil: TLS off, tls.go).
	pki *clusterpki.Authority
	// frontTLS is the client front's TLS configuration (nil: plain HTTP).
	frontTLS *tls.Config
	// certNodes holds the node IDs this gateway has seen heartbeat with a certificate: the
	// cluster token cannot claim them.
	certNodes sync.Map
	// refusalLogged rate-limits the log lines of refused nodes (key → time.Time).
	refusalLogged sync.Map
	// h2cHosts holds the host:port of loopback agents that speak HTTP/2 without TLS (nil when the
	// transport to agents was given with WithTransport).
	h2cHosts *sync.Map

	// Owned by bulk generation and presets.
	presets   *presets.Book
	batches   *batch.Service
	bulkStore store.Store
	// limiterClose closes the rate limiter's Redis connections (nil in memory).
	limiterClose func() error
}

// Handler returns the gateway's HTTP handler: the routes, with request bodies read under
// BodyReadTimeout, BodyMinRate and BodyMaxDuration, and the per-client cap on requests through
// trusted proxies.
func (s *Server) Handler() http.Handler {
	limits := bodyLimits{idle: s.cfg.BodyReadTimeout, minRate: s.cfg.BodyMinRate, maxDuration: s.cfg.BodyMaxDuration,
		cut: func(reason string) { s.conns.cut.WithLabelValues(reason).Inc() }}
	return s.proxied.wrap(withBodyDeadline(s.engine, limits))
}

// Serve serves on ln until ctx is done, then shuts down gracefully, letting in-flight requests finish.
// Headers must arrive within ReadHeaderTimeout, bodies keep their deadlines (Handler), and idle
// keep-alive connections are closed after IdleTimeout. There is no whole-request ReadTimeout or
// WriteTimeout: a streamed answer may rightly take minutes. ln should be the raw TCP listener
// (TLS, if any, on top of what Serve makes of it): the connection caps count its connections.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	s.logAuth(ln.Addr().String())
	ln = s.conns.listener(ln)
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: s.cfg.ReadHeaderTimeout, IdleTimeout: s.cfg.IdleTimeout}
	errc := make(chan error, 1)
	if s.frontTLS != nil {
		srv.TLSConfig = s.frontTLS
		// ServeTLS adds HTTP/2 to what the handshake offers.
		go func() { errc <- srv.ServeTLS(ln, "", "") }()
	} else {
		go func() { errc <- srv.Serve(ln) }()
	}
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("gateway: shutdown: %w", err)
	}
	return nil
}
