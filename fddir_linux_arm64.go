package filestore

import "syscall"

// sysFstatat is fstatat(2) as arm64 numbers it.
const sysFstatat = syscall.SYS_FSTATAT
