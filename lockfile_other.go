//go:build unix && !linux

package filestore

import "golang.org/x/sys/unix"

// lockFileFlags: flock(2) needs no access mode.
const lockFileFlags = unix.O_RDONLY
