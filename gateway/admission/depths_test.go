package admission

import (
	"context"
	"slices"
	"testing"

	"github.com/herd-llm/herd/scheduler"
)

// TestQueueDepths: the waiting requests by model and class, with zero entries for every model a
// node has, so an empty queue reads 0 rather than nothing; a model no node reports shows only
// while something waits for it.
func TestQueueDepths(t *testing.T) {
	r := newPolicyRig(t, scheduler.PolicyHerd, 8, capNode("a", 1, "m"), capNode("b", 1, "n"))
	want := []QueueDepth{
		{Model: "m", Class: scheduler.ClassBatch, Capacity: 8}, {Model: "m", Class: scheduler.ClassInteractive, Capacity: 8},
		{Model: "n", Class: scheduler.ClassBatch, Capacity: 8}, {Model: "n", Class: scheduler.ClassInteractive, Capacity: 8},
	}
	if got := r.a.QueueDepths(); !slices.Equal(got, want) {
		t.Fatalf("idle: %+v", got)
	}
	r.fill("m", 1) // a's only slot
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r.start(ctx, "m", scheduler.ClassInteractive)
	r.start(ctx, "m", scheduler.ClassInteractive)
	r.start(ctx, "m", scheduler.ClassBatch)
	r.waiting(2, 1)
	want[0].Waiting, want[1].Waiting = 1, 2
	if got := r.a.QueueDepths(); !slices.Equal(got, want) {
		t.Fatalf("with waiting requests: %+v", got)
	}
}
