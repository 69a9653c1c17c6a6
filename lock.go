package filestore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/gofrs/flock"
)

// Record locking protocol. Every Save, Delete and Update of a record, and
// the sweeper's removal of it, holds the record's lock, which has three
// parts, taken in this order and released in reverse:
//
//  1. the record's in-process lock: a mutex per record hash, in a table
//     that holds only the records locked right now (idTable). It excludes
//     the goroutines of this process, and is what the race detector sees.
//  2. this process's share of the record's stripe: one of 256 lock files
//     in <root>/locks, picked by the record hash. The first goroutine of
//     the process to enter a stripe takes flock(2) on its lock file, the
//     last one to leave releases it; the goroutines in between only count
//     (stripe.users). The count is changed under the stripe's gate, and
//     the flock is released before the gate is, so a goroutine entering
//     the stripe never sees a count without the flock behind it.
//  3. where the system has open file description locks (Linux), an
//     exclusive fcntl(2) lock on one byte of the stripe's lock file, at an
//     offset read off the record hash (rangeOffset): a lock per record
//     across processes, without a lock file per record.
//
// In a store created now (marker version 3) with range locks, part 2
// takes no flock: entering a stripe only opens its lock file, once, and
// checks with one fstat that the file is still linked when the first
// goroutine enters. Processes of earlier releases refuse such a store. In
// a version 1 or 2 store, which an earlier release may share, the stripe
// flock is taken, shared (LOCK_SH): processes of this release exclude each
// other per record, and the shared flock still excludes the earlier
// releases, which take it exclusively. Without range locks (off Linux, and
// with the test filesystems) the stripe flock is exclusive and is the
// cross-process lock, whatever the version.
//
// The sweeper removes expired records in runs of up to sweepRun of one
// stripe. With range locks it first tries to write-lock the stripe's whole
// lock file through a descriptor of its own (lockRun): if that succeeds, no
// other descriptor, of this process or another, holds any record of the
// stripe, and each candidate then needs only its in-process lock; if it
// fails, the sweeper locks candidate by candidate. That is two fcntl(2)
// calls a run instead of two a record.
//
// Why per record, not per stripe: an Update's fn may Save, Delete, Update
// or Load any other record, in any stripe, from this process or while
// another process's fn does the same, without deadlock. With one lock per
// stripe, fn saving a record of its own stripe waited for itself, and two
// processes whose fns each wrote into the other's stripe waited for each
// other. Calling a method on the record fn was given still deadlocks, as it
// must: that record's lock is held until fn returns. Off Linux, where the
// stripe flock is exclusive, the second case remains: two processes whose
// Update fns write records of each other's stripes can deadlock.
//
// Lock files are created on first use and never deleted: deleting one lets
// two processes hold "the same" lock. Should an operator delete them
// anyway, a stripe whose lock file is found unlinked after locking is
// reopened at its path (errLockStale).
//
// A wait for a busy lock honours the caller's context. flock(2) and
// F_OFD_SETLKW cannot be cancelled, so the wait runs in a goroutine; if the
// context ends first, the caller returns and the goroutine, once it has the
// lock, releases it and only then lets go of the in-process part that
// guards it (the gate or the record's mutex). No other goroutine of this
// process can therefore take a lock through the same descriptor while an
// abandoned wait on it is pending.

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
	_, err = waitFor(ctx, fl.Lock, func(err error) {
		if err == nil {
			_ = fl.Unlock() // error deliberately ignored: nobody holds this lock
		}
	})
	if err != nil {
		return nil, err
	}
	return fl.Unlock, nil
}

// waitFor runs the blocking acquisition acquire, honouring ctx. If ctx ends
// first it returns ctx's error at once with abandoned set, and leaves
// acquire running in a goroutine, which then calls abandon with acquire's
// result: abandon releases what acquire took, if it took it, and whatever
// in-process guard the caller handed over with the wait. A context that can
// never end waits in place.
func waitFor(ctx context.Context, acquire func() error, abandon func(error)) (abandoned bool, err error) {
	if ctx.Done() == nil {
		if err := acquire(); err != nil {
			return false, fmt.Errorf("lock: %w", err)
		}
		return false, nil
	}
	done := make(chan error, 1)
	go func() { done <- acquire() }()
	select {
	case err := <-done:
		if err != nil {
			return false, fmt.Errorf("lock: %w", err)
		}
		return false, nil
	case <-ctx.Done():
		go func() { abandon(<-done) }()
		return true, ctx.Err()
	}
}

// handedOff is the error of a lock wait that its context ended: the
// goroutine still waiting now owns the in-process guard the caller held
// (a stripe's gate, a record's mutex) and releases it when its wait is
// over, so the caller must not. It reads and matches as the context's
// error.
type handedOff struct{ err error }

func (e handedOff) Error() string { return e.err.Error() }
func (e handedOff) Unwrap() error { return e.err }

func isHandedOff(err error) bool {
	var h handedOff
	return errors.As(err, &h)
}

// rangeLockFile is a lockFile that can also be locked shared, and by byte
// range with open file description locks (fcntl F_OFD_SETLK): osFS's lock
// files on Linux. Range locks belong to the descriptor, like flock(2)
// locks, not to the process, so they exclude other descriptors only; the
// locker guards each range of its descriptor with the record's in-process
// lock. Like lockFile it is not safe for concurrent use of one range.
type rangeLockFile interface {
	lockFile
	// TryLockShared takes a shared flock without waiting, with TryLock's
	// errors.
	TryLockShared() error
	// LockShared waits for a shared flock. It returns errLockStale, not
	// holding it, if the file has been unlinked.
	LockShared() error
	// TryLockRange takes an exclusive lock of the byte at off without
	// waiting; errLockBusy if another descriptor holds it.
	TryLockRange(off int64) error
	// LockRange waits for the exclusive lock of the byte at off.
	LockRange(off int64) error
	// UnlockRange releases the lock of the byte at off.
	UnlockRange(off int64) error
	// RangeLocked reports whether another descriptor holds the lock of the
	// byte at off, without taking it.
	RangeLocked(off int64) (bool, error)
	// Linked returns errLockStale if the file has been unlinked since it
	// was opened, as TryLock does after locking.
	Linked() error
}

// locker hands out the store's record locks (see the protocol above). It
// is safe for concurrent use.
type locker struct {
	fs       fsys
	dir      string // <root>/locks
	stripes  []stripe
	ids      idTable
	byPrefix bool // stripes follow the hash's leading bits (marker version 2)
	fixModes bool // the umask trims mode bits: chmod new lock files
	ranges   bool // per-record range locks; the stripe flock is shared
	flocks   bool // take the stripe flock: no range locks, or a version 1 or 2 store

	// Holds in flight, so that close can wait for them before it closes
	// the kept-open lock files.
	active atomic.Int64
	shut   atomic.Bool // close has begun: keep no more lock files open
	mu     sync.Mutex  // for idle
	idle   sync.Cond   // signalled when active drops to 0 after shut
}

// stripe is one lock file and this process's share of it.
type stripe struct {
	// gate serialises this process's entries into and exits from the
	// stripe. It is a buffered channel so that waiting on it can honour a
	// context.
	gate  chan struct{}
	path  string
	made  bool     // the lock file exists; guarded by gate
	users int      // goroutines of this process in the stripe; guarded by gate
	file  lockFile // the open lock file, or nil; guarded by gate
	// While users > 0, leave releases the process's flock on the stripe:
	// through file when the fast path took it, else through the fresh
	// descriptor gofrs/flock waited on. Guarded by gate.
	leave func() error
	fresh bool // leave is gofrs/flock's, on its own descriptor; guarded by gate
	keep  bool // keep file open when the last user leaves; guarded by gate
}

// newLocker makes the locker of a store whose marker has version (see
// formatVersion).
func newLocker(fsys fsys, dir string, n, version int, fixModes bool) *locker {
	l := &locker{fs: fsys, dir: dir, stripes: make([]stripe, n), byPrefix: version >= 2, fixModes: fixModes}
	l.idle.L = &l.mu
	if rl, ok := fsys.(interface{ rangeLocks() bool }); ok {
		l.ranges = rl.rangeLocks()
	}
	// Processes of earlier releases may share a version 1 or 2 store, and
	// they lock a stripe's file with flock: so must this one. Without
	// range locks the flock is the lock across processes.
	l.flocks = !l.ranges || version < 3
	for i := range l.stripes {
		l.stripes[i].gate = make(chan struct{}, 1)
		l.stripes[i].path = filepath.Join(dir, fmt.Sprintf("stripe-%04x.lock", i))
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
// stripe, and the sweeper enters a stripe once for a run of expired records
// instead of once each. A version 1 store keeps the mapping it was created
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

// rangeOffset is the byte of the stripe's lock file whose range lock is
// the record's: 62 bits of its hash, so two records share one only by a
// hash collision of 62 bits. The in-process lock is keyed by the same
// value, so that two records sharing a byte would also share a mutex, and
// still exclude each other.
func rangeOffset(sum [32]byte) int64 {
	return int64(binary.BigEndian.Uint64(sum[2:10]) >> 2)
}

// recordLock names a record's lock: its stripe and its range.
type recordLock struct {
	stripe int
	off    int64
}

func (l *locker) of(sum [32]byte) recordLock {
	return recordLock{stripe: l.stripeOf(sum), off: rangeOffset(sum)}
}

// lock takes r exclusively, in this process and across processes, waiting
// until ctx is done. The returned hold's unlock must be called exactly
// once.
func (l *locker) lock(ctx context.Context, r recordLock) (hold, error) {
	return l.take(ctx, r, false, l.ranges)
}

// tryLock is lock without waiting for the record: it returns errLockBusy if
// a goroutine or process holds it. It may still wait, honouring ctx, to
// enter the record's stripe (for an older process's exclusive flock).
func (l *locker) tryLock(ctx context.Context, r recordLock) (hold, error) {
	return l.take(ctx, r, true, l.ranges)
}

// tryLockInRun is tryLock for a sweeper that holds lockRun's lock on the
// record's stripe: that lock already excludes every other descriptor, so
// the record needs only its in-process part.
func (l *locker) tryLockInRun(ctx context.Context, r recordLock) (hold, error) {
	return l.take(ctx, r, true, false)
}

// lockRun takes, without waiting, the range lock of every record of stripe
// i at once, through a descriptor of its own, and returns the func that
// releases it: the sweeper's way to lock a run of candidates with two
// fcntl(2) calls instead of two each. Its own descriptor makes it conflict
// with the record locks of this process's goroutines too, which take
// theirs through the stripe's shared one. It returns nil, holding nothing,
// where there are no range locks, and when any record of the stripe is
// locked right now: the caller then locks record by record. While it is
// held, a writer of the stripe in another process waits for it, for one
// run of at most sweepRun removals.
func (l *locker) lockRun(i int) func() {
	if !l.ranges {
		return nil
	}
	f, err := l.fs.OpenLock(l.stripes[i].path)
	if err != nil {
		return nil
	}
	all, ok := f.(interface {
		TryLockAll() error
		UnlockAll() error
	})
	if !ok || all.TryLockAll() != nil {
		_ = f.Close() // error deliberately ignored: nothing is held
		return nil
	}
	return func() {
		// Unlock first: see UnlockAll. Should it fail, closing drops the
		// lock, if a moment later.
		_ = all.UnlockAll() // error deliberately ignored: as said
		_ = f.Close()       // error deliberately ignored: the lock is gone either way
	}
}

// hold is a record lock taken. It is a value, not a closure, so that a
// lock costs no allocation of its own.
type hold struct {
	l      *locker
	r      recordLock
	e      *idLock
	ranged bool // the record's range lock is held, and released by unlock
}

// unlock releases the lock, in the reverse order of take.
func (h hold) unlock() {
	if h.ranged {
		h.l.unlockRange(h.r)
	}
	h.l.exit(h.r.stripe)
	h.l.ids.unlock(h.r.off, h.e)
	h.l.end()
}

func (l *locker) take(ctx context.Context, r recordLock, try, ranged bool) (hold, error) {
	if err := ctx.Err(); err != nil {
		return hold{}, err
	}
	l.begin()
	e, err := l.ids.lock(ctx, r.off, try)
	if err != nil {
		l.end()
		return hold{}, err
	}
	if err := l.enter(ctx, r.stripe); err != nil {
		l.ids.unlock(r.off, e)
		l.end()
		return hold{}, err
	}
	if ranged {
		if err := l.lockRange(ctx, r, e, try); err != nil {
			if !isHandedOff(err) {
				l.exit(r.stripe)
				l.ids.unlock(r.off, e)
				l.end()
			}
			return hold{}, err
		}
	}
	return hold{l: l, r: r, e: e, ranged: ranged}, nil
}

// enterStripe makes the caller a user of stripe i, as a record lock does,
// until the returned leave is called: the sweeper enters a stripe once for
// a run of candidates, and then takes each candidate's lock without a
// flock(2) call of its own.
func (l *locker) enterStripe(ctx context.Context, i int) (leave func(), err error) {
	l.begin()
	if err := l.enter(ctx, i); err != nil {
		l.end()
		return nil, err
	}
	return func() {
		l.exit(i)
		l.end()
	}, nil
}

// begin counts a hold in flight; end ends it.
func (l *locker) begin() { l.active.Add(1) }

func (l *locker) end() {
	if l.active.Add(-1) == 0 && l.shut.Load() {
		l.mu.Lock()
		l.idle.Broadcast()
		l.mu.Unlock()
	}
}

// lockRange takes r's range lock through its stripe's lock file, which the
// caller has entered, holding r's in-process lock e. With try set a busy
// range is errLockBusy. If ctx ends during a wait the error is handedOff:
// the waiting goroutine then leaves the stripe and unlocks e.
func (l *locker) lockRange(ctx context.Context, r recordLock, e *idLock, try bool) error {
	f := l.stripes[r.stripe].file.(rangeLockFile) // entered: the file is open and stays so while we are in
	err := f.TryLockRange(r.off)
	if !errors.Is(err, errLockBusy) || try {
		return err
	}
	abandoned, err := waitFor(ctx, func() error { return f.LockRange(r.off) }, func(err error) {
		if err == nil {
			l.unlockRange(r)
		}
		l.exit(r.stripe)
		l.ids.unlock(r.off, e)
		l.end()
	})
	if abandoned {
		return handedOff{err}
	}
	return err
}

// unlockRange releases r's range lock. It has no failure mode on Linux
// short of a bad descriptor; should it fail, the lock is released when the
// stripe's lock file is closed, which the stripe's last user then does.
func (l *locker) unlockRange(r recordLock) {
	st := &l.stripes[r.stripe]
	if st.file.(rangeLockFile).UnlockRange(r.off) != nil {
		st.gate <- struct{}{}
		st.keep = false
		<-st.gate
	}
}

// enter adds the calling goroutine to stripe i's users, taking the
// process's flock on it if it is the first, and waiting, honouring ctx, if
// another process holds it exclusively.
func (l *locker) enter(ctx context.Context, i int) error {
	st := &l.stripes[i]
	select {
	case st.gate <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	if st.users == 0 {
		if err := l.flockLocked(ctx, i); err != nil {
			if !isHandedOff(err) {
				<-st.gate
			}
			return err
		}
	}
	st.users++
	<-st.gate
	return nil
}

// exit removes the calling goroutine from stripe i's users, releasing the
// process's flock on it if it was the last.
func (l *locker) exit(i int) {
	st := &l.stripes[i]
	st.gate <- struct{}{}
	if st.users--; st.users == 0 {
		l.unflockLocked(i)
	}
	<-st.gate
}

// flockLocked takes the process's flock on stripe i: through its kept-open
// lock file when no other process holds it, which costs one flock(2) and
// one fstat, or else by waiting. Stripe i's gate must be held. If ctx ends
// during a wait the error is handedOff, and the gate stays held until the
// waiting goroutine has released what it took.
func (l *locker) flockLocked(ctx context.Context, i int) error {
	st := &l.stripes[i]
	if !st.made {
		if err := l.ensure(st.path); err != nil {
			return fmt.Errorf("lock: %w", err)
		}
		st.made = true
	}
	for range 3 {
		if st.file == nil {
			f, err := l.fs.OpenLock(st.path)
			if errors.Is(err, fs.ErrNotExist) {
				// Removed since ensure made it: make it again.
				if err = l.ensure(st.path); err == nil {
					f, err = l.fs.OpenLock(st.path)
				}
			}
			if err != nil {
				return fmt.Errorf("lock: %w", err)
			}
			st.file, st.keep = f, !l.shut.Load()
		}
		err := l.tryFlock(st.file)
		switch {
		case err == nil && !l.flocks:
			st.leave = noUnlock
			return nil
		case err == nil:
			st.leave = st.file.Unlock
			return nil
		case errors.Is(err, errLockStale):
			l.dropLocked(i)
			continue
		case !errors.Is(err, errLockBusy):
			// An unexpected flock error: do not trust this descriptor again.
			l.dropLocked(i)
			return fmt.Errorf("lock: %w", err)
		}
		err = l.waitFlockLocked(ctx, i)
		if errors.Is(err, errLockStale) {
			l.dropLocked(i)
			continue
		}
		return err
	}
	// Deleted again each time it was made: someone keeps removing lock
	// files, and no lock taken here would exclude anybody.
	return fmt.Errorf("lock: %s keeps being removed: %w", st.path, errLockStale)
}

// noUnlock is a stripe's leave where the process holds no flock on it.
func noUnlock() error { return nil }

// tryFlock takes f's flock without waiting: shared when records are locked
// by range, else exclusive. In a version 3 store with range locks it takes
// none, and only checks, as a flock does, that f is still linked.
func (l *locker) tryFlock(f lockFile) error {
	switch {
	case !l.flocks:
		return f.(rangeLockFile).Linked()
	case l.ranges:
		return f.(rangeLockFile).TryLockShared()
	}
	return f.TryLock()
}

// waitFlockLocked waits for the process's flock on stripe i, which another
// process holds. Stripe i's gate must be held, and its lock file open.
func (l *locker) waitFlockLocked(ctx context.Context, i int) error {
	st := &l.stripes[i]
	if !l.ranges {
		// An exclusive flock, through gofrs/flock on a fresh descriptor,
		// which makes the wait cancellable without handing the gate over;
		// it is released through that descriptor.
		release, err := l.fs.Lock(ctx, st.path, false)
		if err != nil {
			return err
		}
		st.leave, st.fresh = release, true
		return nil
	}
	// A shared flock on the kept-open descriptor: the range locks are
	// taken through it, and must be covered by its flock.
	f := st.file.(rangeLockFile)
	abandoned, err := waitFor(ctx, f.LockShared, func(err error) {
		if err == nil {
			_ = f.Unlock() // error deliberately ignored: closing the descriptor would release it too
		} else {
			l.dropLocked(i)
		}
		<-st.gate
	})
	switch {
	case abandoned:
		return handedOff{err}
	case err == nil:
		st.leave = f.Unlock
	}
	return err
}

// unflockLocked releases the process's flock on stripe i, and closes its
// lock file unless it is kept. Stripe i's gate must be held.
func (l *locker) unflockLocked(i int) {
	st := &l.stripes[i]
	// LOCK_UN has no failure mode on Linux short of a kernel bug. Should it
	// fail on the kept-open descriptor, closing that releases the lock all
	// the same; gofrs/flock keeps its descriptor, and the lock, on a failed
	// unlock, and one retry is all that could help there.
	if err := st.leave(); err != nil {
		if st.fresh {
			_ = st.leave() // error deliberately ignored, see above
		} else {
			st.keep = false
		}
	}
	st.leave, st.fresh = nil, false
	if !st.keep {
		l.dropLocked(i)
	}
}

// dropLocked closes stripe i's lock file. Stripe i's gate must be held.
func (l *locker) dropLocked(i int) {
	st := &l.stripes[i]
	if st.file != nil {
		_ = st.file.Close() // error deliberately ignored: close releases the descriptor regardless
		st.file = nil
	}
}

// close closes the lock files kept open, once every hold in flight has been
// released. Locks taken after close has begun, by methods that were already
// running, open their lock file and close it again when released.
func (l *locker) close() {
	l.shut.Store(true)
	l.mu.Lock()
	for l.active.Load() > 0 {
		l.idle.Wait()
	}
	l.mu.Unlock()
	for i := range l.stripes {
		st := &l.stripes[i]
		st.gate <- struct{}{}
		st.keep = false
		if st.users == 0 {
			l.dropLocked(i)
		}
		<-st.gate
	}
}

// busy reports whether a goroutine of this process or another process
// holds r's lock right now, or may: it says yes when it cannot tell. It
// never waits. The read cache asks it before storing what it reads (see
// cache.go).
func (l *locker) busy(r recordLock) bool {
	if !l.ranges || l.ids.held(r.off) {
		return true
	}
	st := &l.stripes[r.stripe]
	select {
	case st.gate <- struct{}{}:
	default:
		return true // the stripe is being entered or left: ask next time
	}
	defer func() { <-st.gate }()
	if st.file == nil {
		if l.shut.Load() {
			return true
		}
		f, err := l.fs.OpenLock(st.path)
		if errors.Is(err, fs.ErrNotExist) {
			// A writer makes the lock file before it locks it: none has.
			return false
		}
		if err != nil {
			return true
		}
		st.file, st.keep = f, true
	}
	held, err := st.file.(rangeLockFile).RangeLocked(r.off)
	return err != nil || held
}

func (l *locker) stripePath(i int) string {
	return l.stripes[i].path
}

// sweepPath is the lock that lets one process at a time sweep.
func (l *locker) sweepPath() string {
	return filepath.Join(l.dir, "sweep.lock")
}

// idTable holds the in-process lock of each record locked right now, keyed
// by rangeOffset. Entries are made on first use and dropped when nobody
// holds or waits for them, so it stays as small as the number of records
// in use. It is sharded to keep goroutines locking different records off
// one mutex.
type idTable struct {
	shards [64]idShard
}

type idShard struct {
	mu sync.Mutex
	m  map[int64]*idLock
}

// idLock is one record's in-process lock. Taking it uncontended costs an
// entry in the table and nothing else; a goroutine that has to wait makes
// ch, through which each unlock hands the lock to one waiter, so that
// waiting can honour a context.
type idLock struct {
	refs int           // goroutines holding or waiting for it; guarded by the shard's mu
	ch   chan struct{} // made by the first waiter; a token in it is the lock, handed on; guarded by mu
}

// lock takes key's lock, waiting until ctx is done, or with try set
// returning errLockBusy at once if it is held. The returned *idLock is
// passed to unlock.
func (t *idTable) lock(ctx context.Context, key int64, try bool) (*idLock, error) {
	sh := &t.shards[uint64(key)%uint64(len(t.shards))]
	sh.mu.Lock()
	e := sh.m[key]
	if e == nil {
		if sh.m == nil {
			sh.m = make(map[int64]*idLock)
		}
		e = &idLock{refs: 1}
		sh.m[key] = e
		sh.mu.Unlock()
		return e, nil
	}
	if try {
		sh.mu.Unlock()
		return nil, errLockBusy
	}
	e.refs++
	if e.ch == nil {
		// Not pooled for reuse: a channel made inside a testing/synctest
		// bubble may not be used outside it, and a pool would hand one
		// from a bubbled test to any other goroutine.
		e.ch = make(chan struct{}, 1)
	}
	ch := e.ch
	sh.mu.Unlock()
	select {
	case <-ch:
		return e, nil
	case <-ctx.Done():
	}
	sh.mu.Lock()
	select {
	case <-ch:
		// Handed the lock as ctx ended: hand it on, as unlock would.
		t.releaseLocked(sh, key, e)
	default:
		e.refs-- // the holder still counts: never 0 here
	}
	sh.mu.Unlock()
	return nil, ctx.Err()
}

// held reports whether a goroutine holds or waits for key's lock.
func (t *idTable) held(key int64) bool {
	sh := &t.shards[uint64(key)%uint64(len(t.shards))]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return sh.m[key] != nil
}

// unlock releases key's lock e.
func (t *idTable) unlock(key int64, e *idLock) {
	sh := &t.shards[uint64(key)%uint64(len(t.shards))]
	sh.mu.Lock()
	t.releaseLocked(sh, key, e)
	sh.mu.Unlock()
}

// releaseLocked releases e, held by the caller, with sh.mu held: it drops
// the entry if nobody waits, and otherwise hands the lock to one waiter. At
// most one token is ever in e.ch: it is put there only by the goroutine
// that holds the lock, which then no longer does.
func (t *idTable) releaseLocked(sh *idShard, key int64, e *idLock) {
	if e.refs--; e.refs == 0 {
		delete(sh.m, key)
		return
	}
	e.ch <- struct{}{}
}
