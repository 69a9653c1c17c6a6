//go:build linux || darwin || dragonfly || freebsd || netbsd || openbsd

package main

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// reusePort sets SO_REUSEPORT on a socket before it is bound, so that every
// worker can listen on the same port. On Linux the kernel then spreads
// incoming connections over the workers' listeners by a hash of the
// connection's addresses and ports; other systems may favour one listener.
// Linux lets only sockets of the same user share a port this way.
func reusePort(network, address string, c syscall.RawConn) error {
	var err error
	cerr := c.Control(func(fd uintptr) {
		err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	})
	if cerr != nil {
		return cerr
	}
	return err
}
