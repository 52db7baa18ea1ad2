package scheduler

import (
	"math"
	"sync"
)

// Speed is what measurements say about one model on one node, in the terms of the wait model.
type Speed struct {
	// DecodeTPS is the single-stream decode speed, tokens/s.
	DecodeTPS float64 `json:"decode_tps"`
	// Contention is how much each other busy stream slows one stream: a stream decodes at
	// DecodeTPS ÷ (1 + Contention × others). It is this node's SlotContention.
	Contention float64 `json:"contention"`
	// PrefillTPS is the prompt-processing speed, tokens/s (0: not measured).
	PrefillTPS float64 `json:"prefill_tps,omitempty"`
	// Samples counts the measurements learned from; 0 means nothing was measured.
	Samples int `json:"samples"`
}

// LearnerConfig tunes a Learner. Zero fields take the defaults documented on each.
type LearnerConfig struct {
	// Alpha is the weight of the newest measurement in the exponentially weighted fit
	// (default 0.2: the last ten or so measurements carry most of the weight).
	Alpha float64
	// PriorContention is the contention assumed before measurements at different concurrencies
	// say otherwise (default DefaultConfig().SlotContention).
	PriorContention float64
	// PriorWeight is how many measurements the prior counts as at first (default 2); it decays
	// like a measurement, so the data take over.
	PriorWeight float64
}

// Learner learns each (node, model)'s Speed from what the node measures and reports in its
// heartbeats: the decode tokens/s of its recent requests, the mean number of requests that ran
// beside them, and the prefill tokens/s. It keeps no physics of its own: the single-stream speed
// and the contention are fitted to the measurements, so a node that is slower than its GPU
// profile says (a throttled board, a slower backend, a different quantisation) is seen as slow
// once it has served a few requests, whatever the profile claims.
//
// The fit: a stream's time per token is 1/tps = a + b × others, with a = 1 ÷ DecodeTPS and
// b = Contention ÷ DecodeTPS. Each measurement (others = concurrency − 1, y = 1 ÷ measured tps) is
// folded into exponentially weighted sums (weight Alpha, older ones decayed by 1 − Alpha), and
// (a, b) solve the weighted least squares, with a small ridge pulling b toward PriorContention ×
// a, so that measurements all at one concurrency give that level's speed with the prior slope
// instead of no answer. The first measurement also seeds two prior pseudo-measurements on the
// prior line through it (PriorWeight measurements' worth), which decay like the rest.
//
// A Learner is safe for concurrent use. It is pure computation (no clock, no I/O): the registry
// feeds it, and the scheduler reads the result from the snapshot (NodeModel.Learned), so Pick
// stays a function of its request and snapshot.
type Learner struct {
	cfg LearnerConfig
	mu  sync.Mutex
	m   map[learnKey]*learnState
}

type learnKey struct{ node, model string }

type learnState struct {
	w, sx, sy, sxx, sxy float64
	bRef                float64 // the slope the ridge pulls toward
	last                float64 // the last measured tps seen (heartbeats repeat it)
	lastConc            float64
	prefill             float64
	fit                 Speed
}

// ridge is the weight of the pull of the slope toward the prior (in units of the sums, which
// approach 1).
const ridge = 0.05

// priorSpread is the number of other streams at which the second prior pseudo-measurement sits.
const priorSpread = 3

// maxLearned bounds the entries a Learner keeps; past it, a new node's first measurement
// replaces an arbitrary old entry (nodes that left are the likely ones).
const maxLearned = 1 << 14

// NewLearner returns a Learner with cfg's zero fields defaulted.
func NewLearner(cfg LearnerConfig) *Learner {
	if !(cfg.Alpha > 0 && cfg.Alpha <= 1) {
		cfg.Alpha = 0.2
	}
	if !(cfg.PriorContention >= 0 && cfg.PriorContention <= 1) || cfg.PriorContention == 0 {
		cfg.PriorContention = DefaultConfig().SlotContention
	}
	if !(cfg.PriorWeight > 0) || math.IsInf(cfg.PriorWeight, 0) {
		cfg.PriorWeight = 2
	}
	return &Learner{cfg: cfg, m: map[learnKey]*learnState{}}
}

// Observe folds one measurement of model on node into its fit and returns the fit: decode tps
// measured over requests that ran with concurrency requests in flight on average (themselves
// included; < 1 counts as 1), and prefill tps (0: none). A tps equal to the last one seen for the
// pair is a heartbeat repeating an old average, not a new measurement, and changes nothing.
// Invalid speeds change nothing either.
func (l *Learner) Observe(node, model string, tps, concurrency, prefill float64) Speed {
	l.mu.Lock()
	defer l.mu.Unlock()
	k := learnKey{node, model}
	st := l.m[k]
	if validSpeed(prefill) {
		if st == nil {
			st = l.newState(k)
		}
		if st.prefill == 0 {
			st.prefill = prefill
		} else if prefill != st.prefill {
			st.prefill += l.cfg.Alpha * (prefill - st.prefill)
		}
		st.fit.PrefillTPS = st.prefill
	}
	if !validSpeed(tps) {
		if st == nil {
			return Speed{}
		}
		return st.fit
	}
	if st == nil {
		st = l.newState(k)
	}
	if !(concurrency >= 1) || math.IsInf(concurrency, 0) {
		concurrency = 1
	}
	if tps == st.last && concurrency == st.lastConc {
		return st.fit
	}
	st.last, st.lastConc = tps, concurrency
	x, y := concurrency-1, 1/tps
	alpha := l.cfg.Alpha
	if st.fit.Samples == 0 {
		// The prior: the line through this measurement with the prior contention.
		a0 := y / (1 + l.cfg.PriorContention*x)
		b0 := l.cfg.PriorContention * a0
		pw := l.cfg.PriorWeight * alpha / 2
		st.add(pw, 0, a0)
		st.add(pw, priorSpread, a0+priorSpread*b0)
		st.bRef = b0
	}
	st.decay(1 - alpha)
	st.add(alpha, x, y)
	st.fit.Samples++
	st.solve(l.cfg.PriorContention)
	return st.fit
}

func (l *Learner) newState(k learnKey) *learnState {
	if len(l.m) >= maxLearned {
		for old := range l.m {
			delete(l.m, old)
			break
		}
	}
	st := &learnState{}
	l.m[k] = st
	return st
}

// Speed returns what the learner knows of model on node (Samples 0: nothing measured).
func (l *Learner) Speed(node, model string) Speed {
	l.mu.Lock()
	defer l.mu.Unlock()
	if st := l.m[learnKey{node, model}]; st != nil {
		return st.fit
	}
	return Speed{}
}

// Forget drops everything learned about node (it left the cluster).
func (l *Learner) Forget(node string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for k := range l.m {
		if k.node == node {
			delete(l.m, k)
		}
	}
}

// Learn observes every model of n from its reported measurements (TokensPerSecond,
// Concurrency, PrefillTokensPerSecond) and sets their Learned speeds. The registry calls it with
// each heartbeat's node.
func (l *Learner) Learn(n *Node) {
	for i := range n.Models {
		m := &n.Models[i]
		m.Learned = l.Observe(n.ID, m.Name, m.TokensPerSecond, m.Concurrency, m.PrefillTokensPerSecond)
	}
}

func (st *learnState) add(w, x, y float64) {
	st.w += w
	st.sx += w * x
	st.sy += w * y
	st.sxx += w * x * x
	st.sxy += w * x * y
}

func (st *learnState) decay(f float64) {
	st.w *= f
	st.sx *= f
	st.sy *= f
	st.sxx *= f
	st.sxy *= f
}

// solve fits (a, b) and stores the Speed; c0 is the prior contention.
func (st *learnState) solve(c0 float64) {
	r := ridge * st.w
	det := st.w*(st.sxx+r) - st.sx*st.sx
	a, b := 0.0, 0.0
	if det > 0 {
		a = (st.sy*(st.sxx+r) - st.sx*(st.sxy+r*st.bRef)) / det
		b = (st.w*(st.sxy+r*st.bRef) - st.sx*st.sy) / det
	}
	if !(a > 0) || math.IsInf(a, 0) || math.IsNaN(b) {
		// Degenerate (a fit through zero or below): the weighted mean speed at the prior slope.
		xm := st.sx / st.w
		a = st.sy / st.w / (1 + c0*xm)
		b = c0 * a
	}
	c := min(max(b/a, 0), 1)
	st.fit.DecodeTPS = 1 / a
	st.fit.Contention = c
	st.bRef = c0 * a
}
