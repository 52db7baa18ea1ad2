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

// raiseNoFile has no limit to raise here; it reports need as the limit.
func raiseNoFile(need uint64) (uint64, error) { return need, nil }
