package registry

import (
	"fmt"
	"testing"

	"github.com/herd-llm/herd/nodeagent/agentapi"
)

// BenchmarkFleetJoin measures a whole fleet's first heartbeats reaching a fresh registry (a
// gateway restarted under 1,000 running agents): every node joins once.
func BenchmarkFleetJoin(b *testing.B) {
	for _, n := range []int{100, 1000} {
		beats := make([]agentapi.Heartbeat, n)
		for i := range beats {
			beats[i] = beat(fmt.Sprintf("node-%04d", i))
		}
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				r := New(Config{}, nil)
				r.SetLogger(quiet)
				for _, hb := range beats {
					if _, err := r.Observe(hb); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}

// BenchmarkAcquireRelease measures the request path's bookkeeping on a 1,000-node registry: one
// Acquire, ReportSuccess and Release (three lookups by ID) without snapshots.
func BenchmarkAcquireRelease(b *testing.B) {
	r := New(Config{}, nil)
	r.SetLogger(quiet)
	ids := make([]string, 1000)
	for i := range ids {
		ids[i] = fmt.Sprintf("node-%04d", i)
		r.Observe(beat(ids[i]))
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		id := ids[i%len(ids)]
		r.Acquire(id)
		r.ReportSuccess(id)
		r.Release(id)
		i++
	}
}
