package filestore

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync/atomic"

	"github.com/gofrs/flock"
)

var (
	// errLockBusy is returned by a try-lock that found the lock held.
	errLockBusy = errors.New("filestore: lock is busy")
	// errLockStale is returned by lockFile.TryLock when the lock file has
	// been unlinked (by an operator "cleaning up") since it was opened: a
	// lock on it would exclude nobody who opens the path now.
	errLockStale = errors.New("filestore: lock file was removed")
)

// lockFlags opens lock files without following a symlink planted at their
// path, and without handing the descriptor to child processes.
const lockFlags = os.O_CREATE | os.O_RDONLY | noFollow | noBlock

// flockFile takes an exclusive flock(2) on name with a fresh *flock.Flock.
//
// A fresh instance per acquisition matters: one *flock.Flock shared by
// goroutines excludes nothing, because Lock returns at once when that
// instance already holds the lock (gofrs/flock#58).
//
// flock.Lock is an uncancellable syscall and TryLockContext polls. To honour
// ctx without polling we try once, and if the lock is busy wait for it in a
// goroutine: if ctx ends first we return at once and the goroutine releases
// the lock as soon as it gets it. A context that can never be cancelled
// (Done returns nil) waits on the calling goroutine.
func flockFile(ctx context.Context, name string, try bool) (func() error, error) {
	fl := flock.New(name, flock.SetFlag(lockFlags), flock.SetPermissions(0o600))
	ok, err := fl.TryLock()
	if err != nil {
		return nil, fmt.Errorf("lock: %w", err)
	}
	if ok {
		return fl.Unlock, nil
	}
	if try {
		return nil, errLockBusy
	}
	if ctx.Done() == nil {
		if err := fl.Lock(); err != nil {
			return nil, fmt.Errorf("lock: %w", err)
		}
		return fl.Unlock, nil
	}
	done := make(chan error, 1)
	go func() { done <- fl.Lock() }()
	select {
	case err := <-done:
		if err != nil {
			return nil, fmt.Errorf("lock: %w", err)
		}
		return fl.Unlock, nil
	case <-ctx.Done():
		go func() {
			if <-done == nil {
				_ = fl.Unlock() // error deliberately ignored: nobody holds this lock
			}
		}()
		return nil, ctx.Err()
	}
}

// locker hands out the store's striped locks. Each stripe is a lock file in
// <root>/locks that is created on first use and never deleted (deleting a
// lock file lets two processes hold "the same" lock), paired with an
// in-process mutex: flock excludes processes, the mutex excludes goroutines
// of this process and is what the race detector sees.
//
// The in-process mutexes are buffered channels so that waiting on them can
// honour a context.
//
// Taking a stripe has two paths. The fast one, for a lock no other process
// holds, is flock(LOCK_EX|LOCK_NB) and later LOCK_UN on a descriptor the
// locker keeps open for the stripe (held[i]): two system calls, plus an
// fstat that notices a lock file someone deleted. The slow one, when the
// lock is busy, waits through gofrs/flock on a fresh descriptor (flockFile),
// which is what makes the wait cancellable. gofrs/flock alone would be the
// slow path every time: its Unlock closes the descriptor, so every
// acquisition paid an open, a close and a failed netpoller registration,
// a quarter of a Save's time on tmpfs. Both paths lock the same file with
// flock(2), so they exclude each other, and processes running an older
// filestore, exactly as before.
type locker struct {
	fs       fsys
	dir      string // <root>/locks
	stripes  []chan struct{}
	paths    []string    // stripe i's lock file
	made     []bool      // stripe i's lock file exists; guarded by stripes[i]
	held     []lockFile  // stripe i's open lock file, or nil; guarded by stripes[i]
	shut     atomic.Bool // close has begun: hold no more descriptors open
	fixModes bool        // the umask trims mode bits: chmod new lock files
	byPrefix bool        // stripes follow the hash's leading bits (marker version 2)
}

func newLocker(fsys fsys, dir string, n int, byPrefix, fixModes bool) *locker {
	l := &locker{fs: fsys, dir: dir, stripes: make([]chan struct{}, n), paths: make([]string, n), made: make([]bool, n), held: make([]lockFile, n), byPrefix: byPrefix, fixModes: fixModes}
	for i := range l.stripes {
		l.stripes[i] = make(chan struct{}, 1)
		l.paths[i] = filepath.Join(dir, fmt.Sprintf("stripe-%04x.lock", i))
	}
	return l
}

// ensure creates the lock file at path, mode exactly 0600, if it does not
// exist. flock would create it too, but with the umask applied.
func (l *locker) ensure(path string) error {
	f, err := l.fs.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|noFollow|noBlock, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if l.fixModes {
		err = f.Chmod(0o600)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// stripeOf maps a record's hash to its stripe. The hash is uniform, so its
// first two bytes spread ids evenly over the stripes.
//
// In a version 2 store the stripe is the leading 16 bits of the hash scaled
// onto the stripes, so records whose names share their first two hex digits
// share a stripe (with the default 256 stripes, the stripe is the first
// byte). A shard directory of any layout but flat then lies within one
// stripe, and the sweeper takes one lock for a run of expired records
// instead of one each. A version 1 store keeps the mapping it was created
// with, the two bytes modulo the stripe count: every process sharing a
// store must map a record to the same lock file, and older processes only
// know that one.
func (l *locker) stripeOf(sum [32]byte) int {
	v := int(sum[0])<<8 | int(sum[1])
	if l.byPrefix {
		return v * len(l.stripes) >> 16
	}
	return v % len(l.stripes)
}

// lock takes stripe i exclusively, in this process and across processes,
// waiting until ctx is done. The returned unlock must be called exactly
// once; it releases both locks.
func (l *locker) lock(ctx context.Context, i int) (unlock func(), err error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	mu := l.stripes[i]
	select {
	case mu <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	path := l.stripePath(i)
	if !l.made[i] {
		if err := l.ensure(path); err != nil {
			<-mu
			return nil, fmt.Errorf("lock: %w", err)
		}
		l.made[i] = true
	}
	err = l.tryHeld(i)
	if err == nil {
		return func() {
			// LOCK_UN on a descriptor we hold has no failure mode on Linux
			// short of a kernel bug; should it fail, closing the
			// descriptor releases the lock all the same.
			if l.held[i].Unlock() != nil {
				l.dropHeld(i)
			}
			<-mu
		}, nil
	}
	if !errors.Is(err, errLockBusy) {
		<-mu
		return nil, fmt.Errorf("lock: %w", err)
	}
	// Another process holds the lock: wait for it on a fresh descriptor.
	release, err := l.fs.Lock(ctx, path, false)
	if err != nil {
		<-mu
		return nil, err
	}
	return func() {
		// As above, LOCK_UN cannot fail in practice. Should it, gofrs/flock
		// keeps the descriptor, and the lock, until the process exits; one
		// retry is all that could help, and the in-process mutex is
		// released either way so this process is not wedged.
		if release() != nil {
			_ = release() // error deliberately ignored, see above
		}
		<-mu
	}, nil
}

// tryHeld tries to take stripe i through its kept-open lock file, opening
// it first if needed. It returns errLockBusy when another process holds the
// lock, and also once the locker is closing (the caller then takes the
// slow path, which keeps no descriptor). A lock file that was deleted
// under us is recreated and reopened. Stripe i's mutex must be held.
func (l *locker) tryHeld(i int) error {
	for range 2 {
		if l.held[i] == nil {
			if l.shut.Load() {
				return errLockBusy
			}
			f, err := l.fs.OpenLock(l.paths[i])
			if errors.Is(err, fs.ErrNotExist) {
				// Removed since ensure made it: make it again, once.
				if err = l.ensure(l.paths[i]); err == nil {
					f, err = l.fs.OpenLock(l.paths[i])
				}
			}
			if err != nil {
				return err
			}
			l.held[i] = f
		}
		err := l.held[i].TryLock()
		if errors.Is(err, errLockStale) {
			l.dropHeld(i)
			continue
		}
		if err != nil && !errors.Is(err, errLockBusy) {
			// An unexpected flock error: do not trust this descriptor again.
			l.dropHeld(i)
		}
		return err
	}
	// Deleted twice in a row: someone keeps removing lock files. The slow
	// path opens the path afresh on every acquisition.
	return errLockBusy
}

// dropHeld closes stripe i's kept-open lock file. Stripe i's mutex must be
// held.
func (l *locker) dropHeld(i int) {
	if l.held[i] != nil {
		_ = l.held[i].Close() // error deliberately ignored: close releases the descriptor regardless
		l.held[i] = nil
	}
}

// close closes the lock files kept open, waiting for each stripe's holder
// to release it first. Stripes taken after close has begun use the slow
// path, which keeps nothing open.
func (l *locker) close() {
	l.shut.Store(true)
	for i, mu := range l.stripes {
		mu <- struct{}{}
		l.dropHeld(i)
		<-mu
	}
}

func (l *locker) stripePath(i int) string {
	return l.paths[i]
}

// sweepPath is the lock that lets one process at a time sweep.
func (l *locker) sweepPath() string {
	return filepath.Join(l.dir, "sweep.lock")
}
