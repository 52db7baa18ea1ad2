package gateway

import (
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/herd-llm/herd/gateway/admission"
	"github.com/herd-llm/herd/gateway/registry"
	"github.com/herd-llm/herd/nodeagent/agentapi"
)

// clusterWriter writes the per-node, per-GPU and queue series straight to a /metrics response in
// the Prometheus text exposition format (0.0.4), from the registry's nodes at scrape time.
//
// Why not a prometheus.Collector: at 1,000 nodes these are about 84,000 series, and a collector's
// const metrics are gathered into dto.MetricFamily values, every one of them held at once before
// the first byte is written (68 MB in 1.5 million allocations a scrape, BenchmarkMetricsScrapeFleet),
// which set the gateway's peak heap and so its RSS. Written here family by family over one view of
// the nodes, a scrape holds that view and a buffer of flushSize bytes. The series, their labels and
// values are the ones the collector exported (TestClusterWriterMatchesCollector compares them).
type clusterWriter struct {
	nodes nodeLister
	queue queueSource
	now   func() time.Time
	// families, sorted by name as the registry's own are, each written whole before the next
	// (the text format wants a family's samples together, after its one HELP and TYPE line).
	families []clusterFamily
}

// clusterFamily is one metric family of the cluster series.
type clusterFamily struct {
	name, help, typ string
	// Exactly one of gpu, node, model and queue says what the family has a sample for: gpu,
	// node and queue give the sample's value (node's false: this node has none), model marks
	// herd_model_resident (one sample per model of a node).
	gpu   func(g *gpuView) float64
	node  func(n *nodeView) (float64, bool)
	model bool
	queue func(q *admission.QueueDepth) float64
}

// nodeView is what a node's samples are computed from, worked out once per node per scrape.
type nodeView struct {
	*registry.NodeView
	age            float64
	prompt, cached int64
}

// gpuView is one GPU of a node.
type gpuView struct {
	n                                                *nodeView
	name                                             string
	index                                            int
	util, memUsed, memTotal, temp, power, powerLimit float64
	simulated, healthy, throttled                    bool
}

// flushSize is how much of the response the writer gathers before handing it to the connection.
const flushSize = 32 << 10

func newClusterWriter(nodes nodeLister, queue queueSource, now func() time.Time) *clusterWriter {
	gpu := func(name, help string, v func(g *gpuView) float64) clusterFamily {
		return clusterFamily{name: name, help: help, typ: "gauge", gpu: v}
	}
	node := func(name, help string, v func(n *nodeView) float64) clusterFamily {
		return clusterFamily{name: name, help: help, typ: "gauge", node: func(n *nodeView) (float64, bool) { return v(n), true }}
	}
	// The prompt-cache series exist only for nodes that served prompt tokens.
	cache := func(name, help, typ string, v func(n *nodeView) float64) clusterFamily {
		return clusterFamily{name: name, help: help, typ: typ, node: func(n *nodeView) (float64, bool) { return v(n), n.prompt > 0 }}
	}
	fams := []clusterFamily{
		node("herd_node_last_seen_seconds",
			"Seconds since the node's last heartbeat reached this gateway; its other figures are that old.",
			func(n *nodeView) float64 { return n.age }),
		{name: "herd_gateway_queue_depth", typ: "gauge",
			help:  "Requests waiting in this gateway for a node, by model and class (interactive, batch).",
			queue: func(q *admission.QueueDepth) float64 { return float64(q.Waiting) }},
		{name: "herd_gateway_queue_capacity", typ: "gauge",
			help:  "How many requests of a model and class may wait in this gateway before it answers 429 queue_full.",
			queue: func(q *admission.QueueDepth) float64 { return float64(q.Capacity) }},
		gpu("herd_gpu_utilization_ratio", "GPU utilisation in [0,1] from the node's last heartbeat.", func(g *gpuView) float64 { return g.util }),
		gpu("herd_gpu_memory_used_bytes", "GPU memory in use.", func(g *gpuView) float64 { return g.memUsed }),
		gpu("herd_gpu_memory_total_bytes", "GPU memory size.", func(g *gpuView) float64 { return g.memTotal }),
		gpu("herd_gpu_temperature_celsius", "GPU temperature.", func(g *gpuView) float64 { return g.temp }),
		gpu("herd_gpu_power_watts", "GPU power draw.", func(g *gpuView) float64 { return g.power }),
		gpu("herd_gpu_power_limit_watts", "GPU power limit.", func(g *gpuView) float64 { return g.powerLimit }),
		gpu("herd_gpu_healthy", "1 when the GPU is healthy (no uncorrectable ECC error, XID event or thermal failure).",
			func(g *gpuView) float64 { return boolGauge(g.healthy) }),
		gpu("herd_gpu_throttled", "1 when the GPU is in thermal or power slowdown.", func(g *gpuView) float64 { return boolGauge(g.throttled) }),
		{name: "herd_model_resident", typ: "gauge", model: true,
			help: "1 when the model is loaded in memory on the node, 0 when it is only on disk."},
		node("herd_node_in_flight", "Requests in flight on the node as the scheduler counts them: this gateway's own plus the other gateways' work its last heartbeat reported.",
			func(n *nodeView) float64 { return float64(n.InFlight) }),
		node("herd_node_queued", "Requests waiting for a slot on the node, as the scheduler counts them.",
			func(n *nodeView) float64 { return float64(n.Queued) }),
		node("herd_node_up", "1 while the node's heartbeat is fresh, 0 once it is stale.", func(n *nodeView) float64 { return boolGauge(!n.Stale) }),
		node("herd_node_draining", "1 when an operator drained the node.", func(n *nodeView) float64 { return boolGauge(n.Draining) }),
		node("herd_node_healthy", "1 when every GPU of the node is healthy.", func(n *nodeView) float64 { return boolGauge(n.Healthy) }),
		node("herd_node_circuit_open", "1 when the node's circuit breaker is open or half-open.",
			func(n *nodeView) float64 { return boolGauge(n.Circuit != registry.CircuitClosed) }),
		cache("herd_prefix_cache_hit_ratio",
			"Of the prompt tokens the node served since its agent started, the part its engine's prompt cache held (cached_tokens where the backend reports them, else estimated from prefill time).",
			"gauge", func(n *nodeView) float64 { return float64(n.cached) / float64(n.prompt) }),
		cache("herd_prefill_tokens_saved_total",
			"Prompt tokens the node's engine did not evaluate again because its prompt cache held them, since its agent started (the agent's count, as its heartbeat reports it).",
			"counter", func(n *nodeView) float64 { return float64(n.cached) }),
		cache("herd_node_prompt_tokens_total",
			"Prompt tokens the node served since its agent started (the agent's count): the denominator of herd_prefix_cache_hit_ratio.",
			"counter", func(n *nodeView) float64 { return float64(n.prompt) }),
	}
	slices.SortFunc(fams, func(a, b clusterFamily) int { return strings.Compare(a.name, b.name) })
	return &clusterWriter{nodes: nodes, queue: queue, now: now, families: fams}
}

// write writes every cluster family to w, gathering up to flushSize bytes in buf (returned, to
// be reused) between writes.
func (c *clusterWriter) write(w io.Writer, buf []byte) ([]byte, error) {
	now := time.Now()
	if c.now != nil {
		now = c.now()
	}
	views := c.nodes.Nodes()
	nodes := make([]nodeView, len(views))
	gpus := 0
	for i := range views {
		n := &views[i]
		prompt, cached := promptCacheTokens(&n.Heartbeat)
		nodes[i] = nodeView{NodeView: n, age: max(0, now.Sub(n.LastHeartbeat).Seconds()), prompt: prompt, cached: cached}
		gpus += len(n.Heartbeat.GPUs)
	}
	// A label value that is not valid UTF-8 (only possible from a caller bypassing JSON
	// decoding) loses its series rather than the whole scrape, as the collector's did.
	gpuList := make([]gpuView, 0, gpus)
	for i := range nodes {
		n := &nodes[i]
		if !utf8.ValidString(n.Heartbeat.NodeID) {
			continue
		}
		for _, g := range n.Heartbeat.GPUs {
			if !utf8.ValidString(g.Name) {
				continue
			}
			throttled := false
			for _, t := range g.ThrottleReasons {
				throttled = throttled || registry.IsThrottling(t)
			}
			gpuList = append(gpuList, gpuView{n: n, index: g.Index, name: g.Name, simulated: g.Simulated || n.Heartbeat.Simulated,
				healthy: g.Healthy, throttled: throttled, util: g.UtilizationRatio, memUsed: float64(g.MemoryUsedBytes),
				memTotal: float64(g.MemoryTotalBytes), temp: g.TemperatureCelsius, power: g.PowerWatts, powerLimit: g.PowerLimitWatts})
		}
	}
	var queues []admission.QueueDepth
	if c.queue != nil {
		queues = c.queue.QueueDepths()
	}
	flushes := 0
	flush := func() error {
		if len(buf) < flushSize {
			return nil
		}
		flushes++
		_, err := w.Write(buf)
		buf = buf[:0]
		return err
	}
	var models []residentModel
	for i := range c.families {
		f := &c.families[i]
		// A family without samples is left out, as a gathered one is: its header is taken back.
		header := len(buf)
		buf = appendFamilyHeader(buf, f.name, f.help, f.typ)
		body, flushed := len(buf), flushes
		switch {
		case f.gpu != nil:
			for j := range gpuList {
				g := &gpuList[j]
				v := f.gpu(g)
				buf = append(buf, f.name...)
				buf = append(buf, `{gpu="`...)
				buf = strconv.AppendInt(buf, int64(g.index), 10)
				buf = appendLabel(buf, `",name="`, g.name)
				buf = appendLabel(buf, `",node="`, g.n.Heartbeat.NodeID)
				buf = append(buf, `",simulated="`...)
				buf = strconv.AppendBool(buf, g.simulated)
				buf = append(buf, `"} `...)
				buf = appendValue(buf, v)
				if err := flush(); err != nil {
					return buf, err
				}
			}
		case f.node != nil:
			for j := range nodes {
				n := &nodes[j]
				v, ok := f.node(n)
				if !ok || !utf8.ValidString(n.Heartbeat.NodeID) {
					continue
				}
				buf = append(buf, f.name...)
				buf = appendLabel(buf, `{node="`, n.Heartbeat.NodeID)
				buf = append(buf, `"} `...)
				buf = appendValue(buf, v)
				if err := flush(); err != nil {
					return buf, err
				}
			}
		case f.model:
			for j := range nodes {
				n := &nodes[j]
				if !utf8.ValidString(n.Heartbeat.NodeID) {
					continue
				}
				models = residentModels(models[:0], n.Heartbeat.Backend, n.Heartbeat.Models)
				for _, m := range models {
					if !utf8.ValidString(m.name) {
						continue
					}
					buf = append(buf, f.name...)
					buf = appendLabel(buf, `{model="`, m.name)
					buf = appendLabel(buf, `",node="`, n.Heartbeat.NodeID)
					buf = append(buf, `"} `...)
					buf = appendValue(buf, boolGauge(m.resident))
				}
				if err := flush(); err != nil {
					return buf, err
				}
			}
		case f.queue != nil:
			for j := range queues {
				q := &queues[j]
				if !utf8.ValidString(q.Model) || !utf8.ValidString(q.Class) {
					continue
				}
				buf = append(buf, f.name...)
				buf = appendLabel(buf, `{class="`, q.Class)
				buf = appendLabel(buf, `",model="`, q.Model)
				buf = append(buf, `"} `...)
				buf = appendValue(buf, f.queue(q))
			}
		}
		if flushes == flushed && len(buf) == body {
			buf = buf[:header]
		}
	}
	if len(buf) > 0 {
		_, err := w.Write(buf)
		return buf[:0], err
	}
	return buf, nil
}

// residentModel is one model of a node, as herd_model_resident exports it.
type residentModel struct {
	name     string
	resident bool
}

// residentModels appends a node's models to dst, their names normalised as the scheduler sees
// them and sorted; two spellings of one model ("llama3", "llama3:latest") become one entry,
// resident if either is.
func residentModels(dst []residentModel, backend string, models []agentapi.Model) []residentModel {
	start := len(dst)
	for _, m := range models {
		dst = append(dst, residentModel{name: registry.ModelName(backend, m.Name), resident: m.Resident})
	}
	list := dst[start:]
	slices.SortFunc(list, func(a, b residentModel) int { return strings.Compare(a.name, b.name) })
	out := list[:0]
	for _, m := range list {
		if k := len(out) - 1; k >= 0 && out[k].name == m.name {
			out[k].resident = out[k].resident || m.resident
			continue
		}
		out = append(out, m)
	}
	return dst[:start+len(out)]
}

// appendFamilyHeader appends a family's HELP and TYPE lines.
func appendFamilyHeader(b []byte, name, help, typ string) []byte {
	b = append(b, "# HELP "...)
	b = append(b, name...)
	b = append(b, ' ')
	for i := 0; i < len(help); i++ {
		switch help[i] {
		case '\\':
			b = append(b, `\\`...)
		case '\n':
			b = append(b, `\n`...)
		default:
			b = append(b, help[i])
		}
	}
	b = append(b, "\n# TYPE "...)
	b = append(b, name...)
	b = append(b, ' ')
	b = append(b, typ...)
	return append(b, '\n')
}

// appendLabel appends prefix and then a label value escaped as the text format wants it:
// backslash, double quote and line feed behind a backslash.
func appendLabel(b []byte, prefix, value string) []byte {
	b = append(b, prefix...)
	for i := 0; i < len(value); i++ {
		switch c := value[i]; c {
		case '\\':
			b = append(b, `\\`...)
		case '"':
			b = append(b, `\"`...)
		case '\n':
			b = append(b, `\n`...)
		default:
			b = append(b, c)
		}
	}
	return b
}

// appendValue appends a sample's value and the line's end, spelled as expfmt spells it.
func appendValue(b []byte, v float64) []byte {
	switch {
	case v == 1:
		b = append(b, '1')
	case v == 0:
		b = append(b, '0')
	case v == -1:
		b = append(b, "-1"...)
	case math.IsNaN(v):
		b = append(b, "NaN"...)
	case math.IsInf(v, +1):
		b = append(b, "+Inf"...)
	case math.IsInf(v, -1):
		b = append(b, "-Inf"...)
	default:
		b = strconv.AppendFloat(b, v, 'g', -1, 64)
	}
	return append(b, '\n')
}
