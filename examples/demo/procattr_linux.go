package main

import "syscall"

// workerAttr puts a worker in its own process group, so that a Ctrl-C in
// the terminal reaches only the supervisor, which then stops the workers
// in order; and asks the kernel to send the worker SIGTERM when the
// supervisor dies, so that no worker outlives it.
//
// Pdeathsig fires when the thread that started the worker exits. Go
// threads exit only when a goroutine locked to one ends, which the
// supervisor never does; the stdin pipe is the second line of defence.
func workerAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}
