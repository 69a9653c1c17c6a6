package filestore

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"syscall"
)

// The store lock: every open Store holds <root>/locks/store.lock shared
// until Close, and Reshard holds it exclusively while it moves records, so
// that a reshard never runs under a Store that has the layout cached, and
// a Store never opens a store in the middle of a reshard. It is taken
// without waiting, either way: Open of a store being resharded fails at
// once with ErrResharding, and Reshard of a store in use with ErrInUse.
//
// Filesystems of the tests that have no such lock (the fault injector,
// the power-loss simulator) open stores without it.

const storeLockName = "store.lock"

// storeLocker is a lock file that can hold the store lock: osFS's.
type storeLocker interface {
	lockFile
	// LockStore takes the store lock, shared or exclusive, without
	// waiting: errLockBusy if it conflicts with another holder.
	LockStore(exclusive bool) error
	// OtherStores counts the other open Stores holding the lock, or -1
	// where the system cannot tell.
	OtherStores() (int, error)
}

// lockStore takes the store lock for s, shared or exclusive, and keeps it
// in s.storeLock until Close. It returns ErrResharding (shared) or ErrInUse
// (exclusive) when the lock is taken the other way.
func (s *Store) lockStore(exclusive bool) error {
	path := filepath.Join(s.root, locksDir, storeLockName)
	err := s.locks.ensure(path)
	var lf lockFile
	if err == nil {
		lf, err = s.fs.OpenLock(path)
	}
	var pe *fs.PathError
	if errors.As(err, &pe) && pe.Op == "open" && errors.Is(err, syscall.EROFS) && !exclusive {
		// A store on a read-only filesystem can be read, and nothing can
		// reshard it: it needs no store lock.
		return nil
	}
	if err != nil {
		return err
	}
	sl, ok := lf.(storeLocker)
	if !ok {
		return lf.Close()
	}
	err = sl.LockStore(exclusive)
	switch {
	case err == nil:
		s.storeLock = sl
		return nil
	case !errors.Is(err, errLockBusy):
	case exclusive:
		n, _ := sl.OtherStores() // error deliberately ignored: the count only words the message
		if n > 0 {
			err = fmt.Errorf("%w: %d other open Store(s) hold it; stop them (every process using %s) first", ErrInUse, n, s.root)
		} else {
			err = fmt.Errorf("%w: another process has it open; stop every process using %s first", ErrInUse, s.root)
		}
	default:
		err = fmt.Errorf("%w: another process is resharding %s; wait for it to finish", ErrResharding, s.root)
	}
	_ = lf.Close() // error deliberately ignored: already failing
	return err
}

// unlockStore releases the store lock, closing its descriptor.
func (s *Store) unlockStore() {
	if s.storeLock != nil {
		_ = s.storeLock.Close() // error deliberately ignored: closing drops the lock
		s.storeLock = nil
	}
}
