// Package registry turns agent heartbeats into the scheduler's snapshot of the cluster.
//
// Every agent pushes a Heartbeat; Observe records it. Snapshot hands the scheduler an immutable
// *scheduler.Snapshot that is rebuilt only when something changed (a heartbeat, a gateway-side
// acquire or release, a drain, a circuit-breaker transition) or when time alone changed a node's
// state (its heartbeat went stale, its open circuit reached half-open); otherwise the cached one
// is returned. The hot path (Acquire, Release, ReportSuccess, Snapshot on an unchanged cluster)
// uses atomics only; one mutex serialises rebuilds and heartbeat bookkeeping.
//
// Decisions written down here:
//   - Staleness is measured on the gateway's clock (the time a heartbeat arrived), never on the
//     agent's SentAt, so clock skew between hosts cannot make a node look fresh or stale.
//   - A node whose heartbeat is older than StaleAfterBeats × its interval (the agent's IntervalMS,
//     else Config.HeartbeatInterval) is Stale; after ForgetAfter of silence it is forgotten.
//   - Node.InFlight + Node.Queued is this gateway's own in-flight count for the node (exact:
//     Acquire/Release) plus the work the node's last heartbeat reported beyond what this gateway
//     had in flight there when that heartbeat arrived (work other gateways sent):
//     busy = local + max(0, hb.in_flight + hb.queued − local_at_heartbeat). Taking the max of the
//     two counts instead (the earlier rule) let a heartbeat up to one interval old keep a node
//     looking busy for up to a second after its requests ended, so admission held requests for
//     slots that were already free and the expected-wait scorer steered away from idle nodes.
//     The gateway counts a request from before it is sent until after its last byte, a window
//     that covers the agent's, so at any instant the heartbeat's count of this gateway's requests
//     is at most the local count: subtracting the local count can only under-estimate the other
//     gateways' work, never invent some. The one exception is a request that ends between the
//     agent's sample and the heartbeat's arrival (one network hop); it is counted as another
//     gateway's until the next heartbeat. The other work keeps the heartbeat's split between
//     running and queued; local requests count as running, and whatever exceeds Slots as queued.
//   - A snapshot rebuilt only because in-flight counters moved copies the previous snapshot's
//     nodes and patches their counts (two allocations, no per-node locks); handed-out snapshots
//     are never written.
//   - Model names are the backend's names (ModelName). Ollama-style backends (Ollama and the
//     simulator) have their names normalised with models.NormalizeName (lower case, a missing tag
//     becomes ":latest") so that "llama3" and "llama3:latest" are one model, as Ollama itself
//     treats them; callers look a request's name up as it is first, then normalised. An
//     OpenAI-compatible server's ids (vLLM's "Qwen/Qwen2.5-0.5B-Instruct") are kept exactly as
//     it lists them: such servers compare names case-sensitively and know no ":latest".
//   - Node.MemoryBandwidthGBs comes from the models GPU profile whose name matches the node's
//     fastest GPU (0 when none does): the scheduler's prior for speeds nobody has measured yet.
//     Every heartbeat's measured speeds go through a scheduler.Learner, whose fit (per node and
//     model: single-stream speed, contention, prefill speed) the snapshot carries in
//     NodeModel.Learned; it is this gateway's own fit, learned from every heartbeat it receives.
//   - A node without GPUs (no driver, CPU backend) is healthy; a node is unhealthy as soon as one
//     of its GPUs is.
//   - Drain is gateway-side state: it survives heartbeats and is echoed in HeartbeatReply.
//   - Node identity (the token-only lab mode: every agent holds the one cluster token): a node
//     ID is bound to the agent instance (Heartbeat.InstanceID, new at every agent start) and the
//     address whose heartbeat was recorded last. A heartbeat with another instance, or the same
//     instance from another address, while the holder is fresh is refused with a
//     *ConflictError (the HTTP layer answers 409 node_id_conflict), counted, and logged once a
//     minute per claimant; the record is left as it was, so two live claimants never alternate.
//     That holds for a new instance at the holder's own address too: a restarted agent takes its
//     ID back once its previous start has been silent for the stale window (3 intervals), never
//     at once, since "same address" is only what the claimant says. Once the holder is stale any
//     instance may take the ID. The instance ID is what proves a claim, so nothing this package
//     writes (error texts, logs) contains one: they show agentapi.InstanceFingerprint.
//
// Several gateways (Share, Accept, RunShared): with a Shared table (Redis) the registry stays
// an in-memory cache that the scheduler reads without I/O, and the table is the truth:
//   - Accept writes each heartbeat to the table (which checks the identity cluster-wide, on the
//     table's clock, in one atomic step) and then records it here; RunShared reads the whole
//     table back every heartbeat interval, so a node that heartbeats to another gateway is
//     known here within about one interval. A record no newer than the one held is ignored.
//   - In-flight counts stay heartbeat-carried (the rule above): no Redis traffic per request.
//     Another gateway's work reaches this one with the heartbeat, up to about two intervals late
//     (one heartbeat plus one poll); this gateway's own requests are always exact.
//   - Drains are written to the table before they apply, so every gateway honours them; the
//     circuit breakers stay per gateway, since each gateway judges its own connections.
//   - Outage: when a write or a read of the table fails, the registry holds its last view: for
//     OutageGrace, staleness is judged at the time of the last successful read instead of now,
//     so nodes heartbeating to other gateways do not all go stale because Redis blinked. Nodes
//     that heartbeat to this gateway are recorded here directly meanwhile (the identity checked
//     against this gateway's view), and their reply says "local" so that agents knowing other
//     gateways send them the heartbeat too. A node that died during the hold is caught by the
//     proxy's failover and its circuit breaker. When the table answers again the hold lasts a
//     few more intervals, long enough for every gateway to write its agents back.
//   - A table that lost its data (Redis restarted empty: its epoch changed) refills with the next
//     heartbeats; drains this gateway knows are written back to it.
package registry

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	herdclock "github.com/herd-llm/herd/clock"
	"github.com/herd-llm/herd/models"
	"github.com/herd-llm/herd/nodeagent/agentapi"
	"github.com/herd-llm/herd/scheduler"
)

// ErrUnknownNode is returned for a node ID the registry has not heard from (or has forgotten).
var ErrUnknownNode = errors.New("registry: unknown node")

// ErrNodeIDConflict is matched (errors.Is) by a *ConflictError: a heartbeat refused because
// another live agent holds its node ID.
var ErrNodeIDConflict = errors.New("registry: node id held by another live agent")

// ConflictError is a heartbeat refused because its node ID is bound to another agent instance
// (or to the same instance at another address) whose heartbeats are still fresh. It holds no
// instance ID, only fingerprints: its text goes back to the claimant and into logs.
type ConflictError struct {
	NodeID string
	// HolderFingerprint (agentapi.InstanceFingerprint) and HolderAddress identify the agent that
	// holds the ID.
	HolderFingerprint, HolderAddress string
	// HolderAge is how long ago the holder's last heartbeat arrived; HolderStaleAfter is the
	// holder's stale window: the claim can succeed once the holder has been silent that long.
	HolderAge, HolderStaleAfter time.Duration
	// ClaimantFingerprint and ClaimantAddress identify the refused agent.
	ClaimantFingerprint, ClaimantAddress string
}

// Error implements error.
func (e *ConflictError) Error() string {
	return fmt.Sprintf("node id %q is held by a live agent at %s (instance fingerprint %s, last heartbeat %s ago); "+
		"the claim from %s (instance fingerprint %s) is refused until the holder has been silent for %s: "+
		"a restarted agent takes its id back then; two different agents need different --node-id values",
		e.NodeID, e.HolderAddress, e.HolderFingerprint, e.HolderAge.Round(time.Millisecond),
		e.ClaimantAddress, e.ClaimantFingerprint, e.HolderStaleAfter)
}

// Is makes errors.Is(err, ErrNodeIDConflict) true.
func (e *ConflictError) Is(target error) bool { return target == ErrNodeIDConflict }

// Circuit-breaker states as NodeView.Circuit reports them.
const (
	CircuitClosed   = "closed"
	CircuitOpen     = "open"
	CircuitHalfOpen = "half_open"
)

// Config tunes staleness and the circuit breakers. Zero values are replaced by DefaultConfig's.
type Config struct {
	// HeartbeatInterval is the interval assumed for agents that do not send their own IntervalMS.
	HeartbeatInterval time.Duration `yaml:"heartbeat_interval"`
	// StaleAfterBeats is how many intervals without a heartbeat make a node stale.
	StaleAfterBeats int `yaml:"stale_after_beats"`
	// CircuitFailures is how many consecutive failed requests open a node's circuit.
	CircuitFailures int `yaml:"circuit_failures"`
	// CircuitOpenFor is how long an open circuit keeps a node out before one probe is let through.
	CircuitOpenFor time.Duration `yaml:"circuit_open_for"`
	// ForgetAfter is how long a silent node stays listed (as stale) before it is forgotten.
	ForgetAfter time.Duration `yaml:"forget_after"`
	// OutageGrace is, with a shared registry, how long the nodes that were fresh when the shared
	// registry became unreachable stay in the schedule without news of them (see the package doc).
	OutageGrace time.Duration `yaml:"outage_grace"`
	// Learner tunes the fit of each node's speeds to its heartbeats (the gateway passes its
	// scheduler configuration's, scheduler.Config.LearnerConfig); zero fields take the defaults.
	Learner scheduler.LearnerConfig `yaml:"-"`
}

// DefaultConfig returns the registry's defaults: 1s heartbeats, stale after 3, circuit opens
// after 3 failures for 10s, silent nodes forgotten after 10 minutes.
func DefaultConfig() Config {
	return Config{
		HeartbeatInterval: time.Second,
		StaleAfterBeats:   3,
		CircuitFailures:   3,
		CircuitOpenFor:    10 * time.Second,
		ForgetAfter:       10 * time.Minute,
		OutageGrace:       30 * time.Second,
	}
}

// Validate reports negative settings. Zero settings are valid: they mean "the default".
func (c Config) Validate() error {
	var errs []error
	if c.HeartbeatInterval < 0 {
		errs = append(errs, errors.New("registry: heartbeat interval is negative"))
	}
	if c.StaleAfterBeats < 0 {
		errs = append(errs, errors.New("registry: stale after beats is negative"))
	}
	if c.CircuitFailures < 0 {
		errs = append(errs, errors.New("registry: circuit failures is negative"))
	}
	if c.CircuitOpenFor < 0 {
		errs = append(errs, errors.New("registry: circuit open duration is negative"))
	}
	if c.ForgetAfter < 0 {
		errs = append(errs, errors.New("registry: forget-after duration is negative"))
	}
	if c.OutageGrace < 0 {
		errs = append(errs, errors.New("registry: outage grace is negative"))
	}
	return errors.Join(errs...)
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.HeartbeatInterval <= 0 {
		c.HeartbeatInterval = d.HeartbeatInterval
	}
	if c.StaleAfterBeats <= 0 {
		c.StaleAfterBeats = d.StaleAfterBeats
	}
	if c.CircuitFailures <= 0 {
		c.CircuitFailures = d.CircuitFailures
	}
	if c.CircuitOpenFor <= 0 {
		c.CircuitOpenFor = d.CircuitOpenFor
	}
	if c.ForgetAfter <= 0 {
		c.ForgetAfter = d.ForgetAfter
	}
	if c.OutageGrace <= 0 {
		c.OutageGrace = d.OutageGrace
	}
	return c
}

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
	// split at the node's slots (see the package doc).
	InFlight, Queued int
}

type circuitState uint8

const (
	stateClosed circuitState = iota
	stateOpen
)

// node is the registry's record of one node.
type node struct {
	id string

	// local counts this gateway's requests in flight on the node (Acquire/Release).
	local atomic.Int64
	// circuitClean is true while the circuit is closed with no failure counted, so that
	// ReportSuccess on a healthy node costs one atomic load.
	circuitClean atomic.Bool

	// Guarded by Registry.mu.
	// otherRunning and otherQueued are the work the last heartbeat reported that this gateway
	// did not send (see the package doc).
	otherRunning int
	otherQueued  int
	hb           agentapi.Heartbeat
	base         scheduler.Node // everything derived from hb; dynamic fields are filled at build
	lastSeen     time.Time
	interval     time.Duration
	draining     bool

	cmu       sync.Mutex // guards the circuit fields below
	state     circuitState
	failures  int
	openUntil time.Time
	probing   bool // a half-open probe request is in flight
}

// circuitLocked returns the effective state at now; n.cmu must be held.
func (n *node) circuitLocked(now time.Time) string {
	if n.state == stateClosed {
		return CircuitClosed
	}
	if now.Before(n.openUntil) {
		return CircuitOpen
	}
	return CircuitHalfOpen
}

// load returns the node's in-flight and queued counts for the snapshot with local requests of
// this gateway in flight; r.mu must be held.
func (n *node) load(local int) (inFlight, queued int) {
	inFlight, queued = n.otherRunning+local, n.otherQueued
	if slots := n.base.Slots; slots > 0 && inFlight > slots {
		queued += inFlight - slots
		inFlight = slots
	}
	return inFlight, queued
}

// built is a cached snapshot with what it was built from. The snapshot lives inside it, so a
// rebuild allocates one struct and the node slice.
type built struct {
	snap      scheduler.Snapshot
	structVer uint64
	loadVer   uint64
	// modelsVer is the registry's modelsVer the snapshot's ByModel index was built at.
	modelsVer uint64
	// expires is the first instant at which time alone changes the snapshot.
	expires time.Time
}

// Registry holds every node the gateway has heard from. It is safe for concurrent use.
type Registry struct {
	cfg   Config
	clock herdclock.Clock
	log   *slog.Logger

	// byID is copy-on-write so Acquire/Release find a node without a lock.
	byID atomic.Pointer[map[string]*node]

	mu    sync.Mutex // guards node fields marked so, sorted, and rebuilds
	nodes []*node    // sorted by id

	// structVer counts changes to anything but the local in-flight counters; loadVer counts
	// Acquire/Release. A cached snapshot is reused while both match and it has not expired.
	structVer atomic.Uint64
	loadVer   atomic.Uint64
	cur       atomic.Pointer[built]
	// modelsVer counts changes to which node lists which model (a node joined or was forgotten,
	// or its model names changed; guarded by mu): telemetry moves every second, the model index
	// rarely, so a snapshot build reuses the last index while modelsVer holds still.
	modelsVer uint64

	// changed is closed and replaced to broadcast a change; waited says someone holds it.
	changed atomic.Pointer[chan struct{}]
	waited  atomic.Bool

	// shared, when set (Share), is the node table all gateways keep in common.
	shared Shared
	// Guarded by mu. outage is true while the shared table is unreachable; holdFrom and
	// holdUntil bound the hold of the last view (staleness is judged at holdFrom until holdUntil).
	outage    bool
	lastLoad  time.Time
	holdFrom  time.Time
	holdUntil time.Time
	epoch     string
	// refusals remembers when a refused claimant was last logged, so that an agent retrying every
	// second is logged once a minute.
	refusals map[string]time.Time
	// learner fits each node's speeds to its heartbeats' measurements (scheduler.Learner).
	learner *scheduler.Learner
	// lastForget is when forgetLocked last scanned (guarded by mu).
	lastForget time.Time
	// onBuild, when set (SetBuildObserver), is told how long each full snapshot build took.
	onBuild func(time.Duration)
}

// New returns an empty registry. Zero fields of cfg take DefaultConfig's values; a nil clock is
// the system clock.
func New(cfg Config, clock herdclock.Clock) *Registry {
	if clock == nil {
		clock = herdclock.System{}
	}
	r := &Registry{cfg: cfg.withDefaults(), clock: clock, log: slog.Default(), refusals: map[string]time.Time{},
		learner: scheduler.NewLearner(cfg.Learner)}
	m := map[string]*node{}
	r.byID.Store(&m)
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
func (r *Registry) SetBuildObserver(f func(time.Duration)) { r.onBuild = f }

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
	return (*r.byID.Load())[id]
}

// Observe records a heartbeat in this gateway's registry only and returns the gateway's reply.
// The caller has checked that hb.NodeID and hb.Address are set; hb's slices are copied. A
// heartbeat from another instance, or from the holder's instance at another address, of a node
// whose heartbeats are fresh is refused with a *ConflictError. Gateways with a shared registry call Accept instead.
func (r *Registry) Observe(hb agentapi.Heartbeat) (agentapi.HeartbeatReply, error) {
	return r.observe(hb, true)
}

// observe records hb; with checkID it refuses a conflicting claimant first.
func (r *Registry) observe(hb agentapi.Heartbeat, checkID bool) (agentapi.HeartbeatReply, error) {
	now := r.clock.Now()
	hb = cloneHeartbeat(hb)
	r.mu.Lock()
	n := r.lookup(hb.NodeID)
	if n != nil && (n.hb.InstanceID != hb.InstanceID || n.hb.Address != hb.Address) {
		if checkID && !r.staleLocked(n, now) {
			err := &ConflictError{
				NodeID: hb.NodeID, HolderFingerprint: agentapi.InstanceFingerprint(n.hb.InstanceID), HolderAddress: n.hb.Address,
				HolderAge: now.Sub(n.lastSeen), HolderStaleAfter: r.staleAfter(n),
				ClaimantFingerprint: agentapi.InstanceFingerprint(hb.InstanceID), ClaimantAddress: hb.Address,
			}
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
		n.circuitClean.Store(true)
		r.addLocked(n)
		r.log.Info("node joined", "node", hb.NodeID, "address", hb.Address, "backend", hb.Backend, "simulated", hb.Simulated)
	}
	r.recordLocked(n, hb, now)
	reply := agentapi.HeartbeatReply{Draining: n.draining, Registry: agentapi.RegistryLocal}
	// A scan of every node on every heartbeat grows with the square of the fleet; once a second
	// is enough to drop the silent ones (a snapshot build scans anyway).
	if now.Sub(r.lastForget) >= time.Second {
		r.forgetLocked(now)
	}
	r.structVer.Add(1)
	r.mu.Unlock()
	r.notify()
	return reply, nil
}

// recordLocked makes hb, seen at seen, the node's latest heartbeat; r.mu must be held.
func (r *Registry) recordLocked(n *node, hb agentapi.Heartbeat, seen time.Time) {
	n.hb = hb
	n.lastSeen = seen
	n.interval = r.intervalOf(&hb)
	prev := n.base.Models
	n.base = baseNode(&hb)
	if !sameModelNames(prev, n.base.Models) {
		r.modelsVer++
	}
	r.learner.Learn(&n.base)
	// This gateway's requests the heartbeat can have counted are at most those in flight now.
	busy := max(hb.InFlight, 0) + max(hb.Queued, 0)
	other := max(0, busy-int(n.local.Load()))
	n.otherQueued = min(max(hb.Queued, 0), other)
	n.otherRunning = other - n.otherQueued
}

func (r *Registry) intervalOf(hb *agentapi.Heartbeat) time.Duration {
	if hb.IntervalMS > 0 {
		return time.Duration(hb.IntervalMS) * time.Millisecond
	}
	return r.cfg.HeartbeatInterval
}

// logRefusal logs a refused claimant at Warn, once a minute per claimant instance.
func (r *Registry) logRefusal(e *ConflictError) {
	key := e.NodeID + "\x00" + e.ClaimantFingerprint + "\x00" + e.ClaimantAddress
	now := r.clock.Now()
	r.mu.Lock()
	last, seen := r.refusals[key]
	if seen && now.Sub(last) < time.Minute {
		r.mu.Unlock()
		return
	}
	if len(r.refusals) > 1024 { // a hostile sender cycling instances must not grow the map
		clear(r.refusals)
	}
	r.refusals[key] = now
	r.mu.Unlock()
	r.log.Warn("heartbeat refused: node id held by another live agent", "node", e.NodeID,
		"holder_address", e.HolderAddress, "holder_instance_fp", e.HolderFingerprint, "holder_last_heartbeat_age", e.HolderAge,
		"claimant_address", e.ClaimantAddress, "claimant_instance_fp", e.ClaimantFingerprint)
}

// addLocked inserts n into the sorted list and the lookup map; r.mu must be held.
func (r *Registry) addLocked(n *node) {
	i, _ := slices.BinarySearchFunc(r.nodes, n.id, func(a *node, id string) int { return strings.Compare(a.id, id) })
	r.nodes = slices.Insert(r.nodes, i, n)
	r.modelsVer++
	r.storeMapLocked()
}

func (r *Registry) storeMapLocked() {
	m := make(map[string]*node, len(r.nodes))
	for _, n := range r.nodes {
		m[n.id] = n
	}
	r.byID.Store(&m)
}

// forgetLocked drops nodes silent for longer than ForgetAfter; r.mu must be held.
func (r *Registry) forgetLocked(now time.Time) {
	r.lastForget = now
	kept := r.nodes[:0]
	var dropped bool
	for _, n := range r.nodes {
		if now.Sub(n.lastSeen) > r.forgetAfter(n) {
			r.log.Warn("node forgotten after silence", "node", n.id, "last_heartbeat", n.lastSeen)
			r.learner.Forget(n.id)
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
	r.modelsVer++
	r.storeMapLocked()
	r.structVer.Add(1)
	// Waking waiters lets them fail fast instead of waiting for a node that is gone.
	r.notify()
}

func (r *Registry) staleAfter(n *node) time.Duration {
	return time.Duration(r.cfg.StaleAfterBeats) * n.interval
}

// holdingLocked reports whether the last view of the cluster is held at now because the shared
// registry is (or just was) unreachable; r.mu must be held.
func (r *Registry) holdingLocked(now time.Time) bool {
	return !r.holdUntil.IsZero() && now.Before(r.holdUntil)
}

// staleLocked reports whether n is stale at now: its last heartbeat is older than its stale
// window, judged at holdFrom instead of now while a hold is on; r.mu must be held.
func (r *Registry) staleLocked(n *node, now time.Time) bool {
	ref := now
	if r.holdingLocked(now) && r.holdFrom.Before(now) {
		ref = r.holdFrom
	}
	return ref.Sub(n.lastSeen) > r.staleAfter(n)
}

// staleAtLocked is the first instant at which a node fresh at now turns stale; r.mu must be held.
func (r *Registry) staleAtLocked(n *node, now time.Time) time.Time {
	at := n.lastSeen.Add(r.staleAfter(n)).Add(time.Nanosecond)
	if r.holdingLocked(now) && at.Before(r.holdUntil) {
		at = r.holdUntil
	}
	return at
}

func (r *Registry) forgetAfter(n *node) time.Duration {
	return max(r.cfg.ForgetAfter, 2*r.staleAfter(n))
}

// Snapshot returns the current immutable view of the cluster for the scheduler. The returned
// snapshot is shared and must not be modified.
func (r *Registry) Snapshot() *scheduler.Snapshot {
	now := r.clock.Now()
	b := r.cur.Load()
	if b != nil && b.structVer == r.structVer.Load() && now.Before(b.expires) {
		if b.loadVer == r.loadVer.Load() {
			return &b.snap
		}
		// Only in-flight counters moved. If another goroutine is rebuilding, its snapshot will
		// carry them; meanwhile this one is off by the few requests that just started or ended.
		if !r.mu.TryLock() {
			return &b.snap
		}
	} else {
		r.mu.Lock()
	}
	defer r.mu.Unlock()
	return r.rebuildLocked(r.clock.Now())
}

// rebuildLocked builds a snapshot at now, caches it and returns it; r.mu must be held.
func (r *Registry) rebuildLocked(now time.Time) *scheduler.Snapshot {
	r.forgetLocked(now)
	// Versions are read before the state so a change racing with the build bumps past them and
	// the next Snapshot rebuilds.
	sv, lv := r.structVer.Load(), r.loadVer.Load()
	prev := r.cur.Load()
	if prev != nil && prev.structVer == sv && now.Before(prev.expires) {
		if prev.loadVer == lv {
			return &prev.snap
		}
		// Only in-flight counters moved: nothing else about the nodes can have changed (that
		// would have bumped structVer, and nothing time-driven is due before prev.expires).
		nb := &built{snap: scheduler.Snapshot{Now: now, Nodes: slices.Clone(prev.snap.Nodes), ByModel: prev.snap.ByModel},
			structVer: sv, loadVer: lv, modelsVer: prev.modelsVer, expires: prev.expires}
		for i, n := range r.nodes {
			sn := &nb.snap.Nodes[i]
			sn.InFlight, sn.Queued = n.load(int(n.local.Load()))
		}
		r.cur.Store(nb)
		return &nb.snap
	}
	if r.onBuild != nil {
		// Wall time, not the injected clock: this measures the build's own cost.
		start := time.Now()
		defer func() { r.onBuild(time.Since(start)) }()
	}
	expires := now.Add(r.cfg.HeartbeatInterval) // bounds how old Snapshot.Now can get
	nb := &built{snap: scheduler.Snapshot{Now: now, Nodes: make([]scheduler.Node, len(r.nodes))}, structVer: sv, loadVer: lv, modelsVer: r.modelsVer}
	snap := &nb.snap
	for i, n := range r.nodes {
		sn := &snap.Nodes[i]
		*sn = n.base
		sn.InFlight, sn.Queued = n.load(int(n.local.Load()))
		sn.Draining = n.draining
		sn.Stale = r.staleLocked(n, now)
		// The first instant strictly past the threshold.
		if staleAt := r.staleAtLocked(n, now); !sn.Stale && staleAt.Before(expires) {
			expires = staleAt
		}
		if forgetAt := n.lastSeen.Add(r.forgetAfter(n)).Add(time.Nanosecond); forgetAt.Before(expires) {
			expires = forgetAt
		}
		n.cmu.Lock()
		switch n.circuitLocked(now) {
		case CircuitOpen:
			sn.CircuitOpen = true
			if n.openUntil.Before(expires) {
				expires = n.openUntil
			}
		case CircuitHalfOpen:
			sn.CircuitOpen = n.probing
		}
		n.cmu.Unlock()
	}
	if prev != nil && prev.modelsVer == r.modelsVer && prev.snap.ByModel != nil {
		snap.ByModel = prev.snap.ByModel
	} else {
		snap.ByModel = scheduler.IndexByModel(snap.Nodes)
	}
	nb.expires = expires
	r.cur.Store(nb)
	return snap
}

// sameModelNames reports whether a and b list the same model names in the same order (what the
// snapshot's ByModel index refers to).
func sameModelNames(a, b []scheduler.NodeModel) bool {
	return slices.EqualFunc(a, b, func(x, y scheduler.NodeModel) bool { return x.Name == y.Name })
}

// Acquire counts one more request this gateway sent to nodeID. Pair every Acquire with a Release.
// On a half-open node the first Acquire is the probe: until it is reported or released the
// snapshot shows the circuit open, so only one request tests a node that was failing.
func (r *Registry) Acquire(nodeID string) {
	n := r.lookup(nodeID)
	if n == nil {
		return
	}
	n.local.Add(1)
	r.loadVer.Add(1)
	if n.circuitClean.Load() {
		return
	}
	n.cmu.Lock()
	if n.circuitLocked(r.clock.Now()) == CircuitHalfOpen && !n.probing {
		n.probing = true
		r.structVer.Add(1)
	}
	n.cmu.Unlock()
}

// Release ends a request counted by Acquire. A half-open probe released without a verdict
// (ReportSuccess/ReportFailure) lets the next request probe.
func (r *Registry) Release(nodeID string) {
	n := r.lookup(nodeID)
	if n == nil {
		return
	}
	for {
		// A node forgotten and re-added between Acquire and Release starts at zero; never go below.
		v := n.local.Load()
		if v <= 0 || n.local.CompareAndSwap(v, v-1) {
			break
		}
	}
	r.loadVer.Add(1)
	if !n.circuitClean.Load() {
		n.cmu.Lock()
		if n.probing {
			n.probing = false
			r.structVer.Add(1)
		}
		n.cmu.Unlock()
	}
	r.notify()
}

// ReportSuccess records that a request to nodeID got an answer. Call it as soon as the agent
// answered (response headers), not at the end of a long stream, so a half-open probe closes the
// circuit promptly.
func (r *Registry) ReportSuccess(nodeID string) {
	n := r.lookup(nodeID)
	if n == nil || n.circuitClean.Load() {
		return
	}
	n.cmu.Lock()
	var closed bool
	switch n.circuitLocked(r.clock.Now()) {
	case CircuitClosed:
		n.failures = 0
		n.circuitClean.Store(true)
	case CircuitHalfOpen:
		n.state, n.failures, n.probing = stateClosed, 0, false
		n.circuitClean.Store(true)
		closed = true
	case CircuitOpen:
		// A request that started before the circuit opened says nothing about the node now.
	}
	n.cmu.Unlock()
	if closed {
		r.log.Info("circuit closed", "node", nodeID)
		r.structVer.Add(1)
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
	now := r.clock.Now()
	n.cmu.Lock()
	var opened bool
	switch n.circuitLocked(now) {
	case CircuitClosed:
		n.failures++
		n.circuitClean.Store(false)
		if n.failures >= r.cfg.CircuitFailures {
			n.state, n.openUntil, opened = stateOpen, now.Add(r.cfg.CircuitOpenFor), true
		}
	case CircuitHalfOpen:
		n.state, n.openUntil, n.probing, opened = stateOpen, now.Add(r.cfg.CircuitOpenFor), false, true
	case CircuitOpen:
		// Late failures of requests sent before the circuit opened do not extend it.
	}
	failures := n.failures
	n.cmu.Unlock()
	if opened {
		r.log.Warn("circuit opened", "node", nodeID, "consecutive_failures", failures, "open_for", r.cfg.CircuitOpenFor)
		r.structVer.Add(1)
	}
}

// SetDraining drains (on) or undrains a node: a draining node gets no new requests but finishes
// what it has. The state is the gateway's (with a shared registry, every gateway's: it is written
// there first, and an error wrapping ErrSharedUnavailable means nothing changed) and survives
// heartbeats.
func (r *Registry) SetDraining(id string, on bool) error {
	if r.lookup(id) == nil {
		return fmt.Errorf("%w: %q", ErrUnknownNode, id)
	}
	if r.shared != nil {
		if err := r.setSharedDraining(id, on); err != nil {
			return err
		}
	}
	r.mu.Lock()
	n := r.lookup(id)
	if n == nil {
		r.mu.Unlock()
		return fmt.Errorf("%w: %q", ErrUnknownNode, id)
	}
	changed := n.draining != on
	n.draining = on
	r.mu.Unlock()
	if changed {
		r.log.Info("node drain changed", "node", id, "draining", on)
		r.structVer.Add(1)
		r.notify()
	}
	return nil
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
	n.cmu.Lock()
	circuit := n.circuitLocked(now)
	n.cmu.Unlock()
	local := int(n.local.Load())
	inFlight, queued := n.load(local)
	return NodeView{
		Heartbeat:       n.hb,
		Healthy:         n.base.Healthy,
		Draining:        n.draining,
		Stale:           r.staleLocked(n, now),
		UnhealthyReason: n.base.UnhealthyReason,
		Circuit:         circuit,
		LastHeartbeat:   n.lastSeen,
		GatewayInFlight: local,
		InFlight:        inFlight,
		Queued:          queued,
	}
}

// throttling lists the throttle reasons that slow a GPU down under load (thermal and power);
// idle and clock-setting reasons are not throttling.
var throttling = []string{
	agentapi.ThrottleSWThermal,
	agentapi.ThrottleHWThermal,
	agentapi.ThrottleHWSlowdown,
	agentapi.ThrottleHWPowerBrake,
	agentapi.ThrottleSWPowerCap,
}

// IsThrottling reports whether a GPU throttle reason (agentapi.Throttle*) slows the GPU down
// under load: the thermal and power reasons. Idle and clock-setting reasons do not.
func IsThrottling(reason string) bool { return slices.Contains(throttling, reason) }

// gpuProfile finds the models profile of a GPU by the name NVML reports ("Tesla T4"), else by
// key or alias.
func gpuProfile(name string) (models.GPUProfile, bool) {
	if name == "" {
		return models.GPUProfile{}, false
	}
	if p, ok := models.GPUProfileNamed(name); ok {
		return p, true
	}
	return models.LookupGPU(name)
}

// baseNode derives the scheduler's view of a node from its heartbeat, leaving the fields that
// change without a heartbeat (Stale, Draining, CircuitOpen, InFlight and Queued, which add this
// gateway's own count to the heartbeat's) to the snapshot build.
func baseNode(hb *agentapi.Heartbeat) scheduler.Node {
	sn := scheduler.Node{
		ID:      hb.NodeID,
		Address: hb.Address,
		Backend: hb.Backend,
		Healthy: true,
		CanLoad: hb.Backend == agentapi.BackendOllama || hb.Backend == agentapi.BackendSim,
		Slots:   hb.Slots,
	}
	var util float64
	for _, g := range hb.GPUs {
		sn.VRAMTotalBytes += g.MemoryTotalBytes
		sn.VRAMUsedBytes += g.MemoryUsedBytes
		util += g.UtilizationRatio
		if !g.Healthy && sn.Healthy {
			sn.Healthy = false
			sn.UnhealthyReason = g.HealthReason
			if sn.UnhealthyReason == "" {
				sn.UnhealthyReason = fmt.Sprintf("GPU %d unhealthy", g.Index)
			}
		}
		for _, t := range g.ThrottleReasons {
			if IsThrottling(t) {
				sn.Throttled = true
			}
		}
		if p, ok := gpuProfile(g.Name); ok {
			sn.MemoryBandwidthGBs = max(sn.MemoryBandwidthGBs, p.MemoryBandwidthGBs)
		}
	}
	if len(hb.GPUs) > 0 {
		sn.Utilization = util / float64(len(hb.GPUs))
	}
	sn.Models = make([]scheduler.NodeModel, 0, len(hb.Models))
	for _, m := range hb.Models {
		nm := scheduler.NodeModel{
			Name:            ModelName(hb.Backend, m.Name),
			Resident:        m.Resident,
			OnDisk:          m.OnDisk,
			VRAMBytes:       m.VRAMBytes,
			TokensPerSecond: m.TokensPerSecond,
			InFlight:        m.InFlight,
			LastUsed:        m.LastUsed,
			SizeBytes:       m.SizeBytes,
			// What the node measured, for the scheduler's learner (Registry.Observe).
			Concurrency:            m.Concurrency,
			PrefillTokensPerSecond: m.PrefillTokensPerSecond,
		}
		if j := slices.IndexFunc(sn.Models, func(x scheduler.NodeModel) bool { return x.Name == nm.Name }); j >= 0 {
			// "llama3" and "llama3:latest" reported separately are the same model: merge them.
			e := &sn.Models[j]
			e.Resident = e.Resident || nm.Resident
			e.OnDisk = e.OnDisk || nm.OnDisk
			e.VRAMBytes = max(e.VRAMBytes, nm.VRAMBytes)
			e.TokensPerSecond = max(e.TokensPerSecond, nm.TokensPerSecond)
			e.SizeBytes = max(e.SizeBytes, nm.SizeBytes)
			e.InFlight += nm.InFlight
			if nm.LastUsed.After(e.LastUsed) {
				e.LastUsed = nm.LastUsed
			}
			continue
		}
		sn.Models = append(sn.Models, nm)
	}
	return sn
}

// ModelName is the name the registry keeps for a model a node of the given backend kind reports:
// normalised for Ollama-style backends (Ollama, the simulator), whose names are case-insensitive
// and take ":latest" for a missing tag, and exactly as listed (only trimmed) for an
// OpenAI-compatible server, whose ids are case-sensitive and forwarded as they are spelt.
func ModelName(backend, name string) string {
	if backend == agentapi.BackendOpenAI {
		return strings.TrimSpace(name)
	}
	return models.NormalizeName(name)
}

func cloneHeartbeat(hb agentapi.Heartbeat) agentapi.Heartbeat {
	hb.GPUs = slices.Clone(hb.GPUs)
	for i := range hb.GPUs {
		hb.GPUs[i].ThrottleReasons = slices.Clone(hb.GPUs[i].ThrottleReasons)
	}
	hb.Models = slices.Clone(hb.Models)
	return hb
}
