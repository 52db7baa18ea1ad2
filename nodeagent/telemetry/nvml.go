package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/herd-llm/herd/nodeagent"
	"github.com/herd-llm/herd/nodeagent/agentapi"
)

// ErrUnavailable is returned (wrapped) by Open when NVML cannot be used on this machine: no
// library, no driver loaded, no permission. GPUs then reports no GPUs and a nil error.
var ErrUnavailable = errors.New("nvml unavailable")

// xidWaitMS is how long one EventSet.Wait blocks; it bounds how long Close waits for the
// watcher goroutine.
const xidWaitMS = 500

// xidRetryDelay spaces out Wait calls after an unexpected error so a broken event set does not
// spin a core.
const xidRetryDelay = 2 * time.Second

// criticalXIDs are the XIDs that mean the GPU needs a reset or a technician: double-bit ECC (48),
// internal micro-controller halt (62), row remapping events and failures (63, 64), NVLink error
// (74), fell off the bus (79), high single-bit ECC rate (92), contained and uncontained ECC (94,
// 95), GSP errors (119, 120). Application faults (13, 31, 43, 45, ...) are XID events too but
// say nothing about the GPU, so they are counted and not held against its health.
var criticalXIDs = map[uint64]string{
	48:  "double-bit ECC error",
	62:  "internal micro-controller halt",
	63:  "ECC page retirement / row remapping event",
	64:  "ECC page retirement / row remapping failure",
	74:  "NVLink error",
	79:  "GPU has fallen off the bus",
	92:  "high single-bit ECC error rate",
	94:  "contained ECC error",
	95:  "uncontained ECC error",
	119: "GSP RPC timeout",
	120: "GSP error",
}

// throttleNames maps NVML clock event (throttle) reason bits to agentapi names, in bit order.
var throttleNames = []struct {
	bit  uint64
	name string
}{
	{nvml.ClocksEventReasonGpuIdle, agentapi.ThrottleGPUIdle},
	{nvml.ClocksEventReasonApplicationsClocksSetting, agentapi.ThrottleApplicationClock},
	{nvml.ClocksEventReasonSwPowerCap, agentapi.ThrottleSWPowerCap},
	{nvml.ClocksThrottleReasonHwSlowdown, agentapi.ThrottleHWSlowdown},
	{nvml.ClocksEventReasonSyncBoost, agentapi.ThrottleSyncBoost},
	{nvml.ClocksEventReasonSwThermalSlowdown, agentapi.ThrottleSWThermal},
	{nvml.ClocksThrottleReasonHwThermalSlowdown, agentapi.ThrottleHWThermal},
	{nvml.ClocksThrottleReasonHwPowerBrakeSlowdown, agentapi.ThrottleHWPowerBrake},
	{nvml.ClocksEventReasonDisplayClockSetting, agentapi.ThrottleDisplayClock},
	{nvml.ClocksEventReasonBoardLimit, agentapi.ThrottleBoardLimit},
	{nvml.ClocksEventReasonReliability, agentapi.ThrottleReliability},
}

// ThrottleReasonNames turns an NVML clock event reasons bitmask into agentapi.Throttle* names,
// in bit order. Unknown bits are ignored. It never returns nil, so the JSON is [] not null.
func ThrottleReasonNames(mask uint64) []string {
	out := []string{}
	for _, t := range throttleNames {
		if mask&t.bit != 0 {
			out = append(out, t.name)
		}
	}
	return out
}

// NVML reads GPUs through NVML. Create it with NewNVML; it opens NVML on first use (or Open) and
// must be closed with Close, which stops the XID watcher and shuts NVML down.
type NVML struct {
	lib nvml.Interface
	log *slog.Logger

	openOnce sync.Once
	openErr  error

	stop chan struct{}
	done chan struct{}

	mu        sync.Mutex
	reason    string // why there are no GPUs; "" when NVML is fine
	inited    bool
	closed    bool
	eventSet  nvml.EventSet
	xids      map[string]*xidState // by GPU UUID; "" holds events no GPU could be named for
	readState map[string]nvml.Return
}

// xidState is what the watcher learned about one GPU.
type xidState struct {
	count        uint64
	last         uint64
	lastCritical uint64
}

var _ nodeagent.TelemetrySource = (*NVML)(nil)

// NewNVML returns an NVML source. A nil lib uses the system library (nvml.New()); tests pass
// go-nvml's mock. A nil logger uses slog.Default().
func NewNVML(lib nvml.Interface, logger *slog.Logger) *NVML {
	if lib == nil {
		lib = nvml.New()
	}
	if logger == nil {
		logger = slog.Default()
	}
	return &NVML{
		lib:       lib,
		log:       logger.With("component", "telemetry", "source", "nvml"),
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
		xids:      map[string]*xidState{},
		readState: map[string]nvml.Return{},
	}
}

// Open initialises NVML and starts the XID event watcher. It is called by the first GPUs call if
// not before, and runs once. When NVML cannot be used it logs one line, returns an error wrapping
// ErrUnavailable, and the source reports no GPUs from then on.
func (n *NVML) Open() error {
	n.openOnce.Do(func() { n.openErr = n.open() })
	return n.openErr
}

func (n *NVML) open() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		n.reason = "nvml source closed"
		close(n.done)
		return fmt.Errorf("telemetry: %w: closed before open", ErrUnavailable)
	}
	ret := safeInit(n.lib)
	if ret != nvml.SUCCESS {
		switch ret {
		case nvml.ERROR_LIBRARY_NOT_FOUND, nvml.ERROR_DRIVER_NOT_LOADED:
			n.reason = fmt.Sprintf("no NVIDIA driver found (%s): reporting no GPUs", ret.Error())
		default:
			n.reason = fmt.Sprintf("NVML init failed (%s): reporting no GPUs", ret.Error())
		}
		n.log.Warn(n.reason)
		close(n.done) // no watcher will run
		return fmt.Errorf("telemetry: %w: %w", ErrUnavailable, ret)
	}
	n.inited = true
	set := n.registerXID()
	if set == nil {
		close(n.done)
		return nil
	}
	n.eventSet = set
	go n.watchXID(set)
	return nil
}

// safeInit calls lib.Init, turning a panic (a mock without Init, a broken binding) into an error.
func safeInit(lib nvml.Interface) (ret nvml.Return) {
	defer func() {
		if r := recover(); r != nil {
			ret = nvml.ERROR_UNKNOWN
		}
	}()
	return lib.Init()
}

// registerXID creates an event set for critical XID events on every GPU that supports them. It
// returns nil when no GPU does; XIDs are then simply not watched.
func (n *NVML) registerXID() (set nvml.EventSet) {
	defer func() {
		if r := recover(); r != nil {
			n.log.Warn("XID events unavailable", "panic", fmt.Sprint(r))
			set = nil
		}
	}()
	set, ret := n.lib.EventSetCreate()
	if ret != nvml.SUCCESS {
		n.log.Info("XID events unavailable", "err", ret.Error())
		return nil
	}
	count, ret := n.lib.DeviceGetCount()
	if ret != nvml.SUCCESS {
		count = 0
	}
	registered := 0
	for i := 0; i < count; i++ {
		dev, ret := n.lib.DeviceGetHandleByIndex(i)
		if ret != nvml.SUCCESS {
			continue
		}
		ret = dev.RegisterEvents(nvml.EventTypeXidCriticalError, set)
		if ret != nvml.SUCCESS {
			n.log.Info("XID events unavailable for GPU", "index", i, "err", ret.Error())
			continue
		}
		registered++
	}
	if registered == 0 {
		_ = set.Free()
		return nil
	}
	return set
}

// watchXID waits for XID events until Close.
func (n *NVML) watchXID(set nvml.EventSet) {
	defer close(n.done)
	var lastErr nvml.Return = nvml.SUCCESS
	for {
		select {
		case <-n.stop:
			return
		default:
		}
		e, ret := waitEvent(set)
		switch ret {
		case nvml.SUCCESS:
			lastErr = nvml.SUCCESS
			n.recordXID(e)
		case nvml.ERROR_TIMEOUT:
		default:
			if ret != lastErr {
				n.log.Warn("waiting for XID events failed; retrying", "err", ret.Error())
				lastErr = ret
			}
			select {
			case <-n.stop:
				return
			case <-time.After(xidRetryDelay):
			}
		}
	}
}

func waitEvent(set nvml.EventSet) (e nvml.EventData, ret nvml.Return) {
	defer func() {
		if r := recover(); r != nil {
			ret = nvml.ERROR_UNKNOWN
		}
	}()
	return set.Wait(xidWaitMS)
}

func (n *NVML) recordXID(e nvml.EventData) {
	if e.EventType != nvml.EventTypeXidCriticalError {
		return
	}
	uuid := eventUUID(e)
	xid := e.EventData
	n.mu.Lock()
	st := n.xids[uuid]
	if st == nil {
		st = &xidState{}
		n.xids[uuid] = st
	}
	st.count++
	st.last = xid
	_, critical := criticalXIDs[xid]
	if critical {
		st.lastCritical = xid
	}
	n.mu.Unlock()
	level := slog.LevelInfo
	if critical {
		level = slog.LevelError
	}
	n.log.Log(context.Background(), level, "XID event", "gpu_uuid", uuid, "xid", xid, "critical", critical)
}

// eventUUID names the GPU an event came from, "" when it cannot be told (then the event is held
// against every GPU: an unattributable critical XID is no reason to trust any of them).
func eventUUID(e nvml.EventData) (uuid string) {
	defer func() {
		if recover() != nil {
			uuid = ""
		}
	}()
	if e.Device == nil {
		return ""
	}
	u, ret := e.Device.GetUUID()
	if ret != nvml.SUCCESS {
		return ""
	}
	return u
}

// Reason says why the source reports no GPUs ("" when NVML works and found GPUs).
func (n *NVML) Reason() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.reason
}

// Close stops the XID watcher and shuts NVML down. It is safe to call more than once.
func (n *NVML) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	n.mu.Unlock()
	// Make sure a later Open does nothing and that n.done is closed in every path.
	_ = n.Open()
	close(n.stop)
	<-n.done
	n.mu.Lock()
	defer n.mu.Unlock()
	n.reason = "nvml source closed"
	var errs []error
	if n.eventSet != nil {
		if ret := n.eventSet.Free(); ret != nvml.SUCCESS {
			errs = append(errs, fmt.Errorf("free event set: %w", ret))
		}
		n.eventSet = nil
	}
	if n.inited {
		n.inited = false
		if ret := n.lib.Shutdown(); ret != nvml.SUCCESS {
			errs = append(errs, fmt.Errorf("shutdown: %w", ret))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("telemetry: close nvml: %w", errors.Join(errs...))
	}
	return nil
}

// GPUs reads every GPU. No driver is no GPUs and a nil error; a failure to count the GPUs is an
// error; a GPU that fails to answer is returned with Healthy false.
func (n *NVML) GPUs(ctx context.Context) ([]agentapi.GPU, error) {
	if err := n.Open(); err != nil {
		return []agentapi.GPU{}, nil
	}
	n.mu.Lock()
	closed := n.closed
	n.mu.Unlock()
	if closed {
		return []agentapi.GPU{}, nil
	}
	count, ret := n.deviceCount()
	if ret != nvml.SUCCESS {
		return nil, fmt.Errorf("telemetry: nvml device count: %w", ret)
	}
	n.mu.Lock()
	if count == 0 {
		n.reason = "NVML found no GPUs"
	} else {
		n.reason = ""
	}
	n.mu.Unlock()
	gpus := make([]agentapi.GPU, 0, count)
	for i := 0; i < count; i++ {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("telemetry: %w", err)
		}
		gpus = append(gpus, n.readDevice(i))
	}
	return gpus, nil
}

func (n *NVML) deviceCount() (count int, ret nvml.Return) {
	defer func() {
		if recover() != nil {
			count, ret = 0, nvml.ERROR_UNKNOWN
		}
	}()
	return n.lib.DeviceGetCount()
}

// deviceReader reads one GPU, remembering whether it has been lost so later reads are skipped.
type deviceReader struct {
	n    *NVML
	idx  int
	key  string // UUID once known, else "index-N"; keys read-error log state
	lost bool
}

// ok reports whether a read succeeded; ERROR_GPU_IS_LOST marks the GPU lost, NOT_SUPPORTED is
// silently a zero, anything else is logged once per change.
func (r *deviceReader) ok(what string, ret nvml.Return) bool {
	r.n.noteRead(r.key+"/"+what, what, r.idx, ret)
	switch ret {
	case nvml.SUCCESS:
		return true
	case nvml.ERROR_GPU_IS_LOST:
		r.lost = true
	}
	return false
}

// readDevice samples GPU i. It never panics: a panic inside the binding becomes an unhealthy GPU.
func (n *NVML) readDevice(i int) (g agentapi.GPU) {
	g = agentapi.GPU{Index: i, Healthy: true, ThrottleReasons: []string{}}
	r := &deviceReader{n: n, idx: i, key: fmt.Sprintf("index-%d", i)}
	defer func() {
		if p := recover(); p != nil {
			g.Healthy = false
			g.HealthReason = fmt.Sprintf("nvml failed reading GPU %d: %v", i, p)
		}
	}()
	dev, ret := n.lib.DeviceGetHandleByIndex(i)
	if ret != nvml.SUCCESS {
		g.Healthy = false
		if ret == nvml.ERROR_GPU_IS_LOST {
			g.HealthReason = "GPU is lost (fell off the bus)"
		} else {
			g.HealthReason = "nvml cannot open GPU: " + ret.Error()
		}
		return g
	}
	if uuid, ret := dev.GetUUID(); r.ok("uuid", ret) {
		g.UUID = uuid
		r.key = uuid
	}
	if !r.lost {
		if name, ret := dev.GetName(); r.ok("name", ret) {
			g.Name = name
		}
	}
	if !r.lost {
		if idx, ret := dev.GetIndex(); r.ok("index", ret) {
			g.Index = idx
		}
	}
	if !r.lost {
		if mem, ret := dev.GetMemoryInfo(); r.ok("memory", ret) {
			g.MemoryTotalBytes, g.MemoryUsedBytes = mem.Total, mem.Used
		}
	}
	if !r.lost {
		if u, ret := dev.GetUtilizationRates(); r.ok("utilization", ret) {
			g.UtilizationRatio = float64(u.Gpu) / 100
			g.MemoryUtilizationRatio = float64(u.Memory) / 100
		}
	}
	if !r.lost {
		if t, ret := dev.GetTemperature(nvml.TEMPERATURE_GPU); r.ok("temperature", ret) {
			g.TemperatureCelsius = float64(t)
		}
	}
	if !r.lost {
		if mw, ret := dev.GetPowerUsage(); r.ok("power", ret) {
			g.PowerWatts = float64(mw) / 1000
		}
	}
	if !r.lost {
		if mw, ret := dev.GetEnforcedPowerLimit(); r.ok("power_limit", ret) {
			g.PowerLimitWatts = float64(mw) / 1000
		}
	}
	if !r.lost {
		if mhz, ret := dev.GetClockInfo(nvml.CLOCK_SM); r.ok("sm_clock", ret) {
			g.SMClockMHz = mhz
		}
	}
	var mask uint64
	if !r.lost {
		if m, ok := n.throttleMask(dev, r); ok {
			mask = m
			g.ThrottleReasons = ThrottleReasonNames(m)
		}
	}
	if !r.lost {
		if c, ret := dev.GetTotalEccErrors(nvml.MEMORY_ERROR_TYPE_CORRECTED, nvml.VOLATILE_ECC); r.ok("ecc_corrected", ret) {
			g.ECCCorrected = c
		}
	}
	if !r.lost {
		if c, ret := dev.GetTotalEccErrors(nvml.MEMORY_ERROR_TYPE_UNCORRECTED, nvml.VOLATILE_ECC); r.ok("ecc_uncorrected", ret) {
			g.ECCUncorrected = c
		}
	}

	n.mu.Lock()
	var xs xidState
	if st := n.xids[g.UUID]; st != nil && g.UUID != "" {
		xs = *st
	}
	if st := n.xids[""]; st != nil {
		xs.count += st.count
		if xs.last == 0 {
			xs.last = st.last
		}
		if xs.lastCritical == 0 {
			xs.lastCritical = st.lastCritical
		}
	}
	n.mu.Unlock()
	g.XIDEvents, g.LastXID = xs.count, xs.last

	var reasons []string
	if r.lost {
		reasons = append(reasons, "GPU is lost (fell off the bus)")
	}
	if g.ECCUncorrected > 0 {
		reasons = append(reasons, fmt.Sprintf("%d uncorrectable ECC errors", g.ECCUncorrected))
	}
	if xs.lastCritical != 0 {
		reasons = append(reasons, fmt.Sprintf("critical XID %d (%s)", xs.lastCritical, criticalXIDs[xs.lastCritical]))
	}
	if mask&nvml.ClocksThrottleReasonHwThermalSlowdown != 0 {
		reasons = append(reasons, "hardware thermal slowdown")
	}
	if mask&nvml.ClocksEventReasonSwThermalSlowdown != 0 {
		reasons = append(reasons, "software thermal slowdown")
	}
	if len(reasons) > 0 {
		g.Healthy = false
		g.HealthReason = strings.Join(reasons, "; ")
	}
	return g
}

// throttleMask reads the clock event reasons, falling back to the older throttle reasons call on
// drivers that predate it.
func (n *NVML) throttleMask(dev nvml.Device, r *deviceReader) (uint64, bool) {
	m, ret := callEventReasons(dev)
	if ret == nvml.SUCCESS {
		r.ok("throttle", ret)
		return m, true
	}
	if ret == nvml.ERROR_GPU_IS_LOST {
		r.ok("throttle", ret)
		return 0, false
	}
	m, ret = dev.GetCurrentClocksThrottleReasons()
	return m, r.ok("throttle", ret)
}

// callEventReasons calls GetCurrentClocksEventReasons; a binding without it (an older go-nvml
// mock, a driver without the symbol) is ERROR_FUNCTION_NOT_FOUND so the caller falls back.
func callEventReasons(dev nvml.Device) (m uint64, ret nvml.Return) {
	defer func() {
		if recover() != nil {
			m, ret = 0, nvml.ERROR_FUNCTION_NOT_FOUND
		}
	}()
	return dev.GetCurrentClocksEventReasons()
}

// noteRead logs a read failure once when it starts and once when it clears, not every sample.
func (n *NVML) noteRead(key, what string, idx int, ret nvml.Return) {
	if ret == nvml.ERROR_NOT_SUPPORTED {
		ret = nvml.SUCCESS // not supported is a fact of the GPU, not a failure
	}
	n.mu.Lock()
	prev, seen := n.readState[key]
	if !seen {
		prev = nvml.SUCCESS
	}
	if prev == ret {
		n.mu.Unlock()
		return
	}
	n.readState[key] = ret
	n.mu.Unlock()
	if ret == nvml.SUCCESS {
		n.log.Info("GPU reading recovered", "gpu", idx, "reading", what)
		return
	}
	n.log.Warn("GPU reading failed", "gpu", idx, "reading", what, "err", ret.Error())
}
