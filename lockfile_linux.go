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

// TryLockAll write-locks the whole file, every record's byte at once,
// without waiting, and checks that the file is still linked (see
// locker.lockRun).
func (l *fdLock) TryLockAll() error {
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: 0, Len: 0}
	err := ignoringEINTR(func() error { return unix.FcntlFlock(uintptr(l.fd), unix.F_OFD_SETLK, &lk) })
	if err == unix.EAGAIN || err == unix.EACCES {
		return errLockBusy
	}
	if err != nil {
		return &fs.PathError{Op: "fcntl", Path: l.name, Err: err}
	}
	return l.Linked()
}

// UnlockAll releases TryLockAll's lock. Closing the descriptor would too,
// but not at once if a fork in progress (another goroutine starting a
// process) holds a copy of the descriptor until its exec: an unlock acts
// on the open file description, which the copy shares.
func (l *fdLock) UnlockAll() error {
	lk := unix.Flock_t{Type: unix.F_UNLCK, Whence: 0, Start: 0, Len: 0}
	if err := unix.FcntlFlock(uintptr(l.fd), unix.F_OFD_SETLK, &lk); err != nil {
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

// The store lock (storelock.go) on Linux: byte 0 of <root>/locks/store.lock
// is read-locked by every open Store and write-locked by a reshard, and each
// open Store also write-locks one byte of its own from byte 1 on, so that
// the others can be counted. Open file description locks belong to the
// descriptor, not the process, so two Stores of one process count as two,
// and a Store's own locks never conflict with themselves.

// maxStoreSlots bounds the bytes a Store tries for its own: more Stores than
// that open at once still work, uncounted.
const maxStoreSlots = 4096

func (l *fdLock) LockStore(exclusive bool) error {
	typ := int16(unix.F_RDLCK)
	if exclusive {
		typ = unix.F_WRLCK
	}
	if err := l.lockRange(unix.F_OFD_SETLK, typ, 0); err != nil {
		return err
	}
	for off := int64(1); off <= maxStoreSlots; off++ {
		err := l.lockRange(unix.F_OFD_SETLK, unix.F_WRLCK, off)
		if err != errLockBusy {
			return err // nil, or a real failure; the caller closes l
		}
	}
	return nil
}

// OtherStores counts the Stores other than this descriptor's that hold a
// byte of their own: F_OFD_GETLK reports the first conflicting lock at or
// after an offset, so one call per Store.
func (l *fdLock) OtherStores() (int, error) {
	n := 0
	for off := int64(1); off <= maxStoreSlots; {
		lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: off, Len: maxStoreSlots + 1 - off}
		if err := ignoringEINTR(func() error { return unix.FcntlFlock(uintptr(l.fd), unix.F_OFD_GETLK, &lk) }); err != nil {
			return 0, &fs.PathError{Op: "fcntl", Path: l.name, Err: err}
		}
		if lk.Type == unix.F_UNLCK {
			break
		}
		n++
		off = lk.Start + max(lk.Len, 1)
	}
	return n, nil
}
