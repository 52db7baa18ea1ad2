// Package admission decides when a scheduled request may go to a node: it holds requests in the
// gateway until a node has room for them, interactive work before batch work, and hands out a
// slot (a Grant) that the caller gives back with Grant.Done, deferred, when the attempt ends.
// The pick function (the scheduler's) and the clock are injected.
package admission

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/herd-llm/herd/clock"
	"github.com/herd-llm/herd/openaierr"
	"github.com/herd-llm/herd/scheduler"
)

// Decisions:
//   - Under the herd policy the gateway keeps the queue: an interactive request goes to the
//     best-ranked candidate with a free slot (in flight below Slots, at least 1); when every
//     candidate is busy it waits in the gateway and goes, in the ranking's order, to whichever
//     node frees first. Holding the queue keeps the freedom to order it (interactive before
//     batch) and serves the latency tail better than tying a request to one node's queue.
//   - The baseline policies (round_robin, least_inflight) dispatch as a plain load balancer
//     does: at once, to the first candidate in the policy's order whose own queue has room (in
//     flight below Slots + QueueLimit; scheduler.Config.MaxQueuePerNode, by default the node's
//     Slots). The scheduler refuses a fuller node (ReasonQueueFull). Letting the baselines choose
//     only among free slots made every policy the same "first free slot" policy, which is not
//     what a round-robin load balancer in front of a cluster does.
//   - A candidate the herd policy refuses because waiting for another costs less than loading
//     the model there (scheduler.ReasonWaitCheaper) counts as busy: the request waits for the
//     cheaper node. Each Pick is told how many other requests for the model wait
//     (scheduler.Request.Waiting), work ahead on the nodes that hold it.
//   - When no candidate can take it, an interactive request waits, first come first served among
//     interactive requests, until a slot (herd) or room in a node's queue (baselines) frees (the
//     registry signals releases and heartbeats) or QueueTimeout passes.
//   - A batch request goes only to a node with a free slot (in flight below Slots, at least 1)
//     that no waiting interactive request could use, and only once no batch request is ahead of
//     it: batch work fills only the capacity interactive work leaves free, never queues on a
//     node, and never takes a slot an interactive request waits for. Interactive requests thus
//     overtake queued batch work.
//   - A grant on a node that must load the model marks the model loading there (Source.StartLoad)
//     at once, under admission's lock, so the tickets ranked next (in the same pass over the
//     queue) see it: otherwise several models could be sent to load on one node in an instant.
//   - In-flight counts are the snapshot's, which include this gateway's own requests. A snapshot
//     can lag by the few requests that just started (the registry skips a rebuild another
//     goroutine is doing), so this gateway's own count, exact and never lagging, bounds it from
//     below: a node the snapshot under-counts is held to the bound with the local count.
//   - Each class has its own bound of QueueSize waiting requests per model, so a big batch cannot
//     fill the queue interactive traffic needs. Past it: 429 queue_full with Retry-After.
//   - A request no node can serve for a reason other than capacity (no node has the model, all
//     are stale or draining) fails at once with 503 and the per-node reasons: waiting would not
//     help. A waiting request whose candidates all vanish fails the same way.

// Source is what admission needs from the registry: the cluster's capacity and its changes.
type Source interface {
	Snapshot() *scheduler.Snapshot
	Acquire(nodeID string)
	Release(nodeID string)
	// StartLoad records that the node will load model for a request granted to it (the model
	// is not resident there), so that the next decisions, this gateway's own included, see the
	// model loading there.
	StartLoad(nodeID, model string)
	// Changed returns a channel closed at the next change that may free capacity.
	Changed() <-chan struct{}
}

// PickFunc ranks the nodes of a snapshot for a request into a decision: the scheduler's Pick.
type PickFunc func(*scheduler.Request, *scheduler.Snapshot, *scheduler.Decision)

// Error types, as the OpenAI error shape reports them.
const (
	TypeRateLimit   = openaierr.TypeRateLimit
	TypeUnavailable = openaierr.TypeUnavailable
)

// Error is a refusal the client must see: queue full (429), queue timeout or no node able to
// serve the model (503), as herd's one OpenAI error (RetryAfter, when positive, the seconds to
// send in Retry-After).
type Error = openaierr.Error

func unavailable(format string, args ...any) *Error {
	return &Error{Status: http.StatusServiceUnavailable, Type: TypeUnavailable, Code: "no_node_available", Message: fmt.Sprintf(format, args...), RetryAfter: 1}
}

// ticketState is where a Ticket is in admission.
type ticketState uint8

const (
	ticketIdle ticketState = iota
	ticketWaiting
	ticketGranted
	ticketFailed
)

// QueuedAt returns when the last Admit put t in the queue; zero when it did not wait.
func (t *Ticket) QueuedAt() time.Time { return t.queuedAt }

// Ticket is one request's passage through admission. It lives in the caller's pooled
// per-request state and is reused: set Req and Dec before each Admit; gen tells a late timer of
// an earlier use apart.
type Ticket struct {
	// Req is the request to admit; Admit may be called again with Req.Exclude grown (failover).
	Req *scheduler.Request
	// Dec receives each Pick.
	Dec *scheduler.Decision

	// Guarded by admission.mu.
	gen   uint64
	state ticketState
	snap  *scheduler.Snapshot
	node  int
	err   *Error
	// nodes are the IDs of the candidates found busy at the last try: the slots an interactive
	// ticket waits for, which batch work must leave alone.
	nodes []string

	// LastSnap is the snapshot of the last Pick into Dec, for explaining the decision; the caller
	// clears it when the ticket goes back to its pool.
	LastSnap *scheduler.Snapshot
	// queuedAt is when the last Admit put the ticket in the queue; zero when it did not wait.
	queuedAt time.Time

	// ready receives one value when the ticket leaves ticketWaiting.
	ready chan struct{}
}

// Grant is a slot on a node, acquired by Admit. Give it back with Done, exactly once, deferred
// right after Admit returns it so that no early return or panic skips it.
type Grant struct {
	a    *Admission
	snap *scheduler.Snapshot
	// node indexes snap.Nodes.
	node int
}

// Node returns the granted node.
func (g Grant) Node() *scheduler.Node { return &g.snap.Nodes[g.node] }

// Snapshot returns the snapshot the grant was decided on; Index is the node's index in it (as
// in the decision's candidates).
func (g Grant) Snapshot() *scheduler.Snapshot { return g.snap }

// Index returns the granted node's index in Snapshot().Nodes.
func (g Grant) Index() int { return g.node }

// Done gives the slot back.
func (g Grant) Done() { g.a.release(g.snap.Nodes[g.node].ID) }

// Admission holds requests until a node has a slot for them.
type Admission struct {
	src  Source
	pick PickFunc
	// queue is the scheduler configuration whose QueueLimit bounds a node's queue when the
	// snapshot lags this gateway's own count; only MaxQueuePerNode is read. It must match the
	// configuration of pick's scheduler (the zero value matches the default).
	queue   scheduler.Config
	clock   clock.Clock
	size    int
	timeout time.Duration
	// poll bounds a wait for a change, for the transitions time alone makes (a circuit turning
	// half-open), which the registry does not signal.
	poll time.Duration

	mu          sync.Mutex
	local       map[string]int
	interactive []*Ticket
	batch       []*Ticket
	// perModel counts waiting tickets by class and model, for the bound.
	perModel map[classModel]int
	watching bool
	gen      uint64
	blocked  []string // scratch for kickLocked
}

type classModel struct{ class, model string }

// Defaults of Config.
const (
	DefaultQueueSize    = 256
	DefaultQueueTimeout = 60 * time.Second
)

// Config bounds admission's queues.
type Config struct {
	// QueueSize bounds the waiting requests per class and model (DefaultQueueSize when not
	// positive); QueueTimeout bounds a request's wait (DefaultQueueTimeout when not positive).
	QueueSize    int
	QueueTimeout time.Duration
	// Poll bounds a wait for a change (a second when not positive), for the transitions time
	// alone makes, which the source does not signal.
	Poll time.Duration
	// Scheduler is the configuration of pick's scheduler: its policy says whether the gateway
	// keeps the queue, and its MaxQueuePerNode bounds a node's queue when the snapshot lags this
	// gateway's own count (the zero value matches the default scheduler).
	Scheduler scheduler.Config
}

// New returns an admission over src's capacity, ranking with pick, timing with clock.
func New(src Source, pick PickFunc, clock clock.Clock, cfg Config) *Admission {
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = DefaultQueueSize
	}
	if cfg.QueueTimeout <= 0 {
		cfg.QueueTimeout = DefaultQueueTimeout
	}
	if cfg.Poll <= 0 {
		cfg.Poll = time.Second
	}
	return &Admission{
		src: src, pick: pick, clock: clock, size: cfg.QueueSize, timeout: cfg.QueueTimeout, poll: cfg.Poll,
		queue: cfg.Scheduler, local: map[string]int{}, perModel: map[classModel]int{},
	}
}

// Admit waits until t.Req can go to a node and acquires a slot there; the caller defers the
// grant's Done. It returns an *Error the client must see, or ctx's error when ctx ended first.
func (a *Admission) Admit(ctx context.Context, t *Ticket) (Grant, error) {
	if t.ready == nil {
		t.ready = make(chan struct{}, 1)
	}
	a.mu.Lock()
	a.gen++
	t.gen, t.state, t.err, t.snap = a.gen, ticketIdle, nil, nil
	t.queuedAt = time.Time{}
	batch := t.Req.Class == scheduler.ClassBatch
	if (!batch && len(a.interactive) == 0) || (batch && len(a.batch) == 0) {
		// Nobody of this class is ahead: try at once, the common case, without queueing.
		if a.tryLocked(t, a.src.Snapshot()) != ticketWaiting {
			return a.finishLocked(t)
		}
	}
	key := classModel{t.Req.Class, t.Req.Model}
	if a.perModel[key] >= a.size {
		a.mu.Unlock()
		return Grant{}, &Error{
			Status: http.StatusTooManyRequests, Type: TypeRateLimit, Code: "queue_full", RetryAfter: 1,
			Message: fmt.Sprintf("The queue for model `%s` is full (%d %s requests waiting for a free slot). Please retry after a short wait.", t.Req.Model, a.size, t.Req.Class),
		}
	}
	a.perModel[key]++
	t.state = ticketWaiting
	t.queuedAt = a.clock.Now()
	if batch {
		a.batch = append(a.batch, t)
	} else {
		a.interactive = append(a.interactive, t)
	}
	a.kickLocked()
	if t.state != ticketWaiting {
		<-t.ready
		return a.finishLocked(t)
	}
	if !a.watching {
		a.watching = true
		go a.watch()
	}
	gen := t.gen
	timer := a.clock.AfterFunc(a.timeout, func() { a.expire(t, gen) })
	a.mu.Unlock()

	select {
	case <-t.ready:
		timer.Stop()
		a.mu.Lock()
		return a.finishLocked(t)
	case <-ctx.Done():
	}
	timer.Stop()
	a.mu.Lock()
	if t.state != ticketWaiting {
		// Decided while ctx ended: take the decision's signal, and give back a granted slot.
		<-t.ready
		if t.state == ticketGranted {
			id := t.snap.Nodes[t.node].ID
			t.state, t.snap = ticketIdle, nil
			a.mu.Unlock()
			a.release(id)
			return Grant{}, ctx.Err()
		}
	} else {
		a.removeLocked(t)
	}
	t.state, t.snap = ticketIdle, nil
	a.mu.Unlock()
	return Grant{}, ctx.Err()
}

// finishLocked returns t's outcome and unlocks a.mu.
func (a *Admission) finishLocked(t *Ticket) (Grant, error) {
	g, err, state := Grant{a: a, snap: t.snap, node: t.node}, t.err, t.state
	t.state, t.snap, t.err = ticketIdle, nil, nil
	a.mu.Unlock()
	if state == ticketGranted {
		return g, nil
	}
	return Grant{}, err
}

// tryLocked picks nodes for t on snap and acquires a place on the best candidate that can take
// t: for interactive work one whose queue has room, for batch work a free slot no waiting
// interactive Ticket wants. It returns ticketGranted, ticketFailed (with t.err set) or
// ticketWaiting (every candidate full or busy).
func (a *Admission) tryLocked(t *Ticket, snap *scheduler.Snapshot) ticketState {
	// The model's other waiting requests are work ahead on the nodes that hold it (the herd
	// policy weighs it against a load elsewhere).
	waiting := a.perModel[classModel{t.Req.Class, t.Req.Model}]
	if t.state == ticketWaiting {
		waiting--
	}
	t.Req.Waiting = max(waiting, 0)
	a.pick(t.Req, snap, t.Dec)
	t.LastSnap = snap
	t.nodes = t.nodes[:0]
	batch := t.Req.Class == scheduler.ClassBatch
	for _, c := range t.Dec.Candidates {
		n := &snap.Nodes[c.Node]
		if batch && (!a.freeLocked(n) || a.wantedLocked(n.ID)) || !batch && !a.takesInteractiveLocked(n) {
			t.nodes = append(t.nodes, n.ID)
			continue
		}
		a.local[n.ID]++
		a.src.Acquire(n.ID)
		if c.NeedsLoad {
			// Marked before the next ticket is ranked: a request for another model must not be
			// sent to this node as if it still held what it had.
			a.src.StartLoad(n.ID, t.Req.Model)
		}
		t.state, t.snap, t.node = ticketGranted, snap, c.Node
		return ticketGranted
	}
	if len(t.Dec.Candidates) > 0 || anyBusy(t.Dec) {
		if !batch {
			// The full nodes are the ones this Ticket waits for, which batch work must leave alone.
			for _, r := range t.Dec.Rejections {
				if r.Reason == scheduler.ReasonQueueFull {
					t.nodes = append(t.nodes, snap.Nodes[r.Node].ID)
				}
			}
		}
		return ticketWaiting
	}
	t.state, t.err = ticketFailed, noNodeError(t.Req.Model, snap, t.Dec)
	return ticketFailed
}

// anyBusy reports whether some node of d was refused for want of capacity, which waiting can
// cure: the request waits for it even when the other nodes are refused for good (draining,
// circuit open), as it would for a busy candidate.
func anyBusy(d *scheduler.Decision) bool {
	for _, r := range d.Rejections {
		switch r.Reason {
		case scheduler.ReasonQueueFull, scheduler.ReasonNoFreeSlotForBatch, scheduler.ReasonWaitCheaper, scheduler.ReasonSwapping:
			return true
		}
	}
	return false
}

// takesInteractiveLocked reports whether n can take an interactive request now. Under the herd
// policy the gateway keeps the queue: a request goes to the best-ranked node with a free slot,
// or waits in the gateway and goes to whichever node frees first in the ranking's order (which
// serves the tail better than a request tied to one node's queue). The baseline policies
// dispatch as a plain load balancer does: at once, to the node the policy names, whose own queue
// (bounded by QueueLimit) absorbs the overflow.
func (a *Admission) takesInteractiveLocked(n *scheduler.Node) bool {
	if a.queue.Policy == "" || a.queue.Policy == scheduler.PolicyHerd {
		return a.freeLocked(n)
	}
	return a.acceptsLocked(n)
}

// acceptsLocked reports whether n, a candidate the scheduler found under its queue bound, can take
// interactive work once this gateway's own count, which never lags, is taken into account.
func (a *Admission) acceptsLocked(n *scheduler.Node) bool {
	local := a.local[n.ID]
	if local <= max(n.InFlight, 0)+max(n.Queued, 0) {
		return true // the snapshot counts at least this gateway's requests: the filter decided
	}
	return local < max(n.Slots, 1)+a.queue.QueueLimit(n)
}

// freeLocked reports whether n has a free slot.
func (a *Admission) freeLocked(n *scheduler.Node) bool {
	return max(n.InFlight, a.local[n.ID]) < max(n.Slots, 1)
}

// wantedLocked reports whether a waiting interactive Ticket waits for a slot on node id.
func (a *Admission) wantedLocked(id string) bool {
	for _, w := range a.interactive {
		if slices.Contains(w.nodes, id) {
			return true
		}
	}
	return false
}

// kickLocked grants or fails waiting tickets in order, interactive ones first.
func (a *Admission) kickLocked() {
	if len(a.interactive)+len(a.batch) == 0 {
		return
	}
	snap := a.src.Snapshot()
	for _, class := range []*[]*Ticket{&a.interactive, &a.batch} {
		// Once a Ticket without exclusions waits, later ones for its model would too.
		a.blocked = a.blocked[:0]
		q := *class
		kept := q[:0]
		for _, t := range q {
			if len(t.Req.Exclude) == 0 && slices.Contains(a.blocked, t.Req.Model) {
				kept = append(kept, t)
				continue
			}
			switch a.tryLocked(t, snap) {
			case ticketWaiting:
				if len(t.Req.Exclude) == 0 {
					a.blocked = append(a.blocked, t.Req.Model)
				}
				kept = append(kept, t)
			case ticketGranted:
				a.leaveLocked(t)
				// The next Ticket is ranked on the load this grant added (a queue the policy
				// weighs), not on the snapshot from before it.
				snap = a.src.Snapshot()
			default:
				a.leaveLocked(t)
			}
		}
		clear(q[len(kept):])
		*class = kept
	}
}

// leaveLocked accounts for t leaving the queue decided and signals its waiter.
func (a *Admission) leaveLocked(t *Ticket) {
	key := classModel{t.Req.Class, t.Req.Model}
	if a.perModel[key]--; a.perModel[key] <= 0 {
		delete(a.perModel, key)
	}
	t.ready <- struct{}{}
}

// removeLocked takes the undecided t out of its queue.
func (a *Admission) removeLocked(t *Ticket) {
	q := &a.interactive
	if t.Req.Class == scheduler.ClassBatch {
		q = &a.batch
	}
	if i := slices.Index(*q, t); i >= 0 {
		*q = slices.Delete(*q, i, i+1)
	}
	key := classModel{t.Req.Class, t.Req.Model}
	if a.perModel[key]--; a.perModel[key] <= 0 {
		delete(a.perModel, key)
	}
}

// expire fails t if it is still waiting in its use gen.
func (a *Admission) expire(t *Ticket, gen uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if t.gen != gen || t.state != ticketWaiting {
		return
	}
	a.removeLocked(t)
	t.state = ticketFailed
	t.err = &Error{
		Status: http.StatusServiceUnavailable, Type: TypeUnavailable, Code: "queue_timeout", RetryAfter: 1,
		Message: fmt.Sprintf("Every node that can serve model `%s` is busy: the request was queued past its deadline (%s).", t.Req.Model, a.timeout),
	}
	t.ready <- struct{}{}
}

// release gives back a slot acquired by Admit (Grant.Done). The registry's change signal wakes the watcher.
func (a *Admission) release(nodeID string) {
	a.mu.Lock()
	if a.local[nodeID] > 0 {
		a.local[nodeID]--
	}
	a.mu.Unlock()
	a.src.Release(nodeID)
}

// watch re-examines waiting tickets whenever the registry changes (a release, a heartbeat) or
// poll passes, until no Ticket waits.
func (a *Admission) watch() {
	poke := make(chan struct{}, 1)
	for {
		changed := a.src.Changed()
		a.mu.Lock()
		a.kickLocked()
		if len(a.interactive)+len(a.batch) == 0 {
			a.watching = false
			a.mu.Unlock()
			return
		}
		a.mu.Unlock()
		timer := a.clock.AfterFunc(a.poll, func() {
			select {
			case poke <- struct{}{}:
			default:
			}
		})
		select {
		case <-changed:
		case <-poke:
		}
		timer.Stop()
	}
}

// Depth returns how many requests wait, by class.
func (a *Admission) Depth() (interactive, batch int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.interactive), len(a.batch)
}

// QueueDepth is how many requests of one model and class wait, and the bound past which Admit
// refuses more (429 queue_full).
type QueueDepth struct {
	Model    string
	Class    string
	Waiting  int
	Capacity int
}

// QueueDepths returns the waiting requests by model and class, sorted, with a zero entry for
// both classes of every model a node reports, so an empty queue reads 0 rather than nothing.
func (a *Admission) QueueDepths() []QueueDepth {
	snap := a.src.Snapshot()
	a.mu.Lock()
	counts := make(map[classModel]int, len(a.perModel))
	for k, n := range a.perModel {
		counts[k] = n
	}
	a.mu.Unlock()
	for i := range snap.Nodes {
		for _, m := range snap.Nodes[i].Models {
			for _, class := range [...]string{scheduler.ClassInteractive, scheduler.ClassBatch} {
				if k := (classModel{class, m.Name}); counts[k] == 0 {
					counts[k] = 0
				}
			}
		}
	}
	out := make([]QueueDepth, 0, len(counts))
	for k, n := range counts {
		out = append(out, QueueDepth{Model: k.model, Class: k.class, Waiting: n, Capacity: a.size})
	}
	slices.SortFunc(out, func(x, y QueueDepth) int {
		if c := strings.Compare(x.Model, y.Model); c != 0 {
			return c
		}
		return strings.Compare(x.Class, y.Class)
	})
	return out
}

// noNodeError is the 503 for a request no node can serve, with every node's reason.
func noNodeError(model string, snap *scheduler.Snapshot, d *scheduler.Decision) *Error {
	if len(snap.Nodes) == 0 {
		return unavailable("No node can serve model `%s`: no node is registered with the gateway.", model)
	}
	var b strings.Builder
	for i, r := range d.Rejections {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "node %s: %s", snap.Nodes[r.Node].ID, r.Reason)
	}
	return unavailable("No node can serve model `%s` now: %s.", model, b.String())
}
