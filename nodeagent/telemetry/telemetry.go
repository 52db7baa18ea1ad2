// Package telemetry reads a node's GPUs for the herd agent: NVML (through
// github.com/NVIDIA/go-nvml) on machines with an NVIDIA driver, and None for machines without a
// GPU or where GPU telemetry is switched off.
//
// Decisions:
//   - No driver is not an error. A source that finds no NVML library, or whose nvml.Init fails,
//     logs one line and reports no GPUs; Reason says why, and the agent copies that into the
//     heartbeat's TelemetryError so the dashboard can show it.
//   - A GPU that stops answering (ERROR_GPU_IS_LOST, a panic inside the binding) is reported with
//     Healthy false rather than dropped, so the gateway drains the node instead of scheduling onto
//     a GPU it can no longer see.
//   - Health is conservative: an uncorrectable ECC error, a critical XID, a lost GPU, or thermal
//     slowdown (hardware or software) makes a GPU unhealthy. Power capping and idle clocks do not.
//   - The NVML source needs cgo (go-nvml loads libnvidia-ml.so with dlopen).
package telemetry

import (
	"context"

	"github.com/herd-llm/herd/nodeagent"
	"github.com/herd-llm/herd/nodeagent/agentapi"
)

// None is the telemetry source of a node without GPU telemetry: it reports no GPUs and says why.
type None struct {
	reason string
}

var _ nodeagent.TelemetrySource = (*None)(nil)

// NewNone returns a source with no GPUs; reason (e.g. "telemetry disabled by --telemetry=none")
// is what Reason reports.
func NewNone(reason string) *None {
	if reason == "" {
		reason = "no GPU telemetry source configured"
	}
	return &None{reason: reason}
}

// GPUs returns no GPUs.
func (n *None) GPUs(context.Context) ([]agentapi.GPU, error) { return []agentapi.GPU{}, nil }

// Reason says why there are no GPUs.
func (n *None) Reason() string { return n.reason }
