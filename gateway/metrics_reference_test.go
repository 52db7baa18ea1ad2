package gateway

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/herd-llm/herd/gateway/registry"
)

// The cluster series as the gateway produced them before clusterWriter: const metrics that
// client_golang gathers and encodes. Kept in the tests as the reference the direct writer's
// samples are compared with (TestClusterWriterMatchesCollector).

// refClusterCollector turned the registry's nodes and the gateway's queue into gauges at scrape time.
type refClusterCollector struct {
	nodes nodeLister
	queue queueSource
	now   func() time.Time

	nodeLastSeen, queueDepthDesc, queueCapacity *prometheus.Desc

	gpuUtil, gpuMemUsed, gpuMemTotal, gpuTemp, gpuPower, gpuPowerLimit, gpuHealthy, gpuThrottled *prometheus.Desc
	modelResident, nodeInFlight, nodeQueued, nodeUp, nodeDraining, nodeHealthy, nodeCircuitOpen  *prometheus.Desc
	hitRatio, tokensSaved, promptServed                                                          *prometheus.Desc
}

var _ prometheus.Collector = (*refClusterCollector)(nil)

func newRefClusterCollector(nodes nodeLister, queue queueSource, now func() time.Time) *refClusterCollector {
	gpuLabels := []string{"node", "gpu", "name", "simulated"}
	gpu := func(name, help string) *prometheus.Desc { return prometheus.NewDesc(name, help, gpuLabels, nil) }
	nodeDesc := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, []string{"node"}, nil)
	}
	return &refClusterCollector{
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
func (c *refClusterCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		c.gpuUtil, c.gpuMemUsed, c.gpuMemTotal, c.gpuTemp, c.gpuPower, c.gpuPowerLimit, c.gpuHealthy, c.gpuThrottled,
		c.modelResident, c.nodeInFlight, c.nodeQueued, c.nodeUp, c.nodeDraining, c.nodeHealthy, c.nodeCircuitOpen,
		c.nodeLastSeen, c.queueDepthDesc, c.queueCapacity, c.hitRatio, c.tokensSaved, c.promptServed,
	} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *refClusterCollector) Collect(ch chan<- prometheus.Metric) {
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
