package scheduler

import (
	"math"
	"math/bits"
	"slices"
	"time"

	"github.com/herd-llm/herd/models"
)

// Scheduler picks nodes for requests. It holds only configuration and is safe for concurrent use.
type Scheduler struct {
	cfg Config
}

// New returns a Scheduler for cfg, with cfg's zero fields taken from DefaultConfig.
func New(cfg Config) (*Scheduler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Scheduler{cfg: cfg.withDefaults()}, nil
}

// Config returns the configuration the scheduler runs with, defaults filled in.
func (s *Scheduler) Config() Config { return s.cfg }

// Pick fills d with the nodes of snap that can serve req, best first, and the reasons the others
// were refused. It reads nothing but its arguments. Reusing d across calls makes Pick free of
// allocations once d's slices have grown to the cluster's size.
func (s *Scheduler) Pick(req *Request, snap *Snapshot, d *Decision) {
	d.Reset()
	d.Policy = s.cfg.Policy
	if req == nil || snap == nil {
		return
	}
	s.evaluate(req, snap, d)
	d.sort()
}

// scoreUnits quantises scores: a score is a whole number of billionths, so the sort can run on
// plain integers and scores closer than that count as a tie for the seeded shuffle to break.
const scoreUnits = 1e9

// sort orders d.Candidates best first. Each candidate becomes one integer key: the score's
// complement in billionths in the high 32 bits, then the seeded tie hash, with the candidate's
// position in the low bits so the order is total (it does not depend on the sort algorithm).
// Sorting plain integers is several times faster than sorting the structs with a comparison
// function, and allocation-free once d's scratch has grown.
func (d *Decision) sort() {
	n := len(d.Candidates)
	if n < 2 {
		return
	}
	posBits := uint(bits.Len(uint(n - 1)))
	keys := d.keys[:0]
	for i, c := range d.Candidates {
		q := uint64(scoreUnits - c.Score*scoreUnits + 0.5) // Score is already quantised
		tie := (c.tie >> 32) &^ (1<<posBits - 1)
		keys = append(keys, q<<32|tie|uint64(i))
	}
	slices.Sort(keys)
	d.tmp = append(d.tmp[:0], d.Candidates...)
	for i, k := range keys {
		d.Candidates[i] = d.tmp[k&(1<<posBits-1)]
	}
	d.keys = keys
}

// quantise rounds a score to whole billionths, clamped to [0,1] (NaN becomes 0).
func quantise(score float64) float64 {
	// Adding a half and truncating rounds a non-negative number, cheaper than math.Round.
	return float64(uint64(clamp01(score)*scoreUnits+0.5)) / scoreUnits
}

// nodeEval is what evaluate learned about one eligible node; Explain reports it.
type nodeEval struct {
	model     int    // index in Node.Models
	idHash    uint64 // hashID of the node's ID
	tps       float64
	tpsSource tpsSource
	wait      float64 // seconds until the request completes
	cost      float64 // wait with queueing weighted by QueueAversion: what the wait score ranks
	scores    Scores
}

// evaluate filters every node into d.Candidates or d.Rejections, estimates each candidate's
// speed and wait into d.evals, and scores the candidates by the configured policy. Candidates
// stay in snapshot order. One pass does all but the scoring, so each node is read once.
func (s *Scheduler) evaluate(req *Request, snap *Snapshot, d *Decision) {
	n := len(snap.Nodes)
	if cap(d.evals) < n {
		d.evals = make([]nodeEval, n)
	}
	d.evals = d.evals[:n]
	seed := mix64(req.Seed ^ mix64(req.Seq+0x9e3779b97f4a7c15))
	prefix := mix64(req.PrefixHash)
	median := -1.0 // the cluster median speed, computed on first need
	minCost := math.Inf(1)
	affNode, affBest := -1, 0.0
	listed, indexed := snap.nodesWith(req.Model)
	count := n
	if indexed {
		count = len(listed)
		d.Unlisted = n - len(listed)
	}
	for k := range count {
		var i, mi int
		if indexed {
			i, mi = int(listed[k].Node), int(listed[k].Model)
		} else {
			i, mi = k, findModel(&snap.Nodes[k], req.Model)
		}
		node := &snap.Nodes[i]
		if r := s.filter(req, node, mi); r != ReasonNone {
			d.Rejections = append(d.Rejections, Rejection{Node: i, Reason: r})
			continue
		}
		m := &node.Models[mi]
		h := hashID(node.ID)
		e := &d.evals[i]
		*e = nodeEval{model: mi, idHash: h}
		e.tps, e.tpsSource = nodeSpeed(node, mi, modelWeights(req, m))
		if e.tps == 0 {
			if median < 0 {
				median = clusterMedianSpeed(snap, req.Model, listed, indexed, &d.speeds)
			}
			e.tps, e.tpsSource = median, tpsCluster
			if median == 0 {
				e.tps, e.tpsSource = s.cfg.DefaultTokensPerSecond, tpsDefault
			}
		}
		var queue float64
		e.wait, queue = s.waitSeconds(req, node, m, e.tps)
		// A request that queues also delays everything that queues behind it later; the cost
		// counts its queueing QueueAversion times, so work spreads before queues build.
		e.cost = e.wait + (s.cfg.QueueAversion-1)*queue
		minCost = min(minCost, e.cost)
		if req.PrefixHash != 0 {
			// Weighted rendezvous hashing: the eligible node with the highest key for this prefix.
			if k := affinityKey(mix64(h^prefix), s.affinityCapacity(node, m, modelWeights(req, m), e.tps)); affNode < 0 || k > affBest {
				affNode, affBest = i, k
			}
		}
		d.Candidates = append(d.Candidates, Candidate{
			Node:         i,
			NeedsLoad:    !m.Resident,
			ExpectedWait: seconds(e.wait),
			tie:          mix64(seed ^ h),
		})
	}
	if len(d.Candidates) == 0 {
		return
	}
	switch s.cfg.Policy {
	case PolicyRoundRobin:
		k := len(d.Candidates)
		start := int(req.Seq % uint64(k))
		for pos := range d.Candidates {
			rank := (pos - start + k) % k
			d.Candidates[pos].Score = quantise(1 - float64(rank)/float64(k))
		}
	case PolicyLeastInflight:
		for ci := range d.Candidates {
			node := &snap.Nodes[d.Candidates[ci].Node]
			d.Candidates[ci].Score = quantise(1 / float64(1+max(node.InFlight, 0)+max(node.Queued, 0)))
		}
	default:
		s.scoreHerd(req, snap, d, minCost, affNode)
	}
}

// filter returns why node cannot serve req, or ReasonNone. mi indexes req.Model in node.Models
// (-1: the node does not know the model).
func (s *Scheduler) filter(req *Request, node *Node, mi int) Reason {
	switch {
	case slices.Contains(req.Exclude, node.ID):
		return ReasonExcluded
	case node.Stale:
		return ReasonStale
	case node.Draining:
		return ReasonDraining
	case !node.Healthy:
		return ReasonUnhealthy
	case node.CircuitOpen:
		return ReasonCircuitOpen
	}
	if mi < 0 {
		return ReasonModelUnavailable
	}
	m := &node.Models[mi]
	if !m.Resident {
		if !m.OnDisk {
			return ReasonModelUnavailable
		}
		if !node.CanLoad {
			return ReasonCannotLoad
		}
		if !fitsAfterEvicting(node, mi, modelVRAM(req, m)) {
			return ReasonDoesNotFit
		}
	}
	slots := max(node.Slots, 1)
	busy := max(node.InFlight, 0) + max(node.Queued, 0)
	if req.Class == ClassBatch && busy >= slots {
		return ReasonNoFreeSlotForBatch
	}
	if node.Queued >= s.cfg.QueueLimit(node) && node.InFlight >= slots {
		return ReasonQueueFull
	}
	return ReasonNone
}

// QueueLimit is how many requests node may hold queued beyond its busy slots before the
// scheduler refuses it (ReasonQueueFull): MaxQueuePerNode, or the node's Slots (at least 1) when
// that is 0, and never more than the node's own bound (Node.MaxQueue) when it reports one.
func (c Config) QueueLimit(node *Node) int {
	limit := c.MaxQueuePerNode
	if limit <= 0 {
		limit = max(node.Slots, 1)
	}
	if node.MaxQueue > 0 {
		limit = min(limit, node.MaxQueue)
	}
	return limit
}

// fitsAfterEvicting reports whether need bytes fit in node's free VRAM once every idle resident
// model other than models[mi] is evicted. Unknown sizes (0) fit: the scheduler cannot tell, and
// refusing would make a node with no GPU telemetry unusable.
func fitsAfterEvicting(node *Node, mi int, need uint64) bool {
	if need == 0 || node.VRAMTotalBytes == 0 {
		return true
	}
	free := satSub(node.VRAMTotalBytes, node.VRAMUsedBytes)
	for j := range node.Models {
		o := &node.Models[j]
		if j != mi && o.Resident && o.InFlight <= 0 {
			free += o.VRAMBytes
		}
	}
	return free >= need
}

// modelVRAM is the memory the model needs loaded: what the node reports for it, else the
// request's estimate, else its size on disk.
func modelVRAM(req *Request, m *NodeModel) uint64 {
	switch {
	case m.VRAMBytes > 0:
		return m.VRAMBytes
	case req.ModelVRAMBytes > 0:
		return req.ModelVRAMBytes
	}
	return m.SizeBytes
}

// modelWeights is the size of the weights, which decode reads once per token and load copies:
// the size on disk, else the VRAM figures (which add the KV cache, so overestimate a little).
func modelWeights(req *Request, m *NodeModel) uint64 {
	if m.SizeBytes > 0 {
		return m.SizeBytes
	}
	return modelVRAM(req, m)
}

func findModel(n *Node, name string) int {
	for i := range n.Models {
		if n.Models[i].Name == name {
			return i
		}
	}
	return -1
}

// unknownLoadSeconds is the load time assumed for a model of unknown size: about a 10 GB model
// at the default load rate, so an unsized load is not mistaken for a free one.
const unknownLoadSeconds = 5

// seconds converts s seconds to a Duration, saturating instead of overflowing.
func seconds(s float64) time.Duration {
	if s >= float64(math.MaxInt64)/float64(time.Second) {
		return math.MaxInt64
	}
	return time.Duration(s * float64(time.Second))
}

// contention is node's slowdown per other busy stream for model m: learned when measured, else
// the configured prior.
func (s *Scheduler) contention(m *NodeModel) float64 {
	if m.Learned.Samples > 0 && m.Learned.Contention >= 0 && m.Learned.Contention <= 1 {
		return m.Learned.Contention
	}
	return s.cfg.SlotContention
}

// waitSeconds is the expected time until req would complete on node at tps tokens/s for one
// stream: its prefill, its own decode (slowed by the other busy slots), the drain of the queue
// ahead when every slot is busy, and the model's load time when it is not resident. queue is the
// part of wait spent queued for a slot.
func (s *Scheduler) waitSeconds(req *Request, node *Node, m *NodeModel, tps float64) (wait, queue float64) {
	own := float64(s.cfg.DefaultMaxTokens)
	if req.MaxTokens > 0 {
		own = float64(req.MaxTokens)
	}
	own = max(own, 1)
	prefill := 0.0
	if req.PromptTokens > 0 {
		if pre := m.Learned.PrefillTPS; m.Learned.Samples > 0 && validSpeed(pre) {
			prefill = float64(req.PromptTokens) / pre
		} else {
			prefill = float64(req.PromptTokens) / s.cfg.PrefillSpeedup / tps
		}
	}
	other := float64(max(s.cfg.DefaultMaxTokens, 1))
	c := s.contention(m)
	slots := max(node.Slots, 1)
	ahead := max(node.InFlight, 0) + max(node.Queued, 0)
	if ahead < slots {
		wait = prefill + own*(1+c*float64(ahead))/tps
	} else {
		full := 1 + c*float64(slots-1)
		aggregate := float64(slots) * tps / full
		queue = float64(ahead-slots+1) * other / aggregate
		wait = queue + prefill + own*full/tps
	}
	if !m.Resident {
		if b := modelWeights(req, m); b > 0 {
			wait += float64(b) / s.cfg.LoadBytesPerSecond
		} else {
			wait += unknownLoadSeconds
		}
	}
	return wait, queue
}

// affinityKey is the weighted rendezvous key of a node whose hash for the prefix is h and whose
// weight is w: w ÷ −ln(u) with u uniform in (0,1) drawn from h. The node with the largest key
// wins with probability proportional to its weight, and removing a node moves only the prefixes
// it won (Schindelhauer and Schomaker, "Weighted distributed hash tables", 2005).
func affinityKey(h uint64, w float64) float64 {
	u := (float64(h>>11) + 0.5) / (1 << 53) // in (0,1): never 0 nor 1
	return w / -math.Log(u)
}

// affinityCapacity is the weight of node in the rendezvous hashing of conversations: its
// aggregate decode rate with every slot busy, so each node is home to a share of conversations in
// proportion to the work it can take, and a conversation's home is also where the wait scorer
// tends to send it. The speed is the learned single-stream speed when the node has measured the
// model (a fit that corrects for concurrency, so it does not sink and rise with the load, which
// would move conversations between homes and off their KV cache), else the bandwidth prior when
// its GPU is known, else tps (the speed the wait model uses).
func (s *Scheduler) affinityCapacity(node *Node, m *NodeModel, weights uint64, tps float64) float64 {
	speed := tps
	if m.Learned.Samples > 0 && validSpeed(m.Learned.DecodeTPS) {
		speed = m.Learned.DecodeTPS
	} else if bw := node.MemoryBandwidthGBs; validSpeed(bw) && weights > 0 {
		if v := bw * 1e9 * models.DefaultDecodeEfficiency / float64(weights); validSpeed(v) {
			speed = v
		}
	}
	slots := float64(max(node.Slots, 1))
	if !validSpeed(speed) {
		speed = 1
	}
	return speed * slots / (1 + s.contention(m)*(slots-1))
}

// scoreHerd scores the candidates with the weighted scorers, given the lowest wait cost among
// them and the node the request's prefix hashes to (-1: none).
func (s *Scheduler) scoreHerd(req *Request, snap *Snapshot, d *Decision, minCost float64, affNode int) {
	w := s.cfg.Weights
	total := w.sum()
	for ci := range d.Candidates {
		c := &d.Candidates[ci]
		node := &snap.Nodes[c.Node]
		e := &d.evals[c.Node]
		m := &node.Models[e.model]
		sc := Scores{Wait: 1, Utilization: 1 - clamp01(node.Utilization)}
		if e.cost > minCost {
			sc.Wait = minCost / e.cost
		}
		if m.Resident {
			sc.Resident = 1
		}
		if !node.Throttled {
			sc.Throttle = 1
		}
		if c.Node == affNode {
			sc.Affinity = 1
		}
		sc.VRAM = 0.5 // unknown: neutral
		if node.VRAMTotalBytes > 0 {
			free := satSub(node.VRAMTotalBytes, node.VRAMUsedBytes)
			if !m.Resident {
				free = satSub(free, modelVRAM(req, m))
			}
			sc.VRAM = float64(free) / float64(node.VRAMTotalBytes)
		}
		e.scores = sc
		c.Score = quantise((w.Resident*sc.Resident + w.Wait*sc.Wait + w.VRAM*sc.VRAM +
			w.Utilization*sc.Utilization + w.Throttle*sc.Throttle + w.Affinity*sc.Affinity) / total)
	}
}

// clamp01 clamps x to [0,1]; NaN becomes 0, so bad telemetry cannot poison the ordering.
func clamp01(x float64) float64 {
	if !(x > 0) {
		return 0
	}
	return min(x, 1)
}

func satSub(a, b uint64) uint64 {
	if a < b {
		return 0
	}
	return a - b
}
