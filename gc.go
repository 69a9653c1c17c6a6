package filestore

import (
	"cmp"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// readDirBatch is how many directory entries the walker holds at once.
const readDirBatch = 512

// walk calls batch with the names of each leaf shard directory, shard by
// shard and readDirBatch names at a time, with the directory open, and
// then done, if not nil, before it closes the directory. It skips
// shard-level names that are not valid shard directories (an NFS .nfsXXXX
// file, an operator's notes, a symlink), and leaves it to batch to skip
// leaf names it does not recognise. A shard directory that vanished is
// skipped. Memory stays bounded by a batch, not by the shard. An error of
// batch or done stops the walk and is returned as it is.
func (s *Store) walk(ctx context.Context, batch func(d dir, names []string) error, done func(d dir) error) error {
	return s.walkLeaves(ctx, s.data, 0, func(path string) error {
		return s.walkLeaf(ctx, path, s.layout.levels, batch, done)
	})
}

// eachName adapts a function of one name to walk's batch.
func eachName(fn func(d dir, name string) error) func(d dir, names []string) error {
	return func(d dir, names []string) error {
		for _, name := range names {
			if err := fn(d, name); err != nil {
				return err
			}
		}
		return nil
	}
}

// walkLeaves calls leaf with the path of every leaf shard directory below
// path, which is level levels below the data directory, one at a time. It
// skips the names walk skips, and returns leaf's first error as it is.
func (s *Store) walkLeaves(ctx context.Context, path string, level int, leaf func(path string) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if level == s.layout.levels {
		return leaf(path)
	}
	d, ok, err := s.openWalked(path, level)
	if !ok {
		return err
	}
	// An inner level holds at most 16^width shard directories; read their
	// names, then close this directory before descending.
	names, err := d.ReadNames(-1)
	_ = d.Close() // error deliberately ignored: read-only directory handle
	if err != nil {
		return fmt.Errorf("walk: %w", err)
	}
	for _, name := range names {
		if !s.layout.isShardName(name) {
			continue
		}
		if err := s.walkLeaves(ctx, filepath.Join(path, name), level+1, leaf); err != nil {
			return err
		}
	}
	return nil
}

// walkLeaf is walk's work on one leaf directory. It calls done even when
// the walk stops early, so that work done in the shard is finished.
func (s *Store) walkLeaf(ctx context.Context, path string, level int, batch func(d dir, names []string) error, done func(d dir) error) error {
	d, ok, err := s.openWalked(path, level)
	if !ok {
		return err
	}
	defer d.Close()
	err = walkBatches(ctx, d, batch)
	if done != nil {
		if derr := done(d); err == nil {
			err = derr
		}
	}
	return err
}

// openWalked opens the directory path, level levels below the data
// directory, for the walk. It reports false, with no error, for one the
// walk skips: one that vanished, or below the data directory a name that
// a listing gave but that is no directory (a file, or a symlink, which
// OpenDir does not follow). A listing gives names only, so this is where
// the walk learns an entry's type, at no cost for the directories it
// enters.
func (s *Store) openWalked(path string, level int) (dir, bool, error) {
	d, err := s.fs.OpenDir(path)
	switch {
	case err == nil:
		return d, true, nil
	case errors.Is(err, fs.ErrNotExist):
		return nil, false, nil
	case level > 0:
		// The errno for a symlink refused by O_NOFOLLOW varies (ELOOP
		// on Linux, EMLINK on FreeBSD), so ask what the name is.
		if fi, lerr := s.fs.Lstat(path); lerr == nil && !fi.IsDir() {
			return nil, false, nil
		}
	}
	return nil, false, fmt.Errorf("walk: %w", err)
}

// listDir returns every name in the directory path: for directories that
// hold a few names, never a shard's records.
func listDir(fsys fsys, path string) ([]string, error) {
	d, err := fsys.OpenDir(path)
	if err != nil {
		return nil, err
	}
	names, err := d.ReadNames(-1)
	_ = d.Close() // error deliberately ignored: read-only directory handle
	return names, err
}

// walkBatches calls batch for every readDirBatch names of d.
func walkBatches(ctx context.Context, d dir, batch func(d dir, names []string) error) error {
	for {
		names, rerr := d.ReadNames(readDirBatch)
		if len(names) > 0 {
			if err := batch(d, names); err != nil {
				return err
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return fmt.Errorf("walk: %w", rerr)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}

// DeleteExpired runs one sweep now and returns how many expired records it
// removed. It also removes temp files left behind by writers that crashed.
//
// DeleteExpired waits, honouring ctx, while another process or goroutine
// sweeps the same store. It takes the lock of each candidate record and
// re-checks the record's expiry under it, so a session refreshed during the
// sweep survives; a record whose lock is held at that moment (by a Save,
// Delete or Update, which replaces or removes it) is left for the next
// sweep. It never removes a file it did not create: unknown names,
// symlinks and corrupt records are left alone. Errors on single files do
// not stop the sweep; they are returned joined at its end.
func (s *Store) DeleteExpired(ctx context.Context) (int, error) {
	if s.closed.Load() {
		return 0, opErr("delete expired", ErrClosed)
	}
	var errs []error
	st, err := s.sweep(ctx, false, func(err error) {
		if len(errs) < maxReportedErrors {
			errs = append(errs, err)
		}
	}, nil)
	if err := errors.Join(append(errs, err)...); err != nil {
		return st.Removed, opErr("delete expired", err)
	}
	return st.Removed, nil
}

// sweepLoop runs a sweep every interval until ctx ends. A round in which
// another process holds the sweep lock is skipped.
func (s *Store) sweepLoop(ctx context.Context, interval time.Duration) {
	defer s.sweeping.Done()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		// The background sweeper has nobody to return errors to: it logs
		// each file it skipped, once, and a sweep that stopped.
		st, err := s.sweep(ctx, true, func(err error) {
			s.log.Warn("filestore: sweep skipped a file", "dir", s.root, "err", err)
		}, nil)
		n := st.Removed
		switch {
		case errors.Is(err, errLockBusy), errors.Is(err, context.Canceled):
		case err != nil:
			s.log.Error("filestore: sweep stopped", "dir", s.root, "removed", n, "err", err)
		case n > 0:
			s.log.Debug("filestore: sweep", "dir", s.root, "removed", n)
		}
	}
}

// sweep removes expired records and stale temp files, and returns what it
// did. With try set it returns errLockBusy if another sweep holds the
// sweep lock. The error of a file it skipped goes to note, and the sweep
// goes on; the error it returns is one that stopped it. progress, if not
// nil, gets the totals after each shard directory.
func (s *Store) sweep(ctx context.Context, try bool, note func(error), progress func(SweepStats)) (SweepStats, error) {
	st := SweepStats{Shards: s.layout.leaves()}
	release, err := s.fs.Lock(ctx, s.locks.sweepPath(), try)
	if err != nil {
		return st, err
	}
	defer func() { _ = release() }() // error deliberately ignored: closing the fd drops the lock

	var (
		seen  int  // record names walked
		dirty bool // the current shard directory has unsynced removals
	)
	// Each batch of names is sifted without locks (one lstat a name), and
	// the candidates left are removed under their records' locks, the
	// sweeper entering each stripe once for up to sweepRun candidates of
	// it: in a version 2 store every candidate of a shard directory shares
	// its stripe.
	var cands []sweepCandidate
	batch := func(d dir, names []string) error {
		cands = cands[:0]
		for _, name := range names {
			if isRecordName(name) {
				seen++
			}
			c, ok, err := s.sweepCheck(d, name)
			if err != nil {
				note(err)
			}
			if ok {
				cands = append(cands, c)
			}
		}
		slices.SortStableFunc(cands, func(a, b sweepCandidate) int { return cmp.Compare(a.lk.stripe, b.lk.stripe) })
		for i := 0; i < len(cands); {
			n := 1
			for i+n < len(cands) && n < sweepRun && cands[i+n].lk.stripe == cands[i].lk.stripe {
				n++
			}
			records, files, err := s.sweepLocked(ctx, d, cands[i:i+n], note)
			if files > 0 {
				dirty = true
			}
			st.Removed += records
			st.Temps += files - records
			if err != nil {
				return err
			}
			i += n
		}
		return nil
	}
	// Each shard's removals are made durable by one fsync of its
	// directory, once its walk is over.
	done := func(d dir) error {
		st.Dirs++
		st.Kept = seen - st.Removed
		if progress != nil {
			progress(st)
		}
		if !dirty {
			return nil
		}
		dirty = false
		if err := s.syncOpenDir(d, syncAfterUnlink); err != nil {
			note(err) // a *fs.PathError naming the directory
		} else {
			s.at(hookDirSynced)
		}
		return nil
	}
	err = s.walk(ctx, batch, done)
	st.Kept = seen - st.Removed
	if err != nil {
		return st, err
	}
	if err := s.sweepInitTemps(); err != nil {
		note(err)
	}
	return st, nil
}

// sweepInitTemps removes the temp files that creating Opens left in the
// root when they died between writing the marker and removing their temp
// name. No lock covers them, so only age tells an orphan: a live creating
// Open holds its temp file for a moment, not staleTempAge.
func (s *Store) sweepInitTemps() error {
	names, err := listDir(s.fs, s.root)
	if err != nil {
		return fmt.Errorf("sweep root: %w", err)
	}
	gone := false
	for _, name := range names {
		if !strings.HasPrefix(name, initPrefix) {
			continue
		}
		path := filepath.Join(s.root, name)
		fi, err := s.fs.Lstat(path)
		if err != nil || !fi.Mode().IsRegular() || s.now().Sub(fi.ModTime()) < staleTempAge {
			continue // vanished, or not an orphan we may remove
		}
		if err := s.fs.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("sweep root: %w", err)
		}
		gone = true
	}
	if gone {
		return s.syncDir(s.root, syncAfterUnlink)
	}
	return nil
}

// expiryHint is the modification time a record file is given: its expiry,
// or for a record that never expires the latest expiry a record can hold.
func expiryHint(exp int64) time.Time {
	if exp == 0 {
		exp = math.MaxInt64
	}
	return time.Unix(0, exp)
}

// sweepRun is the most candidates the sweeper removes in one entry into
// their stripe, and under one lock of the whole stripe (locker.lockRun).
// Where it holds the stripe whole (that lock, or off Linux and against
// processes of earlier versions the exclusive stripe flock), it bounds how
// long a Save, Delete or Update of a record in that stripe waits for the
// sweeper: about 0.3 ms on tmpfs, a few ms on a disk.
const sweepRun = 32

// sweepCandidate is a file the sweeper may remove: a record file that
// looks expired, or a stale temp file, and the lock of the record it
// belongs to.
type sweepCandidate struct {
	name string
	lk   recordLock
	temp bool
}

// sweepCheck sifts one name of a shard directory, without locks: it
// reports whether the name is a candidate for removal. Only record files
// and temp files are candidates, never a name the store did not make.
//
// Every write sets a record file's modification time to the record's
// expiry (expiryHint), so one lstat tells a live record from a candidate
// without opening it. The hint is trusted only to skip: a file whose
// modification time is in the future was written by a Save or Update that
// set it, with an expiry that has not come. Anything else (a past hint, a
// record written before hints existed, a file copied without its times) is
// a candidate, read and checked under its lock before it is removed.
func (s *Store) sweepCheck(d dir, name string) (sweepCandidate, bool, error) {
	if isRecordName(name) {
		fi, err := d.Lstat(name)
		if errors.Is(err, fs.ErrNotExist) {
			return sweepCandidate{}, false, nil
		}
		if err != nil {
			return sweepCandidate{}, false, fmt.Errorf("skipped: %w", err)
		}
		if err := checkRecordFile(fi, s.uid); err != nil {
			// A symlink, directory, FIFO, hard link or foreign file: corrupt
			// whatever it holds, as read says. Reported, never removed.
			return sweepCandidate{}, false, fmt.Errorf("skipped %s: %w", d.Path()+string(filepath.Separator)+name, err)
		}
		if fi.ModTime().After(s.now()) {
			return sweepCandidate{}, false, nil
		}
		return sweepCandidate{name: name, lk: s.locks.of(sumOfHex(name))}, true, nil
	}
	owner, ok := tempOwner(name)
	if !ok {
		return sweepCandidate{}, false, nil // not ours: never touch it
	}
	fi, err := d.Lstat(name)
	if errors.Is(err, fs.ErrNotExist) {
		return sweepCandidate{}, false, nil
	}
	// The age is only an economy: a writer holds the record's lock for as
	// long as its temp file lives, so a young temp file would just make us
	// wait for it. Safety comes from the lock sweepLocked takes.
	if err != nil || !fi.Mode().IsRegular() || s.now().Sub(tempBorn(fi)) < staleTempAge {
		return sweepCandidate{}, false, err
	}
	return sweepCandidate{name: name, lk: s.locks.of(sumOfHex(owner)), temp: true}, true, nil
}

// tempBorn is the earlier of fi's modification and status-change (ctime)
// times: what a temp file's age is counted from. A temp file's
// modification time may hold its record's expiry hint, in the future; its
// ctime, which cannot be set, is then when the writer last touched it.
// Where the system gives no ctime (fi.sys is unset) it is the modification
// time.
func tempBorn(fi fileStat) time.Time {
	t := fi.ModTime()
	if fi.sys && fi.ctime.Before(t) {
		t = fi.ctime
	}
	return t
}

// sweepLocked enters the stripe that cands all share, once, and removes
// those candidates that, checked again under their record's lock, are still
// expired records or are temp files. A candidate whose lock a writer holds
// right now is left for a later sweep: that writer is replacing or removing
// it. sweepLocked returns how many records and how many files in all it
// removed, and an error only when ctx ended; the errors of single files go
// to note.
func (s *Store) sweepLocked(ctx context.Context, d dir, cands []sweepCandidate, note func(error)) (records, files int, err error) {
	leave, err := s.locks.enterStripe(ctx, cands[0].lk.stripe)
	if err != nil {
		if ctx.Err() != nil {
			return 0, 0, ctx.Err()
		}
		note(err)
		return 0, 0, nil
	}
	defer leave()
	tryLock := s.locks.tryLock
	if len(cands) > 1 {
		if release := s.locks.lockRun(cands[0].lk.stripe); release != nil {
			defer release()
			tryLock = s.locks.tryLockInRun
		}
	}
	for _, c := range cands {
		held, err := tryLock(ctx, c.lk)
		if errors.Is(err, errLockBusy) {
			continue
		}
		if err != nil {
			if ctx.Err() != nil {
				return records, files, ctx.Err()
			}
			note(err)
			continue
		}
		gone, err := s.removeCandidate(d, c)
		held.unlock()
		if err != nil {
			note(err)
		}
		if gone {
			files++
			if !c.temp {
				records++
			}
		}
	}
	return records, files, nil
}

// removeCandidate removes c if it is still to be removed. c's stripe lock
// must be held.
func (s *Store) removeCandidate(d dir, c sweepCandidate) (bool, error) {
	if !c.temp {
		// Check again under the lock: the session may have been refreshed
		// since its lstat (Tomcat CVE-2022-23181 is this race).
		// readIn refuses a record under another id's name: it is corrupt,
		// and corrupt records are evidence, never swept.
		rec, err := s.readIn(d, c.name)
		if errors.Is(err, ErrNotFound) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("skipped: %w", err)
		}
		if !expired(rec.expiry, s.now()) {
			return false, nil
		}
	}
	// A writer holds the record's lock for the whole life of its temp
	// file, so under that lock any temp file for the record is an orphan.
	// A record's removal is counted for read caches (cache.go).
	if c.temp {
		err := d.Remove(c.name)
		if errors.Is(err, fs.ErrNotExist) {
			return false, nil
		}
		return err == nil, err
	}
	sum := sumOfHex(c.name)
	s.table.bump(sum)
	err := d.Remove(c.name)
	if err == nil {
		s.at(hookUnlinked)
	}
	s.table.bump(sum)
	s.cache.evict(sum)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}

// sumOfHex is the hash a record file is named by: the inverse of hashID's
// hex form, for a walk, which knows a record only by its name.
func sumOfHex(name string) (sum [32]byte) {
	_, _ = hex.Decode(sum[:], []byte(name[:hashHexLen])) // name is validated lowercase hex
	return sum
}
