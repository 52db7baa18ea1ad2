package registry

import (
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	herdclock "github.com/herd-llm/herd/clock"
	"github.com/herd-llm/herd/nodeagent/agentapi"
	"github.com/herd-llm/herd/scheduler"
)

// ErrUnknownNode is returned for a node ID the registry has not heard from (or has forgotten).
var ErrUnknownNode = errors.New("registry: unknown node")

// NodeView is one node as the admin API and the metrics see it. Its slices (in Heartbeat) are
// shared with the registry and must not be modified.
type NodeView struct {
	Heartbeat       agentapi.Heartbeat
	Healthy         bool
	Draining        bool
	Stale           bool
	UnhealthyReason string
	// Circuit is CircuitClosed, CircuitOpen or CircuitHalfOpen.
	Circuit       string
	LastHeartbeat time.Time
	// GatewayInFlight counts requests this gateway has sent to the node and not yet finished.
	GatewayInFlight int
	// InFlight and Queued are the counts the scheduler sees for the node (scheduler.Node's):
	// this gateway's own requests plus the other gateways' work its last heartbeat reported,
	// split at the node's slots (see slots).
	InFlight, Queued int
}

// node is the registry's record of one node: one field per part of the registry.
type node struct {
	id string

	// slots and breaker are used on the request path without Registry.mu (they have their own
	// atomics and lock).
	slots   slots
	breaker breaker

	// Guarded by Registry.mu.
	hb       agentapi.Heartbeat // the last heartbeat, for the admin view and identity
	base     scheduler.Node     // everything derived from hb; dynamic fields are filled at build
	seen     seen
	draining bool
	loads    loads
}

// Registry holds every node the gateway has heard from. It is safe for concurrent use.
type Registry struct {
	cfg   Config
	clock herdclock.Clock
	log   *slog.Logger

	// byID finds a node by ID without a lock (Acquire, Release); written under mu. A sync.Map,
	// not a copy-on-write map: copying the map at every join made a whole fleet joining at once
	// (a gateway restarted under 1,000 agents) cost the square of the fleet.
	byID sync.Map // string → *node

	mu    sync.Mutex // guards node fields marked so, nodes, live, snaps.modelsVer, epoch, and rebuilds
	nodes []*node    // sorted by id

	snaps snapshots
	live  liveness

	// changed is closed and replaced to broadcast a change; waited says someone holds it.
	changed atomic.Pointer[chan struct{}]
	waited  atomic.Bool

	// shared, when set (Share), is the node table all gateways keep in common; epoch is the
	// table's at the last read (guarded by mu).
	shared Shared
	epoch  string

	refusals refusalLog
	// learner fits each node's speeds to its heartbeats' measurements (scheduler.Learner).
	learner *scheduler.Learner
}

// New returns an empty registry. Zero fields of cfg take DefaultConfig's values; a nil clock is
// the system clock.
func New(cfg Config, clock herdclock.Clock) *Registry {
	if clock == nil {
		clock = herdclock.System{}
	}
	cfg = cfg.withDefaults()
	r := &Registry{cfg: cfg, clock: clock, log: slog.Default(), live: liveness{cfg: cfg},
		learner: scheduler.NewLearner(cfg.Learner)}
	ch := make(chan struct{})
	r.changed.Store(&ch)
	return r
}

// SetLogger replaces the logger circuit transitions and forgotten nodes are reported to.
func (r *Registry) SetLogger(l *slog.Logger) {
	if l != nil {
		r.log = l
	}
}

// SetBuildObserver has f told the duration of every full snapshot build (not the cheap reuse
// that only refreshes in-flight counters), so the gateway can export what its fleet costs. Call
// it before the registry is used; f must be fast and safe for concurrent use.
func (r *Registry) SetBuildObserver(f func(time.Duration)) { r.snaps.onBuild = f }

// Changed returns a channel that is closed at the next change that may free capacity: a
// heartbeat (Observe), a Release, an undrain, a circuit closing, a node being forgotten. Use it
// as: ch := r.Changed(); check your condition on a fresh Snapshot; if unmet, wait on ch (and your
// deadline), then loop. Taking the channel before checking means no change is missed; wake-ups
// may be spurious. Time-driven transitions (an open circuit turning half-open) do not signal, so
// waiters should also bound their wait.
func (r *Registry) Changed() <-chan struct{} {
	// Load first, then announce: a notifier that misses the announcement ran before the caller's
	// check of the state, so the caller sees its change anyway.
	ch := r.changed.Load()
	r.waited.Store(true)
	return *ch
}

func (r *Registry) notify() {
	if !r.waited.Swap(false) {
		return
	}
	next := make(chan struct{})
	old := r.changed.Swap(&next)
	close(*old)
}

func (r *Registry) lookup(id string) *node {
	if v, ok := r.byID.Load(id); ok {
		return v.(*node)
	}
	return nil
}

// Observe records a heartbeat in this gateway's registry only and returns the gateway's reply.
// The caller has checked that hb.NodeID and hb.Address are set; hb's slices are copied. A
// heartbeat from another instance, or from the holder's instance at another address, of a node
// whose heartbeats are fresh is refused with a *ConflictError (see identity.go). Gateways with a
// shared registry call Accept instead.
func (r *Registry) Observe(hb agentapi.Heartbeat) (agentapi.HeartbeatReply, error) {
	return r.observe(hb, true)
}

// observe records hb; with checkID it refuses a conflicting claimant first.
func (r *Registry) observe(hb agentapi.Heartbeat, checkID bool) (agentapi.HeartbeatReply, error) {
	now := r.clock.Now()
	hb = cloneHeartbeat(hb)
	r.mu.Lock()
	n := r.lookup(hb.NodeID)
	if n != nil && !sameHolder(&n.hb, &hb) {
		if checkID && !r.live.stale(n.seen, now) {
			err := conflict(&n.hb, &hb, now.Sub(n.seen.at), r.live.staleAfter(n.seen))
			r.mu.Unlock()
			r.logRefusal(err)
			return agentapi.HeartbeatReply{}, err
		}
		// The holder went stale (or the shared table, which checked, says so): the ID moves to
		// the new instance, a restarted agent or another one.
		r.log.Info("node id taken by a new agent instance", "node", hb.NodeID, "address", hb.Address,
			"instance_fp", agentapi.InstanceFingerprint(hb.InstanceID),
			"previous_address", n.hb.Address, "previous_instance_fp", agentapi.InstanceFingerprint(n.hb.InstanceID))
	}
	if n == nil {
		n = &node{id: hb.NodeID}
		r.addLocked(n)
		r.log.Info("node joined", "node", hb.NodeID, "address", hb.Address, "backend", hb.Backend, "simulated", hb.Simulated)
	}
	r.recordLocked(n, hb, now)
	reply := agentapi.HeartbeatReply{Draining: n.draining, Registry: agentapi.RegistryLocal}
	if r.live.scanDue(now) {
		r.forgetLocked(now)
	}
	r.snaps.structChanged()
	r.mu.Unlock()
	r.notify()
	return reply, nil
}

// recordLocked makes hb, seen at at, the node's latest heartbeat; r.mu must be held.
func (r *Registry) recordLocked(n *node, hb agentapi.Heartbeat, at time.Time) {
	n.hb = hb
	n.seen = seen{at: at, interval: r.live.intervalOf(&hb)}
	prev := n.base.Models
	n.base = baseNode(&hb)
	if !sameModelNames(prev, n.base.Models) {
		r.snaps.modelsChanged()
	}
	r.learner.Learn(&n.base)
	n.loads.confirm(n.base.Models)
	n.slots.heartbeat(hb.InFlight, hb.Queued)
}

// addLocked inserts n into the sorted list and the lookup map; r.mu must be held.
func (r *Registry) addLocked(n *node) {
	i, _ := slices.BinarySearchFunc(r.nodes, n.id, func(a *node, id string) int { return strings.Compare(a.id, id) })
	r.nodes = slices.Insert(r.nodes, i, n)
	r.snaps.modelsChanged()
	r.byID.Store(n.id, n)
}

// forgetLocked drops nodes silent for longer than their forget window; r.mu must be held.
func (r *Registry) forgetLocked(now time.Time) {
	r.live.scanned(now)
	kept := r.nodes[:0]
	var dropped bool
	for _, n := range r.nodes {
		if r.live.forgotten(n.seen, now) {
			r.log.Warn("node forgotten after silence", "node", n.id, "last_heartbeat", n.seen.at)
			r.learner.Forget(n.id)
			r.byID.CompareAndDelete(n.id, n)
			dropped = true
			continue
		}
		kept = append(kept, n)
	}
	if !dropped {
		return
	}
	clear(r.nodes[len(kept):])
	r.nodes = kept
	r.snaps.modelsChanged()
	r.snaps.structChanged()
	// Waking waiters lets them fail fast instead of waiting for a node that is gone.
	r.notify()
}

// Acquire counts one more request this gateway sent to nodeID. Pair every Acquire with a Release.
// On a half-open node the first Acquire is the probe: until it is reported or released the
// snapshot shows the circuit open, so only one request tests a node that was failing.
func (r *Registry) Acquire(nodeID string) {
	n := r.lookup(nodeID)
	if n == nil {
		return
	}
	n.slots.acquire()
	r.snaps.loadChanged()
	if n.breaker.acquire(r.clock.Now()) {
		r.snaps.structChanged()
	}
}

// Release ends a request counted by Acquire. A half-open probe released without a verdict
// (ReportSuccess/ReportFailure) lets the next request probe.
func (r *Registry) Release(nodeID string) {
	n := r.lookup(nodeID)
	if n == nil {
		return
	}
	n.slots.release()
	r.snaps.loadChanged()
	if n.breaker.release() {
		r.snaps.structChanged()
	}
	r.notify()
}

// ReportSuccess records that a request to nodeID got an answer. Call it as soon as the agent
// answered (response headers), not at the end of a long stream, so a half-open probe closes the
// circuit promptly.
func (r *Registry) ReportSuccess(nodeID string) {
	n := r.lookup(nodeID)
	if n == nil {
		return
	}
	if n.breaker.success(r.clock.Now()) {
		r.log.Info("circuit closed", "node", nodeID)
		r.snaps.structChanged()
		r.notify()
	}
}

// ReportFailure records that a request to nodeID failed on the node's side (connection refused,
// timeout, 5xx before the first byte). CircuitFailures consecutive failures open the circuit for
// CircuitOpenFor; a failed half-open probe opens it again at once.
func (r *Registry) ReportFailure(nodeID string) {
	n := r.lookup(nodeID)
	if n == nil {
		return
	}
	if opened, failures := n.breaker.failure(r.clock.Now(), r.cfg.CircuitFailures, r.cfg.CircuitOpenFor); opened {
		r.log.Warn("circuit opened", "node", nodeID, "consecutive_failures", failures, "open_for", r.cfg.CircuitOpenFor)
		r.snaps.structChanged()
	}
}

// Nodes returns every known node, sorted by ID.
func (r *Registry) Nodes() []NodeView {
	now := r.clock.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.forgetLocked(now)
	views := make([]NodeView, len(r.nodes))
	for i, n := range r.nodes {
		views[i] = r.viewLocked(n, now)
	}
	return views
}

// Node returns one node's view, or false when the registry does not know it.
func (r *Registry) Node(id string) (NodeView, bool) {
	now := r.clock.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.forgetLocked(now)
	n := r.lookup(id)
	if n == nil {
		return NodeView{}, false
	}
	return r.viewLocked(n, now), true
}

func (r *Registry) viewLocked(n *node, now time.Time) NodeView {
	local := n.slots.mine()
	inFlight, queued := n.slots.split(local, n.base.Slots)
	return NodeView{
		Heartbeat:       n.hb,
		Healthy:         n.base.Healthy,
		Draining:        n.draining,
		Stale:           r.live.stale(n.seen, now),
		UnhealthyReason: n.base.UnhealthyReason,
		Circuit:         n.breaker.circuit(now),
		LastHeartbeat:   n.seen.at,
		GatewayInFlight: local,
		InFlight:        inFlight,
		Queued:          queued,
	}
}
