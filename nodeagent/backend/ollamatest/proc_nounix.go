//go:build !unix

package ollamatest

import (
	"errors"
	"os/exec"
)

type signal int

const (
	sigTerm signal = iota
	sigKill
)

// processGroups is false off unix: Start cannot guarantee to stop the runners, so it skips.
const processGroups = false

func setProcessGroup(*exec.Cmd) {}

func signalGroup(int, signal) error { return errors.New("process groups need unix") }
