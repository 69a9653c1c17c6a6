package filestore

import "syscall"

// sysFstatat is fstatat(2) as amd64 numbers it.
const sysFstatat = syscall.SYS_NEWFSTATAT
