package filestore

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// readDirBatch is how many directory entries the walker holds at once.
const readDirBatch = 512

// walk calls fn for each name in each leaf shard directory, shard by shard.
// It skips shard-level names that are not valid shard directories (an NFS
// .nfsXXXX file, an operator's notes, a symlink), and leaves it to fn to
// skip leaf names it does not recognise. A shard directory that vanished is
// skipped. fn's error stops the walk and is returned as it is.
func (s *Store) walk(ctx context.Context, fn func(dir, name string) error) error {
	return s.walkLevel(ctx, s.data, 0, fn)
}

func (s *Store) walkLevel(ctx context.Context, dir string, level int, fn func(dir, name string) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	d, err := s.fs.OpenFile(dir, os.O_RDONLY|noFollow|noBlock, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("walk: %w", err)
	}
	defer d.Close()
	if level == s.layout.levels {
		for {
			ents, rerr := d.ReadDir(readDirBatch)
			for _, e := range ents {
				if err := fn(dir, e.Name()); err != nil {
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
	// An inner level holds at most 16^width shard directories; read their
	// names, then close this directory before descending.
	ents, err := d.ReadDir(-1)
	if err != nil {
		return fmt.Errorf("walk: %w", err)
	}
	_ = d.Close() // error deliberately ignored: read-only directory handle
	for _, e := range ents {
		if !e.IsDir() || !s.layout.isShardName(e.Name()) {
			continue
		}
		if err := s.walkLevel(ctx, filepath.Join(dir, e.Name()), level+1, fn); err != nil {
			return err
		}
	}
	return nil
}

// DeleteExpired runs one sweep now and returns how many expired records it
// removed. It also removes temp files left behind by writers that crashed.
//
// DeleteExpired waits, honouring ctx, while another process or goroutine
// sweeps the same store; it takes each candidate record's lock in turn and
// re-checks the record's expiry under it, so a session refreshed during the
// sweep survives. It never removes a file it did not create: unknown names,
// symlinks and corrupt records are left alone. Errors on single files do
// not stop the sweep; they are returned joined at its end.
func (s *Store) DeleteExpired(ctx context.Context) (int, error) {
	if s.closed.Load() {
		return 0, opErr("delete expired", ErrClosed)
	}
	n, err := s.sweep(ctx, false)
	if err != nil {
		return n, opErr("delete expired", err)
	}
	return n, nil
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
		n, err := s.sweep(ctx, true)
		switch {
		case errors.Is(err, errLockBusy), errors.Is(err, context.Canceled):
		case err != nil:
			s.log.Error("filestore: sweep failed", "dir", s.root, "removed", n, "err", err)
		case n > 0:
			s.log.Debug("filestore: sweep", "dir", s.root, "removed", n)
		}
	}
}

// sweep removes expired records and stale temp files. With try set it
// returns errLockBusy if another sweep holds the sweep lock.
func (s *Store) sweep(ctx context.Context, try bool) (int, error) {
	release, err := s.fs.Lock(ctx, s.locks.sweepPath(), try)
	if err != nil {
		return 0, err
	}
	defer func() { _ = release() }() // error deliberately ignored: closing the fd drops the lock

	var (
		removed int
		errs    []error
		dirty   string // shard dir with unsynced removals
	)
	note := func(err error) {
		s.log.Warn("filestore: sweep", "err", err)
		if len(errs) < maxReportedErrors {
			errs = append(errs, err)
		}
	}
	flush := func() {
		if dirty == "" {
			return
		}
		if err := s.syncDir(dirty, syncAfterUnlink); err != nil {
			note(fmt.Errorf("sync %s: %w", dirty, err))
		} else {
			s.at(hookDirSynced)
		}
		dirty = ""
	}
	err = s.walk(ctx, func(dir, name string) error {
		if dir != dirty {
			flush()
		}
		gone, err := s.sweepEntry(ctx, dir, name)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			note(err)
		}
		if gone {
			dirty = dir
			if isRecordName(name) {
				removed++
			}
		}
		return nil
	})
	flush()
	if err != nil {
		return removed, err
	}
	if err := s.sweepInitTemps(); err != nil {
		note(err)
	}
	return removed, errors.Join(errs...)
}

// sweepInitTemps removes the temp files that creating Opens left in the
// root when they died between writing the marker and removing their temp
// name. No lock covers them, so only age tells an orphan: a live creating
// Open holds its temp file for a moment, not staleTempAge.
func (s *Store) sweepInitTemps() error {
	d, err := s.fs.OpenFile(s.root, os.O_RDONLY|noFollow|noBlock, 0)
	if err != nil {
		return fmt.Errorf("sweep root: %w", err)
	}
	ents, err := d.ReadDir(-1)
	_ = d.Close() // error deliberately ignored: read-only directory handle
	if err != nil {
		return fmt.Errorf("sweep root: %w", err)
	}
	gone := false
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), initPrefix) {
			continue
		}
		path := filepath.Join(s.root, e.Name())
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

// sweepEntry handles one name in a shard directory and reports whether it
// removed it. It removes only record files whose record has expired and
// temp files older than staleTempAge, each under its record's lock.
//
// Every write sets a record file's modification time to the record's
// expiry (expiryHint), so one lstat tells a live record from a candidate
// without opening it. The hint is trusted only to skip: a file whose
// modification time is in the future was written by a Save or Update that
// set it, with an expiry that has not come. Anything else (a past hint, a
// record written before hints existed, a file copied without its times) is
// a candidate, read and checked under its lock before it is removed.
func (s *Store) sweepEntry(ctx context.Context, dir, name string) (bool, error) {
	path := dir + string(filepath.Separator) + name // dir is clean: see walk
	if isRecordName(name) {
		fi, err := s.fs.Lstat(path)
		if errors.Is(err, fs.ErrNotExist) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("skipped %s: %w", path, err)
		}
		if err := checkRecordFile(fi); err != nil {
			// A symlink, directory, FIFO, hard link or foreign file: corrupt
			// whatever it holds, as read says. Reported, never removed.
			return false, fmt.Errorf("skipped %s: %w", path, err)
		}
		if fi.ModTime().After(s.now()) {
			return false, nil
		}
		unlock, err := s.locks.lock(ctx, stripeOfHex(s.locks, name))
		if err != nil {
			return false, err
		}
		defer unlock()
		// Check again under the lock: the session may have been refreshed
		// since its lstat (Tomcat CVE-2022-23181 is this race).
		// read refuses a record under another id's name: it is corrupt, and
		// corrupt records are evidence, never swept.
		d, err := s.read(path, "")
		if errors.Is(err, ErrNotFound) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("skipped: %w", err)
		}
		if !expired(d.expiry, s.now()) {
			return false, nil
		}
		err = s.fs.Remove(path)
		if errors.Is(err, fs.ErrNotExist) {
			return false, nil
		}
		if err == nil {
			s.at(hookUnlinked)
		}
		return err == nil, err
	}
	owner, ok := tempOwner(name)
	if !ok {
		return false, nil // not ours: never touch it
	}
	fi, err := s.fs.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	// The age is only an economy: a writer holds the record's lock for as
	// long as its temp file lives, so a young temp file would just make us
	// wait for it. Safety comes from the lock below.
	if err != nil || !fi.Mode().IsRegular() || s.now().Sub(tempBorn(fi)) < staleTempAge {
		return false, err
	}
	// A writer holds the record's lock for the whole life of its temp
	// file, so under that lock any temp file for the record is an orphan.
	unlock, err := s.locks.lock(ctx, stripeOfHex(s.locks, owner))
	if err != nil {
		return false, err
	}
	defer unlock()
	err = s.fs.Remove(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}

// stripeOfHex is locker.stripeOf for a record named by its hex hash.
func stripeOfHex(l *locker, name string) int {
	var sum [32]byte
	_, _ = hex.Decode(sum[:2], []byte(name[:4])) // name is validated lowercase hex
	return l.stripeOf(sum)
}
