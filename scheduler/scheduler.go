// Package scheduler decides which node serves a request. It is a pure function of a request and
// an immutable snapshot of the cluster: no I/O, no clock reads, no globals. Filters refuse nodes
// and record why; scorers rate the survivors in [0,1] with configurable weights; a picker orders
// them and breaks ties with a shuffle seeded from the request, so a decision can be replayed.
package scheduler

import "time"

// Policy names.
const (
	// PolicyHerd scores residency, expected wait, VRAM headroom, utilisation, throttling and prefix affinity.
	PolicyHerd = "herd"
	// PolicyRoundRobin rotates over eligible nodes by request sequence number.
	PolicyRoundRobin = "round_robin"
	// PolicyLeastInflight prefers the eligible node with the fewest requests in flight.
	PolicyLeastInflight = "least_inflight"
)

// Request is what the scheduler needs to know about one request.
type Request struct {
	Model string
	// Class is "interactive" or "batch".
	Class string
	// PromptTokens is an estimate of the prompt's size in tokens; MaxTokens the requested output cap (0: unknown).
	PromptTokens int
	MaxTokens    int
	// PrefixHash identifies the conversation prefix (0: none), for KV-cache affinity.
	PrefixHash uint64
	// ModelVRAMBytes is the estimated VRAM the model needs when loaded (0: unknown).
	ModelVRAMBytes uint64
	// Seq is a per-gateway sequence number; round robin rotates on it.
	Seq uint64
	// Seed seeds the tie-breaking shuffle.
	Seed uint64
	// Exclude lists node IDs already tried for this request (failover).
	Exclude []string
}

// Snapshot is an immutable view of the cluster. Callers must not modify it after handing it to Pick.
type Snapshot struct {
	Now   time.Time
	Nodes []Node
}

// Node is one node as the scheduler sees it.
type Node struct {
	ID      string
	Address string
	Backend string
	// Stale is true when the node's heartbeat is older than three intervals.
	Stale    bool
	Draining bool
	// Healthy is false when a GPU is unhealthy; UnhealthyReason says why.
	Healthy         bool
	UnhealthyReason string
	CircuitOpen     bool
	// CanLoad is true when the backend loads models on demand (Ollama, sim).
	CanLoad  bool
	InFlight int
	Queued   int
	Slots    int
	// MaxQueue bounds Queued; 0 means no bound.
	MaxQueue int
	// VRAMTotalBytes and VRAMUsedBytes are summed over the node's GPUs.
	VRAMTotalBytes uint64
	VRAMUsedBytes  uint64
	// Utilization is the mean GPU utilisation in [0,1].
	Utilization float64
	// Throttled is true when a GPU is in thermal or power slowdown.
	Throttled bool
	Models    []NodeModel
}

// NodeModel is one model on a node.
type NodeModel struct {
	Name      string
	Resident  bool
	OnDisk    bool
	VRAMBytes uint64
	// TokensPerSecond is the node's measured decode speed for the model (EWMA); 0: unmeasured.
	TokensPerSecond float64
	InFlight        int
	LastUsed        time.Time
}

// Reason says why a filter refused a node.
type Reason uint8

// Filter reasons.
const (
	ReasonNone Reason = iota
	ReasonStale
	ReasonDraining
	ReasonUnhealthy
	ReasonCircuitOpen
	ReasonModelUnavailable
	ReasonDoesNotFit
	ReasonQueueFull
	ReasonExcluded
)

var reasonText = [...]string{
	ReasonNone:             "",
	ReasonStale:            "heartbeat stale",
	ReasonDraining:         "draining",
	ReasonUnhealthy:        "GPU unhealthy",
	ReasonCircuitOpen:      "circuit open",
	ReasonModelUnavailable: "model not on node",
	ReasonDoesNotFit:       "model does not fit in free VRAM",
	ReasonQueueFull:        "queue full",
	ReasonExcluded:         "already tried",
}

// String is the reason in words.
func (r Reason) String() string {
	if int(r) < len(reasonText) {
		return reasonText[r]
	}
	return "unknown"
}

// Candidate is one eligible node, best first in Decision.Candidates.
type Candidate struct {
	// Node indexes Snapshot.Nodes.
	Node  int
	Score float64
	// NeedsLoad is true when the model is not resident there and will be loaded.
	NeedsLoad bool
}

// Rejection records why a filter refused a node.
type Rejection struct {
	Node   int
	Reason Reason
}

// Decision is the outcome of Pick. Reuse one across calls to avoid allocations.
type Decision struct {
	Candidates []Candidate
	Rejections []Rejection
}

// Reset empties d, keeping its capacity.
func (d *Decision) Reset() {
	d.Candidates = d.Candidates[:0]
	d.Rejections = d.Rejections[:0]
}
