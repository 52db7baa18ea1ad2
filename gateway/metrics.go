package gateway

import (
	"bufio"
	"compress/gzip"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/common/expfmt"

	"github.com/herd-llm/herd/gateway/admission"
	"github.com/herd-llm/herd/gateway/registry"
	"github.com/herd-llm/herd/nodeagent/agentapi"
)

// metrics holds the gateway's Prometheus collectors, in a registry of its own (never the global
// default one, so two gateways in one process or test do not collide).
//
// Request metrics are counted as requests finish. Node and GPU gauges are not kept up to date in
// the background: clusterWriter reads the node registry when Prometheus scrapes, so a gauge
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
	// cluster writes the node, GPU and queue series, which are not in reg (clusterWriter).
	cluster *clusterWriter
	// scrapeErrors counts scrapes that failed, by cause (gathering, encoding), under the name
	// promhttp's handler gave it before this handler replaced promhttp's.
	scrapeErrors *prometheus.CounterVec
	// buffers and gzips are reused across scrapes: a scrape at 1,000 nodes writes ~7 MB.
	buffers, gzips sync.Pool
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
		cluster: newClusterWriter(reg, queue, now),
		scrapeErrors: counterVec("promhttp_metric_handler_errors_total",
			"Total number of internal errors encountered by the promhttp metric handler.",
			"cause"),
		deltas: prometheus.NewCounter(prometheus.CounterOpts{Name: "herd_heartbeat_deltas_total",
			Help: "Delta heartbeats (telemetry only, applied onto the node's last full heartbeat) this gateway accepted."}),
		continuations: counterVec("herd_stream_continuations_total",
			"Streams whose node failed after the first byte, by model, the failed node and outcome: continued (sent to another node to continue), or failed (ended with an error event: continuation off, impossible, or no node left).",
			"model", "node", "outcome"),
	}
	m.reg.MustRegister(
		m.requests, m.duration, m.ttft, m.itl, m.tpot, m.prompt, m.complete, m.lines, m.batches, m.refused, m.deltas,
		m.rateLimited, m.tenantTokens, m.continuations, m.predicted, m.scrapeErrors,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	m.scrapeErrors.WithLabelValues("gathering")
	m.scrapeErrors.WithLabelValues("encoding")
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

// handler serves the metrics in the Prometheus text exposition format (0.0.4), gzipped when the
// client accepts it, whatever format the Accept header prefers: every Prometheus server accepts
// text, and these series lose nothing in it (classic histograms, no exemplars). The registry's
// families are gathered and encoded by expfmt as client_golang does; the cluster's are written
// after them by clusterWriter, without gathering.
func (m *metrics) handler() http.Handler { return http.HandlerFunc(m.serveMetrics) }

// serveMetrics answers one scrape. An error after the first byte cannot change the status any
// more: it is counted (promhttp_metric_handler_errors_total{cause="encoding"}) and the answer cut.
func (m *metrics) serveMetrics(w http.ResponseWriter, r *http.Request) {
	mfs, err := m.reg.Gather()
	if err != nil {
		m.scrapeErrors.WithLabelValues("gathering").Inc()
		http.Error(w, "An error has occurred while gathering metrics:\n\n"+err.Error(), http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", string(expfmt.NewFormat(expfmt.TypeTextPlain)))
	h.Add("Vary", "Accept-Encoding")
	var out io.Writer = w
	if acceptsGzip(r.Header.Values("Accept-Encoding")) {
		h.Set("Content-Encoding", "gzip")
		zw, _ := m.gzips.Get().(*gzip.Writer)
		if zw == nil {
			zw = gzip.NewWriter(w)
		} else {
			zw.Reset(w)
		}
		defer func() {
			if err := zw.Close(); err != nil {
				m.scrapeErrors.WithLabelValues("encoding").Inc()
			}
			m.gzips.Put(zw)
		}()
		out = zw
	}
	bw := bufio.NewWriterSize(out, flushSize)
	for _, mf := range mfs {
		if _, err := expfmt.MetricFamilyToText(bw, mf); err != nil {
			m.scrapeErrors.WithLabelValues("encoding").Inc()
			return
		}
	}
	if err := bw.Flush(); err != nil {
		m.scrapeErrors.WithLabelValues("encoding").Inc()
		return
	}
	buf, _ := m.buffers.Get().(*[]byte)
	if buf == nil {
		buf = new([]byte)
	}
	*buf, err = m.cluster.write(out, (*buf)[:0])
	m.buffers.Put(buf)
	if err != nil {
		m.scrapeErrors.WithLabelValues("encoding").Inc()
	}
}

// acceptsGzip reports whether Accept-Encoding values name gzip with a quality above zero.
func acceptsGzip(values []string) bool {
	for _, v := range values {
		for part := range strings.SplitSeq(v, ",") {
			coding, params, _ := strings.Cut(part, ";")
			if !strings.EqualFold(strings.TrimSpace(coding), "gzip") {
				continue
			}
			q := strings.ReplaceAll(strings.TrimSpace(params), " ", "")
			return q != "q=0" && q != "q=0.0" && q != "q=0.00" && q != "q=0.000"
		}
	}
	return false
}

// nodeLister is what clusterWriter needs of the registry.
type nodeLister interface {
	Nodes() []registry.NodeView
}

var _ nodeLister = (*registry.Registry)(nil)

// queueSource is what clusterWriter needs of admission: the requests waiting in the gateway.
type queueSource interface {
	QueueDepths() []admission.QueueDepth
}

var _ queueSource = (*admission.Admission)(nil)

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
