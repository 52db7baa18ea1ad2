package scheduler

import (
	"math"
	"slices"

	"github.com/herd-llm/herd/models"
)

// tpsSource says where a node's decode speed for a model came from.
type tpsSource uint8

const (
	tpsLearned   tpsSource = iota // a Learner's fit to the node's measurements
	tpsMeasured                   // the node's EWMA for the model, unfitted
	tpsNode                       // the node's other models, scaled by size
	tpsBandwidth                  // the node's GPU memory bandwidth ÷ the model's size
	tpsCluster                    // the median of the nodes that measured the model
	tpsDefault                    // Config.DefaultTokensPerSecond
)

var tpsSourceText = [...]string{
	tpsLearned:   "learned",
	tpsMeasured:  "measured",
	tpsNode:      "node_estimate",
	tpsBandwidth: "bandwidth_estimate",
	tpsCluster:   "cluster_median",
	tpsDefault:   "default",
}

func (s tpsSource) String() string { return tpsSourceText[s] }

// nodeSpeed estimates the single-stream decode speed of model mi on node, whose weights are
// weights bytes (0: unknown); mi is -1 when the node does not list the model. It returns 0 when
// the node alone cannot say.
func nodeSpeed(node *Node, mi int, weights uint64) (float64, tpsSource) {
	if mi >= 0 {
		m := &node.Models[mi]
		if m.Learned.Samples > 0 && validSpeed(m.Learned.DecodeTPS) {
			return m.Learned.DecodeTPS, tpsLearned
		}
		if v := m.TokensPerSecond; validSpeed(v) {
			return v, tpsMeasured
		}
	}
	if weights == 0 {
		return 0, tpsDefault
	}
	// Decode is memory-bound: tokens/s × weight bytes is the bandwidth the node achieves, about
	// the same for every model it runs.
	var sum float64
	var k int
	for j := range node.Models {
		o := &node.Models[j]
		b := o.SizeBytes
		if b == 0 {
			b = o.VRAMBytes
		}
		v := o.TokensPerSecond
		if o.Learned.Samples > 0 {
			v = o.Learned.DecodeTPS
		}
		if j != mi && validSpeed(v) && b > 0 {
			sum += v * float64(b)
			k++
		}
	}
	if k > 0 {
		if v := sum / float64(k) / float64(weights); validSpeed(v) {
			return v, tpsNode
		}
	}
	if bw := node.MemoryBandwidthGBs; validSpeed(bw) {
		// The prior: the profile's paper figure for memory-bound decode (models.DecodeTokensPerSecond).
		if v := bw * 1e9 * models.DefaultDecodeEfficiency / float64(weights); validSpeed(v) {
			return v, tpsBandwidth
		}
	}
	return 0, tpsDefault
}

// clusterMedianSpeed is the median measured speed of model over the snapshot's nodes that are
// not stale, or 0 when none measured it; with indexed, only the listed nodes can know it. buf is
// reused scratch.
func clusterMedianSpeed(snap *Snapshot, model string, listed []ModelRef, indexed bool, buf *[]float64) float64 {
	v := (*buf)[:0]
	count := len(snap.Nodes)
	if indexed {
		count = len(listed)
	}
	for k := range count {
		var n *Node
		var mi int
		if indexed {
			n, mi = &snap.Nodes[listed[k].Node], int(listed[k].Model)
		} else {
			n = &snap.Nodes[k]
			mi = findModel(n, model)
		}
		if n.Stale {
			continue
		}
		if mi >= 0 && validSpeed(n.Models[mi].TokensPerSecond) {
			v = append(v, n.Models[mi].TokensPerSecond)
		}
	}
	*buf = v
	if len(v) == 0 {
		return 0
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// validSpeed accepts a finite positive speed; anything else counts as unmeasured.
func validSpeed(v float64) bool { return v > 0 && !math.IsInf(v, 1) }

// hashID hashes a node ID, allocation-free. It reads eight bytes at a time (FNV-1a's byte at a
// time was a sixth of Pick's cost at 64 nodes) and ends with mix64, so every bit of the ID
// reaches every bit of the hash, which rendezvous hashing and the tie shuffle need.
func hashID(s string) uint64 {
	const prime = 0x100000001b3 // FNV's 64-bit prime: odd, so multiplying by it loses nothing
	h := uint64(len(s)) ^ 0xcbf29ce484222325
	i := 0
	for ; i+8 <= len(s); i += 8 {
		h = (h ^ le64(s[i:i+8])) * prime
		h ^= h >> 32
	}
	var tail uint64
	for j := len(s) - 1; j >= i; j-- {
		tail = tail<<8 | uint64(s[j])
	}
	// The tail (at most 7 bytes) carries its length in its free top byte, so that "b" and
	// "a\x00" cannot cancel out.
	tail |= uint64(len(s)-i) << 56
	return mix64((h ^ tail) * prime)
}

// le64 reads the first eight bytes of s as a little-endian number; the compiler makes it one load.
func le64(s string) uint64 {
	_ = s[7]
	return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
}

// mix64 is the splitmix64 finaliser: a bijection that spreads every input bit over the output.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
