//go:build linux

package ollamatest

import "syscall"

// setParentDeathSignal makes the kernel kill serve if the test binary dies without cleaning up.
func setParentDeathSignal(a *syscall.SysProcAttr) { a.Pdeathsig = syscall.SIGKILL }
