package sim

import (
	"context"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/herd-llm/herd/models"
	"github.com/herd-llm/herd/nodeagent/agentapi"
)

// Fault kinds InjectFault takes.
const (
	// FaultECC is an uncorrectable ECC memory error: the GPU reports unhealthy but keeps working.
	FaultECC = "ecc"
	// FaultXID is XID 79, the GPU fell off the bus: models on it are lost, requests on them fail,
	// nothing is placed on it until cleared.
	FaultXID = "xid"
	// FaultThermal is hardware thermal slowdown: the GPU runs at half speed and reports unhealthy.
	FaultThermal = "thermal"
	// FaultClear clears every fault of the GPU and its error counters.
	FaultClear = "clear"
)

// AllGPUs as InjectFault's gpu argument applies the fault to every GPU of the node.
const AllGPUs = -1

// Thermal and clock figures of the simulated boards.
const (
	idleTempC = 35.0
	// fullLoadTempC is where a GPU settles at 100% utilisation.
	fullLoadTempC = 80.0
	// throttleTempC is the temperature a GPU in thermal slowdown reports.
	throttleTempC = 92.0
	// tempTimeConstant is how fast temperature follows load (first-order lag), in simulated time.
	tempTimeConstant = 30 * time.Second
	idleClockMHz     = 210
	// xidLostBusCode is the XID NVIDIA uses for "GPU has fallen off the bus".
	xidLostBusCode = 79
	// thermalSpeed is the speed of a GPU in thermal slowdown relative to normal.
	thermalSpeed = 0.5
)

type gpuState struct {
	index   int
	profile models.GPUProfile
	// active counts requests prefilling or decoding on a model placed here.
	active int

	ecc, xid, thermal bool
	eccUncorrected    uint64
	xidEvents         uint64

	temp   float64
	tempAt time.Time
}

// usable reports whether models can be placed on and run from the GPU.
func (g *gpuState) usable() bool { return !g.xid }

// speedScale is the GPU's speed relative to its profile.
func (g *gpuState) speedScale() float64 {
	if g.thermal {
		return thermalSpeed
	}
	return 1
}

func (g *gpuState) utilization(slotsPer int) float64 {
	if g.xid || slotsPer <= 0 {
		return 0
	}
	return math.Min(1, float64(g.active)/float64(slotsPer))
}

// stepTemp moves the temperature toward what the current load sustains, for the time since the
// last sample.
func (g *gpuState) stepTemp(now time.Time, util, speed float64) {
	target := idleTempC + (fullLoadTempC-idleTempC)*util
	if g.thermal {
		target = throttleTempC
	}
	dt := now.Sub(g.tempAt).Seconds() * speed
	g.tempAt = now
	if dt <= 0 {
		return
	}
	g.temp += (target - g.temp) * (1 - math.Exp(-dt/tempTimeConstant.Seconds()))
}

// heatLocked brings g's temperature up to now under the load it has had since the last step. It is
// called before every change of load, so the temperature integrates the real load history.
func (n *Node) heatLocked(g *gpuState) {
	g.stepTemp(n.clock.Now(), g.utilization(n.slotsPer), n.speed)
}

// GPUs implements nodeagent.TelemetrySource: one NVML-like sample per simulated GPU.
func (n *Node) GPUs(ctx context.Context) ([]agentapi.GPU, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.reapLocked()
	out := make([]agentapi.GPU, 0, len(n.gpus))
	for i, g := range n.gpus {
		name := g.profile.Name
		if n.speed != 1 {
			name = fmt.Sprintf("%s (simulated x%g)", name, n.speed)
		}
		s := agentapi.GPU{
			Index:            i,
			Name:             name,
			UUID:             fmt.Sprintf("GPU-sim-%s-%d", n.id, i),
			MemoryTotalBytes: g.profile.VRAMBytes,
			PowerLimitWatts:  g.profile.PowerLimitWatts,
			ThrottleReasons:  []string{},
			ECCUncorrected:   g.eccUncorrected,
			XIDEvents:        g.xidEvents,
			Healthy:          true,
			Simulated:        true,
		}
		var reasons []string
		if g.ecc {
			reasons = append(reasons, fmt.Sprintf("uncorrectable ECC error (%d)", g.eccUncorrected))
		}
		if g.xid {
			s.LastXID = xidLostBusCode
			reasons = append(reasons, fmt.Sprintf("XID %d: GPU has fallen off the bus", xidLostBusCode))
		}
		if g.thermal {
			s.ThrottleReasons = []string{agentapi.ThrottleHWThermal, agentapi.ThrottleSWThermal}
			reasons = append(reasons, "hardware thermal slowdown")
		}
		if len(reasons) > 0 {
			s.Healthy = false
			s.HealthReason = strings.Join(reasons, "; ")
		}
		util := g.utilization(n.slotsPer)
		n.heatLocked(g)
		if !g.xid {
			// A GPU off the bus answers no queries: it reports only what the driver still knows.
			s.MemoryUsedBytes = n.gpuUsedLocked(i)
			s.UtilizationRatio = util
			s.MemoryUtilizationRatio = 0.9 * util // decode is memory bound
			s.TemperatureCelsius = math.Round(g.temp*10) / 10
			limit := g.profile.PowerLimitWatts
			if g.thermal {
				limit *= 0.6
			}
			s.PowerWatts = math.Round((g.profile.IdlePowerWatts+(0.95*limit-g.profile.IdlePowerWatts)*util)*10) / 10
			s.SMClockMHz = idleClockMHz
			if util > 0 {
				s.SMClockMHz = g.profile.BoostClockMHz
				if g.thermal {
					s.SMClockMHz = g.profile.BoostClockMHz / 2
				}
			}
		}
		out = append(out, s)
	}
	return out, nil
}

// InjectFault makes GPU gpu (AllGPUs for every one) report a fault of kind FaultECC, FaultXID or
// FaultThermal, or clears its faults with FaultClear. An XID fault loses the models on the GPU:
// their requests end with an error and they are no longer resident.
func (n *Node) InjectFault(gpu int, kind string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	var targets []*gpuState
	switch {
	case gpu == AllGPUs:
		targets = n.gpus
	case gpu >= 0 && gpu < len(n.gpus):
		targets = []*gpuState{n.gpus[gpu]}
	default:
		return fmt.Errorf("sim: no GPU %d (node has %d)", gpu, len(n.gpus))
	}
	switch kind {
	case FaultECC, FaultXID, FaultThermal, FaultClear:
	default:
		return fmt.Errorf("sim: unknown fault %q (want %s, %s, %s or %s)", kind, FaultECC, FaultXID, FaultThermal, FaultClear)
	}
	if kind == FaultECC {
		for _, g := range targets {
			if !g.profile.ECC {
				return fmt.Errorf("sim: GPU %d (%s): %w", g.index, g.profile.Name, ErrNoECC)
			}
		}
	}
	for _, g := range targets {
		n.log.Warn("simulated GPU fault", "gpu", g.index, "fault", kind)
		switch kind {
		case FaultECC:
			g.ecc = true
			g.eccUncorrected++
		case FaultXID:
			g.xid = true
			g.xidEvents++
			for _, m := range n.models {
				for _, s := range m.placement {
					if s.gpu == g.index {
						n.loseLocked(m)
						break
					}
				}
			}
		case FaultThermal:
			g.thermal = true
			g.temp = math.Max(g.temp, throttleTempC)
		case FaultClear:
			g.ecc, g.xid, g.thermal = false, false, false
			g.eccUncorrected, g.xidEvents = 0, 0
		}
	}
	return nil
}
