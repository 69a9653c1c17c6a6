//go:build unix && !linux

package main

import "syscall"

// workerAttr puts a worker in its own process group, so that a Ctrl-C in
// the terminal reaches only the supervisor. Without Pdeathsig, a worker
// notices that the supervisor died by EOF on its stdin.
func workerAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
