//go:build unix

package loadtest

import (
	"fmt"
	"os"
	"os/exec"
	"syscall"
)

// setProcessGroup puts the child in a process group of its own, so that a Ctrl-C meant for the
// load test does not reach the cluster it is measuring before the test has stopped it.
func setProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
}

// terminate asks the process to end.
func terminate(p *os.Process) error { return p.Signal(syscall.SIGTERM) }

// raiseNoFile raises this process's open-files soft limit to its hard limit, which the processes
// it starts inherit (Go raises its own at start, but says so here, and a hard limit below need
// is an error worth reporting before anything starts). It returns the limit now in force.
func raiseNoFile(need uint64) (uint64, error) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, fmt.Errorf("reading the open-files limit: %w", err)
	}
	if l.Max < need {
		return l.Max, fmt.Errorf("%w: the open-files hard limit is %d; this many streams need %d per process (raise it: ulimit -Hn)", ErrBadOptions, l.Max, need)
	}
	if l.Cur < l.Max {
		l.Cur = l.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
			return 0, fmt.Errorf("raising the open-files limit: %w", err)
		}
	}
	return l.Cur, nil
}
