package scheduler

import (
	"math"
	"math/rand/v2"
	"testing"
)

// simGPU is one simulated node of the heterogeneous simulation: a GPU kind with its single-stream
// decode speed for the model, serving up to slots streams that share memory bandwidth with the
// same contention the scheduler assumes.
type simGPU struct {
	id     string
	tps    float64
	slots  int
	active []simJob
	queue  []simJob
	served int
	tokens int
}

type simJob struct {
	arrival, remaining float64
	tokens             int
}

type simResult struct {
	meanCompletion float64
	served         map[string]int // requests
	tokens         map[string]int // output tokens
}

// simulate runs a small discrete-event simulation (simulated, not measured): n requests of
// random length arrive as a Poisson process at rate per second on a T4, an A40 and an RTX 3090
// (decode speeds of an 8B Q4 model from the models profiles), each request placed by the
// scheduler on a snapshot of the simulated state. It returns the mean completion time.
func simulate(t *testing.T, policyName string, rate float64, n int) simResult {
	t.Helper()
	const contention = 0.25
	cfg := policy(policyName)
	cfg.SlotContention = contention
	// Nodes queue without bound here: the simulation has no gateway queue to hold work in.
	cfg.MaxQueuePerNode = 1 << 20
	s := mustNew(t, cfg)
	gpus := []*simGPU{{id: "t4", tps: 38, slots: 4}, {id: "a40", tps: 85, slots: 4}, {id: "3090", tps: 112, slots: 4}}
	snap := &Snapshot{Nodes: make([]Node, len(gpus))}
	for i, g := range gpus {
		snap.Nodes[i] = Node{ID: g.id, Healthy: true, CanLoad: true, Slots: g.slots,
			Models: []NodeModel{{Name: "llama3.1:8b", Resident: true, OnDisk: true, TokensPerSecond: g.tps}}}
	}
	rng := rand.New(rand.NewPCG(11, 12))
	var d Decision
	now, nextArrival := 0.0, rng.ExpFloat64()/rate
	arrived, done := 0, 0
	var total float64
	for steps := 0; done < n; steps++ {
		if steps > 10*n {
			t.Fatalf("simulation did not finish: %d of %d done", done, n)
		}
		// The next event: an arrival, or the first stream to finish on some GPU.
		next, which := math.Inf(1), -1
		if arrived < n {
			next = nextArrival
		}
		for gi, g := range gpus {
			if k := len(g.active); k > 0 {
				speed := g.tps / (1 + contention*float64(k-1))
				for _, j := range g.active {
					if at := now + j.remaining/speed; at < next {
						next, which = at, gi
					}
				}
			}
		}
		// Advance every stream to the event.
		for _, g := range gpus {
			if k := len(g.active); k > 0 {
				speed := g.tps / (1 + contention*float64(k-1))
				for i := range g.active {
					g.active[i].remaining -= speed * (next - now)
				}
			}
		}
		now = next
		if which >= 0 {
			g := gpus[which]
			for i := 0; i < len(g.active); i++ {
				if g.active[i].remaining <= 1e-9 {
					total += now - g.active[i].arrival
					done++
					g.served++
					g.tokens += g.active[i].tokens
					g.active = append(g.active[:i], g.active[i+1:]...)
					i--
				}
			}
			for len(g.active) < g.slots && len(g.queue) > 0 {
				g.active, g.queue = append(g.active, g.queue[0]), g.queue[1:]
			}
			continue
		}
		// An arrival: ask the scheduler, on the current state.
		for i, g := range gpus {
			snap.Nodes[i].InFlight, snap.Nodes[i].Queued = len(g.active), len(g.queue)
		}
		tokens := 64 + rng.IntN(449)
		req := Request{Model: "llama3.1:8b", MaxTokens: tokens, Seq: uint64(arrived), Seed: rng.Uint64()}
		s.Pick(&req, snap, &d)
		g := gpus[d.Candidates[0].Node]
		job := simJob{arrival: now, remaining: float64(tokens), tokens: tokens}
		if len(g.active) < g.slots {
			g.active = append(g.active, job)
		} else {
			g.queue = append(g.queue, job)
		}
		arrived++
		nextArrival = now + rng.ExpFloat64()/rate
	}
	res := simResult{meanCompletion: total / float64(n), served: map[string]int{}, tokens: map[string]int{}}
	for _, g := range gpus {
		res.served[g.id], res.tokens[g.id] = g.served, g.tokens
	}
	return res
}

// TestHeterogeneousSimulation shows, on a simulated T4 + A40 + RTX 3090 cluster, that the herd
// policy beats round robin (and, below 85% load, least-inflight) on mean completion time, and that once the
// cluster is saturated it hands the 3090 about three times the T4's work (112 against 38 tok/s).
// Simulated figures only.
func TestHeterogeneousSimulation(t *testing.T) {
	// Full-slot capacity: 4 × tps ÷ 1.75 each, about 537 tok/s in all; requests average 288
	// tokens, so about 1.86 requests/s saturate the cluster.
	const capacity = 1.86
	for _, load := range []float64{0.5, 0.8, 0.9} {
		r := map[string]simResult{}
		for _, p := range policies {
			r[p] = simulate(t, p, load*capacity, 3000)
			t.Logf("simulated, load %.0f%%, %-14s mean completion %6.2fs, requests served %v", load*100, p, r[p].meanCompletion, r[p].served)
		}
		if h, rr := r[PolicyHerd].meanCompletion, r[PolicyRoundRobin].meanCompletion; h >= 0.8*rr {
			t.Errorf("load %.0f%%: herd mean completion %.2fs is not clearly below round robin's %.2fs", load*100, h, rr)
		}
		// Near saturation least_inflight catches up (every policy that keeps all slots busy
		// converges), so the comparison is only asserted where the difference is material.
		if h, li := r[PolicyHerd].meanCompletion, r[PolicyLeastInflight].meanCompletion; load < 0.85 && h >= 0.97*li {
			t.Errorf("load %.0f%%: herd mean completion %.2fs not below least_inflight's %.2fs", load*100, h, li)
		}
	}
	// Past saturation every GPU stays busy, so the work each takes follows its speed. Herd
	// sends the short requests to the slow GPU (they suffer least from its speed), so the
	// comparison is in tokens, not requests.
	sat := simulate(t, PolicyHerd, 1.1*capacity, 3000)
	ratio := float64(sat.tokens["3090"]) / float64(sat.tokens["t4"])
	t.Logf("simulated, load 110%%: the 3090 generated %.2f× the T4's tokens (%v)", ratio, sat.tokens)
	if ratio < 2.4 || ratio > 4 {
		t.Errorf("past saturation the 3090 generated %.2f× the T4's tokens, want about 3× (112 vs 38 tok/s)", ratio)
	}
}
