// Package history is a small in-process ring buffer of cluster samples (by default one every 5 s
// for the last 10 minutes) that the dashboard draws its charts from, so an operator sees the
// recent past without Prometheus. Decisions:
//   - A sample is what the registry and admission say at that instant: per node the mean GPU
//     utilisation, VRAM used and total and power drawn over its GPUs, and whether its heartbeat
//     was fresh; for the cluster the completion tokens per second the gateway relayed since the
//     previous sample and the requests waiting in the gateway by class.
//   - A node that is not up is recorded with no figures, so a chart shows a gap rather than its
//     last figures carried forward as if current.
//   - It is one gateway's view: with several gateways each keeps its own (tokens per second then
//     counts only the tokens that one relayed). Prometheus is the place for long or merged history.
package history

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/herd-llm/herd/gateway/admission"
	"github.com/herd-llm/herd/gateway/api"
	"github.com/herd-llm/herd/gateway/registry"
	"github.com/herd-llm/herd/scheduler"
)

// MaxSamples bounds the ring (its memory, and the size of one /admin/v1/history answer).
const MaxSamples = 4096

// Ring keeps the last window/interval samples. Its methods are safe for concurrent use.
type Ring struct {
	interval time.Duration
	// tokens counts the completion tokens relayed; Sample turns it into a rate.
	tokens atomic.Int64

	mu         sync.Mutex
	ring       []api.HistorySample
	next, n    int
	lastTokens int64
	lastTime   time.Time
}

// New returns a ring of one sample per interval over window (at least one sample).
func New(interval, window time.Duration) *Ring {
	size := 1
	if interval > 0 {
		size = min(max(int(window/interval), 1), MaxSamples)
	}
	return &Ring{interval: interval, ring: make([]api.HistorySample, size)}
}

// Interval is how often the ring expects a sample.
func (r *Ring) Interval() time.Duration { return r.interval }

// AddTokens counts completion tokens relayed to a client.
func (r *Ring) AddTokens(n int64) {
	if n > 0 {
		r.tokens.Add(n)
	}
}

// Sample records the cluster as nodes and queue show it at now.
func (r *Ring) Sample(now time.Time, nodes []registry.NodeView, queue []admission.QueueDepth) {
	s := api.HistorySample{Time: now.UTC(), Nodes: make([]api.HistoryNodePoint, 0, len(nodes))}
	for _, q := range queue {
		if q.Class == scheduler.ClassBatch {
			s.QueuedBatch += q.Waiting
		} else {
			s.QueuedInteractive += q.Waiting
		}
	}
	for _, v := range nodes {
		hb := &v.Heartbeat
		p := api.HistoryNodePoint{ID: hb.NodeID, Up: !v.Stale, Simulated: hb.Simulated}
		if p.Up {
			s.InFlight += v.InFlight // the scheduler's figure
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
	tokens := r.tokens.Load()
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.lastTime.IsZero() {
		if d := now.Sub(r.lastTime).Seconds(); d > 0 {
			s.TokensPerSecond = float64(tokens-r.lastTokens) / d
		}
	}
	r.lastTokens, r.lastTime = tokens, now
	r.ring[r.next] = s
	r.next = (r.next + 1) % len(r.ring)
	r.n = min(r.n+1, len(r.ring))
}

// Samples returns the recorded samples, oldest first.
func (r *Ring) Samples() []api.HistorySample {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]api.HistorySample, 0, r.n)
	start := (r.next - r.n + len(r.ring)) % len(r.ring)
	for i := range r.n {
		out = append(out, r.ring[(start+i)%len(r.ring)])
	}
	return out
}

// History is the admin API's answer.
func (r *Ring) History() api.History {
	return api.History{
		IntervalSeconds: r.interval.Seconds(),
		WindowSeconds:   (time.Duration(len(r.ring)) * r.interval).Seconds(),
		Samples:         r.Samples(),
	}
}
