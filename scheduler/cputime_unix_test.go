//go:build unix

package scheduler

import (
	"syscall"
	"time"
)

// processCPUTime is the CPU time the test process has used. Benchmarks report it per operation
// beside ns/op, because on a machine shared with other work wall time mostly measures the
// neighbours.
func processCPUTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
