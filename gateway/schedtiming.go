package gateway

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/herd-llm/herd/gateway/admission"
	"github.com/herd-llm/herd/scheduler"
)

// schedTimingBuckets resolve the scheduler's own cost, which is microseconds on a small cluster
// and must stay well under a millisecond on a thousand nodes: far finer than the request buckets.
var schedTimingBuckets = []float64{
	1e-6, 2e-6, 5e-6, 10e-6, 20e-6, 30e-6, 50e-6, 75e-6, 100e-6, 150e-6, 250e-6, 500e-6,
	1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3,
}

// schedTiming times the two pieces of scheduling work whose cost grows with the fleet, each Pick
// and each full snapshot build, and counts the heartbeats that drive them. `herd loadtest
// --scenario scale` reads them from /metrics.
type schedTiming struct {
	pick       prometheus.Histogram
	snapshot   prometheus.Histogram
	heartbeats prometheus.Counter
}

func newSchedTiming() *schedTiming {
	return &schedTiming{
		pick: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "herd_scheduler_pick_seconds",
			Help: "Time the scheduler spent ranking the nodes for one request (one Pick).", Buckets: schedTimingBuckets}),
		snapshot: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "herd_registry_snapshot_build_seconds",
			Help: "Time one full build of the scheduler's cluster snapshot took (after a heartbeat or a state change).", Buckets: schedTimingBuckets}),
		heartbeats: prometheus.NewCounter(prometheus.CounterOpts{Name: "herd_heartbeats_total",
			Help: "Agent heartbeats this gateway accepted."}),
	}
}

// timed wraps pick so that every call is observed.
func (t *schedTiming) timed(pick admission.PickFunc) admission.PickFunc {
	return func(req *scheduler.Request, snap *scheduler.Snapshot, d *scheduler.Decision) {
		start := time.Now()
		pick(req, snap, d)
		t.pick.Observe(time.Since(start).Seconds())
	}
}

// heartbeat counts one accepted heartbeat; a Server built without timing (tests) counts none.
func (t *schedTiming) heartbeat() {
	if t != nil {
		t.heartbeats.Inc()
	}
}

// observeSnapshot records one snapshot build (registry.SetBuildObserver).
func (t *schedTiming) observeSnapshot(d time.Duration) { t.snapshot.Observe(d.Seconds()) }

func (t *schedTiming) collectors() []prometheus.Collector {
	return []prometheus.Collector{t.pick, t.snapshot, t.heartbeats}
}
