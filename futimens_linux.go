package filestore

import (
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// emptyPathRefused is set the first time the kernel refuses utimensat(2)
// with an empty path (AT_EMPTY_PATH came to it in Linux 5.8).
var emptyPathRefused atomic.Bool

// futimens sets the times of the open file fd through the descriptor
// itself: utimensat with AT_EMPTY_PATH, which needs no lookup of the
// file's name. It reports false, having done nothing, where the kernel
// does not take that; the caller then names the file.
func futimens(fd int, ts []unix.Timespec) (bool, error) {
	if emptyPathRefused.Load() {
		return false, nil
	}
	err := ignoringEINTR(func() error { return unix.UtimesNanoAt(fd, "", ts, unix.AT_EMPTY_PATH) })
	if err == unix.EINVAL || err == unix.ENOENT {
		emptyPathRefused.Store(true)
		return false, nil
	}
	return true, err
}
