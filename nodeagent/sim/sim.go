// Package sim is a simulated GPU node: a model of one machine's GPUs and its local model server,
// honest enough to test scheduling, failover and batch work without hardware. A *Node is at once
// a nodeagent.Backend (it answers the OpenAI routes in the exact OpenAI wire format), a
// nodeagent.ModelManager (pull, load, unload, delete) and a nodeagent.TelemetrySource (per-GPU
// NVML-like samples). Everything it produces is labelled simulated: the X-Herd-Simulated response
// header, GPU.Simulated, Backend.Simulated.
//
// It checks requests as OpenAI does (params.go) and honours what changes an answer's shape: stop
// sequences, tools with tool_choice, and response_format, with tool-call arguments and JSON
// generated to fit the declared JSON Schema (structured.go, schema.go).
//
// # The model
//
// Figures come from package models: VRAM, memory bandwidth and FP16 throughput per GPU profile,
// weights size and architecture per model. Each request
//
//  1. takes one of SlotsPerGPU × len(GPUs) slots, waiting in a FIFO queue when all are busy
//     (InFlight reports both counts);
//  2. loads its model if it is not resident: the model is placed on the healthy GPU with the most
//     free memory, or split across GPUs when no single one can hold it (llama.cpp's layer split),
//     after evicting least-recently-used idle models if memory is short. Its footprint is
//     models.EstimateVRAM at the node's per-slot context for SlotsPerGPU slots. Loading takes
//     weights ÷ 2 GB/s (disk) + 1 s. A model bigger than all healthy GPUs together, or one that
//     cannot fit while the other models are busy, fails with a 503;
//  3. prefills its prompt at models.PrefillTokensPerSecond, skipping the part of the prompt whose
//     64-token blocks this node has seen before for the same loaded model (a KV prefix cache,
//     least recently used blocks evicted beyond slots × ContextLength tokens: the KV memory the
//     node allocates);
//  4. decodes at models.DecodeTokensPerSecond shared with the other requests decoding on the same
//     GPU: n concurrent requests together make single × min(n^0.6, 8) tokens/s, so batching raises
//     throughput sublinearly and each request slows down. A split model decodes at the harmonic
//     mix of its GPUs' speeds (layers run one GPU after the other). A GPU in thermal slowdown runs
//     at half speed.
//
// # Where each figure comes from
//
// The simulator's physics live here and in package models, each with its source; the gateway's
// scheduler shares none of it (it learns every node's speed and contention from the
// heartbeats' measurements, scheduler.Learner), so a simulated run tests the scheduler against
// a world it was not written around.
//
//   - VRAM, memory bandwidth, FP16 throughput, board power: the GPU datasheets named in each
//     models.GPUProfile's Source.
//   - Decode tok/s = efficiency × bandwidth ÷ weights, prefill tok/s = efficiency × FP16 FLOPS ÷
//     (2 × parameters): models.DecodeTokensPerSecond and PrefillTokensPerSecond, calibrated on
//     llama.cpp's llama-bench (RTX 3090 tg 111.7 / pp 3865 tok/s on Llama-3-8B Q4_K_M; A100 and
//     H100 efficiencies from llama.cpp runs; see models/gpus.go).
//   - Sharing a GPU (batchExponent 0.6): llama.cpp's llama-batched-bench shows aggregate decode
//     growing as n^0.5 to n^0.8 with n parallel sequences (ggml-org/llama.cpp PR #3545, a 7B F16
//     model at 3.5k context: 4 sequences 2.09×, 16 sequences 7.0× one; PR #16894, Qwen2 7B Q8_0:
//     2 sequences 1.73×, 4 sequences 2.84× at a 512-token context, 2.61× at 4k); 0.6 sits in the
//     middle of that range at chat contexts. maxBatchGain 8 (compute bound beyond it) is never
//     reached at the default 4 slots per GPU (4^0.6 ≈ 2.3).
//   - Model load: weights ÷ 2 GB/s (a PCIe 3/4 NVMe drive's sequential read) + 1 s (CUDA context
//     and graph reservation, as llama.cpp runners take on start); pulls at 100 MB/s (a gigabit
//     link, roughly): modelling choices, not measurements.
//   - Thermal slowdown halves the speed: NVML documents thermal HW slowdown as "reducing core
//     clocks by a factor of 2 or more" (nvml.h, NVML_FI_DEV_CLOCKS_EVENT_REASON_HW_THERM_SLOWDOWN).
//   - KV prefix cache in 64-token blocks: vLLM's prefix caching works in KV blocks (16 tokens by
//     default) and llama.cpp reuses a slot's cache token by token; 64 keeps the simulation cheap
//     and loses at most 63 tokens of reuse per request.
//
// SpeedFactor divides every duration (load, prefill, decode, pull) so tests and load tests can run
// faster than the hardware; the measured tokens/s it reports are then faster in proportion, and
// the GPU names carry a "(simulated xN)" suffix so nobody mistakes them for hardware figures.
//
// Prompt size is estimated as bytes ÷ 4 of the rendered prompt. The output length is max_tokens
// (or max_completion_tokens) when given, with finish_reason "length", otherwise a length of 16–256
// tokens drawn from the prompt's hash, with finish_reason "stop"; either is cut at the context
// window. The text is pseudo-words drawn deterministically from the node's seed and the prompt, so
// the same request on the same node gives the same answer. Embeddings are deterministic unit
// vectors of the model's dimension that depend only on the model and the input text, so every
// node agrees on them.
//
// Telemetry follows the load: utilisation is busy slots on a GPU ÷ SlotsPerGPU, temperature
// drifts from 35 °C toward 80 °C at full load, power moves from idle toward the board limit.
// InjectFault makes a GPU report an uncorrectable ECC error, an XID 79 (fallen off the bus: the
// models on it are lost and requests on them fail) or thermal slowdown.
package sim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/herd-llm/herd/clock"
	"github.com/herd-llm/herd/models"
	"github.com/herd-llm/herd/nodeagent"
	"github.com/herd-llm/herd/nodeagent/agentapi"
)

// Errors the node returns; callers branch on them with errors.Is.
var (
	// ErrModelNotFound: the model is not on this node's disk (or, for Pull, not in the catalogue).
	ErrModelNotFound = errors.New("model not found")
	// ErrModelTooLarge: the model needs more VRAM than all healthy GPUs of the node have.
	ErrModelTooLarge = errors.New("model does not fit in this node's GPU memory")
	// ErrInsufficientVRAM: the model would fit, but the memory is held by models that are busy.
	ErrInsufficientVRAM = errors.New("not enough free GPU memory: resident models are busy")
	// ErrModelBusy: the model has requests in flight or is loading (Delete).
	ErrModelBusy = errors.New("model is in use")
	// ErrNoECC: an ECC fault was injected into a GPU without ECC memory.
	ErrNoECC = errors.New("GPU has no ECC memory")
	// errGPULost ends requests whose model was on a GPU that fell off the bus.
	errGPULost = errors.New("GPU fell off the bus (XID 79)")
)

// Default values for Config fields left zero.
const (
	DefaultSlotsPerGPU = 4
)

// DefaultModels lists the models on disk on a node whose Config names none: a small and a
// mid-size chat model of two families and an embedding model.
func DefaultModels() []string {
	return []string{"llama3.2:3b", "llama3.1:8b", "qwen2.5:7b", "nomic-embed-text:latest"}
}

// Config describes a simulated node.
type Config struct {
	// NodeID names the node in GPU UUIDs and system fingerprints. Default "sim".
	NodeID string
	// GPUs has one entry per physical GPU (see models.ExpandGPUs). At least one.
	GPUs []models.GPUProfile
	// Models are on disk at start (catalogue names or aliases). nil means DefaultModels(); an
	// empty, non-nil slice means none.
	Models []string
	// Preload are resident at start (and on disk whether listed in Models or not).
	Preload []string
	// SlotsPerGPU is how many requests each GPU serves at once. Default 4.
	SlotsPerGPU int
	// ContextLength is the context window of each slot, capped at a model's trained context.
	// Default models.DefaultContextLength.
	ContextLength int
	// KeepAlive unloads a model idle this long; 0 keeps models until evicted or unloaded.
	KeepAlive time.Duration
	// Clock is the time source. Default the wall clock.
	Clock clock.Clock
	// Seed varies the generated text between nodes that should not agree.
	Seed int64
	// SpeedFactor > 1 makes everything proportionally faster. Default 1.
	SpeedFactor float64
	// Logger receives load, eviction and fault events. Default: discarded.
	Logger *slog.Logger
}

// Node is a simulated GPU node. Its methods are safe for concurrent use.
type Node struct {
	id        string
	clock     clock.Clock
	speed     float64
	seed      int64
	slotsPer  int
	ctxLen    int
	keepAlive time.Duration
	log       *slog.Logger
	// stop ends background model loads when the node closes.
	stop      context.Context
	stopFunc  context.CancelFunc
	startedAt time.Time

	mu        sync.Mutex
	gpus      []*gpuState
	models    map[string]*modelState
	freeSlots int
	active    int
	waiters   []chan struct{}
	seq       uint64
	gen       uint64
	prefix    *prefixCache
}

var (
	_ nodeagent.Backend         = (*Node)(nil)
	_ nodeagent.ModelManager    = (*Node)(nil)
	_ nodeagent.TelemetrySource = (*Node)(nil)
)

// New builds a node from cfg, with Preload models resident at once.
func New(cfg Config) (*Node, error) {
	if len(cfg.GPUs) == 0 {
		return nil, errors.New("sim: at least one GPU is needed")
	}
	for i, g := range cfg.GPUs {
		if g.VRAMBytes == 0 || g.MemoryBandwidthGBs <= 0 || g.FP16TFLOPS <= 0 {
			return nil, fmt.Errorf("sim: GPU %d (%q) lacks VRAM, bandwidth or FLOPS figures", i, g.Key)
		}
	}
	if cfg.SlotsPerGPU < 0 {
		return nil, fmt.Errorf("sim: SlotsPerGPU %d < 0", cfg.SlotsPerGPU)
	}
	if cfg.SlotsPerGPU == 0 {
		cfg.SlotsPerGPU = DefaultSlotsPerGPU
	}
	if cfg.SpeedFactor == 0 {
		cfg.SpeedFactor = 1
	}
	if cfg.SpeedFactor < 0 || math.IsNaN(cfg.SpeedFactor) || math.IsInf(cfg.SpeedFactor, 0) {
		return nil, fmt.Errorf("sim: SpeedFactor %v must be a positive number", cfg.SpeedFactor)
	}
	if cfg.ContextLength <= 0 {
		cfg.ContextLength = models.DefaultContextLength
	}
	if cfg.NodeID == "" {
		cfg.NodeID = "sim"
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.System{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Models == nil {
		cfg.Models = DefaultModels()
	}
	stop, stopFunc := context.WithCancel(context.Background())
	n := &Node{
		id: cfg.NodeID, clock: cfg.Clock, speed: cfg.SpeedFactor, seed: cfg.Seed,
		slotsPer: cfg.SlotsPerGPU, ctxLen: cfg.ContextLength, keepAlive: cfg.KeepAlive,
		log: cfg.Logger.With("node", cfg.NodeID, "simulated", true), stop: stop, stopFunc: stopFunc,
		startedAt: cfg.Clock.Now(),
		models:    map[string]*modelState{},
		freeSlots: cfg.SlotsPerGPU * len(cfg.GPUs),
		prefix:    newPrefixCache(prefixCacheBlocks(cfg.SlotsPerGPU*len(cfg.GPUs), cfg.ContextLength)),
	}
	for i, g := range cfg.GPUs {
		n.gpus = append(n.gpus, &gpuState{index: i, profile: g, temp: idleTempC, tempAt: n.startedAt})
	}
	for _, name := range slices.Concat(cfg.Models, cfg.Preload) {
		spec, ok := models.LookupModel(name)
		if !ok {
			return nil, fmt.Errorf("sim: %w: %q is not in the model catalogue", ErrModelNotFound, name)
		}
		if _, dup := n.models[spec.Name]; !dup {
			n.models[spec.Name] = n.newModel(spec, true)
		}
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, name := range cfg.Preload {
		spec, _ := models.LookupModel(name)
		m := n.models[spec.Name]
		if m.state == stateResident {
			continue
		}
		if err := n.placeLocked(m); err != nil {
			return nil, fmt.Errorf("sim: preload %s: %w", spec.Name, err)
		}
		n.gen++
		m.gen = n.gen
		m.state = stateResident
		m.lost = make(chan struct{})
		m.lastUsed = n.startedAt
		n.touchExpiryLocked(m, n.startedAt)
	}
	return n, nil
}

// Close stops background model loads. The node answers no requests worth having afterwards.
func (n *Node) Close() error {
	n.stopFunc()
	return nil
}

// Kind implements nodeagent.Backend.
func (n *Node) Kind() string { return agentapi.BackendSim }

// Simulated implements nodeagent.Backend: always true.
func (n *Node) Simulated() bool { return true }

// NodeID is the node's name.
func (n *Node) NodeID() string { return n.id }

// SpeedFactor is how much faster than the modelled hardware the node runs.
func (n *Node) SpeedFactor() float64 { return n.speed }

// Slots is how many requests the node serves at once: SlotsPerGPU × GPUs.
func (n *Node) Slots() int { return n.slotsPer * len(n.gpus) }

// InFlight reports the requests holding a slot and those waiting for one.
func (n *Node) InFlight() (inFlight, queued int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.active, len(n.waiters)
}

// acquire takes a slot, waiting in FIFO order while none is free. The slot is handed straight from
// a finishing request to the head of the queue, so no late arrival overtakes a waiting one.
func (n *Node) acquire(ctx context.Context) (release func(), err error) {
	n.mu.Lock()
	if n.freeSlots > 0 && len(n.waiters) == 0 {
		n.freeSlots--
		n.active++
		n.mu.Unlock()
		return n.releaseOnce(), nil
	}
	ch := make(chan struct{}, 1)
	n.waiters = append(n.waiters, ch)
	n.mu.Unlock()
	select {
	case <-ch:
		return n.releaseOnce(), nil
	case <-ctx.Done():
		n.mu.Lock()
		defer n.mu.Unlock()
		if i := slices.Index(n.waiters, ch); i >= 0 {
			n.waiters = slices.Delete(n.waiters, i, i+1)
			return nil, ctx.Err()
		}
		// The slot arrived as ctx ended: pass it on.
		n.releaseLocked()
		return nil, ctx.Err()
	}
}

func (n *Node) releaseOnce() func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			n.mu.Lock()
			defer n.mu.Unlock()
			n.releaseLocked()
		})
	}
}

// releaseLocked frees the caller's slot: to the first waiter if there is one.
func (n *Node) releaseLocked() {
	if len(n.waiters) > 0 {
		ch := n.waiters[0]
		n.waiters = n.waiters[1:]
		ch <- struct{}{}
		return
	}
	n.active--
	n.freeSlots++
}
