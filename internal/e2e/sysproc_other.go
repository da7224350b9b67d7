//go:build !linux

package e2e

import "syscall"

// sysProcAttr puts a child in its own process group, so that a signal
// reaches everything it started.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
