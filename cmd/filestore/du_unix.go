//go:build unix

package main

import (
	"io/fs"
	"syscall"
)

// allocated returns the bytes of disk fi's file takes: its st_blocks, in
// units of 512 bytes.
func allocated(fi fs.FileInfo) int64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int64(st.Blocks) * 512
	}
	return fi.Size()
}
