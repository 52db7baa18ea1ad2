//go:build !unix

package loadtest

import (
	"os"
	"os/exec"
)

// setProcessGroup is a no-op where process groups do not exist.
func setProcessGroup(*exec.Cmd) {}

// terminate kills the process: there is no SIGTERM to ask with.
func terminate(p *os.Process) error { return p.Kill() }
