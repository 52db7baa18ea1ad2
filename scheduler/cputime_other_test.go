//go:build !unix

package scheduler

import "time"

// processCPUTime is unavailable here; benchmarks then report no CPU time.
func processCPUTime() time.Duration { return 0 }
