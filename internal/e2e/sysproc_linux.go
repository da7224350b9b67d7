package e2e

import "syscall"

// sysProcAttr puts a child in its own process group, so that a signal
// reaches everything it started, and kills it should the test binary die
// without cleaning up.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
