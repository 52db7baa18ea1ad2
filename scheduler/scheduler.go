// Package scheduler decides which node serves a request. It is a pure function of a request and
// an immutable snapshot of the cluster: no I/O, no clock reads, no globals. Filters refuse nodes
// and record why; scorers rate the survivors in [0,1] with configurable weights; a picker orders
// them and breaks ties with a shuffle seeded from the request, so a decision can be replayed.
//
// Decisions this package makes, where the design left room:
//
//   - Expected wait is a small queueing model. A node runs Slots requests at once; each stream
//     decodes at the node's single-stream tokens/s for the model, slowed by its contention for
//     every other busy slot (decode shares memory bandwidth), after a prefill of the prompt.
//     Requests beyond Slots queue and drain at the node's aggregate rate. A model that is not
//     resident adds its load time (size ÷ LoadBytesPerSecond).
//   - Speeds are learned, not assumed: a Learner (learn.go) fits each (node, model)'s single-stream
//     speed, contention and prefill speed to what the node measured and reported in its
//     heartbeats, and the registry puts the fit in the snapshot (NodeModel.Learned). Only while a
//     node has measured nothing for a model does the scheduler fall back to a prior, in order:
//     the node's other learned or measured models scaled by model size (decode is memory-bound),
//     its GPU's memory bandwidth at models.DefaultDecodeEfficiency (the profile's paper figure),
//     the cluster median for the model, or DefaultTokensPerSecond; and to SlotContention and
//     PrefillSpeedup for contention and prefill. The simulator's own physics (nodeagent/sim) is
//     thus never the scheduler's: a simulated or real node slower than its profile says is seen
//     as slow once it has served a few requests (TestLearnerAdaptsToSlowNode).
//   - The wait score is relative: the candidate with the lowest wait cost scores 1 and one that
//     would cost twice as much scores 0.5. It needs no time scale and works for a cluster of T4s
//     as well as one of H100s. The cost is the expected wait with the time queued for a slot
//     counted QueueAversion (2) times, because a request that queues also delays the requests
//     that queue behind it; ranking by the request's own wait alone (greedy) piles work onto fast
//     GPUs and lets slow idle ones sit, which the heterogeneous simulation test shows to lose.
//   - Ties are broken by a key hashed from the request's Seed and Seq and the node's ID, so the
//     order of tied nodes is a shuffle that a replay of the same request reproduces, whatever
//     order the snapshot lists nodes in.
//   - Prefix affinity is weighted rendezvous hashing over the eligible nodes: when the preferred
//     node of a conversation drops out, only its conversations move. Each node is weighted by the
//     work it can take (its decode rate with all slots busy, from its GPU's bandwidth when known),
//     so a 3090 is home to about three times the conversations of a T4 and a conversation's home
//     is usually the node the wait scorer prefers anyway; with equal weights, a third of the
//     conversations were homed on the slowest GPU, where the wait scorer rarely let them go, and
//     their KV cache was never reused.
//     The rendezvous home counts only while no node is known to hold any of the prompt: what the
//     gateway's prefix index says (Request.Prefix) is better than a guess.
//   - Prompt caches are compared in seconds: the tokens a node's cache holds ÷ its learned
//     prefill speed is prefill it will not do, taken off its expected wait and scored as
//     saved ÷ (saved + wait cost), so a cache wins against an idle node when the saving is worth
//     more than the queue it joins. A node past PrefixLoadFactor × its share of the load loses
//     its prefix and affinity scores (consistent hashing with bounded loads), unless it has a
//     free slot: at low load the bound alone would refuse every home.
//   - A model loading on one node (NodeModel.Loading) is the only place the herd policy sends
//     its requests: others would start second loads of a model that will be resident in seconds.
//     A load elsewhere is scored by what it evicts (evictionHarm), and taken only when no other
//     candidate costs less, waiting included (residency.go).
//   - Batch requests (Class "batch") are refused by nodes with no free slot, so bulk work only
//     fills capacity that interactive work leaves free.
//   - Round robin rotates over the eligible nodes in snapshot order (the registry lists nodes
//     sorted by ID), starting at Seq modulo their number.
//   - The placement planner (Plan, Replicas) evicts only idle models (no request in flight),
//     least recently used first, and never a model it is told to keep.
package scheduler

import (
	"fmt"
	"time"
)

// Policy names.
const (
	// PolicyHerd scores residency, expected wait, VRAM headroom, utilisation, throttling and prefix affinity.
	PolicyHerd = "herd"
	// PolicyRoundRobin rotates over eligible nodes by request sequence number.
	PolicyRoundRobin = "round_robin"
	// PolicyLeastInflight prefers the eligible node with the fewest requests in flight.
	PolicyLeastInflight = "least_inflight"
	// PolicyCHWBL is KubeAI's PrefixHash strategy: consistent hashing with bounded loads over a
	// key taken from the first user message (Request.RoutingKey), a baseline for prefix routing.
	PolicyCHWBL = "chwbl"
)

// Request classes, as in Request.Class.
const (
	// ClassInteractive is a request from a waiting client; it may queue on a busy node.
	ClassInteractive = "interactive"
	// ClassBatch is a line of a bulk job; it is only placed on a node with a free slot.
	ClassBatch = "batch"
)

// Request is what the scheduler needs to know about one request.
type Request struct {
	Model string
	// Class is "interactive" or "batch".
	Class string
	// PromptTokens is an estimate of the prompt's size in tokens; MaxTokens the requested output cap (0: unknown).
	PromptTokens int
	MaxTokens    int
	// PrefixHash identifies the conversation's opening (0: none): the rendezvous key that gives a
	// conversation a home while no node is known to hold any of its prompt.
	PrefixHash uint64
	// Prefix says, per node, how many of the prompt's tokens the node's engine is expected to hold
	// in its prompt cache (the gateway's prefix index, kept outside the scheduler); a node not
	// listed holds none. The herd policy counts the prefill they save.
	Prefix []PrefixMatch
	// RoutingKey is the chwbl policy's key: XXH64 of the first 100 characters of the first user
	// message (KubeAI's prefix; of the empty string when there is none).
	RoutingKey uint64
	// ModelVRAMBytes is the estimated VRAM the model needs when loaded (0: unknown).
	ModelVRAMBytes uint64
	// Seq is a per-gateway sequence number; round robin rotates on it.
	Seq uint64
	// Seed seeds the tie-breaking shuffle (with Seq). Vary it per request and log it: the same
	// Request on the same Snapshot gives the same Decision.
	Seed uint64
	// Exclude lists node IDs already tried for this request (failover).
	Exclude []string
	// Demand is each model's request rate (requests/s) as the gateway measures it; nil: unknown.
	// The herd policy weighs an eviction by how soon the evicted model will be asked for again.
	// The map is shared and read-only.
	Demand map[string]float64
	// Waiting is how many other requests for the model wait in the gateway's queue: work ahead
	// of this one on the nodes that hold the model, which a load elsewhere would relieve.
	Waiting int
}

// PrefixMatch is how much of a request's prompt one node holds in its engine's prompt cache.
type PrefixMatch struct {
	Node string
	// Tokens is the estimated number of leading prompt tokens the node would not prefill again.
	Tokens int
}

// Snapshot is an immutable view of the cluster. Callers must not modify it after handing it to Pick.
type Snapshot struct {
	Now   time.Time
	Nodes []Node
	// ByModel, when set, lists for each model name the nodes whose Models name it (ascending by
	// node), so that a request looks only at the nodes that could serve it: in a fleet of many
	// models that is a fraction of the nodes. A nil ByModel makes Pick look at every node. Build
	// it with IndexByModel.
	ByModel map[string][]ModelRef
}

// ModelRef is one node's listing of a model: Snapshot.Nodes[Node].Models[Model].
type ModelRef struct {
	Node, Model int32
}

// IndexByModel builds the ByModel index of nodes. A name a node lists twice refers to its first.
func IndexByModel(nodes []Node) map[string][]ModelRef {
	idx := make(map[string][]ModelRef)
	for i := range nodes {
		for j := range nodes[i].Models {
			name := nodes[i].Models[j].Name
			if l := idx[name]; len(l) == 0 || l[len(l)-1].Node != int32(i) {
				idx[name] = append(l, ModelRef{Node: int32(i), Model: int32(j)})
			}
		}
	}
	return idx
}

// nodesWith returns the nodes that list model when the snapshot is indexed; ok is false when it
// is not (every node must then be looked at).
func (s *Snapshot) nodesWith(model string) (idx []ModelRef, ok bool) {
	if s.ByModel == nil {
		return nil, false
	}
	return s.ByModel[model], true
}

// Node is one node as the scheduler sees it.
type Node struct {
	ID      string
	Address string
	Backend string
	// Engine is the model server behind the backend as the agent names it ("ollama",
	// "llama.cpp", "vllm"; empty: unknown). The scheduler does not read it; the gateway's prefix
	// index models each engine's prompt cache.
	Engine string
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
	// MaxLoadedModels is the most models the backend keeps resident (Ollama's
	// OLLAMA_MAX_LOADED_MODELS); 0: no bound but memory. A load past it evicts the least recently
	// used idle model even when memory is free.
	MaxLoadedModels int
	// MemoryBandwidthGBs is the peak memory bandwidth of the node's fastest GPU (from its models
	// GPU profile); 0: unknown. It estimates decode speed for a model the node has not measured.
	MemoryBandwidthGBs float64
}

// NodeModel is one model on a node.
type NodeModel struct {
	Name     string
	Resident bool
	// Loading is true while a load of the model is under way on the node: the gateway sent it a
	// request that needed the load and no heartbeat shows the model resident yet. Requests
	// arriving meanwhile coalesce behind that load (herd policy) instead of starting others.
	Loading   bool
	OnDisk    bool
	VRAMBytes uint64
	// TokensPerSecond is the node's measured decode speed for the model (EWMA over its recent
	// requests, each at whatever concurrency it ran); 0: unmeasured.
	TokensPerSecond float64
	InFlight        int
	LastUsed        time.Time
	// SizeBytes is the size of the model's weights on disk; 0: unknown. It sizes load time and,
	// with MemoryBandwidthGBs, the decode speed estimate.
	SizeBytes uint64
	// Concurrency is the mean number of requests in flight on the model while those requests
	// decoded (0: not reported); PrefillTokensPerSecond the measured prompt-processing speed.
	Concurrency            float64
	PrefillTokensPerSecond float64
	// Learned is what a Learner fitted to the node's measurements (Samples 0: nothing yet). When
	// set it is the wait model's speed and contention for this node and model.
	Learned Speed
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
	ReasonNoFreeSlotForBatch
	ReasonCannotLoad
	ReasonAlreadyResident
	ReasonLoadingElsewhere
	ReasonWaitCheaper
	ReasonSwapping
)

var reasonText = [...]string{
	ReasonNone:               "",
	ReasonStale:              "heartbeat stale",
	ReasonDraining:           "draining",
	ReasonUnhealthy:          "GPU unhealthy",
	ReasonCircuitOpen:        "circuit open",
	ReasonModelUnavailable:   "model not on node",
	ReasonDoesNotFit:         "model does not fit in free VRAM",
	ReasonQueueFull:          "queue full",
	ReasonExcluded:           "already tried",
	ReasonNoFreeSlotForBatch: "no free slot for batch work",
	ReasonCannotLoad:         "model not loaded and the backend cannot load it",
	ReasonAlreadyResident:    "model already resident",
	ReasonLoadingElsewhere:   "model is loading on another node: requests wait for that load",
	ReasonWaitCheaper:        "a load here costs more than waiting for a cheaper node",
	ReasonSwapping:           "the node is loading another model in place of one it evicts: requests for others wait",
}

var reasonCode = [...]string{
	ReasonNone:               "",
	ReasonStale:              "stale",
	ReasonDraining:           "draining",
	ReasonUnhealthy:          "unhealthy",
	ReasonCircuitOpen:        "circuit_open",
	ReasonModelUnavailable:   "model_unavailable",
	ReasonDoesNotFit:         "does_not_fit",
	ReasonQueueFull:          "queue_full",
	ReasonExcluded:           "excluded",
	ReasonNoFreeSlotForBatch: "no_free_slot_for_batch",
	ReasonCannotLoad:         "cannot_load",
	ReasonAlreadyResident:    "already_resident",
	ReasonLoadingElsewhere:   "loading_elsewhere",
	ReasonWaitCheaper:        "wait_cheaper",
	ReasonSwapping:           "swapping",
}

// String is the reason in words.
func (r Reason) String() string {
	if int(r) < len(reasonText) {
		return reasonText[r]
	}
	return "unknown"
}

// Code is the reason as a stable snake_case token, for metric labels and JSON.
func (r Reason) Code() string {
	if int(r) < len(reasonCode) {
		return reasonCode[r]
	}
	return "unknown"
}

// MarshalText encodes the reason as its Code, so JSON carries a stable token, not a number.
func (r Reason) MarshalText() ([]byte, error) { return []byte(r.Code()), nil }

// UnmarshalText decodes a Code back into the reason.
func (r *Reason) UnmarshalText(b []byte) error {
	for i, c := range reasonCode {
		if c == string(b) {
			*r = Reason(i)
			return nil
		}
	}
	return fmt.Errorf("scheduler: unknown reason %q", b)
}

// Candidate is one eligible node of Decision.Candidates.
type Candidate struct {
	// Node indexes Snapshot.Nodes.
	Node int
	// Score is in [0,1], in whole billionths; candidates closer than that tie.
	Score float64
	// NeedsLoad is true when the model is not resident there and will be loaded.
	NeedsLoad bool
	// ExpectedWait is the scheduler's estimate of the time until the request completes there,
	// load and queue included.
	ExpectedWait time.Duration
	// PrefixTokens is the part of the prompt the node holds in its prompt cache (Request.Prefix).
	PrefixTokens int

	// tie orders candidates of equal score: a hash of the request's seed and the node's ID.
	tie uint64
}

// Rejection records why a filter refused a node.
type Rejection struct {
	Node   int
	Reason Reason
}

// Decision is the outcome of Pick. Reuse one across calls to avoid allocations.
type Decision struct {
	// Candidates are the eligible nodes: Candidates[:Ranked] best first, then the others (a
	// large fleet's; see RankedCandidates), none scored better than Candidates[Ranked-1], in
	// snapshot order.
	Candidates []Candidate
	// Ranked is how many of Candidates are in order: all of them, or RankedCandidates.
	Ranked     int
	Rejections []Rejection
	// Unlisted counts the nodes of an indexed snapshot (Snapshot.ByModel) that do not list the
	// model at all: Pick does not look at them, so they are not in Rejections one by one (their
	// reason is ReasonModelUnavailable).
	Unlisted int
	// Policy is the policy that made the decision.
	Policy string

	// evals is per-node scratch, indexed like Snapshot.Nodes; speeds, keys, top and tmp are
	// scratch for the cluster median and the ranking. All are kept between calls so that a reused
	// Decision makes Pick allocation-free.
	evals  []nodeEval
	speeds []float64
	keys   []uint64
	top    []uint64
	tmp    []Candidate
	order  []int
}

// Reset empties d, keeping its capacity.
func (d *Decision) Reset() {
	d.Candidates = d.Candidates[:0]
	d.Ranked = 0
	d.Rejections = d.Rejections[:0]
	d.Unlisted = 0
	d.Policy = ""
}

// Best returns the best candidate and true, or false when no node can serve the request.
func (d *Decision) Best() (Candidate, bool) {
	if len(d.Candidates) == 0 {
		return Candidate{}, false
	}
	return d.Candidates[0], true
}
