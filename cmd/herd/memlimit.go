package main

import (
	"runtime/debug"
	"strconv"
	"strings"
)

// cgroupMemoryMax is where cgroup v2 says how much memory this process's group may use.
const cgroupMemoryMax = "/sys/fs/cgroup/memory.max"

// memLimitShare is the part of the group's limit given to the Go runtime as its soft limit: the
// rest is for what the runtime does not count (the binary's mapped pages, thread stacks of cgo).
const memLimitShare = 0.9

// defaultMemoryLimit sets the Go runtime's soft memory limit when GOMEMLIMIT is not set and the
// process runs under a cgroup memory limit (a container, a systemd unit with MemoryMax=): 90% of
// it, so that the garbage collector works harder as the heap nears the limit instead of the
// kernel killing the process. Without a limit nothing is set: a low fixed limit would make the
// collector run without pause once ten thousand open streams hold more live heap than it (see
// docs/BENCHMARKS.md, "Streams and memory"). It returns the limit set (0: none).
func defaultMemoryLimit(getenv func(string) string, readFile func(string) ([]byte, error)) int64 {
	if getenv("GOMEMLIMIT") != "" {
		return 0
	}
	b, err := readFile(cgroupMemoryMax)
	if err != nil {
		return 0
	}
	limit := memoryLimitFrom(string(b))
	if limit > 0 {
		debug.SetMemoryLimit(limit)
	}
	return limit
}

// memoryLimitFrom turns the contents of memory.max into the soft limit to set (0: none, for
// "max" or anything unreadable).
func memoryLimitFrom(s string) int64 {
	v, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || v <= 0 {
		return 0
	}
	return int64(float64(v) * memLimitShare)
}
