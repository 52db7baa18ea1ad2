// Package telemetry reads a node's GPUs for the herd agent through NVML
// (github.com/NVIDIA/go-nvml). A machine without an NVIDIA driver gets the same source, which then
// reports no GPUs and says why; there is no separate "telemetry off" source (and no flag for one):
// a node with a driver always reports its GPUs, since the scheduler and the dashboard rely on them.
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
