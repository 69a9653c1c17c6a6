package filestore

import "syscall"

// noATime is O_NOATIME: see openRecord.
const noATime = syscall.O_NOATIME
