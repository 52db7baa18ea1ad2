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
	ring       []sample
	next, n    int
	lastTokens int64
	lastTime   time.Time
	// ids interns node IDs: each heartbeat decodes a fresh copy of its node's ID, and the ring
	// would otherwise keep one per sample.
	ids map[string]string
}

// sample is one HistorySample stored compactly: at a thousand nodes the ring holds 120 points per
// node, and the API's shape (four pointers, four small allocations a point) cost about 10 KiB a
// node; Samples converts on the way out.
type sample struct {
	time              time.Time
	tokensPerSecond   float64
	queuedInteractive int
	queuedBatch       int
	inFlight          int
	nodes             []point
}

// point is one node in a sample; the figures mean something only when up and hasGPUs.
type point struct {
	id                  string
	up, sim, hasGPUs    bool
	gpuUtil, powerW     float64
	vramUsed, vramTotal uint64
}

// New returns a ring of one sample per interval over window (at least one sample).
func New(interval, window time.Duration) *Ring {
	size := 1
	if interval > 0 {
		size = min(max(int(window/interval), 1), MaxSamples)
	}
	return &Ring{interval: interval, ring: make([]sample, size), ids: map[string]string{}}
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
	s := sample{time: now.UTC(), nodes: make([]point, 0, len(nodes))}
	for _, q := range queue {
		if q.Class == scheduler.ClassBatch {
			s.queuedBatch += q.Waiting
		} else {
			s.queuedInteractive += q.Waiting
		}
	}
	for _, v := range nodes {
		hb := &v.Heartbeat
		p := point{id: hb.NodeID, up: !v.Stale, sim: hb.Simulated}
		if p.up {
			s.inFlight += v.InFlight // the scheduler's figure
			if len(hb.GPUs) > 0 {
				p.hasGPUs = true
				for _, g := range hb.GPUs {
					p.gpuUtil += g.UtilizationRatio
					p.powerW += g.PowerWatts
					p.vramUsed += g.MemoryUsedBytes
					p.vramTotal += g.MemoryTotalBytes
					p.sim = p.sim || g.Simulated
				}
				p.gpuUtil /= float64(len(hb.GPUs))
			}
		}
		s.nodes = append(s.nodes, p)
	}
	tokens := r.tokens.Load()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.ids) > 4*len(nodes)+64 { // nodes come and go: start over rather than grow forever
		clear(r.ids)
	}
	for i := range s.nodes {
		id := s.nodes[i].id
		if in, ok := r.ids[id]; ok {
			s.nodes[i].id = in
		} else {
			r.ids[id] = id
		}
	}
	if !r.lastTime.IsZero() {
		if d := now.Sub(r.lastTime).Seconds(); d > 0 {
			s.tokensPerSecond = float64(tokens-r.lastTokens) / d
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
		out = append(out, r.ring[(start+i)%len(r.ring)].api())
	}
	return out
}

// api is s in the admin API's shape.
func (s *sample) api() api.HistorySample {
	out := api.HistorySample{Time: s.time, TokensPerSecond: s.tokensPerSecond, QueuedInteractive: s.queuedInteractive,
		QueuedBatch: s.queuedBatch, InFlight: s.inFlight, Nodes: make([]api.HistoryNodePoint, len(s.nodes))}
	for i := range s.nodes {
		p := &s.nodes[i]
		ap := api.HistoryNodePoint{ID: p.id, Up: p.up, Simulated: p.sim}
		if p.up && p.hasGPUs {
			util, power, used, total := p.gpuUtil, p.powerW, p.vramUsed, p.vramTotal
			ap.GPUUtil, ap.PowerW, ap.VRAMUsed, ap.VRAMTotal = &util, &power, &used, &total
		}
		out.Nodes[i] = ap
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
