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
	// rings memoises the chwbl ring points of each node, a pure function of its ID.
	rings *rings
}

// New returns a Scheduler for cfg, with cfg's zero fields taken from DefaultConfig.
func New(cfg Config) (*Scheduler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Scheduler{cfg: cfg.withDefaults(), rings: &rings{}}, nil
}

// Config returns the configuration the scheduler runs with, defaults filled in.
func (s *Scheduler) Config() Config { return s.cfg }

// RankedCandidates is how many candidates Pick puts in order, best first: the request goes to
// the first, and the gateway's failover (a fresh Pick per attempt, MaxAttempts of them) and its
// admission (which passes over candidates it finds full) rarely look further. Ranking every
// candidate was most of Pick's cost at a thousand nodes, where the most popular model is on nine
// hundred of them; selecting the best 16 costs one pass.
const RankedCandidates = 16

// Pick fills d with the nodes of snap that can serve req and the reasons the others were refused.
// The best RankedCandidates candidates come first, in order (d.Ranked says how many); the others
// follow, each scored no better than the last ranked one, in snapshot order. It reads nothing but
// its arguments. Reusing d across calls makes Pick free of allocations once d's slices have grown
// to the cluster's size.
func (s *Scheduler) Pick(req *Request, snap *Snapshot, d *Decision) {
	s.pick(req, snap, d, RankedCandidates)
}

// pick is Pick with every candidate ranked when rank is at least their number (Explain).
func (s *Scheduler) pick(req *Request, snap *Snapshot, d *Decision, rank int) {
	d.Reset()
	d.Policy = s.cfg.Policy
	if req == nil || snap == nil {
		return
	}
	s.evaluate(req, snap, d)
	d.rank(rank)
}

// scoreUnits quantises scores: a score is a whole number of billionths, so the sort can run on
// plain integers and scores closer than that count as a tie for the seeded shuffle to break.
const scoreUnits = 1e9

// rank puts the best k of d.Candidates first, in order, and sets d.Ranked. Each candidate
// becomes one integer key: the score's complement in billionths in the high 32 bits, then the
// seeded tie hash, with the candidate's position in the low bits so the order is total (it does
// not depend on the algorithm). Ordering plain integers is several times faster than ordering
// the structs with a comparison function, and allocation-free once d's scratch has grown. With
// more than k candidates a bounded max-heap selects the k smallest keys in one pass (the first k
// of the full order, ties broken the same way), and only those are sorted; the others keep their
// snapshot order behind them.
func (d *Decision) rank(k int) {
	n := len(d.Candidates)
	d.Ranked = n
	if n < 2 {
		return
	}
	posBits := uint(bits.Len(uint(n - 1)))
	mask := uint64(1)<<posBits - 1
	keys := d.keys[:0]
	for i, c := range d.Candidates {
		q := uint64(scoreUnits - c.Score*scoreUnits + 0.5) // Score is already quantised
		tie := (c.tie >> 32) &^ mask
		keys = append(keys, q<<32|tie|uint64(i))
	}
	d.keys = keys
	if k >= n {
		slices.Sort(keys)
		d.tmp = append(d.tmp[:0], d.Candidates...)
		for i, key := range keys {
			d.Candidates[i] = d.tmp[key&mask]
		}
		return
	}
	k = max(k, 1)
	top := append(d.top[:0], keys[:k]...)
	for i := k/2 - 1; i >= 0; i-- {
		siftDown(top, i)
	}
	for _, key := range keys[k:] {
		if key < top[0] {
			top[0] = key
			siftDown(top, 0)
		}
	}
	slices.Sort(top)
	d.top = top
	d.tmp = d.tmp[:0]
	for _, key := range top {
		d.tmp = append(d.tmp, d.Candidates[key&mask])
	}
	// Move the others to the end, keeping their order: a write never lands below the next read.
	cut, w := top[k-1], n
	for i := n - 1; i >= 0; i-- {
		if keys[i] > cut {
			w--
			d.Candidates[w] = d.Candidates[i]
		}
	}
	copy(d.Candidates, d.tmp)
	d.Ranked = k
}

// siftDown restores the max-heap order of h below i.
func siftDown(h []uint64, i int) {
	for {
		c := 2*i + 1
		if c >= len(h) {
			return
		}
		if r := c + 1; r < len(h) && h[r] > h[c] {
			c = r
		}
		if h[i] >= h[c] {
			return
		}
		h[i], h[c] = h[c], h[i]
		i = c
	}
}

// quantise rounds a score to whole billionths, clamped to [0,1] (NaN becomes 0).
func quantise(score float64) float64 {
	// Adding a half and truncating rounds a non-negative number, cheaper than math.Round.
	return float64(uint64(clamp01(score)*scoreUnits+0.5)) / scoreUnits
}

// nodeEval is what evaluate learned about one eligible node; Explain reports it.
type nodeEval struct {
	model     int     // index in Node.Models
	matched   int     // prompt tokens the node holds in its prompt cache (Request.Prefix)
	saved     float64 // seconds of prefill those tokens save
	overBound bool    // the node is past the prefix load bound: no longer anyone's home
	affKey    float64 // the node's weighted rendezvous key for the request's PrefixHash
	harm      float64 // the eviction harm of loading the model there (evictionHarm)
	harmSec   float64 // the reloads that eviction is expected to cost, seconds
	resident  bool    // the model is resident there and stays (effectivelyResident)
	swapping  bool    // a load there would queue behind another model's load (swap.swapping)
	idHash    uint64  // hashID of the node's ID
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
	anyMatch := false
	loading := -1 // whether a node is loading the model (1) or not (0); found on first need
	holding := -1 // how many nodes hold the model resident or loading; found on first need
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
		resident := effectivelyResident(node, mi)
		if s.cfg.Policy == PolicyHerd && !resident && !m.Loading {
			if loading < 0 {
				loading = loadingAnywhere(req, snap)
			}
			if loading == 1 {
				// Another node is loading the model: wait for that load rather than start one.
				d.Rejections = append(d.Rejections, Rejection{Node: i, Reason: ReasonLoadingElsewhere})
				continue
			}
		}
		h := hashID(node.ID)
		e := &d.evals[i]
		*e = nodeEval{model: mi, idHash: h, resident: resident}
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
		e.matched = min(prefixTokens(req, node.ID), max(req.PromptTokens, 0))
		anyMatch = anyMatch || e.matched > 0
		needsLoad := !resident && !m.Loading
		var sw swap
		if needsLoad {
			sw = s.swapOf(req, node, mi)
		}
		e.swapping = sw.swapping()
		backlog := 0.0
		if req.Waiting > 0 && !needsLoad {
			// The model's requests waiting in the gateway queue for the nodes that hold it.
			if holding < 0 {
				holding = holders(req, snap, listed, indexed)
			}
			backlog = float64(req.Waiting) / float64(max(holding, 1))
		}
		var queue float64
		e.wait, queue, e.saved = s.waitSeconds(req, node, m, e.tps, e.matched, resident, backlog, sw)
		// A request that queues also delays everything that queues behind it later; the cost
		// counts its queueing QueueAversion times, so work spreads before queues build.
		e.cost = e.wait + (s.cfg.QueueAversion-1)*queue
		if s.cfg.Policy == PolicyHerd && needsLoad {
			// A load that evicts a model its users will soon ask for again costs them its reload.
			// The evicted models stay until the node has drained (queue): they are away for
			// the load and this request's run, and then their own reload.
			e.harm, e.harmSec = s.evictionHarm(req, snap, node, mi, modelVRAM(req, m), e.wait-queue, &d.order)
			e.cost += e.harmSec
		}
		minCost = min(minCost, e.cost)
		if req.PrefixHash != 0 {
			// Weighted rendezvous hashing: the eligible node with the highest key is the home.
			e.affKey = affinityKey(mix64(h^prefix), s.affinityCapacity(node, m, modelWeights(req, m), e.tps))
		}
		d.Candidates = append(d.Candidates, Candidate{
			Node:         i,
			NeedsLoad:    needsLoad,
			ExpectedWait: seconds(e.wait),
			PrefixTokens: e.matched,
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
			d.Candidates[ci].Score = quantise(1 / float64(1+nodeLoad(node)))
		}
	case PolicyCHWBL:
		s.scoreCHWBL(req, snap, d)
	default:
		s.preferWaiting(d)
		// When the index knows where the prompt is, the rendezvous home, which only guesses,
		// yields to it.
		s.scoreHerd(req, snap, d, minCost, req.PrefixHash != 0 && !anyMatch)
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
	if !m.Loading && !effectivelyResident(node, mi) {
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
// stream: its prefill of the prompt the node's cache does not hold (matched tokens it does), its
// own decode (slowed by the other busy slots), the drain of the queue ahead when every slot is
// busy (backlog more requests of the model waiting in the gateway counted ahead), and the
// model's load time when it is not resident (half of it while loading). A load that must first
// drain the node (sw.drain: the engine evicts only an idle model) waits for everything on it to
// finish, and for another model's load under way there, and then runs alone. queue is the part
// of wait spent waiting for a slot or a drain; saved the prefill the cached tokens spare.
func (s *Scheduler) waitSeconds(req *Request, node *Node, m *NodeModel, tps float64, matched int, resident bool, backlog float64, sw swap) (wait, queue, saved float64) {
	own := float64(s.cfg.DefaultMaxTokens)
	if req.MaxTokens > 0 {
		own = float64(req.MaxTokens)
	}
	own = max(own, 1)
	prefill := 0.0
	if req.PromptTokens > 0 {
		rate := s.prefillRate(m, tps)
		prefill = float64(req.PromptTokens-matched) / rate
		saved = float64(matched) / rate
	}
	other := float64(max(s.cfg.DefaultMaxTokens, 1))
	c := s.contention(m)
	slots := max(node.Slots, 1)
	ahead := float64(max(node.InFlight, 0)+max(node.Queued, 0)) + max(backlog, 0)
	switch {
	case sw.drain:
		queue = sw.otherLoad + drainSeconds(ahead, slots, other, tps, c)
		wait = queue + prefill + own/tps
	case ahead < float64(slots):
		wait = prefill + own*(1+c*ahead)/tps
	default:
		full := 1 + c*float64(slots-1)
		aggregate := float64(slots) * tps / full
		queue = (ahead - float64(slots) + 1) * other / aggregate
		wait = queue + prefill + own*full/tps
	}
	if !resident {
		load := s.loadSeconds(req, m)
		if m.Loading {
			load /= 2 // under way: on average half of it is left
		}
		wait += load
	}
	return wait, queue, saved
}

// loadingAnywhere is 1 when a node that could serve req (not stale, draining, unhealthy,
// circuit-open or excluded) is loading its model, else 0.
func loadingAnywhere(req *Request, snap *Snapshot) int {
	for i := range snap.Nodes {
		n := &snap.Nodes[i]
		if n.Stale || n.Draining || !n.Healthy || n.CircuitOpen || slices.Contains(req.Exclude, n.ID) {
			continue
		}
		if mi := findModel(n, req.Model); mi >= 0 && n.Models[mi].Loading && !n.Models[mi].Resident {
			return 1
		}
	}
	return 0
}

// evictionHarm is the harm of loading model mi on node (Weights.Eviction): the models it must
// evict until need bytes fit and the node's bound on resident models allows one more — idle
// resident ones least recently used first, then (for the bound, once the node has drained) busy
// ones and models loading there — each counted 1, plus 2 when no other node of snap has it
// resident, plus 1 when it was used within EvictionRecent. seconds is the same harm in the wait
// model's terms: with the gateway's demand rates (Request.Demand), demandHarm of each evicted
// model, away until this request is done (wait seconds after the node has drained) and the model
// is loaded again;
// without them, each evicted model's
// load time times the chance its users ask for it again before it could be reloaded at leisure
// (e^(−age ÷ EvictionRecent), from when it was last used). Either is weighed by the evicted
// copy's share of the model's serving capacity (replicaShare): all of it for the only copy, a
// small part for a slow copy beside a fast one. order is scratch.
func (s *Scheduler) evictionHarm(req *Request, snap *Snapshot, node *Node, mi int, need uint64, wait float64, order *[]int) (harm, seconds float64) {
	// over is how many loaded models must go for the backend's bound on resident models.
	over := 0
	if node.MaxLoadedModels > 0 {
		resident := 0
		for j := range node.Models {
			if m := &node.Models[j]; j != mi && (m.Resident || m.Loading) {
				resident++
			}
		}
		over = resident + 1 - node.MaxLoadedModels
	}
	free := satSub(node.VRAMTotalBytes, node.VRAMUsedBytes)
	if node.VRAMTotalBytes == 0 || need == 0 {
		free = math.MaxUint64 // unknown sizes fit
	}
	if free >= need && over <= 0 {
		return 0, 0
	}
	// rank orders the evictable models: idle resident ones first, then busy ones, then loading
	// ones (only the bound can evict those, after the drain); least recently used first within.
	rank := func(m *NodeModel) int {
		switch {
		case !m.Resident:
			return 2
		case m.InFlight > 0:
			return 1
		}
		return 0
	}
	o := (*order)[:0]
	for j := range node.Models {
		if m := &node.Models[j]; j != mi && (m.Resident || m.Loading) {
			o = append(o, j)
		}
	}
	slices.SortFunc(o, func(a, b int) int {
		ma, mb := &node.Models[a], &node.Models[b]
		if c := rank(ma) - rank(mb); c != 0 {
			return c
		}
		return ma.LastUsed.Compare(mb.LastUsed)
	})
	*order = o
	for _, j := range o {
		if free >= need && over <= 0 {
			break
		}
		m := &node.Models[j]
		if rank(m) > 0 && over <= 0 {
			break // memory alone never evicts a busy or loading model (the fit filter holds that)
		}
		free = satAdd(free, m.VRAMBytes)
		over--
		harm++
		share := s.replicaShare(req, snap, node, j)
		if share >= 1 {
			harm += 2
		}
		age := EvictionRecent // unknown: as if used that long ago
		if !snap.Now.IsZero() && !m.LastUsed.IsZero() {
			age = max(snap.Now.Sub(m.LastUsed), 0)
		}
		if age < EvictionRecent || m.InFlight > 0 || m.Loading {
			harm++
		}
		load := s.loadSeconds(req, m)
		if req.Demand != nil {
			seconds += share * demandHarm(req.Demand[m.Name], load, wait+load)
			continue
		}
		recent := math.Exp(-age.Seconds() / EvictionRecent.Seconds())
		if m.InFlight > 0 || m.Loading {
			recent = 1
		}
		seconds += load * share * recent
	}
	return harm, seconds
}

// replicaShare is the share of model j's serving capacity that node's copy gives (1 when no other
// node that is not stale keeps it resident): its decode rate with every slot busy over the sum of
// the copies'. Evicting a copy costs the model's users that share of its capacity: the fast copy
// of a model resident on a fast and a slow node carries most of its requests.
func (s *Scheduler) replicaShare(req *Request, snap *Snapshot, node *Node, j int) float64 {
	m := &node.Models[j]
	capacity := func(n *Node, mi int) float64 {
		o := &n.Models[mi]
		tps, _ := nodeSpeed(n, mi, modelWeights(req, o))
		if !validSpeed(tps) {
			tps = s.cfg.DefaultTokensPerSecond
		}
		slots := float64(max(n.Slots, 1))
		return tps * slots / (1 + s.contention(o)*(slots-1))
	}
	own := capacity(node, j)
	total := own
	for i := range snap.Nodes {
		n := &snap.Nodes[i]
		if n == node || n.Stale {
			continue
		}
		if mi := findModel(n, m.Name); mi >= 0 && effectivelyResident(n, mi) {
			total += capacity(n, mi)
		}
	}
	if !(total > own) {
		return 1
	}
	return own / total
}

// prefillRate is node's prompt-processing speed for model m, tokens/s: learned when measured,
// else the decode speed tps times PrefillSpeedup.
func (s *Scheduler) prefillRate(m *NodeModel, tps float64) float64 {
	if pre := m.Learned.PrefillTPS; m.Learned.Samples > 0 && validSpeed(pre) {
		return pre
	}
	return s.cfg.PrefillSpeedup * tps
}

// prefixTokens is what req.Prefix says node id holds (0: nothing).
func prefixTokens(req *Request, id string) int {
	for i := range req.Prefix {
		if req.Prefix[i].Node == id {
			return max(req.Prefix[i].Tokens, 0)
		}
	}
	return 0
}

// nodeLoad is a node's requests in flight and queued: the load the bounded-load rules count.
func nodeLoad(node *Node) int { return max(node.InFlight, 0) + max(node.Queued, 0) }

// overLoadBound reports whether a node with the given load and slots is past the bound of
// consistent hashing with bounded loads (Mirrokni, Thorup and Zadimoghaddam, 2018), with
// capacity in slots: its load, the new request included, would exceed factor times its share
// of the candidates' total load, the new request included. A node with a free slot is never
// past it: the request would start at once there, and at low load the bound alone (under one
// request per node) would refuse every home.
func overLoadBound(nodeLoad, slots, totalLoad, totalSlots int, factor float64) bool {
	slots = max(slots, 1)
	if nodeLoad < slots {
		return false
	}
	share := float64(totalLoad+1) * float64(slots) / float64(max(totalSlots, 1))
	return float64(nodeLoad+1) > factor*share
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
// them; with affinity, the candidate with the highest rendezvous key among those within the load
// bound is the conversation's home.
//
// The prefix scorer counts what a node's prompt cache saves, in seconds, against what the node
// costs: saved ÷ (saved + wait cost), 0 where nothing is cached and near 1 where the cache
// spares most of an idle node's work. A node past the load bound (Config.PrefixLoadFactor) loses
// its prefix and affinity scores, so a hot home spills to the next best node instead of
// queueing everyone who shares its prompt.
func (s *Scheduler) scoreHerd(req *Request, snap *Snapshot, d *Decision, minCost float64, affinity bool) {
	w := s.cfg.Weights
	total := w.sum()
	totalLoad, totalSlots := 0, 0
	for ci := range d.Candidates {
		node := &snap.Nodes[d.Candidates[ci].Node]
		totalLoad += nodeLoad(node)
		totalSlots += max(node.Slots, 1)
	}
	affNode := -1
	for ci := range d.Candidates {
		c := &d.Candidates[ci]
		node := &snap.Nodes[c.Node]
		e := &d.evals[c.Node]
		e.overBound = overLoadBound(nodeLoad(node), node.Slots, totalLoad, totalSlots, s.cfg.PrefixLoadFactor)
		if affinity && !e.overBound && (affNode < 0 || e.affKey > d.evals[affNode].affKey) {
			affNode = c.Node
		}
	}
	for ci := range d.Candidates {
		c := &d.Candidates[ci]
		node := &snap.Nodes[c.Node]
		e := &d.evals[c.Node]
		m := &node.Models[e.model]
		sc := Scores{Wait: 1, Utilization: 1 - clamp01(node.Utilization)}
		if e.cost > minCost {
			sc.Wait = minCost / e.cost
		}
		sc.Eviction = 1
		if e.resident || m.Loading {
			sc.Resident = 1
		} else if w.Eviction > 0 {
			sc.Eviction = 1 / (1 + e.harm)
		}
		if !node.Throttled {
			sc.Throttle = 1
		}
		if c.Node == affNode {
			sc.Affinity = 1
		}
		if e.saved > 0 && !e.overBound {
			sc.Prefix = e.saved / (e.saved + e.cost)
		}
		sc.VRAM = 0.5 // unknown: neutral
		if node.VRAMTotalBytes > 0 {
			free := satSub(node.VRAMTotalBytes, node.VRAMUsedBytes)
			if !e.resident {
				free = satSub(free, modelVRAM(req, m))
			}
			sc.VRAM = float64(free) / float64(node.VRAMTotalBytes)
		}
		e.scores = sc
		c.Score = quantise((w.Resident*sc.Resident + w.Wait*sc.Wait + w.VRAM*sc.VRAM +
			w.Utilization*sc.Utilization + w.Throttle*sc.Throttle + w.Affinity*sc.Affinity + w.Prefix*sc.Prefix +
			w.Eviction*sc.Eviction) / total)
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

func satAdd(a, b uint64) uint64 {
	if a > math.MaxUint64-b {
		return math.MaxUint64
	}
	return a + b
}
