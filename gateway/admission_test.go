package gateway

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herd-llm/herd/scheduler"
)

// fakeCapacity is a cluster for admission tests: nodes whose in-flight counts follow
// Acquire/Release, with the registry's change signal.
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
		n.InFlight = max(n.InFlight, f.running[n.ID])
		snap.Nodes[i] = n
	}
	return snap
}

func (f *fakeCapacity) Acquire(id string) {
	f.mu.Lock()
	f.running[id]++
	f.mu.Unlock()
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
	a     *admission
}

func newAdmissionRig(t *testing.T, size int, nodes ...scheduler.Node) *admissionRig {
	sched, err := scheduler.New(scheduler.Config{Policy: scheduler.PolicyLeastInflight})
	if err != nil {
		t.Fatal(err)
	}
	src := newFakeCapacity(nodes...)
	clock := newStepClock()
	return &admissionRig{t: t, src: src, clock: clock, a: newAdmission(src, sched.Pick, clock, size, time.Minute, time.Hour)}
}

// pending is an admit call running in the background.
type pending struct {
	done chan struct{}
	g    grant
	err  error
}

func (r *admissionRig) start(ctx context.Context, model, class string) *pending {
	p := &pending{done: make(chan struct{})}
	tk := &ticket{req: &scheduler.Request{Model: model, Class: class}, dec: &scheduler.Decision{}}
	go func() {
		defer close(p.done)
		p.g, p.err = r.a.admit(ctx, tk)
	}()
	return p
}

func (r *admissionRig) admitNow(model, class string) (grant, error) {
	p := r.start(context.Background(), model, class)
	p.wait(r.t)
	return p.g, p.err
}

// waiting blocks until i interactive and b batch requests wait.
func (r *admissionRig) waiting(i, b int) {
	r.t.Helper()
	eventually(r.t, "queue depth", func() bool {
		gi, gb := r.a.depth()
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
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.Status, ae.Code + ": " + ae.Message
	}
	return 0, ""
}

func TestAdmissionGrantsFreeSlots(t *testing.T) {
	r := newAdmissionRig(t, 4, capNode("a", 1, "m"), capNode("b", 2, "m"))
	var got []string
	for range 3 {
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
	if counts["a"] != 1 || counts["b"] != 2 {
		t.Fatalf("3 requests on slots a:1 b:2 went to %v", got)
	}
	// Every slot is taken: the next one waits.
	p := r.start(context.Background(), "m", scheduler.ClassInteractive)
	r.waiting(1, 0)
	r.a.release("b")
	if id := p.node(t); id != "b" {
		t.Fatalf("the waiting request went to %s, want b whose slot was released", id)
	}
}

func TestAdmissionInteractiveOvertakesBatch(t *testing.T) {
	r := newAdmissionRig(t, 4, capNode("a", 1, "m"))
	if _, err := r.admitNow("m", scheduler.ClassInteractive); err != nil {
		t.Fatal(err)
	}
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
		t.Fatal("batch work was admitted while an interactive request waited for the slot")
	}
	r.a.release("a")
	if id := batch.node(t); id != "a" {
		t.Fatalf("batch went to %s", id)
	}
}

func TestAdmissionBatchLeavesWantedSlotsAlone(t *testing.T) {
	r := newAdmissionRig(t, 4, capNode("a", 1, "m", "small"))
	if _, err := r.admitNow("m", scheduler.ClassInteractive); err != nil {
		t.Fatal(err)
	}
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
	if _, err := r.admitNow("m", scheduler.ClassInteractive); err != nil {
		t.Fatal(err)
	}
	first := r.start(context.Background(), "m", scheduler.ClassInteractive)
	r.waiting(1, 0)
	_, err := r.admitNow("m", scheduler.ClassInteractive)
	if status, msg := apiStatus(err); status != http.StatusTooManyRequests || !strings.HasPrefix(msg, "queue_full") {
		t.Fatalf("second waiting request: %v, want 429 queue_full", err)
	}
	var ae *APIError
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
	if _, err := r.admitNow("m", scheduler.ClassInteractive); err != nil {
		t.Fatal(err)
	}
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
	if _, err := r.admitNow("m", scheduler.ClassInteractive); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := r.start(ctx, "m", scheduler.ClassInteractive)
	r.waiting(1, 0)
	cancel()
	p.wait(t)
	if !errors.Is(p.err, context.Canceled) {
		t.Fatalf("cancelled waiter: %v", p.err)
	}
	r.waiting(0, 0)
	// Its place is not held: the released slot goes to the next request.
	r.a.release("a")
	if _, err := r.admitNow("m", scheduler.ClassInteractive); err != nil {
		t.Fatalf("after a cancelled waiter: %v", err)
	}
	r.src.mu.Lock()
	n := r.src.running["a"]
	r.src.mu.Unlock()
	if n != 1 {
		t.Fatalf("node a runs %d requests, want 1", n)
	}
}
