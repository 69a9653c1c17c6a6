//go:build unix

package filestore

import (
	"io/fs"

	"golang.org/x/sys/unix"
)

// fdLock is osFS's lockFile: a lock file kept open, locked with flock(2)
// and, on Linux, by byte range (lockfile_linux.go).
type fdLock struct {
	fd   int
	name string
}

func openLockFile(name string) (lockFile, error) {
	fd, err := openAt(unix.AT_FDCWD, name, lockFileFlags|noFollow|noBlock, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	return &fdLock{fd: fd, name: name}, nil
}

func (l *fdLock) TryLock() error { return l.flock(unix.LOCK_EX | unix.LOCK_NB) }

func (l *fdLock) TryLockShared() error { return l.flock(unix.LOCK_SH | unix.LOCK_NB) }

func (l *fdLock) LockShared() error { return l.flock(unix.LOCK_SH) }

// flock takes the flock how asks for, and then checks that the lock file
// is still linked: one that is not excludes nobody who opens the path now.
// The fstat costs no path lookup.
func (l *fdLock) flock(how int) error {
	err := ignoringEINTR(func() error { return unix.Flock(l.fd, how) })
	if err == unix.EWOULDBLOCK {
		return errLockBusy
	}
	if err != nil {
		return &fs.PathError{Op: "flock", Path: l.name, Err: err}
	}
	if err := l.Linked(); err != nil {
		_ = unix.Flock(l.fd, unix.LOCK_UN) // error deliberately ignored: the caller closes the descriptor
		return err
	}
	return nil
}

// Linked returns errLockStale if the lock file has been unlinked since it
// was opened.
func (l *fdLock) Linked() error {
	var st unix.Stat_t
	if err := unix.Fstat(l.fd, &st); err != nil {
		return &fs.PathError{Op: "fstat", Path: l.name, Err: err}
	}
	if st.Nlink == 0 {
		return errLockStale
	}
	return nil
}

func (l *fdLock) Unlock() error {
	if err := unix.Flock(l.fd, unix.LOCK_UN); err != nil {
		return &fs.PathError{Op: "flock", Path: l.name, Err: err}
	}
	return nil
}

// Close closes the descriptor, which drops every lock it holds. It is not
// retried on EINTR: the descriptor is gone whatever close(2) returns.
func (l *fdLock) Close() error {
	if err := unix.Close(l.fd); err != nil {
		return &fs.PathError{Op: "close", Path: l.name, Err: err}
	}
	return nil
}
