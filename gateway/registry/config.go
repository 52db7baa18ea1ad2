package registry

import (
	"errors"
	"time"

	"github.com/herd-llm/herd/scheduler"
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
