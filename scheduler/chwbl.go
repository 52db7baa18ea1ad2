package scheduler

import (
	"slices"
	"strconv"
	"sync"

	"github.com/cespare/xxhash/v2"
)

// The chwbl policy is KubeAI's PrefixHash load-balancing strategy, rebuilt from its description
// and behaviour (substratusai/kubeai, internal/loadbalancer and api/openai/v1) so that a benchmark
// can set herd beside what a KubeAI user would run:
//
//   - the key is the first 100 characters (runes) of the first user message's text, or of the
//     first prompt of a completion; the gateway hashes it with XXH64 into Request.RoutingKey;
//   - every endpoint has Replication points on a ring, at XXH64(node ID + decimal replica index);
//   - the walk starts at the first point at or after the key (wrapping) and goes clockwise; the
//     first endpoint whose load passes the bound is chosen: load + 1 ≤ factor × (total + 1) ÷ n,
//     with load the endpoint's requests in flight, total the sum over the n endpoints, and
//     factor the mean load factor (1.25); with no load at all, the first endpoint is taken;
//   - when no endpoint passes, the first endpoint met is chosen anyway.
//
// Endpoints are the eligible candidates (the scheduler's filters run first, as KubeAI's endpoint
// group holds only ready pods) and load is a node's in-flight plus queued requests (the requests
// KubeAI's balancer has sent and not seen finish). As an order for failover and the gateway's
// queue, the candidates that pass the bound come first in walk order, then the others in walk
// order: the walk's own choice is always first.

// maxReplication bounds Config.CHWBLReplication: a ring larger than this adds nothing.
const maxReplication = 1 << 12

// ring is one node's points on the chwbl ring, sorted.
type ring []uint64

// rings memoises node rings by "replication/node ID": they depend on nothing else, and hashing
// 256 points per node per request would dominate Pick.
type rings struct {
	mu sync.RWMutex
	m  map[string]ring
}

// maxRings bounds the memo; past it rings are computed per call (a fleet of that many nodes is
// not what herd runs).
const maxRings = 4096

// get returns node id's ring of n points.
func (r *rings) get(id string, n int) ring {
	r.mu.RLock()
	pts, ok := r.m[id]
	r.mu.RUnlock()
	if ok && len(pts) == n {
		return pts
	}
	pts = make(ring, n)
	buf := make([]byte, 0, len(id)+8)
	for i := range pts {
		buf = strconv.AppendInt(append(buf[:0], id...), int64(i), 10)
		pts[i] = xxhash.Sum64(buf)
	}
	slices.Sort(pts)
	r.mu.Lock()
	if r.m == nil {
		r.m = map[string]ring{}
	}
	if len(r.m) < maxRings {
		r.m[id] = pts
	}
	r.mu.Unlock()
	return pts
}

// distance is how far clockwise from key the ring's first point is (mod 2^64): the walk meets
// nodes in the order of these distances.
func (pts ring) distance(key uint64) uint64 {
	i, _ := slices.BinarySearch(pts, key)
	if i == len(pts) {
		i = 0 // wrap around
	}
	return pts[i] - key // unsigned arithmetic wraps as the ring does
}

// CHWBLKey is the chwbl policy's key hash of prefix, the first 100 characters of the first user
// message (Request.RoutingKey).
func CHWBLKey(prefix []byte) uint64 { return xxhash.Sum64(prefix) }

// CHWBLPrefixChars is how many characters of the first user message the chwbl key takes
// (KubeAI's default prefixCharLength).
const CHWBLPrefixChars = 100

// scoreCHWBL ranks the candidates in the chwbl walk's order (see above): rank r of k scores
// 1 − r/k.
func (s *Scheduler) scoreCHWBL(req *Request, snap *Snapshot, d *Decision) {
	k := len(d.Candidates)
	total := 0
	for ci := range d.Candidates {
		total += nodeLoad(&snap.Nodes[d.Candidates[ci].Node])
	}
	mean := float64(total+1) / float64(k)
	keys := d.keys[:0]
	for ci := range d.Candidates {
		c := &d.Candidates[ci]
		node := &snap.Nodes[c.Node]
		dist := s.rings.get(node.ID, s.cfg.CHWBLReplication).distance(req.RoutingKey)
		var over uint64
		if total > 0 && float64(nodeLoad(node)+1) > mean*s.cfg.CHWBLLoadFactor {
			over = 1
		}
		// Order: within the bound first, then by distance; the low bits keep the position.
		keys = append(keys, over<<63|(dist>>1)&^0xffff|uint64(ci))
	}
	slices.Sort(keys)
	for rank, key := range keys {
		d.Candidates[key&0xffff].Score = quantise(1 - float64(rank)/float64(k))
	}
	d.keys = keys
}
