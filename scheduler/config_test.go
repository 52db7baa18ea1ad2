package scheduler

import (
	"math"
	"strings"
	"testing"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		edit    func(*Config)
		wantErr string // substring; "" means valid
	}{
		{name: "default", edit: func(*Config) {}},
		{name: "empty policy means herd", edit: func(c *Config) { c.Policy = "" }},
		{name: "round robin", edit: func(c *Config) { c.Policy = PolicyRoundRobin }},
		{name: "least inflight", edit: func(c *Config) { c.Policy = PolicyLeastInflight }},
		{name: "unknown policy", edit: func(c *Config) { c.Policy = "random" }, wantErr: `unknown policy "random"`},
		{name: "negative weight", edit: func(c *Config) { c.Weights.Affinity = -1 }, wantErr: "weights.affinity"},
		{name: "NaN weight", edit: func(c *Config) { c.Weights.Wait = math.NaN() }, wantErr: "weights.wait"},
		{name: "infinite weight", edit: func(c *Config) { c.Weights.VRAM = math.Inf(1) }, wantErr: "weights.vram"},
		{name: "zero weight switches a scorer off", edit: func(c *Config) { c.Weights.Throttle = 0 }},
		{name: "contention above 1", edit: func(c *Config) { c.SlotContention = 1.5 }, wantErr: "slot_contention"},
		{name: "contention NaN", edit: func(c *Config) { c.SlotContention = math.NaN() }, wantErr: "slot_contention"},
		{name: "negative queue", edit: func(c *Config) { c.MaxQueuePerNode = -1 }, wantErr: "max_queue_per_node"},
		{name: "negative tokens", edit: func(c *Config) { c.DefaultMaxTokens = -1 }, wantErr: "default_max_tokens"},
		{name: "negative queue aversion", edit: func(c *Config) { c.QueueAversion = -1 }, wantErr: "queue_aversion"},
		{name: "negative load rate", edit: func(c *Config) { c.LoadBytesPerSecond = -1 }, wantErr: "load_bytes_per_second"},
		{name: "learn alpha above 1", edit: func(c *Config) { c.LearnAlpha = 1.5 }, wantErr: "learn_alpha"},
		{name: "negative prior weight", edit: func(c *Config) { c.LearnPriorWeight = -1 }, wantErr: "learn_prior_weight"},
		{name: "several errors at once", edit: func(c *Config) { c.Policy = "x"; c.PrefillSpeedup = -2 }, wantErr: "prefill_speedup"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			tt.edit(&c)
			err := c.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				if _, err := New(c); err != nil {
					t.Fatalf("New: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want one mentioning %q", err, tt.wantErr)
			}
			if _, err := New(c); err == nil {
				t.Fatal("New accepted an invalid config")
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	if DefaultConfig().Policy != PolicyHerd {
		t.Fatal("herd is the default policy")
	}
	s := mustNew(t, Config{})
	if got := s.Config(); got != DefaultConfig() {
		t.Fatalf("zero config should run as the default:\n got %+v\nwant %+v", got, DefaultConfig())
	}
	if lc := (Config{SlotContention: 0.4, LearnAlpha: 0.5}).LearnerConfig(); lc != (LearnerConfig{Alpha: 0.5, PriorWeight: 2, PriorContention: 0.4}) {
		t.Errorf("learner config %+v", lc)
	}
	// Chosen weights are kept as they are, zeros included.
	s = mustNew(t, Config{Policy: PolicyRoundRobin, Weights: Weights{Wait: 1}, SlotContention: 1})
	if got := s.Config(); got.Weights != (Weights{Wait: 1}) || got.Policy != PolicyRoundRobin || got.SlotContention != 1 || got.DefaultMaxTokens != 256 {
		t.Fatalf("got %+v", got)
	}
}
