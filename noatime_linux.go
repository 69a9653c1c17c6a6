package filestore

import "golang.org/x/sys/unix"

// noATime is O_NOATIME, which only Linux has: see openRecord.
const noATime = unix.O_NOATIME
