package filestore

import (
	"io/fs"

	"golang.org/x/sys/unix"
)

// lockFileFlags opens lock files for writing too: fcntl(2) takes a write
// lock, which range locks are, only through a descriptor open for writing.
const lockFileFlags = unix.O_RDWR

// rangeLocks reports that osFS's lock files are rangeLockFiles: Linux has
// open file description locks (F_OFD_SETLK, since Linux 3.15).
func (osFS) rangeLocks() bool { return true }

func (l *fdLock) TryLockRange(off int64) error {
	return l.lockRange(unix.F_OFD_SETLK, unix.F_WRLCK, off)
}
func (l *fdLock) LockRange(off int64) error { return l.lockRange(unix.F_OFD_SETLKW, unix.F_WRLCK, off) }
func (l *fdLock) UnlockRange(off int64) error {
	return l.lockRange(unix.F_OFD_SETLK, unix.F_UNLCK, off)
}

// lockRange sets the lock of one byte at off. An open file description
// lock must name no process (Pid 0).
func (l *fdLock) lockRange(cmd int, typ int16, off int64) error {
	lk := unix.Flock_t{Type: typ, Whence: 0, Start: off, Len: 1}
	err := ignoringEINTR(func() error { return unix.FcntlFlock(uintptr(l.fd), cmd, &lk) })
	if err == unix.EAGAIN || err == unix.EACCES {
		return errLockBusy
	}
	if err != nil {
		return &fs.PathError{Op: "fcntl", Path: l.name, Err: err}
	}
	return nil
}

// RangeLocked is F_OFD_GETLK: the kernel reports the lock that would
// conflict with a write lock of the byte at off, or F_UNLCK.
func (l *fdLock) RangeLocked(off int64) (bool, error) {
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: off, Len: 1}
	if err := ignoringEINTR(func() error { return unix.FcntlFlock(uintptr(l.fd), unix.F_OFD_GETLK, &lk) }); err != nil {
		return true, &fs.PathError{Op: "fcntl", Path: l.name, Err: err}
	}
	return lk.Type != unix.F_UNLCK, nil
}
