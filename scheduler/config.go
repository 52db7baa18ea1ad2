package scheduler

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// Config selects a policy, its weights and the constants of the wait model.
//
// Numeric fields left at zero take DefaultConfig's value when New builds a Scheduler, so a
// configuration file need only name what it changes. Weights left all zero take DefaultWeights;
// set at least one weight to choose them yourself (a zero weight then switches that scorer off).
type Config struct {
	// Policy is PolicyHerd, PolicyRoundRobin, PolicyLeastInflight or PolicyCHWBL; empty means
	// PolicyHerd.
	Policy string `yaml:"policy" json:"policy"`
	// Weights weigh the herd policy's scorers.
	Weights Weights `yaml:"weights" json:"weights"`
	// MaxQueuePerNode refuses a node with no free slot and this many requests queued, so that an
	// interactive request goes to a node while it has fewer than Slots + MaxQueuePerNode requests
	// in flight and waits in the gateway's queue only when every candidate is that full. 0, the
	// default, bounds each node's queue at its own Slots (up to 2 × Slots in flight): deep enough
	// that a policy can choose to queue on a fast node rather than take a free slot on a slow one,
	// shallow enough that the gateway keeps most of the waiting work, where it can still be
	// ordered (interactive before batch) and placed on whichever node frees first. Set it larger
	// to let nodes queue more. The node's own bound (Node.MaxQueue), when it reports one, also
	// applies: the smaller of the two wins.
	MaxQueuePerNode int `yaml:"max_queue_per_node" json:"max_queue_per_node"`
	// DefaultMaxTokens is the output length assumed for a request that gives no max_tokens, and
	// for the requests already running or queued on a node, whose lengths are unknown. Default 256.
	DefaultMaxTokens int `yaml:"default_max_tokens" json:"default_max_tokens"`
	// PrefillSpeedup is how many times faster a node reads prompt tokens than it generates output
	// tokens; the prompt costs PromptTokens ÷ PrefillSpeedup output tokens of time. Default 20.
	PrefillSpeedup float64 `yaml:"prefill_speedup" json:"prefill_speedup"`
	// SlotContention in [0,1] is how much each other busy slot slows a stream: 0 is perfect
	// batching (every slot at full speed), 1 is throughput fully shared between slots.
	// Default 0.25 (4 slots give about 2.3× the throughput of one).
	SlotContention float64 `yaml:"slot_contention" json:"slot_contention"`
	// LoadBytesPerSecond is how fast a node loads a model from disk into GPU memory, for the load
	// time of a model that is not resident. Default 2e9 (2 GB/s).
	LoadBytesPerSecond float64 `yaml:"load_bytes_per_second" json:"load_bytes_per_second"`
	// LoadStartSeconds is the fixed part of a model load, added to its weights ÷
	// LoadBytesPerSecond: starting the runner (Ollama logs it as "llama runner started in …").
	// Default 1.
	LoadStartSeconds float64 `yaml:"load_start_seconds" json:"load_start_seconds"`
	// DefaultTokensPerSecond is the decode speed assumed when nothing in the snapshot says more.
	// Default 20.
	DefaultTokensPerSecond float64 `yaml:"default_tokens_per_second" json:"default_tokens_per_second"`
	// QueueAversion weighs the time a request would spend queued for a slot when the herd policy
	// ranks waits: a request that queues also delays the requests that queue behind it later, a
	// cost the request's own wait leaves out. 1 ranks by the request's own wait alone (greedy);
	// the default 2 counts the delay imposed on later requests as equal to its own, which keeps
	// work spreading to slower idle GPUs before queues build on fast ones (see the
	// heterogeneous simulation test).
	QueueAversion float64 `yaml:"queue_aversion" json:"queue_aversion"`
	// LearnAlpha in (0,1] is the weight of the newest heartbeat measurement in each node's
	// learned speed fit (Learner). Default 0.2.
	LearnAlpha float64 `yaml:"learn_alpha" json:"learn_alpha"`
	// LearnPriorWeight is how many measurements the prior of a node's fit counts as at first
	// (it decays like them). Default 2.
	LearnPriorWeight float64 `yaml:"learn_prior_weight" json:"learn_prior_weight"`
	// PrefixLoadFactor bounds the load of a node that holds a request's prompt (or is its
	// conversation's home) under the herd policy: past factor × its share of the candidates'
	// load (share by slots, the new request counted on both sides), the node loses its prefix
	// and affinity scores and the request spills to the next best node. ≥ 1; default 1.25, the
	// value of consistent hashing with bounded loads that KubeAI and others ship.
	PrefixLoadFactor float64 `yaml:"prefix_load_factor" json:"prefix_load_factor"`
	// CHWBLLoadFactor is the chwbl policy's mean load factor (KubeAI's meanLoadPercentage ÷ 100):
	// an endpoint is taken while its in-flight requests plus one stay within factor × the mean
	// (total + 1) ÷ endpoints. ≥ 1; default 1.25.
	CHWBLLoadFactor float64 `yaml:"chwbl_load_factor" json:"chwbl_load_factor"`
	// CHWBLReplication is how many points each node has on the chwbl hash ring (KubeAI's
	// replication). Default 256.
	CHWBLReplication int `yaml:"chwbl_replication" json:"chwbl_replication"`
}

// LearnerConfig is the Learner configuration c implies: its learning rate and prior weight, and
// SlotContention as the prior contention (defaults filled in).
func (c Config) LearnerConfig() LearnerConfig {
	c = c.withDefaults()
	return LearnerConfig{Alpha: c.LearnAlpha, PriorWeight: c.LearnPriorWeight, PriorContention: c.SlotContention}
}

// Weights weigh the herd policy's scorers. Each scorer gives [0,1]; a node's score is the
// weighted mean. The defaults (DefaultWeights) make expected wait dominant, because it already
// folds in residency (load time), queue length and the node's speed for the model; the other
// scorers break near-ties and steer away from hot, throttled or full GPUs.
type Weights struct {
	// Resident scores 1 when the model is already loaded. Default 1: beyond the load time the
	// wait already counts, a load evicts other models and churns VRAM.
	Resident float64 `yaml:"resident" json:"resident"`
	// Wait scores the lowest wait cost among the candidates ÷ this node's (the cost is the
	// expected wait with queueing weighted by Config.QueueAversion). Default 4.
	Wait float64 `yaml:"wait" json:"wait"`
	// VRAM scores the fraction of GPU memory left free once the model is loaded. Default 0.5.
	VRAM float64 `yaml:"vram" json:"vram"`
	// Utilization scores 1 − GPU utilisation. Default 0.5.
	Utilization float64 `yaml:"utilization" json:"utilization"`
	// Throttle scores 0 on a GPU in thermal or power slowdown and 1 otherwise. Default 1.
	Throttle float64 `yaml:"throttle" json:"throttle"`
	// Affinity scores 1 on the node a conversation prefix hashes to (KV-cache reuse). Default 1:
	// enough to keep a conversation on its node against a node up to about a fifth faster.
	Affinity float64 `yaml:"affinity" json:"affinity"`
	// Prefix scores the prefill a node's prompt cache would save against its wait cost:
	// saved ÷ (saved + cost) in seconds, where saved is the cached tokens (Request.Prefix) ÷ the
	// node's learned prefill speed. Default 2: a node that can skip most of a long prompt wins
	// against an idle one that must read it all, but not against a long queue.
	Prefix float64 `yaml:"prefix" json:"prefix"`
	// Eviction scores how little a load there would evict: 1 where the model is resident or
	// loading or fits in free memory, else 1 ÷ (1 + harm), where each idle model the load would
	// evict (least recently used first, until the model fits and the node's bound on resident
	// models, Node.MaxLoadedModels, allows one more) adds 1, plus 2 when it is the
	// model's only resident copy in the cluster, plus 1 when it was used in the last
	// EvictionRecent. Default 1: among nodes that must load, the one whose evictions hurt least.
	Eviction float64 `yaml:"eviction" json:"eviction"`
}

// DefaultWeights are the herd policy's weights when none are configured.
func DefaultWeights() Weights {
	return Weights{Resident: 1, Wait: 4, VRAM: 0.5, Utilization: 0.5, Throttle: 1, Affinity: 1, Prefix: 2, Eviction: 1}
}

func (w Weights) sum() float64 {
	return w.Resident + w.Wait + w.VRAM + w.Utilization + w.Throttle + w.Affinity + w.Prefix + w.Eviction
}

// EvictionRecent is how recently a model must have been used for its eviction to count as
// harming current work (Weights.Eviction).
const EvictionRecent = 5 * time.Minute

// DefaultConfig is the configuration the gateway runs with when none is given.
func DefaultConfig() Config {
	return Config{
		Policy:                 PolicyHerd,
		Weights:                DefaultWeights(),
		DefaultMaxTokens:       256,
		PrefillSpeedup:         20,
		SlotContention:         0.25,
		LoadBytesPerSecond:     2e9,
		LoadStartSeconds:       1,
		DefaultTokensPerSecond: 20,
		QueueAversion:          2,
		LearnAlpha:             0.2,
		LearnPriorWeight:       2,
		PrefixLoadFactor:       1.25,
		CHWBLLoadFactor:        1.25,
		CHWBLReplication:       256,
	}
}

// withDefaults fills the zero fields of c from DefaultConfig.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Policy == "" {
		c.Policy = d.Policy
	}
	if c.Weights == (Weights{}) {
		c.Weights = d.Weights
	}
	if c.DefaultMaxTokens == 0 {
		c.DefaultMaxTokens = d.DefaultMaxTokens
	}
	if c.PrefillSpeedup == 0 {
		c.PrefillSpeedup = d.PrefillSpeedup
	}
	if c.SlotContention == 0 {
		c.SlotContention = d.SlotContention
	}
	if c.LoadBytesPerSecond == 0 {
		c.LoadBytesPerSecond = d.LoadBytesPerSecond
	}
	if c.LoadStartSeconds == 0 {
		c.LoadStartSeconds = d.LoadStartSeconds
	}
	if c.DefaultTokensPerSecond == 0 {
		c.DefaultTokensPerSecond = d.DefaultTokensPerSecond
	}
	if c.QueueAversion == 0 {
		c.QueueAversion = d.QueueAversion
	}
	if c.LearnAlpha == 0 {
		c.LearnAlpha = d.LearnAlpha
	}
	if c.LearnPriorWeight == 0 {
		c.LearnPriorWeight = d.LearnPriorWeight
	}
	if c.PrefixLoadFactor == 0 {
		c.PrefixLoadFactor = d.PrefixLoadFactor
	}
	if c.CHWBLLoadFactor == 0 {
		c.CHWBLLoadFactor = d.CHWBLLoadFactor
	}
	if c.CHWBLReplication == 0 {
		c.CHWBLReplication = d.CHWBLReplication
	}
	return c
}

// Validate reports a configuration the scheduler cannot run with: an unknown policy, a negative
// or non-finite weight or constant, a contention outside [0,1].
func (c Config) Validate() error {
	var errs []error
	switch c.Policy {
	case "", PolicyHerd, PolicyRoundRobin, PolicyLeastInflight, PolicyCHWBL:
	default:
		errs = append(errs, fmt.Errorf("scheduler: unknown policy %q (want %s, %s, %s or %s)", c.Policy, PolicyHerd, PolicyRoundRobin, PolicyLeastInflight, PolicyCHWBL))
	}
	for _, f := range []struct {
		name string
		v    float64
	}{
		{"weights.resident", c.Weights.Resident},
		{"weights.wait", c.Weights.Wait},
		{"weights.vram", c.Weights.VRAM},
		{"weights.utilization", c.Weights.Utilization},
		{"weights.throttle", c.Weights.Throttle},
		{"weights.affinity", c.Weights.Affinity},
		{"weights.prefix", c.Weights.Prefix},
		{"weights.eviction", c.Weights.Eviction},
		{"prefill_speedup", c.PrefillSpeedup},
		{"load_bytes_per_second", c.LoadBytesPerSecond},
		{"load_start_seconds", c.LoadStartSeconds},
		{"default_tokens_per_second", c.DefaultTokensPerSecond},
		{"queue_aversion", c.QueueAversion},
		{"learn_prior_weight", c.LearnPriorWeight},
	} {
		if f.v < 0 || math.IsNaN(f.v) || math.IsInf(f.v, 0) {
			errs = append(errs, fmt.Errorf("scheduler: %s must be a finite number ≥ 0, got %v", f.name, f.v))
		}
	}
	if !(c.SlotContention >= 0 && c.SlotContention <= 1) {
		errs = append(errs, fmt.Errorf("scheduler: slot_contention must be in [0,1], got %v", c.SlotContention))
	}
	if !(c.LearnAlpha >= 0 && c.LearnAlpha <= 1) {
		errs = append(errs, fmt.Errorf("scheduler: learn_alpha must be in [0,1] (0: the default), got %v", c.LearnAlpha))
	}
	for _, f := range []struct {
		name string
		v    float64
	}{{"prefix_load_factor", c.PrefixLoadFactor}, {"chwbl_load_factor", c.CHWBLLoadFactor}} {
		if f.v != 0 && !(f.v >= 1 && !math.IsInf(f.v, 0)) {
			errs = append(errs, fmt.Errorf("scheduler: %s must be a finite number ≥ 1 (0: the default), got %v", f.name, f.v))
		}
	}
	if c.CHWBLReplication < 0 || c.CHWBLReplication > maxReplication {
		errs = append(errs, fmt.Errorf("scheduler: chwbl_replication must be in [0,%d] (0: the default), got %d", maxReplication, c.CHWBLReplication))
	}
	if c.MaxQueuePerNode < 0 {
		errs = append(errs, fmt.Errorf("scheduler: max_queue_per_node must be ≥ 0, got %d", c.MaxQueuePerNode))
	}
	if c.DefaultMaxTokens < 0 {
		errs = append(errs, fmt.Errorf("scheduler: default_max_tokens must be ≥ 0, got %d", c.DefaultMaxTokens))
	}
	return errors.Join(errs...)
}
