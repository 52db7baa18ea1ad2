package admission

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herd-llm/herd/scheduler"
)

// fakeCapacity is a cluster for admission tests: nodes whose in-flight counts follow
// Acquire/Release, with the registry's change signal. As in the registry, a node's InFlight and
// Queued are the work it was given (its literal counts, another gateway's) plus this gateway's
// requests, split at its Slots.
type fakeCapacity struct {
	mu      sync.Mutex
	nodes   []scheduler.Node
	running map[string]int
	changed chan struct{}
}

func newFakeCapacity(nodes ...scheduler.Node) *fakeCapacity {
	return &fakeCapacity{nodes: nodes, running: map[string]int{}, changed: make(chan struct{})}
}

func (f *fakeCapacity) Snapshot() *scheduler.Snapshot {
	f.mu.Lock()
	defer f.mu.Unlock()
	snap := &scheduler.Snapshot{Nodes: make([]scheduler.Node, len(f.nodes))}
	for i, n := range f.nodes {
		busy := n.InFlight + n.Queued + f.running[n.ID]
		n.InFlight, n.Queued = busy, 0
		if n.Slots > 0 && busy > n.Slots {
			n.InFlight, n.Queued = n.Slots, busy-n.Slots
		}
		snap.Nodes[i] = n
	}
	return snap
}

func (f *fakeCapacity) Acquire(id string) {
	f.mu.Lock()
	f.running[id]++
	f.mu.Unlock()
}

// StartLoad marks model loading on node id, as the registry does.
func (f *fakeCapacity) StartLoad(id, model string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range f.nodes {
		if f.nodes[i].ID != id {
			continue
		}
		f.nodes[i].Models = slices.Clone(f.nodes[i].Models)
		for j := range f.nodes[i].Models {
			if m := &f.nodes[i].Models[j]; m.Name == model && !m.Resident {
				m.Loading = true
			}
		}
	}
}

func (f *fakeCapacity) Release(id string) {
	f.mu.Lock()
	f.running[id]--
	f.mu.Unlock()
	f.notify()
}

func (f *fakeCapacity) Changed() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.changed
}

func (f *fakeCapacity) notify() {
	f.mu.Lock()
	close(f.changed)
	f.changed = make(chan struct{})
	f.mu.Unlock()
}

// edit changes node id, as a heartbeat would, and signals it.
func (f *fakeCapacity) edit(id string, fn func(*scheduler.Node)) {
	f.mu.Lock()
	for i := range f.nodes {
		if f.nodes[i].ID == id {
			fn(&f.nodes[i])
		}
	}
	f.mu.Unlock()
	f.notify()
}

func capNode(id string, slots int, models ...string) scheduler.Node {
	n := scheduler.Node{ID: id, Address: "http://" + id, Healthy: true, Slots: slots}
	for _, m := range models {
		n.Models = append(n.Models, scheduler.NodeModel{Name: m, Resident: true, OnDisk: true})
	}
	return n
}

type admissionRig struct {
	t     *testing.T
	src   *fakeCapacity
	clock *stepClock
	a     *Admission
}

func newAdmissionRig(t *testing.T, size int, nodes ...scheduler.Node) *admissionRig {
	return newPolicyRig(t, scheduler.PolicyLeastInflight, size, nodes...)
}

func newPolicyRig(t *testing.T, policy string, size int, nodes ...scheduler.Node) *admissionRig {
	sched, err := scheduler.New(scheduler.Config{Policy: policy})
	if err != nil {
		t.Fatal(err)
	}
	src := newFakeCapacity(nodes...)
	clock := newStepClock()
	a := New(src, sched.Pick, clock, Config{QueueSize: size, QueueTimeout: time.Minute, Poll: time.Hour, Scheduler: sched.Config()})
	return &admissionRig{t: t, src: src, clock: clock, a: a}
}

// pending is an admit call running in the background.
type pending struct {
	done chan struct{}
	g    Grant
	err  error
}

func (r *admissionRig) start(ctx context.Context, model, class string) *pending {
	return r.startReq(ctx, &scheduler.Request{Model: model, Class: class})
}

func (r *admissionRig) startReq(ctx context.Context, req *scheduler.Request) *pending {
	p := &pending{done: make(chan struct{})}
	tk := &Ticket{Req: req, Dec: &scheduler.Decision{}}
	go func() {
		defer close(p.done)
		p.g, p.err = r.a.Admit(ctx, tk)
	}()
	return p
}

// fill admits n interactive requests for model and fails the test unless all are granted.
func (r *admissionRig) fill(model string, n int) {
	r.t.Helper()
	for range n {
		if _, err := r.admitNow(model, scheduler.ClassInteractive); err != nil {
			r.t.Fatalf("filling: %v", err)
		}
	}
}

func (r *admissionRig) running(id string) int {
	r.src.mu.Lock()
	defer r.src.mu.Unlock()
	return r.src.running[id]
}

func (r *admissionRig) admitNow(model, class string) (Grant, error) {
	p := r.start(context.Background(), model, class)
	p.wait(r.t)
	return p.g, p.err
}

// waiting blocks until i interactive and b batch requests wait.
func (r *admissionRig) waiting(i, b int) {
	r.t.Helper()
	eventually(r.t, "queue depth", func() bool {
		gi, gb := r.a.Depth()
		return gi == i && gb == b
	})
}

func (p *pending) isDone() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// wait waits for the admit call to return; the bound guards against a hang, it is not a timing
// assertion.
func (p *pending) wait(t *testing.T) {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		t.Fatal("admit did not return")
	}
}

func (p *pending) node(t *testing.T) string {
	t.Helper()
	p.wait(t)
	if p.err != nil {
		t.Fatalf("admit: %v", p.err)
	}
	return p.g.Node().ID
}

func apiStatus(err error) (int, string) {
	var ae *Error
	if errors.As(err, &ae) {
		return ae.Status, ae.Code + ": " + ae.Message
	}
	return 0, ""
}

func TestAdmissionQueuesOnNodesUpToTheBound(t *testing.T) {
	// The default bound lets a node hold its Slots again queued: a 2, b 4.
	r := newAdmissionRig(t, 4, capNode("a", 1, "m"), capNode("b", 2, "m"))
	var got []string
	for range 6 {
		g, err := r.admitNow("m", scheduler.ClassInteractive)
		if err != nil {
			t.Fatalf("admit: %v", err)
		}
		got = append(got, g.Node().ID)
	}
	counts := map[string]int{}
	for _, id := range got {
		counts[id]++
	}
	if counts["a"] != 2 || counts["b"] != 4 {
		t.Fatalf("6 requests on slots a:1 b:2 went to %v, want a twice and b four times", got)
	}
	// Every node's queue is full: the next one waits in the gateway.
	p := r.start(context.Background(), "m", scheduler.ClassInteractive)
	r.waiting(1, 0)
	r.a.release("b")
	if id := p.node(t); id != "b" {
		t.Fatalf("the waiting request went to %s, want b whose queue has room again", id)
	}
}

func TestAdmissionInteractiveOvertakesBatch(t *testing.T) {
	r := newAdmissionRig(t, 4, capNode("a", 1, "m"))
	r.fill("m", 2) // the slot and the node's queue
	batch := r.start(context.Background(), "m", scheduler.ClassBatch)
	r.waiting(0, 1)
	inter1 := r.start(context.Background(), "m", scheduler.ClassInteractive)
	r.waiting(1, 1)
	inter2 := r.start(context.Background(), "m", scheduler.ClassInteractive)
	r.waiting(2, 1)

	r.a.release("a")
	inter1.node(t)
	r.waiting(1, 1)
	if batch.isDone() || inter2.isDone() {
		t.Fatal("one released slot admitted more than one request")
	}
	r.a.release("a")
	inter2.node(t)
	r.waiting(0, 1)
	if batch.isDone() {
		t.Fatal("batch work was admitted while an interactive request waited for the node")
	}
	// Room in the node's queue is not a free slot: batch work never queues on a node.
	r.a.release("a")
	r.waiting(0, 1)
	if batch.isDone() {
		t.Fatal("batch work was admitted with every slot busy")
	}
	r.a.release("a")
	if id := batch.node(t); id != "a" {
		t.Fatalf("batch went to %s", id)
	}
}

func TestAdmissionBatchLeavesWantedSlotsAlone(t *testing.T) {
	r := newAdmissionRig(t, 4, capNode("a", 1, "m", "small"))
	r.fill("m", 2)
	inter := r.start(context.Background(), "m", scheduler.ClassInteractive)
	r.waiting(1, 0)
	// The slot frees in a way admission has not been told of yet (another gateway's request
	// ended, seen in a heartbeat), and a batch request arrives before anyone looks: it must not
	// take the slot the interactive request waits for.
	r.src.mu.Lock()
	r.src.running["a"] = 0
	r.src.mu.Unlock()
	r.a.mu.Lock()
	r.a.local["a"] = 0
	r.a.mu.Unlock()
	batch := r.start(context.Background(), "small", scheduler.ClassBatch)
	if id := inter.node(t); id != "a" {
		t.Fatalf("interactive went to %s", id)
	}
	r.waiting(0, 1)
	if batch.isDone() {
		t.Fatal("batch took a slot while the interactive request waited")
	}
}

func TestAdmissionQueueBounds(t *testing.T) {
	r := newAdmissionRig(t, 1, capNode("a", 1, "m"))
	r.fill("m", 2)
	first := r.start(context.Background(), "m", scheduler.ClassInteractive)
	r.waiting(1, 0)
	_, err := r.admitNow("m", scheduler.ClassInteractive)
	if status, msg := apiStatus(err); status != http.StatusTooManyRequests || !strings.HasPrefix(msg, "queue_full") {
		t.Fatalf("second waiting request: %v, want 429 queue_full", err)
	}
	var ae *Error
	if errors.As(err, &ae); ae.RetryAfter <= 0 {
		t.Errorf("429 without Retry-After")
	}
	// Batch has its own bound: a full interactive queue does not refuse it, and the reverse.
	batch := r.start(context.Background(), "m", scheduler.ClassBatch)
	r.waiting(1, 1)

	r.clock.Advance(time.Minute)
	first.wait(t)
	if status, msg := apiStatus(first.err); status != http.StatusServiceUnavailable || !strings.Contains(msg, "queued past its deadline") {
		t.Fatalf("request waiting past QueueTimeout: %v, want 503 queued past deadline", first.err)
	}
	batch.wait(t)
	if status, _ := apiStatus(batch.err); status != http.StatusServiceUnavailable {
		t.Fatalf("batch waiting past QueueTimeout: %v, want 503", batch.err)
	}
	r.waiting(0, 0)
}

func TestAdmissionFailsWhenWaitingCannotHelp(t *testing.T) {
	tests := []struct {
		name  string
		nodes []scheduler.Node
		model string
		want  string
	}{
		{"no nodes", nil, "m", "no node is registered"},
		{"model nowhere", []scheduler.Node{capNode("a", 1, "other")}, "m", "node a: model not on node"},
		{"draining and stale", []scheduler.Node{
			func() scheduler.Node { n := capNode("a", 1, "m"); n.Draining = true; return n }(),
			func() scheduler.Node { n := capNode("b", 1, "m"); n.Stale = true; return n }(),
		}, "m", "node a: draining; node b: heartbeat stale"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newAdmissionRig(t, 4, tt.nodes...)
			_, err := r.admitNow(tt.model, scheduler.ClassInteractive)
			status, msg := apiStatus(err)
			if status != http.StatusServiceUnavailable || !strings.Contains(msg, tt.want) {
				t.Fatalf("admit = %v, want 503 with %q", err, tt.want)
			}
			r.waiting(0, 0)
		})
	}
}

func TestAdmissionWaiterFailsWhenNodesGo(t *testing.T) {
	r := newAdmissionRig(t, 4, capNode("a", 1, "m"))
	r.fill("m", 2)
	p := r.start(context.Background(), "m", scheduler.ClassInteractive)
	r.waiting(1, 0)
	r.src.edit("a", func(n *scheduler.Node) { n.Draining = true })
	p.wait(t)
	if status, msg := apiStatus(p.err); status != http.StatusServiceUnavailable || !strings.Contains(msg, "draining") {
		t.Fatalf("waiter after its only node drained: %v, want 503 draining", p.err)
	}
}

func TestAdmissionCancelledWaiterLeaves(t *testing.T) {
	r := newAdmissionRig(t, 4, capNode("a", 1, "m"))
	r.fill("m", 2)
	ctx, cancel := context.WithCancel(context.Background())
	p := r.start(ctx, "m", scheduler.ClassInteractive)
	r.waiting(1, 0)
	cancel()
	p.wait(t)
	if !errors.Is(p.err, context.Canceled) {
		t.Fatalf("cancelled waiter: %v", p.err)
	}
	r.waiting(0, 0)
	// Its place is not held: the room released goes to the next request.
	r.a.release("a")
	if _, err := r.admitNow("m", scheduler.ClassInteractive); err != nil {
		t.Fatalf("after a cancelled waiter: %v", err)
	}
	if n := r.running("a"); n != 2 {
		t.Fatalf("node a runs %d requests, want 2", n)
	}
}

// speedNode is a node whose snapshot reports tps tokens/s for model m and the given load of
// another gateway's work: inFlight running, queued waiting.
func speedNode(id string, slots int, tps float64, inFlight, queued int) scheduler.Node {
	n := capNode(id, slots, "m")
	n.Models[0].TokensPerSecond = tps
	n.InFlight, n.Queued = inFlight, queued
	return n
}

func TestAdmissionFollowsPolicyOrder(t *testing.T) {
	tests := []struct {
		name   string
		policy string
		class  string
		seq    uint64
		nodes  []scheduler.Node
		want   string // "" waits in the gateway
	}{
		{
			// herd keeps the queue in the gateway: the best-ranked node with a free slot.
			name: "herd takes the best free slot", policy: scheduler.PolicyHerd,
			class: scheduler.ClassInteractive,
			nodes: []scheduler.Node{speedNode("t4", 4, 38, 0, 0), speedNode("3090", 4, 112, 4, 0), speedNode("a40", 4, 89, 1, 0)},
			want:  "a40",
		},
		{
			name: "herd waits in the gateway rather than queue on a node", policy: scheduler.PolicyHerd,
			class: scheduler.ClassInteractive,
			nodes: []scheduler.Node{speedNode("t4", 4, 38, 4, 0), speedNode("3090", 4, 112, 4, 0)},
			want:  "",
		},
		{
			name: "round robin rotates onto a busy node with room in its queue", policy: scheduler.PolicyRoundRobin,
			class: scheduler.ClassInteractive, seq: 1,
			nodes: []scheduler.Node{speedNode("a", 1, 0, 0, 0), speedNode("b", 1, 0, 1, 0)},
			want:  "b",
		},
		{
			name: "round robin skips a full node", policy: scheduler.PolicyRoundRobin,
			class: scheduler.ClassInteractive, seq: 1,
			nodes: []scheduler.Node{speedNode("a", 1, 0, 1, 0), speedNode("b", 1, 0, 1, 1)},
			want:  "a",
		},
		{
			name: "least inflight takes the least busy node", policy: scheduler.PolicyLeastInflight,
			class: scheduler.ClassInteractive,
			nodes: []scheduler.Node{speedNode("a", 2, 0, 2, 1), speedNode("b", 2, 0, 2, 0)},
			want:  "b",
		},
		{
			name: "interactive waits when every queue is full", policy: scheduler.PolicyHerd,
			class: scheduler.ClassInteractive,
			nodes: []scheduler.Node{speedNode("t4", 2, 38, 2, 2), speedNode("3090", 2, 112, 2, 2)},
			want:  "",
		},
		{
			name: "batch takes only a free slot, not the best queue", policy: scheduler.PolicyHerd,
			class: scheduler.ClassBatch,
			nodes: []scheduler.Node{speedNode("t4", 4, 38, 3, 0), speedNode("3090", 4, 112, 4, 0)},
			want:  "t4",
		},
		{
			name: "batch waits while every slot is busy, whatever room the queues have", policy: scheduler.PolicyRoundRobin,
			class: scheduler.ClassBatch,
			nodes: []scheduler.Node{speedNode("a", 2, 0, 2, 0), speedNode("b", 2, 0, 2, 1)},
			want:  "",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newPolicyRig(t, tt.policy, 4, tt.nodes...)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			p := r.startReq(ctx, &scheduler.Request{Model: "m", Class: tt.class, Seq: tt.seq})
			if tt.want != "" {
				if id := p.node(t); id != tt.want {
					t.Fatalf("admitted to %s, want %s", id, tt.want)
				}
				return
			}
			if tt.class == scheduler.ClassBatch {
				r.waiting(0, 1)
			} else {
				r.waiting(1, 0)
			}
			cancel()
			p.wait(t)
			if !errors.Is(p.err, context.Canceled) {
				t.Fatalf("a request that had to wait: %v", p.err)
			}
		})
	}
}

func TestAdmissionOneFreedPlaceAdmitsOne(t *testing.T) {
	// Two interactive requests wait for the only node; when one place frees, the first takes it
	// and the second, tried in the same pass, must see the load the first added (the node full
	// again) and keep waiting rather than overfill the node.
	r := newPolicyRig(t, scheduler.PolicyLeastInflight, 4, speedNode("3090", 1, 112, 0, 0))
	r.fill("m", 2)
	first := r.start(context.Background(), "m", scheduler.ClassInteractive)
	r.waiting(1, 0)
	second := r.start(context.Background(), "m", scheduler.ClassInteractive)
	r.waiting(2, 0)
	r.a.release("3090")
	first.node(t)
	r.waiting(1, 0)
	if second.isDone() {
		t.Fatal("one freed place admitted two requests")
	}
	if n := r.running("3090"); n != 2 {
		t.Fatalf("3090 runs %d requests, want 2 (its slot and its queue bound)", n)
	}
	r.a.release("3090")
	second.node(t)
}

func TestAdmissionAcceptsWithLaggingSnapshot(t *testing.T) {
	tests := []struct {
		name             string
		slots            int
		inFlight, queued int // the snapshot's
		local            int // this gateway's own count
		maxQueuePerNode  int
		want             bool
	}{
		{name: "snapshot counts the local requests: the scheduler decided", slots: 2, inFlight: 2, queued: 1, local: 3, want: true},
		{name: "snapshot lags, local count under the default bound", slots: 2, inFlight: 1, local: 3, want: true},
		{name: "snapshot lags, local count at the default bound", slots: 2, inFlight: 1, local: 4, want: false},
		{name: "snapshot lags, configured bound has room", slots: 2, inFlight: 1, local: 4, maxQueuePerNode: 3, want: true},
		{name: "snapshot lags, configured bound reached", slots: 2, inFlight: 1, local: 5, maxQueuePerNode: 3, want: false},
		{name: "no slots reported counts as one", slots: 0, local: 2, want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := New(newFakeCapacity(), func(*scheduler.Request, *scheduler.Snapshot, *scheduler.Decision) {}, newStepClock(), Config{QueueSize: 1, QueueTimeout: time.Minute, Poll: time.Hour})
			a.queue.MaxQueuePerNode = tt.maxQueuePerNode
			a.local["n"] = tt.local
			n := scheduler.Node{ID: "n", Slots: tt.slots, InFlight: tt.inFlight, Queued: tt.queued}
			if got := a.acceptsLocked(&n); got != tt.want {
				t.Fatalf("acceptsLocked = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestAdmissionWaitsForAFullNodeBesideUnusableOnes(t *testing.T) {
	// One node full, the other draining: the full one will have room again, so the request
	// waits for it instead of failing with 503.
	draining := capNode("b", 1, "m")
	draining.Draining = true
	r := newAdmissionRig(t, 4, capNode("a", 1, "m"), draining)
	r.fill("m", 2)
	p := r.start(context.Background(), "m", scheduler.ClassInteractive)
	r.waiting(1, 0)
	r.a.release("a")
	if id := p.node(t); id != "a" {
		t.Fatalf("admitted to %s, want a", id)
	}
}

// TestGrantDoneReleasesOnPanic holds the contract callers rely on: Done, deferred right after
// Admit, gives the slot back even when the attempt panics, and the next request gets it.
func TestGrantDoneReleasesOnPanic(t *testing.T) {
	r := newAdmissionRig(t, 4, capNode("a", 1, "m"))
	attempt := func() {
		defer func() { _ = recover() }()
		g, err := r.a.Admit(context.Background(), &Ticket{Req: &scheduler.Request{Model: "m", Class: scheduler.ClassInteractive}, Dec: &scheduler.Decision{}})
		if err != nil {
			t.Fatal(err)
		}
		defer g.Done()
		if g.Node().ID != "a" || r.running("a") != 1 {
			t.Fatalf("granted %s with %d running", g.Node().ID, r.running("a"))
		}
		panic("attempt failed")
	}
	attempt()
	if n := r.running("a"); n != 0 {
		t.Fatalf("%d running on a after the panicking attempt, want 0", n)
	}
	if id := r.start(context.Background(), "m", scheduler.ClassInteractive).node(t); id != "a" {
		t.Fatalf("next request admitted to %q, want a", id)
	}
}

// TestAdmissionWaitsForResidentCopy: under herd, a request for a model resident on a busy node
// waits for it when loading the model on an idle node would evict a model in demand
// (scheduler.ReasonWaitCheaper counts as busy), and a grant that loads the model marks it
// loading at once (Source.StartLoad), before the next request is ranked.
func TestAdmissionWaitsForResidentCopy(t *testing.T) {
	a := capNode("a", 1, "m")
	b := capNode("b", 1, "z")
	b.Models = append(b.Models, scheduler.NodeModel{Name: "m", OnDisk: true})
	for _, n := range []*scheduler.Node{&a, &b} {
		n.CanLoad, n.MaxLoadedModels = true, 1
	}
	r := newPolicyRig(t, scheduler.PolicyHerd, 4, a, b)
	demand := map[string]float64{"m": 1, "z": 1}
	first := r.startReq(context.Background(), &scheduler.Request{Model: "m", Class: scheduler.ClassInteractive, Demand: demand})
	if id := first.node(t); id != "a" {
		t.Fatalf("first request on %s, want a (resident)", id)
	}
	p := r.startReq(context.Background(), &scheduler.Request{Model: "m", Class: scheduler.ClassInteractive, Demand: demand})
	r.waiting(1, 0)
	r.a.release("a")
	if id := p.node(t); id != "a" {
		t.Fatalf("admitted to %s, want a (waited for the resident copy)", id)
	}
	// z is asked for nowhere now: the next request for m may load it on b, and the grant marks
	// it loading there.
	demand = map[string]float64{"m": 1}
	q := r.startReq(context.Background(), &scheduler.Request{Model: "m", Class: scheduler.ClassInteractive, Demand: demand})
	if id := q.node(t); id != "b" {
		t.Fatalf("admitted to %s, want a load on b", id)
	}
	if snap := r.src.Snapshot(); !snap.Nodes[1].Models[1].Loading {
		t.Fatalf("m not marked loading on b after the grant: %+v", snap.Nodes[1].Models)
	}
}
