package sim

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/herd-llm/herd/models"
	"github.com/herd-llm/herd/nodeagent/agentapi"
)

// Disk and network figures of the simulated machine.
const (
	// diskBytesPerSecond is how fast weights are read from disk (an NVMe drive, ~2 GB/s); they
	// then cross the GPU's host link (models.PCIeBytesPerSecond).
	diskBytesPerSecond = 2e9
	// loadFixedSeconds is the fixed cost of starting a runner (CUDA context, graph reservation).
	loadFixedSeconds = 1.0
	// pullBytesPerSecond is the simulated registry download speed (~100 MB/s).
	pullBytesPerSecond = 100e6
	// pullProgressEvery is the simulated time between pull progress reports.
	pullProgressEvery = 250 * time.Millisecond
	// maxPullReports bounds the progress reports of one pull.
	maxPullReports = 200
)

type residency int

const (
	stateIdle residency = iota
	stateLoading
	stateResident
)

// share is the part of a model placed on one GPU.
type share struct {
	gpu   int
	bytes uint64
}

// loadOp is one model load in progress; done closes when it ends, err says how.
type loadOp struct {
	done chan struct{}
	err  error
}

type modelState struct {
	spec    models.ModelSpec
	digest  string
	vram    uint64
	onDisk  bool
	pulling bool

	state     residency
	load      *loadOp
	placement []share
	// gen identifies this load of the model; the prefix cache keys on it, so a reload starts cold.
	gen uint64
	// lost closes when the model is torn down under its requests (its GPU fell off the bus).
	lost chan struct{}

	inFlight       int
	lastUsed       time.Time
	keepAlive      time.Duration
	keepForever    bool
	expiresAt      time.Time
	unloadWhenIdle bool
	// draining (EngineOllama) marks a busy model chosen to make room for another: it takes no new
	// requests and unloads when its last one ends, as Ollama's scheduler waits for the runner it
	// will unload.
	draining bool
	// slots are the per-slot prompt caches of a resident model (EngineOllama).
	slots []cacheSlot

	decodeEWMA  float64
	prefillEWMA float64
	// concurrencyEWMA is the mean number of requests that shared the GPUs during the measured
	// decodes, reported beside decodeEWMA so the gateway can tell speed from sharing.
	concurrencyEWMA float64
}

func (n *Node) newModel(spec models.ModelSpec, onDisk bool) *modelState {
	sum := sha256.Sum256([]byte("herd-sim-weights\x00" + spec.Name))
	return &modelState{
		spec:   spec,
		digest: "sha256:" + hex.EncodeToString(sum[:]),
		vram:   models.EstimateVRAM(spec, n.ctxLen, n.slotsPer),
		onDisk: onDisk,
	}
}

// model returns the node's state for a name, if the model is on disk here.
func (n *Node) modelLocked(name string) (*modelState, bool) {
	spec, ok := models.LookupModel(name)
	if !ok {
		return nil, false
	}
	m, ok := n.models[spec.Name]
	if !ok || !m.onDisk {
		return nil, false
	}
	return m, true
}

func (n *Node) notFound(name string) error {
	return fmt.Errorf("%w: %q is not on simulated node %s", ErrModelNotFound, name, n.id)
}

// gpuUsedLocked is the VRAM placed on GPU i.
func (n *Node) gpuUsedLocked(i int) uint64 {
	var used uint64
	for _, m := range n.models {
		for _, s := range m.placement {
			if s.gpu == i {
				used += s.bytes
			}
		}
	}
	return used
}

// placeLocked finds room for m, evicting idle models least recently used first, and records the
// placement. It prefers one GPU (the one with the most free memory) and splits the model across
// GPUs only when no single one can hold it.
func (n *Node) placeLocked(m *modelState) error {
	var capacity uint64
	for _, g := range n.gpus {
		if g.usable() {
			capacity += g.profile.VRAMBytes
		}
	}
	if m.vram > capacity {
		return fmt.Errorf("%w: %s needs %.1f GiB, the healthy GPUs have %.1f GiB", ErrModelTooLarge, m.spec.Name, gib(m.vram), gib(capacity))
	}
	for {
		if n.maxLoaded > 0 && n.loadedLocked(m) >= n.maxLoaded {
			victim := n.victimLocked(m, false)
			if victim == nil {
				return fmt.Errorf("%w: %s: %d models loaded (the most this node keeps) and all are busy", ErrInsufficientVRAM, m.spec.Name, n.maxLoaded)
			}
			n.log.Info("simulated eviction", "model", victim.spec.Name, "for", m.spec.Name, "reason", "max loaded models")
			n.unloadLocked(victim)
			continue
		}
		if p := n.tryPlaceLocked(m.vram); p != nil {
			m.placement = p
			return nil
		}
		victim := n.victimLocked(m, false)
		if victim == nil {
			return fmt.Errorf("%w: %s needs %.1f GiB", ErrInsufficientVRAM, m.spec.Name, gib(m.vram))
		}
		n.log.Info("simulated eviction", "model", victim.spec.Name, "for", m.spec.Name)
		n.unloadLocked(victim)
	}
}

func gib(b uint64) float64 { return float64(b) / (1 << 30) }

func (n *Node) tryPlaceLocked(need uint64) []share {
	type free struct {
		gpu  int
		free uint64
	}
	var frees []free
	var total uint64
	for i, g := range n.gpus {
		if !g.usable() {
			continue
		}
		used := n.gpuUsedLocked(i)
		f := uint64(0)
		if used < g.profile.VRAMBytes {
			f = g.profile.VRAMBytes - used
		}
		frees = append(frees, free{i, f})
		total += f
	}
	// Most free first; the lower index wins a tie so placement is deterministic.
	slices.SortStableFunc(frees, func(a, b free) int { return cmp.Compare(b.free, a.free) })
	if len(frees) == 0 || total < need {
		return nil
	}
	if frees[0].free >= need {
		return []share{{frees[0].gpu, need}}
	}
	var p []share
	for _, f := range frees {
		if need == 0 {
			break
		}
		take := min(f.free, need)
		if take == 0 {
			continue
		}
		p = append(p, share{f.gpu, take})
		need -= take
	}
	return p
}

// loadedLocked counts the models resident or loading, except one.
func (n *Node) loadedLocked(except *modelState) int {
	c := 0
	for _, m := range n.models {
		if m != except && m.state != stateIdle {
			c++
		}
	}
	return c
}

// victimLocked picks the resident model to unload for another: an idle one, or with busy also a
// busy one when none is idle. EngineVLLM: least recently used first. EngineOllama: as Ollama
// 0.17.4's findRunnerToUnload (server/sched.go) does, the runners sorted by keep-alive (shortest
// first), then by model path (the weights blob, named by its digest), the first idle one; when
// none is idle, the first of them.
func (n *Node) victimLocked(except *modelState, busy bool) *modelState {
	var cands []*modelState
	for _, m := range n.models {
		if m != except && m.state == stateResident {
			cands = append(cands, m)
		}
	}
	if n.engine == EngineOllama {
		slices.SortFunc(cands, func(a, b *modelState) int {
			if c := cmp.Compare(n.sessionLocked(a), n.sessionLocked(b)); c != 0 {
				return c
			}
			return cmp.Compare(a.digest, b.digest)
		})
	} else {
		slices.SortFunc(cands, func(a, b *modelState) int {
			if c := a.lastUsed.Compare(b.lastUsed); c != 0 {
				return c
			}
			return cmp.Compare(a.spec.Name, b.spec.Name)
		})
	}
	for _, m := range cands {
		if m.inFlight == 0 {
			return m
		}
	}
	if busy && len(cands) > 0 {
		return cands[0]
	}
	return nil
}

// sessionLocked is m's keep-alive as Ollama sorts runners by it (unsigned: forever is last).
func (n *Node) sessionLocked(m *modelState) uint64 {
	if m.keepForever {
		return math.MaxUint64
	}
	ka := n.keepAlive
	if m.keepAlive > 0 {
		ka = m.keepAlive
	}
	if ka <= 0 {
		return math.MaxUint64
	}
	return uint64(ka)
}

// unloadLocked frees m's GPU memory.
func (n *Node) unloadLocked(m *modelState) {
	m.state = stateIdle
	m.placement = nil
	m.slots = nil
	m.expiresAt = time.Time{}
	m.unloadWhenIdle = false
	m.draining = false
	n.notifyLocked()
}

// loseLocked tears m down under its requests, as when its GPU falls off the bus.
func (n *Node) loseLocked(m *modelState) {
	if m.load != nil {
		m.load.err = errGPULost
		close(m.load.done)
		m.load = nil
	}
	if m.lost != nil {
		close(m.lost)
		m.lost = nil
	}
	n.unloadLocked(m)
}

// loadDuration is how long loading spec onto placement takes: the weights read from disk, then
// copied over the host link of each GPU its share lands on (one after the other, as llama.cpp
// uploads tensor by tensor), plus the runner's fixed start-up.
func (n *Node) loadDuration(spec models.ModelSpec, placement []share) time.Duration {
	secs := float64(spec.WeightsBytes)/diskBytesPerSecond + loadFixedSeconds
	var total uint64
	for _, s := range placement {
		total += s.bytes
	}
	for _, s := range placement {
		part := float64(spec.WeightsBytes) * float64(s.bytes) / float64(max(total, 1))
		secs += part / models.PCIeBytesPerSecond(n.gpus[s.gpu].profile)
	}
	return seconds(secs / n.speed)
}

// ensureLoaded makes m resident, loading it (once, however many callers wait) if needed. The load
// itself runs on its own: a caller that gives up does not cancel it, as with Ollama. The caller
// has counted itself in m.inFlight (begin). With EngineOllama a load that finds every loaded
// model busy waits for one to go idle (marking it to drain) instead of failing, and a draining
// model takes no new request until it has been unloaded and loaded again.
func (n *Node) ensureLoaded(ctx context.Context, m *modelState) error {
	n.mu.Lock()
	interrupted := 0
	for {
		switch m.state {
		case stateResident:
			if !m.draining {
				n.mu.Unlock()
				return nil
			}
			// Wait for the drain without holding it up: this request is not running yet.
			m.inFlight--
			n.idleLocked(m)
			if err := n.waitChangeLocked(ctx); err != nil {
				m.inFlight++
				n.mu.Unlock()
				return err
			}
			m.inFlight++
			continue
		case stateIdle:
			if !m.onDisk {
				n.mu.Unlock()
				return n.notFound(m.spec.Name)
			}
			err := n.placeLocked(m)
			if err != nil && n.engine == EngineOllama && errors.Is(err, ErrInsufficientVRAM) {
				if v := n.victimLocked(m, true); v != nil && !v.draining {
					n.log.Info("simulated eviction pending", "model", v.spec.Name, "for", m.spec.Name)
					v.draining, v.unloadWhenIdle = true, true
				}
				if err := n.waitChangeLocked(ctx); err != nil {
					n.mu.Unlock()
					return err
				}
				continue
			}
			if err != nil {
				n.mu.Unlock()
				return err
			}
			n.gen++
			m.gen = n.gen
			m.state = stateLoading
			m.lost = make(chan struct{})
			op := &loadOp{done: make(chan struct{})}
			m.load = op
			d := n.loadDuration(m.spec, m.placement)
			n.log.Info("simulated model load", "model", m.spec.Name, "duration", d, "placement", fmt.Sprint(m.placement))
			go n.finishLoad(m, op, d)
		}
		op := m.load
		n.mu.Unlock()
		select {
		case <-op.done:
		case <-ctx.Done():
			return ctx.Err()
		}
		if op.err != nil {
			return op.err
		}
		n.mu.Lock()
		if interrupted++; interrupted > 8 {
			n.mu.Unlock()
			return fmt.Errorf("model %s: load kept being interrupted", m.spec.Name)
		}
	}
}

// waitChangeLocked waits, with n.mu released, until the node's models change or ctx ends; it
// returns with n.mu held.
func (n *Node) waitChangeLocked(ctx context.Context) error {
	ch := n.changed
	n.mu.Unlock()
	var err error
	select {
	case <-ch:
	case <-ctx.Done():
		err = ctx.Err()
	}
	n.mu.Lock()
	return err
}

// idleLocked unloads m if it has gone idle while marked to unload, and wakes waiters.
func (n *Node) idleLocked(m *modelState) {
	if m.inFlight > 0 {
		return
	}
	if m.unloadWhenIdle && m.state == stateResident {
		n.unloadLocked(m)
		return
	}
	n.notifyLocked()
}

func (n *Node) finishLoad(m *modelState, op *loadOp, d time.Duration) {
	err := n.sleep(n.stop, nil, d)
	n.mu.Lock()
	defer n.mu.Unlock()
	if m.load != op {
		return // torn down meanwhile (GPU lost); loseLocked closed op
	}
	m.load = nil
	if err != nil {
		op.err = fmt.Errorf("load %s: %w", m.spec.Name, err)
		n.unloadLocked(m)
		close(op.done)
		return
	}
	now := n.clock.Now()
	m.state = stateResident
	m.slots = make([]cacheSlot, n.Slots())
	m.lastUsed = now
	n.touchExpiryLocked(m, now)
	n.elog.printf(now, "INFO", "server.go:1388", fmt.Sprintf("llama runner started in %0.2f seconds", d.Seconds()*n.speed), "model=%s", m.spec.Name)
	n.elog.printf(now, "INFO", "sched.go:566", "loaded runners", "count=%d model=%s", n.loadedLocked(nil), m.spec.Name)
	n.notifyLocked()
	close(op.done)
}

// touchExpiryLocked restarts m's keep-alive countdown from now.
func (n *Node) touchExpiryLocked(m *modelState, now time.Time) {
	ka := n.keepAlive
	if m.keepAlive > 0 {
		ka = m.keepAlive
	}
	if m.keepForever || ka <= 0 {
		m.expiresAt = time.Time{}
		return
	}
	m.expiresAt = now.Add(ka)
}

// reapLocked unloads idle models whose keep-alive ran out.
func (n *Node) reapLocked() {
	now := n.clock.Now()
	for _, m := range n.models {
		if m.state == stateResident && m.inFlight == 0 && !m.expiresAt.IsZero() && !now.Before(m.expiresAt) {
			n.log.Info("simulated keep-alive expiry", "model", m.spec.Name)
			n.unloadLocked(m)
		}
	}
}

// Models implements nodeagent.Backend: every model on disk, resident or not.
func (n *Node) Models(ctx context.Context) ([]agentapi.Model, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.reapLocked()
	out := make([]agentapi.Model, 0, len(n.models))
	for _, m := range n.models {
		if !m.onDisk {
			continue
		}
		out = append(out, agentapi.Model{
			Name:                   m.spec.Name,
			Resident:               m.state == stateResident,
			OnDisk:                 true,
			VRAMBytes:              m.vram,
			SizeBytes:              m.spec.WeightsBytes,
			Digest:                 m.digest,
			Family:                 m.spec.Family,
			ParameterSize:          m.spec.ParameterSize(),
			Quantization:           m.spec.Quantization,
			Embedding:              m.spec.Embedding,
			TokensPerSecond:        m.decodeEWMA,
			PrefillTokensPerSecond: m.prefillEWMA,
			Concurrency:            m.concurrencyEWMA,
			InFlight:               m.inFlight,
			LastUsed:               m.lastUsed,
			ExpiresAt:              m.expiresAt,
		})
		if m.state == stateResident {
			// The context window a resident copy serves, which Ollama's /api/ps reports.
			out[len(out)-1].ContextLength = n.contextFor(m.spec)
		}
	}
	slices.SortFunc(out, func(a, b agentapi.Model) int { return cmp.Compare(a.Name, b.Name) })
	return out, nil
}

// Pull implements nodeagent.ModelManager: any catalogue model downloads at about 100 MB/s ×
// SpeedFactor, reporting progress the way Ollama does ("pulling manifest", "pulling <digest>"
// with total and completed bytes, "verifying sha256 digest", "writing manifest", "success").
func (n *Node) Pull(ctx context.Context, model string, progress func(agentapi.Progress)) error {
	report := func(p agentapi.Progress) {
		if progress != nil {
			p.Node = n.id
			progress(p)
		}
	}
	spec, ok := models.LookupModel(model)
	if !ok {
		return fmt.Errorf("%w: %q is not in the simulated registry", ErrModelNotFound, model)
	}
	report(agentapi.Progress{Status: "pulling manifest"})
	n.mu.Lock()
	m, exists := n.models[spec.Name]
	if !exists {
		m = n.newModel(spec, false)
		n.models[spec.Name] = m
	}
	if m.pulling {
		n.mu.Unlock()
		return fmt.Errorf("%w: %s is already being pulled", ErrModelBusy, spec.Name)
	}
	already := m.onDisk
	if !already {
		m.pulling = true
	}
	digest := m.digest
	n.mu.Unlock()

	total := int64(spec.WeightsBytes)
	status := "pulling " + strings.TrimPrefix(digest, "sha256:")[:12]
	if already {
		report(agentapi.Progress{Status: status, Digest: digest, Total: total, Completed: total})
	} else {
		err := n.download(ctx, status, digest, total, report)
		n.mu.Lock()
		m.pulling = false
		if err == nil {
			m.onDisk = true
		}
		n.mu.Unlock()
		if err != nil {
			return fmt.Errorf("pull %s: %w", spec.Name, err)
		}
	}
	report(agentapi.Progress{Status: "verifying sha256 digest"})
	report(agentapi.Progress{Status: "writing manifest"})
	report(agentapi.Progress{Status: "success"})
	return nil
}

func (n *Node) download(ctx context.Context, status, digest string, total int64, report func(agentapi.Progress)) error {
	dur := seconds(float64(total) / pullBytesPerSecond / n.speed)
	steps := int64(dur / pullProgressEvery)
	steps = min(max(steps, 1), maxPullReports)
	report(agentapi.Progress{Status: status, Digest: digest, Total: total})
	var done int64
	for i := int64(1); i <= steps; i++ {
		if err := n.sleep(ctx, nil, dur/time.Duration(steps)); err != nil {
			return err
		}
		done = total * i / steps
		report(agentapi.Progress{Status: status, Digest: digest, Total: total, Completed: done})
	}
	return nil
}

// parseKeepAlive reads a keep-alive as Ollama does: a Go duration or a number of seconds;
// negative keeps the model forever, zero unloads it, empty is the node default.
func parseKeepAlive(s string) (d time.Duration, forever, set bool, err error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, false, false, nil
	}
	if secs, perr := strconv.ParseFloat(s, 64); perr == nil {
		d = seconds(max(secs, 0))
		if secs < 0 {
			return 0, true, true, nil
		}
		return d, false, true, nil
	}
	d, err = time.ParseDuration(s)
	if err != nil {
		return 0, false, false, fmt.Errorf("bad keep_alive %q: want a duration (\"5m\") or seconds, -1 for forever", s)
	}
	if d < 0 {
		return 0, true, true, nil
	}
	return d, false, true, nil
}

// Load implements nodeagent.ModelManager: it makes an on-disk model resident and waits for the load.
// keepAlive as Ollama takes it ("5m", "300", "-1" forever, "0" unloads, "" the node default).
func (n *Node) Load(ctx context.Context, model string, keepAlive string) error {
	d, forever, set, err := parseKeepAlive(keepAlive)
	if err != nil {
		return err
	}
	if set && !forever && d == 0 {
		return n.Unload(ctx, model)
	}
	n.mu.Lock()
	m, ok := n.modelLocked(model)
	if !ok {
		n.mu.Unlock()
		return n.notFound(model)
	}
	if set {
		m.keepAlive, m.keepForever = d, forever
	}
	n.mu.Unlock()
	if err := n.ensureLoaded(ctx, m); err != nil {
		return fmt.Errorf("load %s: %w", m.spec.Name, err)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	now := n.clock.Now()
	m.lastUsed = now
	n.touchExpiryLocked(m, now)
	return nil
}

// Unload implements nodeagent.ModelManager: it frees the model's GPU memory now if it is idle, or
// as soon as its last request ends. Unloading a model that is not resident is not an error.
func (n *Node) Unload(ctx context.Context, model string) error {
	n.mu.Lock()
	m, ok := n.modelLocked(model)
	if !ok {
		n.mu.Unlock()
		return n.notFound(model)
	}
	if m.state == stateLoading {
		op := m.load
		n.mu.Unlock()
		select {
		case <-op.done:
		case <-ctx.Done():
			return ctx.Err()
		}
		n.mu.Lock()
	}
	defer n.mu.Unlock()
	if m.state != stateResident {
		return nil
	}
	if m.inFlight > 0 {
		m.unloadWhenIdle = true
		return nil
	}
	n.unloadLocked(m)
	return nil
}

// Delete implements nodeagent.ModelManager: it removes an idle model from disk (and from GPU memory).
func (n *Node) Delete(ctx context.Context, model string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	m, ok := n.modelLocked(model)
	if !ok {
		return n.notFound(model)
	}
	if m.inFlight > 0 || m.state == stateLoading {
		return fmt.Errorf("%w: %s has %d requests in flight", ErrModelBusy, m.spec.Name, m.inFlight)
	}
	n.unloadLocked(m)
	m.onDisk = false
	delete(n.models, m.spec.Name)
	return nil
}
