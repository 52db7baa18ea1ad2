package registry

import (
	"fmt"
	"slices"
	"strings"

	"github.com/herd-llm/herd/models"
	"github.com/herd-llm/herd/nodeagent/agentapi"
	"github.com/herd-llm/herd/scheduler"
)

// What a heartbeat says about a node, derived once when it arrives (baseNode), so that snapshot
// builds only copy it:
//
//   - Model names are the backend's names (ModelName). Ollama-style backends (Ollama and the
//     simulator) have their names normalised with models.NormalizeName (lower case, a missing tag
//     becomes ":latest") so that "llama3" and "llama3:latest" are one model, as Ollama itself
//     treats them; callers look a request's name up as it is first, then normalised. An
//     OpenAI-compatible server's ids (vLLM's "Qwen/Qwen2.5-0.5B-Instruct") are kept exactly as
//     it lists them: such servers compare names case-sensitively and know no ":latest".
//   - Node.MemoryBandwidthGBs comes from the models GPU profile whose name matches the node's
//     fastest GPU (0 when none does): the scheduler's prior for speeds nobody has measured yet.
//   - A node without GPUs (no driver, CPU backend) is healthy; a node is unhealthy as soon as one
//     of its GPUs is.

// throttling lists the throttle reasons that slow a GPU down under load (thermal and power);
// idle and clock-setting reasons are not throttling.
var throttling = []string{
	agentapi.ThrottleSWThermal,
	agentapi.ThrottleHWThermal,
	agentapi.ThrottleHWSlowdown,
	agentapi.ThrottleHWPowerBrake,
	agentapi.ThrottleSWPowerCap,
}

// IsThrottling reports whether a GPU throttle reason (agentapi.Throttle*) slows the GPU down
// under load: the thermal and power reasons. Idle and clock-setting reasons do not.
func IsThrottling(reason string) bool { return slices.Contains(throttling, reason) }

// gpuProfile finds the models profile of a GPU by the name NVML reports ("Tesla T4"), else by
// key or alias.
func gpuProfile(name string) (models.GPUProfile, bool) {
	if name == "" {
		return models.GPUProfile{}, false
	}
	if p, ok := models.GPUProfileNamed(name); ok {
		return p, true
	}
	return models.LookupGPU(name)
}

// baseNode derives the scheduler's view of a node from its heartbeat, leaving the fields that
// change without a heartbeat (Stale, Draining, CircuitOpen, InFlight and Queued, which add this
// gateway's own count to the heartbeat's) to the snapshot build.
func baseNode(hb *agentapi.Heartbeat) scheduler.Node {
	sn := scheduler.Node{
		ID:      hb.NodeID,
		Address: hb.Address,
		Backend: hb.Backend,
		Engine:  hb.Engine,
		// A load past the backend's bound on resident models evicts one whatever memory is free.
		MaxLoadedModels: hb.MaxLoadedModels,
		Healthy:         true,
		CanLoad:         hb.Backend == agentapi.BackendOllama || hb.Backend == agentapi.BackendSim,
		Slots:           hb.Slots,
	}
	var util float64
	for _, g := range hb.GPUs {
		sn.VRAMTotalBytes += g.MemoryTotalBytes
		sn.VRAMUsedBytes += g.MemoryUsedBytes
		util += g.UtilizationRatio
		if !g.Healthy && sn.Healthy {
			sn.Healthy = false
			sn.UnhealthyReason = g.HealthReason
			if sn.UnhealthyReason == "" {
				sn.UnhealthyReason = fmt.Sprintf("GPU %d unhealthy", g.Index)
			}
		}
		for _, t := range g.ThrottleReasons {
			if IsThrottling(t) {
				sn.Throttled = true
			}
		}
		if p, ok := gpuProfile(g.Name); ok {
			sn.MemoryBandwidthGBs = max(sn.MemoryBandwidthGBs, p.MemoryBandwidthGBs)
		}
	}
	if len(hb.GPUs) > 0 {
		sn.Utilization = util / float64(len(hb.GPUs))
	}
	sn.Models = make([]scheduler.NodeModel, 0, len(hb.Models))
	for _, m := range hb.Models {
		nm := scheduler.NodeModel{
			Name:            ModelName(hb.Backend, m.Name),
			Resident:        m.Resident,
			OnDisk:          m.OnDisk,
			VRAMBytes:       m.VRAMBytes,
			TokensPerSecond: m.TokensPerSecond,
			InFlight:        m.InFlight,
			LastUsed:        m.LastUsed,
			SizeBytes:       m.SizeBytes,
			// What the node measured, for the scheduler's learner (Registry.Observe).
			Concurrency:            m.Concurrency,
			PrefillTokensPerSecond: m.PrefillTokensPerSecond,
		}
		if j := slices.IndexFunc(sn.Models, func(x scheduler.NodeModel) bool { return x.Name == nm.Name }); j >= 0 {
			// "llama3" and "llama3:latest" reported separately are the same model: merge them.
			e := &sn.Models[j]
			e.Resident = e.Resident || nm.Resident
			e.OnDisk = e.OnDisk || nm.OnDisk
			e.VRAMBytes = max(e.VRAMBytes, nm.VRAMBytes)
			e.TokensPerSecond = max(e.TokensPerSecond, nm.TokensPerSecond)
			e.SizeBytes = max(e.SizeBytes, nm.SizeBytes)
			e.InFlight += nm.InFlight
			if nm.LastUsed.After(e.LastUsed) {
				e.LastUsed = nm.LastUsed
			}
			continue
		}
		sn.Models = append(sn.Models, nm)
	}
	return sn
}

// ModelName is the name the registry keeps for a model a node of the given backend kind reports:
// normalised for Ollama-style backends (Ollama, the simulator), whose names are case-insensitive
// and take ":latest" for a missing tag, and exactly as listed (only trimmed) for an
// OpenAI-compatible server, whose ids are case-sensitive and forwarded as they are spelt.
func ModelName(backend, name string) string {
	if backend == agentapi.BackendOpenAI {
		return strings.TrimSpace(name)
	}
	return models.NormalizeName(name)
}

func cloneHeartbeat(hb agentapi.Heartbeat) agentapi.Heartbeat {
	hb.GPUs = slices.Clone(hb.GPUs)
	for i := range hb.GPUs {
		hb.GPUs[i].ThrottleReasons = slices.Clone(hb.GPUs[i].ThrottleReasons)
	}
	hb.Models = slices.Clone(hb.Models)
	return hb
}

// sameModelNames reports whether a and b list the same model names in the same order (what the
// snapshot's ByModel index refers to).
func sameModelNames(a, b []scheduler.NodeModel) bool {
	return slices.EqualFunc(a, b, func(x, y scheduler.NodeModel) bool { return x.Name == y.Name })
}
