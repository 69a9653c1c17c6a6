//go:build unix && !linux

package filestore

import "golang.org/x/sys/unix"

// lockFileFlags: flock(2) needs no access mode.
const lockFileFlags = unix.O_RDONLY

// LockStore is the store lock (storelock.go) off Linux: a flock of
// <root>/locks/store.lock, shared by open Stores and exclusive for a
// reshard. Open Stores cannot be counted.
func (l *fdLock) LockStore(exclusive bool) error {
	if exclusive {
		return l.flock(unix.LOCK_EX | unix.LOCK_NB)
	}
	return l.flock(unix.LOCK_SH | unix.LOCK_NB)
}

// OtherStores returns -1: flock cannot tell how many hold a shared lock.
func (l *fdLock) OtherStores() (int, error) { return -1, nil }
