package filestore

import (
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// Write protocol, for a record named h in shard directory d:
//
//  1. create d/.tmp-h-<random> with O_EXCL|O_NOFOLLOW, mode 0600
//  2. write the whole record
//  3. fsync the file                 (skipped with NoSync)
//  4. close it
//  5. rename it over d/h
//  6. fsync d                        (skipped with NoSync)
//
// A failure in steps 1-4 removes the temp file and returns the error; in
// particular a failed fsync is never followed by a rename, since after one
// the kernel may already have dropped the dirty pages (fsyncgate). A reader
// opening d/h at any moment gets the old record or the new one, never a mix,
// because rename(2) swaps the name atomically. Without step 3 a crash could
// leave a renamed but empty file (ext4 delayed allocation); without step 6
// the rename itself might not survive a crash.
//
// The writer holds the record's stripe lock throughout, so a temp file for
// h that the sweeper finds while holding that lock belongs to a writer that
// died, and may be removed.

// Hook points, in protocol order. Tests set Store.hook to observe or kill
// the process at each step.
const (
	hookTempCreated = "temp-created"
	hookWritten     = "written"
	hookSynced      = "synced"
	hookClosed      = "closed"
	hookCounted     = "counted" // a record's change counter bumped before its rename or unlink
	hookRenamed     = "renamed"
	hookDirSynced   = "dir-synced"
	hookUnlinked    = "unlinked"
)

func (s *Store) at(point string) {
	if s.hook != nil {
		s.hook(point)
	}
}

const (
	fileMode = 0o600
	dirMode  = 0o700
	// createFlags never follows a planted symlink and never reuses a name.
	createFlags = os.O_WRONLY | os.O_CREATE | os.O_EXCL | noFollow | noBlock
)

// writeTemp writes b to a new temp file in d whose name starts with
// prefix, sets its modification time to mtime unless that is zero, syncs it
// unless NoSync is set, closes it and returns its name. On failure it
// removes the temp file and returns the error.
func (s *Store) writeTemp(d dir, prefix string, b []byte, mtime time.Time) (string, error) {
	var (
		f    file
		name string
		err  error
	)
	for range 8 {
		name = prefix + strconv.FormatUint(rand.Uint64(), 36)
		f, err = d.Open(name, createFlags, fileMode)
		if !errors.Is(err, fs.ErrExist) {
			break
		}
	}
	if err != nil {
		return "", err
	}
	s.at(hookTempCreated)
	if err := s.fillTemp(f, b, mtime); err != nil {
		_ = f.Close()      // error deliberately ignored: already failing
		_ = d.Remove(name) // error deliberately ignored: already failing
		return "", err
	}
	if err := f.Close(); err != nil {
		_ = d.Remove(name) // error deliberately ignored: already failing
		return "", err
	}
	s.at(hookClosed)
	return name, nil
}

// fillTemp sets the temp file's mode, writes b, sets its modification time
// unless mtime is zero, and syncs.
func (s *Store) fillTemp(f file, b []byte, mtime time.Time) error {
	// The umask may have trimmed the mode given to open; records are
	// exactly 0600 whatever it is.
	if s.fixModes {
		if err := f.Chmod(fileMode); err != nil {
			return err
		}
	}
	if _, err := f.Write(b); err != nil {
		return err
	}
	if !mtime.IsZero() {
		// A record's expiry, the sweeper's hint (see sweepCheck), set
		// after the last write, which would reset it, and before the
		// fsync, which makes it durable with the data. Its error is
		// ignored: a record without the hint is merely examined more
		// closely.
		_ = f.SetModTime(mtime)
	}
	s.at(hookWritten)
	if !s.opts.NoSync && s.mutant != syncFile {
		if err := f.Sync(); err != nil {
			return err
		}
		s.at(hookSynced)
	}
	return nil
}

// replaceLocked atomically replaces r's record with b, which expires at
// exp (expiryNanos), creating the shard directories if needed. The
// record's lock must be held.
func (s *Store) replaceLocked(r ref, b []byte, exp int64) error {
	d, use := s.dirs.get(r.shard, r)
	defer func() { use.release() }()
	prefix, hint := tempPrefixOf(r.hex), expiryHint(exp)
	tmp, err := s.writeTemp(d, prefix, b, hint)
	if errors.Is(err, fs.ErrNotExist) {
		// The first record in this shard, or its directory was removed
		// under its cached descriptor: create the shard directories, once.
		// The store never removes them, so no writer races a pruner.
		s.dirs.drop(r.shard, d)
		use.release()
		use = nil
		if err = s.mkdirAll(r.dirPath()); err == nil {
			d, use = s.dirs.get(r.shard, r)
			tmp, err = s.writeTemp(d, prefix, b, hint)
		}
	}
	if err != nil {
		return fmt.Errorf("write: %w", err)
	}
	// The change counter is bumped before and after the rename, so that no
	// process's read cache serves the old record once Save returns
	// (cache.go).
	s.table.bump(r.sum)
	s.at(hookCounted)
	if err := d.Rename(tmp, r.hex); err != nil {
		s.table.bump(r.sum)
		_ = d.Remove(tmp) // error deliberately ignored: already failing
		return fmt.Errorf("write: %w", err)
	}
	s.at(hookRenamed)
	s.table.bump(r.sum)
	s.cache.evict(r.sum)
	if err := s.syncOpenDir(d, syncAfterRename); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	s.at(hookDirSynced)
	return nil
}

// removeLocked unlinks r's record and syncs its directory, so that a
// deleted session (a logout) cannot come back after a crash. It reports
// whether there was a record. The record's lock must be held.
func (s *Store) removeLocked(r ref) (bool, error) {
	s.table.bump(r.sum) // before and after, as for a rename
	s.at(hookCounted)
	d, use, err := s.inShard(r, func(d dir) error { return d.Remove(r.hex) })
	defer use.release()
	if err == nil {
		s.at(hookUnlinked)
	}
	s.table.bump(r.sum)
	s.cache.evict(r.sum)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err // a *fs.PathError: "remove <path>: ..."
	}
	if err := s.syncOpenDir(d, syncAfterUnlink); err != nil {
		return true, err
	}
	s.at(hookDirSynced)
	return true, nil
}

// Why a sync happens. Tests remove one kind at a time (Store.mutant) to
// prove the power-loss suite notices each missing fsync.
type syncReason int

const (
	syncFile        syncReason = iota + 1 // a temp file before its rename
	syncAfterRename                       // a shard dir after a rename into it
	syncAfterUnlink                       // a shard dir after an unlink from it
	syncAfterMkdir                        // a parent dir after a mkdir in it
)

// syncDir fsyncs a directory so that renames, unlinks and creations in it
// are durable. It does nothing with NoSync. Filesystems that cannot sync a
// directory (EINVAL) are taken to need no such sync.
func (s *Store) syncDir(dir string, why syncReason) error {
	return s.syncOpenDir(pathsIn(s.fs, dir), why)
}

// syncOpenDir is syncDir for a dir the caller holds.
func (s *Store) syncOpenDir(d dir, why syncReason) error {
	if s.opts.NoSync || s.mutant == why {
		return nil
	}
	return syncIgnoringEINVAL(d)
}

// syncIgnoringEINVAL fsyncs f, taking EINVAL (a filesystem that cannot
// sync a directory) to mean that none is needed.
func syncIgnoringEINVAL(f interface{ Sync() error }) error {
	if err := f.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) {
		return err
	}
	return nil
}

// mkdirAll creates dir and any missing parents below the store's data
// directory, each with mode 0700, and makes each creation durable by
// syncing its parent.
func (s *Store) mkdirAll(dir string) error {
	if dir == s.data || len(dir) <= len(s.data) {
		return nil
	}
	parent := filepath.Dir(dir)
	if err := s.mkdirAll(parent); err != nil {
		return err
	}
	return s.mkdirIn(parent, dir)
}

// mkdirIn creates dir (whose parent is parent) with mode 0700 if it does
// not exist, and syncs parent.
func (s *Store) mkdirIn(parent, dir string) error {
	err := s.fs.Mkdir(dir, dirMode)
	if errors.Is(err, fs.ErrExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if s.fixModes {
		if err := s.fs.Chmod(dir, dirMode); err != nil {
			return err
		}
	}
	return s.syncDir(parent, syncAfterMkdir)
}
