//go:build unix

package filestore

import (
	"fmt"
	"io/fs"

	"golang.org/x/sys/unix"
)

// mapFile maps the first size bytes of the regular file at path, shared
// and writable, and returns the mapping and how to unmap it.
func mapFile(path string, size int) ([]byte, func([]byte) error, error) {
	fd, err := openAt(unix.AT_FDCWD, path, unix.O_RDWR|noFollow|noBlock, 0)
	if err != nil {
		return nil, nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd) // the mapping outlives the descriptor
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, nil, &fs.PathError{Op: "stat", Path: path, Err: err}
	}
	// A short file would kill the process with SIGBUS at the first counter
	// past its end; the table is only ever created full size.
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Size < int64(size) {
		return nil, nil, fmt.Errorf("%s: not a regular file of %d bytes", path, size)
	}
	mem, err := unix.Mmap(fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, nil, &fs.PathError{Op: "mmap", Path: path, Err: err}
	}
	return mem, unix.Munmap, nil
}
