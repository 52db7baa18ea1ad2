package gateway

import (
	"github.com/herd-llm/herd/nodeagent/agentapi"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/herd-llm/herd/gateway/admission"
	"github.com/herd-llm/herd/gateway/registry"
)

// metrics holds the gateway's Prometheus collectors, in a registry of its own (never the global
// default one, so two gateways in one process or test do not collide).
//
// Request metrics are counted as requests finish. Node and GPU gauges are not kept up to date in
// the background: clusterCollector reads the node registry when Prometheus scrapes, so a gauge
// can never lag a heartbeat and a forgotten node's series disappear with it.
type metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	ttft     *prometheus.HistogramVec
	itl      *prometheus.HistogramVec
	tpot     *prometheus.HistogramVec
	prompt   *prometheus.CounterVec
	complete *prometheus.CounterVec
	lines    *prometheus.CounterVec
	batches  *prometheus.CounterVec
	// rateLimited counts 429s for a key over its rate limit, by tenant and limit.
	rateLimited *prometheus.CounterVec
	// tenantTokens counts the tokens charged to each tenant (usage, or the estimate without one).
	tenantTokens *prometheus.CounterVec
	// refused counts heartbeats refused because another live agent holds the node ID.
	refused *prometheus.CounterVec
	// deltas counts delta heartbeats accepted (agentapi.HeartbeatDelta); herd_heartbeats_total
	// counts every heartbeat, full or delta.
	deltas prometheus.Counter
	// continuations counts streams broken mid-way, by what the gateway did (continue.go).
	continuations *prometheus.CounterVec
	// predicted counts the prompt tokens the prefix index expected the serving node to hold.
	predicted *prometheus.CounterVec
}

// itlBuckets resolve the gap between two streamed tokens: a few ms on a fast GPU to a second
// when a node is saturated or swapping.
var itlBuckets = []float64{0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5}

// latencyBuckets span a short completion on a warm model (100 ms) to a long generation or a
// cold load of a big model (10 min): LLM requests are far slower than the usual web buckets.
var latencyBuckets = []float64{0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300, 600}

// ttftBuckets resolve time to first token from a resident model (tens of ms) to one that has to
// be loaded first (tens of seconds).
var ttftBuckets = []float64{0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1, 2, 4, 8, 15, 30, 60}

// newMetrics builds the collectors; reg feeds the per-node and per-GPU gauges, queue the
// gateway's queue gauges, now the nodes' last-seen ages.
// counterVec is a counter family named name with help text help, by labels.
func counterVec(name, help string, labels ...string) *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
}

// histogramVec is a histogram family named name with buckets, by labels.
func histogramVec(name string, buckets []float64, help string, labels ...string) *prometheus.HistogramVec {
	return prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets}, labels)
}

func newMetrics(reg nodeLister, queue queueSource, now func() time.Time) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: counterVec("herd_requests_total",
			"Inference requests finished, by model, serving node (empty when none was reached) and status.",
			"model", "node", "status"),
		duration: histogramVec("herd_request_duration_seconds", latencyBuckets,
			"Time from receiving an inference request to its last byte.",
			"model", "node", "status"),
		ttft: histogramVec("herd_time_to_first_token_seconds", ttftBuckets,
			"Streamed requests only: time from receiving the request to the first event of its answer.",
			"model", "node"),
		itl: histogramVec("herd_inter_token_latency_seconds", itlBuckets,
			"Streamed requests only: gap between consecutive relayed events that carry generated text.",
			"model", "node"),
		tpot: histogramVec("herd_time_per_output_token_seconds", itlBuckets,
			"Streamed requests only: per request, the time from the first to the last text event over the tokens after the first.",
			"model", "node"),
		prompt: counterVec("herd_prompt_tokens_total",
			"Prompt tokens of answered requests, from the answers' usage (streams without usage add none).",
			"model", "node", "tenant"),
		complete: counterVec("herd_completion_tokens_total",
			"Completion tokens of answered requests, from usage (streams without usage: chunks that carried text).",
			"model", "node", "tenant"),
		lines: counterVec("herd_batch_lines_total",
			"Batch lines recorded by this gateway's runner, by outcome (completed, failed).",
			"outcome"),
		batches: counterVec("herd_batches_finished_total",
			"Batches this gateway's runner finished, by final status (completed, failed, cancelled, expired).",
			"status"),
		rateLimited: counterVec("herd_rate_limited_total",
			"Inference requests refused with 429 because the key was over its rate limit, by tenant and limit (requests or tokens).",
			"tenant", "limit"),
		tenantTokens: counterVec("herd_tenant_tokens_total",
			"Tokens charged to keys with a token limit, by tenant: the usage the backend reported, else the prompt estimate.",
			"tenant"),
		predicted: counterVec("herd_prefix_predicted_tokens_total",
			"Prompt tokens of answered requests that this gateway's prefix index expected the serving node's prompt cache to hold (the routing's expectation; herd_prefill_tokens_saved_total is the backends' evidence).",
			"model", "node"),
		refused: counterVec("herd_heartbeats_refused_total",
			"Heartbeats refused (409 node_id_conflict) because another live agent holds the node ID, by node ID.",
			"node"),
		deltas: prometheus.NewCounter(prometheus.CounterOpts{Name: "herd_heartbeat_deltas_total",
			Help: "Delta heartbeats (telemetry only, applied onto the node's last full heartbeat) this gateway accepted."}),
		continuations: counterVec("herd_stream_continuations_total",
			"Streams whose node failed after the first byte, by model, the failed node and outcome: continued (sent to another node to continue), or failed (ended with an error event: continuation off, impossible, or no node left).",
			"model", "node", "outcome"),
	}
	m.reg.MustRegister(
		m.requests, m.duration, m.ttft, m.itl, m.tpot, m.prompt, m.complete, m.lines, m.batches, m.refused, m.deltas,
		m.rateLimited, m.tenantTokens, m.continuations, m.predicted,
		newClusterCollector(reg, queue, now),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// observeRequest records one finished request.
func (m *metrics) observeRequest(model, node, status string, latency time.Duration) {
	m.requests.WithLabelValues(model, node, status).Inc()
	m.duration.WithLabelValues(model, node, status).Observe(latency.Seconds())
}

// observeStream records a streamed request's time to first token and time per output token; a
// zero value (no event reached the client, too few tokens) is not observed.
func (m *metrics) observeStream(model, node string, ttft, tpot time.Duration) {
	if ttft > 0 {
		m.ttft.WithLabelValues(model, node).Observe(ttft.Seconds())
	}
	if tpot > 0 {
		m.tpot.WithLabelValues(model, node).Observe(tpot.Seconds())
	}
}

// observeTokens adds an answered request's tokens.
func (m *metrics) observeTokens(model, node, tenant string, prompt, completion int64) {
	if prompt > 0 {
		m.prompt.WithLabelValues(model, node, tenant).Add(float64(prompt))
	}
	if completion > 0 {
		m.complete.WithLabelValues(model, node, tenant).Add(float64(completion))
	}
}

// observePredicted adds the prompt tokens the prefix index expected the node to hold.
func (m *metrics) observePredicted(model, node string, tokens int) {
	if tokens > 0 {
		m.predicted.WithLabelValues(model, node).Add(float64(tokens))
	}
}

// observeLine counts a recorded batch line.
func (m *metrics) observeLine(failed bool) {
	if failed {
		m.lines.WithLabelValues("failed").Inc()
		return
	}
	m.lines.WithLabelValues("completed").Inc()
}

// observeBatch counts a finished batch.
func (m *metrics) observeBatch(status string) { m.batches.WithLabelValues(status).Inc() }

// handler serves the metrics in the Prometheus exposition format.
func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// nodeLister is what clusterCollector needs of the registry.
type nodeLister interface {
	Nodes() []registry.NodeView
}

var _ nodeLister = (*registry.Registry)(nil)

// queueSource is what clusterCollector needs of admission: the requests waiting in the gateway.
type queueSource interface {
	QueueDepths() []admission.QueueDepth
}

var _ queueSource = (*admission.Admission)(nil)

// clusterCollector turns the registry's nodes and the gateway's queue into gauges at scrape time.
type clusterCollector struct {
	nodes nodeLister
	queue queueSource
	now   func() time.Time

	nodeLastSeen, queueDepthDesc, queueCapacity *prometheus.Desc

	gpuUtil, gpuMemUsed, gpuMemTotal, gpuTemp, gpuPower, gpuPowerLimit, gpuHealthy, gpuThrottled *prometheus.Desc
	modelResident, nodeInFlight, nodeQueued, nodeUp, nodeDraining, nodeHealthy, nodeCircuitOpen  *prometheus.Desc
	hitRatio, tokensSaved, promptServed                                                          *prometheus.Desc
}

var _ prometheus.Collector = (*clusterCollector)(nil)

func newClusterCollector(nodes nodeLister, queue queueSource, now func() time.Time) *clusterCollector {
	gpuLabels := []string{"node", "gpu", "name", "simulated"}
	gpu := func(name, help string) *prometheus.Desc { return prometheus.NewDesc(name, help, gpuLabels, nil) }
	nodeDesc := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, []string{"node"}, nil)
	}
	return &clusterCollector{
		nodes: nodes,
		queue: queue,
		now:   now,
		nodeLastSeen: nodeDesc("herd_node_last_seen_seconds",
			"Seconds since the node's last heartbeat reached this gateway; its other figures are that old."),
		queueDepthDesc: prometheus.NewDesc("herd_gateway_queue_depth",
			"Requests waiting in this gateway for a node, by model and class (interactive, batch).", []string{"model", "class"}, nil),
		queueCapacity: prometheus.NewDesc("herd_gateway_queue_capacity",
			"How many requests of a model and class may wait in this gateway before it answers 429 queue_full.", []string{"model", "class"}, nil),
		gpuUtil:       gpu("herd_gpu_utilization_ratio", "GPU utilisation in [0,1] from the node's last heartbeat."),
		gpuMemUsed:    gpu("herd_gpu_memory_used_bytes", "GPU memory in use."),
		gpuMemTotal:   gpu("herd_gpu_memory_total_bytes", "GPU memory size."),
		gpuTemp:       gpu("herd_gpu_temperature_celsius", "GPU temperature."),
		gpuPower:      gpu("herd_gpu_power_watts", "GPU power draw."),
		gpuPowerLimit: gpu("herd_gpu_power_limit_watts", "GPU power limit."),
		gpuHealthy:    gpu("herd_gpu_healthy", "1 when the GPU is healthy (no uncorrectable ECC error, XID event or thermal failure)."),
		gpuThrottled:  gpu("herd_gpu_throttled", "1 when the GPU is in thermal or power slowdown."),
		modelResident: prometheus.NewDesc("herd_model_resident",
			"1 when the model is loaded in memory on the node, 0 when it is only on disk.", []string{"node", "model"}, nil),
		nodeInFlight:    nodeDesc("herd_node_in_flight", "Requests in flight on the node as the scheduler counts them: this gateway's own plus the other gateways' work its last heartbeat reported."),
		nodeQueued:      nodeDesc("herd_node_queued", "Requests waiting for a slot on the node, as the scheduler counts them."),
		nodeUp:          nodeDesc("herd_node_up", "1 while the node's heartbeat is fresh, 0 once it is stale."),
		nodeDraining:    nodeDesc("herd_node_draining", "1 when an operator drained the node."),
		nodeHealthy:     nodeDesc("herd_node_healthy", "1 when every GPU of the node is healthy."),
		nodeCircuitOpen: nodeDesc("herd_node_circuit_open", "1 when the node's circuit breaker is open or half-open."),
		hitRatio: nodeDesc("herd_prefix_cache_hit_ratio",
			"Of the prompt tokens the node served since its agent started, the part its engine's prompt cache held (cached_tokens where the backend reports them, else estimated from prefill time)."),
		tokensSaved: nodeDesc("herd_prefill_tokens_saved_total",
			"Prompt tokens the node's engine did not evaluate again because its prompt cache held them, since its agent started (the agent's count, as its heartbeat reports it)."),
		promptServed: nodeDesc("herd_node_prompt_tokens_total",
			"Prompt tokens the node served since its agent started (the agent's count): the denominator of herd_prefix_cache_hit_ratio."),
	}
}

// Describe implements prometheus.Collector.
func (c *clusterCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		c.gpuUtil, c.gpuMemUsed, c.gpuMemTotal, c.gpuTemp, c.gpuPower, c.gpuPowerLimit, c.gpuHealthy, c.gpuThrottled,
		c.modelResident, c.nodeInFlight, c.nodeQueued, c.nodeUp, c.nodeDraining, c.nodeHealthy, c.nodeCircuitOpen,
		c.nodeLastSeen, c.queueDepthDesc, c.queueCapacity, c.hitRatio, c.tokensSaved, c.promptServed,
	} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *clusterCollector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		// A label that is not valid UTF-8 (only possible from a caller bypassing JSON decoding)
		// loses that one series rather than the whole scrape.
		if m, err := prometheus.NewConstMetric(d, prometheus.GaugeValue, v, labels...); err == nil {
			ch <- m
		}
	}
	if c.queue != nil {
		for _, q := range c.queue.QueueDepths() {
			gauge(c.queueDepthDesc, float64(q.Waiting), q.Model, q.Class)
			gauge(c.queueCapacity, float64(q.Capacity), q.Model, q.Class)
		}
	}
	now := time.Now()
	if c.now != nil {
		now = c.now()
	}
	for _, n := range c.nodes.Nodes() {
		hb := &n.Heartbeat
		id := hb.NodeID
		gauge(c.nodeLastSeen, max(0, now.Sub(n.LastHeartbeat).Seconds()), id)
		for _, g := range hb.GPUs {
			l := []string{id, strconv.Itoa(g.Index), g.Name, strconv.FormatBool(g.Simulated || hb.Simulated)}
			gauge(c.gpuUtil, g.UtilizationRatio, l...)
			gauge(c.gpuMemUsed, float64(g.MemoryUsedBytes), l...)
			gauge(c.gpuMemTotal, float64(g.MemoryTotalBytes), l...)
			gauge(c.gpuTemp, g.TemperatureCelsius, l...)
			gauge(c.gpuPower, g.PowerWatts, l...)
			gauge(c.gpuPowerLimit, g.PowerLimitWatts, l...)
			gauge(c.gpuHealthy, boolGauge(g.Healthy), l...)
			throttled := false
			for _, t := range g.ThrottleReasons {
				throttled = throttled || registry.IsThrottling(t)
			}
			gauge(c.gpuThrottled, boolGauge(throttled), l...)
		}
		// Names are normalised as the scheduler sees them; two spellings of one model ("llama3",
		// "llama3:latest") become one series, resident if either is.
		resident := make(map[string]bool, len(hb.Models))
		for _, m := range hb.Models {
			name := registry.ModelName(hb.Backend, m.Name)
			resident[name] = resident[name] || m.Resident
		}
		for name, r := range resident {
			gauge(c.modelResident, boolGauge(r), id, name)
		}
		gauge(c.nodeInFlight, float64(n.InFlight), id)
		gauge(c.nodeQueued, float64(n.Queued), id)
		gauge(c.nodeUp, boolGauge(!n.Stale), id)
		gauge(c.nodeDraining, boolGauge(n.Draining), id)
		gauge(c.nodeHealthy, boolGauge(n.Healthy), id)
		gauge(c.nodeCircuitOpen, boolGauge(n.Circuit != registry.CircuitClosed), id)
		if prompt, cached := promptCacheTokens(hb); prompt > 0 {
			gauge(c.hitRatio, float64(cached)/float64(prompt), id)
			if m, err := prometheus.NewConstMetric(c.tokensSaved, prometheus.CounterValue, float64(cached), id); err == nil {
				ch <- m
			}
			if m, err := prometheus.NewConstMetric(c.promptServed, prometheus.CounterValue, float64(prompt), id); err == nil {
				ch <- m
			}
		}
	}
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// promptCacheTokens sums the prompt tokens a node's agent served and the part its engine's
// cache held, over its models, as its heartbeat reports them.
func promptCacheTokens(hb *agentapi.Heartbeat) (prompt, cached int64) {
	for _, m := range hb.Models {
		prompt += m.PromptTokens
		cached += m.CachedPromptTokens
	}
	return prompt, cached
}
