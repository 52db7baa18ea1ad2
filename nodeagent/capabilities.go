package nodeagent

// Optional interfaces a Backend or TelemetrySource may implement. The agent checks for them with
// a type assertion; a backend lacking one gets a 501 on the routes that need it.

// SlotCounter is implemented by backends that know how many requests they serve at once.
type SlotCounter interface {
	// Slots returns the number of parallel requests; 0 means unknown.
	Slots() int
}

// LoadReporter is implemented by backends that keep their own queue (the sim) and so know
// better than the agent how many requests run and how many wait.
type LoadReporter interface {
	InFlight() (inFlight, queued int)
}

// FaultInjector is implemented by simulated backends: it makes GPU gpu fail in the way kind
// names (the kinds are the backend's own). It serves agentapi.PathSimFault.
type FaultInjector interface {
	InjectFault(gpu int, kind string) error
}

// TelemetryReasoner is implemented by telemetry sources that can say why they report no GPUs
// ("no NVIDIA driver found"); the agent puts it in the heartbeat's TelemetryError.
type TelemetryReasoner interface {
	Reason() string
}

// HTTPStatuser is implemented by backend errors that know the HTTP status the agent should
// answer with (404 for an unknown model, 400 for a bad fault kind). Other backend errors are 502.
type HTTPStatuser interface {
	HTTPStatus() int
}
