package gateway

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/herd-llm/herd/gateway/registry"
	"github.com/herd-llm/herd/scheduler"
)

// History is a small in-process ring buffer of cluster samples (by default one every 5 s for the
// last 10 minutes) that the dashboard draws its charts from, so an operator sees the recent past
// without Prometheus. Decisions:
//   - A sample is what the registry and admission say at that instant: per node the mean GPU
//     utilisation, VRAM used and total, power drawn over its GPUs, whether its heartbeat was fresh;
//     for the cluster the completion tokens per second this gateway relayed since the previous
//     sample and the requests waiting in the gateway by class.
//   - A node that is down is recorded as down with no figures, so a chart shows a gap rather than
//     its last figures carried forward as if current.
//   - It is this gateway's view: with several gateways each keeps its own (tokens per second then
//     counts only the tokens this one relayed). Prometheus is the place for long or merged history.

// maxHistorySamples bounds the ring (its memory, and the size of one /admin/v1/history answer).
const maxHistorySamples = 4096

// historySample is one point of the history.
type historySample struct {
	Time time.Time `json:"time"`
	// TokensPerSecond is the completion tokens per second this gateway relayed since the last sample.
	TokensPerSecond float64 `json:"tokens_per_second"`
	// QueuedInteractive and QueuedBatch are the requests waiting in the gateway.
	QueuedInteractive int `json:"queued_interactive"`
	QueuedBatch       int `json:"queued_batch"`
	// InFlight is the requests in flight on all nodes.
	InFlight int                `json:"in_flight"`
	Nodes    []historyNodePoint `json:"nodes"`
}

// historyNodePoint is one node in a sample. The figures are absent when the node was down.
type historyNodePoint struct {
	ID        string   `json:"id"`
	Up        bool     `json:"up"`
	Simulated bool     `json:"simulated"`
	GPUUtil   *float64 `json:"gpu_utilization_ratio,omitempty"`
	VRAMUsed  *uint64  `json:"memory_used_bytes,omitempty"`
	VRAMTotal *uint64  `json:"memory_total_bytes,omitempty"`
	PowerW    *float64 `json:"power_watts,omitempty"`
}

// historyBody is GET /admin/v1/history.
type historyBody struct {
	IntervalSeconds float64         `json:"interval_seconds"`
	WindowSeconds   float64         `json:"window_seconds"`
	Samples         []historySample `json:"samples"`
}

// history keeps the last len(ring) samples.
type history struct {
	interval time.Duration
	// tokens counts the completion tokens relayed (all requests); sample turns it into a rate.
	tokens atomic.Int64

	mu         sync.Mutex
	ring       []historySample
	next, n    int
	lastTokens int64
	lastTime   time.Time
}

func newHistory(interval, window time.Duration) *history {
	size := max(int(window/interval), 1)
	return &history{interval: interval, ring: make([]historySample, size)}
}

// addTokens counts completion tokens relayed to a client.
func (h *history) addTokens(n int64) {
	if n > 0 {
		h.tokens.Add(n)
	}
}

// sample records the cluster as nodes and queue show it at now.
func (h *history) sample(now time.Time, nodes []registry.NodeView, queue []queueDepth) {
	s := historySample{Time: now.UTC(), Nodes: make([]historyNodePoint, 0, len(nodes))}
	for _, q := range queue {
		if q.Class == scheduler.ClassBatch {
			s.QueuedBatch += q.Waiting
		} else {
			s.QueuedInteractive += q.Waiting
		}
	}
	for _, v := range nodes {
		hb := &v.Heartbeat
		p := historyNodePoint{ID: hb.NodeID, Up: !v.Stale, Simulated: hb.Simulated}
		if p.Up {
			s.InFlight += max(hb.InFlight, v.GatewayInFlight)
			if len(hb.GPUs) > 0 {
				var util, power float64
				var used, total uint64
				for _, g := range hb.GPUs {
					util += g.UtilizationRatio
					power += g.PowerWatts
					used += g.MemoryUsedBytes
					total += g.MemoryTotalBytes
					p.Simulated = p.Simulated || g.Simulated
				}
				util /= float64(len(hb.GPUs))
				p.GPUUtil, p.PowerW, p.VRAMUsed, p.VRAMTotal = &util, &power, &used, &total
			}
		}
		s.Nodes = append(s.Nodes, p)
	}
	tokens := h.tokens.Load()
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.lastTime.IsZero() {
		if d := now.Sub(h.lastTime).Seconds(); d > 0 {
			s.TokensPerSecond = float64(tokens-h.lastTokens) / d
		}
	}
	h.lastTokens, h.lastTime = tokens, now
	h.ring[h.next] = s
	h.next = (h.next + 1) % len(h.ring)
	h.n = min(h.n+1, len(h.ring))
}

// samples returns the recorded samples, oldest first.
func (h *history) samples() []historySample {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]historySample, 0, h.n)
	start := (h.next - h.n + len(h.ring)) % len(h.ring)
	for i := range h.n {
		out = append(out, h.ring[(start+i)%len(h.ring)])
	}
	return out
}

// body is the admin API's answer.
func (h *history) body() historyBody {
	return historyBody{
		IntervalSeconds: h.interval.Seconds(),
		WindowSeconds:   (time.Duration(len(h.ring)) * h.interval).Seconds(),
		Samples:         h.samples(),
	}
}

// recordHistory samples the cluster every interval until ctx is done, starting at once.
func (s *Server) recordHistory(ctx context.Context) {
	take := func() { s.history.sample(s.core.clock.Now(), s.registry.Nodes(), s.core.adm.queueDepths()) }
	take()
	t := time.NewTicker(s.history.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			take()
		}
	}
}
