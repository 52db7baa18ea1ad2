package scheduler

import "math"

// Scores are the herd policy's per-scorer scores of one node, each in [0,1].
type Scores struct {
	Resident    float64 `json:"resident"`
	Wait        float64 `json:"wait"`
	VRAM        float64 `json:"vram"`
	Utilization float64 `json:"utilization"`
	Throttle    float64 `json:"throttle"`
	Affinity    float64 `json:"affinity"`
	Prefix      float64 `json:"prefix"`
	Eviction    float64 `json:"eviction"`
}

// Explanation says why Pick would order the nodes as it does: the gateway serves it at
// /admin/v1/explain.
type Explanation struct {
	Policy string `json:"policy"`
	Model  string `json:"model"`
	Class  string `json:"class,omitempty"`
	Seq    uint64 `json:"seq"`
	Seed   uint64 `json:"seed"`
	// Weights are the herd policy's weights (also reported under the other policies, unused).
	Weights Weights `json:"weights"`
	// Order lists every eligible node ID, best first: Pick's candidates, all of them ranked
	// (Pick ranks the best RankedCandidates and leaves the rest in snapshot order).
	Order []string `json:"order"`
	// Nodes has one entry per snapshot node, in snapshot order.
	Nodes []NodeExplanation `json:"nodes"`
}

// NodeExplanation is one node's part of an Explanation.
type NodeExplanation struct {
	Node string `json:"node"`
	// Eligible is false when a filter refused the node; Reason and ReasonCode say which.
	Eligible   bool   `json:"eligible"`
	Reason     string `json:"reason,omitempty"`
	ReasonCode string `json:"reason_code,omitempty"`
	// Rank is the node's 1-based place among the candidates (0 when refused).
	Rank      int  `json:"rank,omitempty"`
	NeedsLoad bool `json:"needs_load,omitempty"`
	// ExpectedWaitSeconds is the estimated time until the request would complete there.
	ExpectedWaitSeconds float64 `json:"expected_wait_seconds,omitempty"`
	// WaitCostSeconds is the wait the herd policy ranks: queueing counted QueueAversion times.
	WaitCostSeconds float64 `json:"wait_cost_seconds,omitempty"`
	// TokensPerSecond is the single-stream decode speed the estimate used, and
	// TokensPerSecondSource where it came from: learned, measured, node_estimate,
	// bandwidth_estimate, cluster_median or default. Contention is the slowdown per other busy
	// stream the estimate used (learned or the configured prior).
	TokensPerSecond       float64 `json:"tokens_per_second,omitempty"`
	TokensPerSecondSource string  `json:"tokens_per_second_source,omitempty"`
	Contention            float64 `json:"contention,omitempty"`
	// PrefixTokens is how much of the prompt the gateway's prefix index says the node's engine
	// holds; PrefillSavedSeconds the prefill that spares at the node's prefill speed (herd), and
	// OverLoadBound whether the node was past the prefix load bound, so its cache did not count.
	PrefixTokens        int     `json:"prefix_tokens,omitempty"`
	PrefillSavedSeconds float64 `json:"prefill_saved_seconds,omitempty"`
	OverLoadBound       bool    `json:"over_load_bound,omitempty"`
	// EvictionCostSeconds is what the models a load there would evict are expected to cost their
	// users in reloads, counted in the wait cost (herd).
	EvictionCostSeconds float64 `json:"eviction_cost_seconds,omitempty"`
	// Scores are the per-scorer scores (herd policy only).
	Scores *Scores `json:"scores,omitempty"`
	// Total is the node's score: the weighted mean of Scores under herd, the policy's own
	// score under the others.
	Total float64 `json:"total"`
}

// Explain evaluates req on snap as Pick does and reports, per node, the filter that refused it
// or its scores. It allocates; it is for operators, not the request path.
func (s *Scheduler) Explain(req *Request, snap *Snapshot) Explanation {
	var d Decision
	if snap != nil && snap.ByModel != nil {
		// An operator wants every node's own reason, which only a scan of every node gives.
		full := *snap
		full.ByModel = nil
		snap = &full
	}
	// Every candidate ranked: an operator reads the whole order (Pick ranks the best few).
	s.pick(req, snap, &d, math.MaxInt)
	ex := Explanation{Policy: s.cfg.Policy, Weights: s.cfg.Weights, Order: []string{}, Nodes: []NodeExplanation{}}
	if req == nil || snap == nil {
		return ex
	}
	ex.Model, ex.Class, ex.Seq, ex.Seed = req.Model, req.Class, req.Seq, req.Seed
	ex.Nodes = make([]NodeExplanation, len(snap.Nodes))
	for i := range snap.Nodes {
		ex.Nodes[i].Node = snap.Nodes[i].ID
	}
	for _, r := range d.Rejections {
		ne := &ex.Nodes[r.Node]
		ne.Reason, ne.ReasonCode = r.Reason.String(), r.Reason.Code()
		if r.Reason == ReasonWaitCheaper || r.Reason == ReasonSwapping {
			// Refused on its cost: show the cost, so the comparison can be read.
			e := &d.evals[r.Node]
			ne.NeedsLoad = true
			ne.ExpectedWaitSeconds, ne.WaitCostSeconds, ne.EvictionCostSeconds = e.wait, e.cost, e.harmSec
		}
	}
	for rank, c := range d.Candidates {
		ex.Order = append(ex.Order, snap.Nodes[c.Node].ID)
		e := &d.evals[c.Node]
		ne := &ex.Nodes[c.Node]
		ne.Eligible = true
		ne.Rank = rank + 1
		ne.NeedsLoad = c.NeedsLoad
		ne.ExpectedWaitSeconds = e.wait
		ne.WaitCostSeconds = e.cost
		ne.TokensPerSecond = e.tps
		ne.TokensPerSecondSource = e.tpsSource.String()
		ne.Contention = s.contention(&snap.Nodes[c.Node].Models[e.model])
		ne.Total = c.Score
		ne.PrefixTokens = e.matched
		if s.cfg.Policy == PolicyHerd {
			ne.PrefillSavedSeconds, ne.OverLoadBound = e.saved, e.overBound
			ne.EvictionCostSeconds = e.harmSec
			sc := e.scores
			ne.Scores = &sc
		}
	}
	return ex
}
