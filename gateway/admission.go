package gateway

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/herd-llm/herd/gateway/registry"
	"github.com/herd-llm/herd/scheduler"
)

// Admission decides when a scheduled request may go to a node. The gateway holds requests itself
// rather than piling them onto the agents' queues, so that it keeps the freedom to order them
// (interactive before batch) and to place each one on whichever node frees a slot first.
//
// Decisions:
//   - A node has a free slot while its in-flight count (the larger of the snapshot's and this
//     gateway's own, which is exact and never lags) is below its Slots (at least 1).
//   - An interactive request goes to the best candidate with a free slot. When every candidate is
//     busy it waits, first come first served among interactive requests, until a slot frees
//     (the registry signals releases and heartbeats) or QueueTimeout passes.
//   - A batch request goes only to a node with a free slot that no waiting interactive request
//     could use, and only once no batch request is ahead of it. Interactive requests thus
//     overtake queued batch work, and batch work never takes a slot an interactive one waits for.
//   - Each class has its own bound of QueueSize waiting requests per model, so a big batch cannot
//     fill the queue interactive traffic needs. Past it: 429 queue_full with Retry-After.
//   - A request no node can serve for a reason other than capacity (no node has the model, all
//     are stale or draining) fails at once with 503 and the per-node reasons: waiting would not
//     help. A waiting request whose candidates all vanish fails the same way.

// capacitySource is what admission needs from the registry.
type capacitySource interface {
	Snapshot() *scheduler.Snapshot
	Acquire(nodeID string)
	Release(nodeID string)
	// Changed returns a channel closed at the next change that may free capacity.
	Changed() <-chan struct{}
}

var _ capacitySource = (*registry.Registry)(nil)

// Clock tells the time and runs timers; tests inject a fake one. It is also the registry's clock.
type Clock interface {
	Now() time.Time
	// AfterFunc calls f in its own goroutine once d has passed.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a timer started by Clock.AfterFunc.
type Timer interface {
	// Stop prevents the timer from firing; it reports false when it already fired or was stopped.
	Stop() bool
}

var _ registry.Clock = Clock(nil)

type systemClock struct{}

func (systemClock) Now() time.Time                            { return time.Now() }
func (systemClock) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }

var _ Clock = systemClock{}

// ticketState is where a ticket is in admission.
type ticketState uint8

const (
	ticketIdle ticketState = iota
	ticketWaiting
	ticketGranted
	ticketFailed
)

// ticket is one request's passage through admission. It lives in the pooled per-request state;
// gen tells a late timer of an earlier use apart.
type ticket struct {
	req *scheduler.Request
	dec *scheduler.Decision

	// Guarded by admission.mu.
	gen   uint64
	state ticketState
	snap  *scheduler.Snapshot
	node  int
	err   *APIError
	// nodes are the IDs of the candidates found busy at the last try: the slots an interactive
	// ticket waits for, which batch work must leave alone.
	nodes []string

	// lastSnap is the snapshot of the last Pick into dec, for explaining the decision.
	lastSnap *scheduler.Snapshot

	// ready receives one value when the ticket leaves ticketWaiting.
	ready chan struct{}
}

// grant is a slot on a node, acquired by admission; give it back with release.
type grant struct {
	snap *scheduler.Snapshot
	// node indexes snap.Nodes.
	node int
}

// Node returns the granted node.
func (g grant) Node() *scheduler.Node { return &g.snap.Nodes[g.node] }

// admission holds requests until a node has a slot for them.
type admission struct {
	src     capacitySource
	pick    func(*scheduler.Request, *scheduler.Snapshot, *scheduler.Decision)
	clock   Clock
	size    int
	timeout time.Duration
	// poll bounds a wait for a change, for the transitions time alone makes (a circuit turning
	// half-open), which the registry does not signal.
	poll time.Duration

	mu          sync.Mutex
	local       map[string]int
	interactive []*ticket
	batch       []*ticket
	// perModel counts waiting tickets by class and model, for the bound.
	perModel map[classModel]int
	watching bool
	gen      uint64
	blocked  []string // scratch for kickLocked
}

type classModel struct{ class, model string }

func newAdmission(src capacitySource, pick func(*scheduler.Request, *scheduler.Snapshot, *scheduler.Decision), clock Clock, size int, timeout, poll time.Duration) *admission {
	if size <= 0 {
		size = DefaultConfig().QueueSize
	}
	if timeout <= 0 {
		timeout = DefaultConfig().QueueTimeout
	}
	if poll <= 0 {
		poll = time.Second
	}
	return &admission{
		src: src, pick: pick, clock: clock, size: size, timeout: timeout, poll: poll,
		local: map[string]int{}, perModel: map[classModel]int{},
	}
}

// admit waits until t.req can go to a node and acquires a slot there. It returns an *APIError
// the client must see, or ctx's error when ctx ended first.
func (a *admission) admit(ctx context.Context, t *ticket) (grant, error) {
	if t.ready == nil {
		t.ready = make(chan struct{}, 1)
	}
	a.mu.Lock()
	a.gen++
	t.gen, t.state, t.err, t.snap = a.gen, ticketIdle, nil, nil
	batch := t.req.Class == scheduler.ClassBatch
	if (!batch && len(a.interactive) == 0) || (batch && len(a.batch) == 0) {
		// Nobody of this class is ahead: try at once, the common case, without queueing.
		if a.tryLocked(t, a.src.Snapshot()) != ticketWaiting {
			return a.finishLocked(t)
		}
	}
	key := classModel{t.req.Class, t.req.Model}
	if a.perModel[key] >= a.size {
		a.mu.Unlock()
		return grant{}, &APIError{
			Status: http.StatusTooManyRequests, Type: errRateLimit, Code: "queue_full", RetryAfter: 1,
			Message: fmt.Sprintf("The queue for model `%s` is full (%d %s requests waiting for a free slot). Please retry after a short wait.", t.req.Model, a.size, t.req.Class),
		}
	}
	a.perModel[key]++
	t.state = ticketWaiting
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
			return grant{}, ctx.Err()
		}
	} else {
		a.removeLocked(t)
	}
	t.state, t.snap = ticketIdle, nil
	a.mu.Unlock()
	return grant{}, ctx.Err()
}

// finishLocked returns t's outcome and unlocks a.mu.
func (a *admission) finishLocked(t *ticket) (grant, error) {
	g, err, state := grant{snap: t.snap, node: t.node}, t.err, t.state
	t.state, t.snap, t.err = ticketIdle, nil, nil
	a.mu.Unlock()
	if state == ticketGranted {
		return g, nil
	}
	return grant{}, err
}

// tryLocked picks nodes for t on snap and acquires a free slot on the best one that has one.
// It returns ticketGranted, ticketFailed (with t.err set) or ticketWaiting (every candidate busy).
func (a *admission) tryLocked(t *ticket, snap *scheduler.Snapshot) ticketState {
	a.pick(t.req, snap, t.dec)
	t.lastSnap = snap
	t.nodes = t.nodes[:0]
	batch := t.req.Class == scheduler.ClassBatch
	for _, c := range t.dec.Candidates {
		n := &snap.Nodes[c.Node]
		if !a.freeLocked(n) || (batch && a.wantedLocked(n.ID)) {
			t.nodes = append(t.nodes, n.ID)
			continue
		}
		a.local[n.ID]++
		a.src.Acquire(n.ID)
		t.state, t.snap, t.node = ticketGranted, snap, c.Node
		return ticketGranted
	}
	if len(t.dec.Candidates) > 0 || onlyBusy(t.dec) {
		return ticketWaiting
	}
	t.state, t.err = ticketFailed, noNodeError(t.req.Model, snap, t.dec)
	return ticketFailed
}

// onlyBusy reports whether d has rejections and all of them are for want of capacity, which
// waiting can cure.
func onlyBusy(d *scheduler.Decision) bool {
	for _, r := range d.Rejections {
		switch r.Reason {
		case scheduler.ReasonQueueFull, scheduler.ReasonNoFreeSlotForBatch:
		default:
			return false
		}
	}
	return len(d.Rejections) > 0
}

// freeLocked reports whether n has a free slot.
func (a *admission) freeLocked(n *scheduler.Node) bool {
	return max(n.InFlight, a.local[n.ID]) < max(n.Slots, 1)
}

// wantedLocked reports whether a waiting interactive ticket waits for a slot on node id.
func (a *admission) wantedLocked(id string) bool {
	for _, w := range a.interactive {
		if slices.Contains(w.nodes, id) {
			return true
		}
	}
	return false
}

// kickLocked grants or fails waiting tickets in order, interactive ones first.
func (a *admission) kickLocked() {
	if len(a.interactive)+len(a.batch) == 0 {
		return
	}
	snap := a.src.Snapshot()
	for _, class := range []*[]*ticket{&a.interactive, &a.batch} {
		// Once a ticket without exclusions waits, later ones for its model would too.
		a.blocked = a.blocked[:0]
		q := *class
		kept := q[:0]
		for _, t := range q {
			if len(t.req.Exclude) == 0 && slices.Contains(a.blocked, t.req.Model) {
				kept = append(kept, t)
				continue
			}
			switch a.tryLocked(t, snap) {
			case ticketWaiting:
				if len(t.req.Exclude) == 0 {
					a.blocked = append(a.blocked, t.req.Model)
				}
				kept = append(kept, t)
			default:
				a.leaveLocked(t)
			}
		}
		clear(q[len(kept):])
		*class = kept
	}
}

// leaveLocked accounts for t leaving the queue decided and signals its waiter.
func (a *admission) leaveLocked(t *ticket) {
	key := classModel{t.req.Class, t.req.Model}
	if a.perModel[key]--; a.perModel[key] <= 0 {
		delete(a.perModel, key)
	}
	t.ready <- struct{}{}
}

// removeLocked takes the undecided t out of its queue.
func (a *admission) removeLocked(t *ticket) {
	q := &a.interactive
	if t.req.Class == scheduler.ClassBatch {
		q = &a.batch
	}
	if i := slices.Index(*q, t); i >= 0 {
		*q = slices.Delete(*q, i, i+1)
	}
	key := classModel{t.req.Class, t.req.Model}
	if a.perModel[key]--; a.perModel[key] <= 0 {
		delete(a.perModel, key)
	}
}

// expire fails t if it is still waiting in its use gen.
func (a *admission) expire(t *ticket, gen uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if t.gen != gen || t.state != ticketWaiting {
		return
	}
	a.removeLocked(t)
	t.state = ticketFailed
	t.err = &APIError{
		Status: http.StatusServiceUnavailable, Type: errUnavailable, Code: "queue_timeout", RetryAfter: 1,
		Message: fmt.Sprintf("Every node that can serve model `%s` is busy: the request was queued past its deadline (%s).", t.req.Model, a.timeout),
	}
	t.ready <- struct{}{}
}

// release gives back a slot acquired by admit. The registry's change signal wakes the watcher.
func (a *admission) release(nodeID string) {
	a.mu.Lock()
	if a.local[nodeID] > 0 {
		a.local[nodeID]--
	}
	a.mu.Unlock()
	a.src.Release(nodeID)
}

// watch re-examines waiting tickets whenever the registry changes (a release, a heartbeat) or
// poll passes, until no ticket waits.
func (a *admission) watch() {
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

// depth returns how many requests wait, by class.
func (a *admission) depth() (interactive, batch int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.interactive), len(a.batch)
}

// noNodeError is the 503 for a request no node can serve, with every node's reason.
func noNodeError(model string, snap *scheduler.Snapshot, d *scheduler.Decision) *APIError {
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
