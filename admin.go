package filestore

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// This file is the operator's API, used by the filestore command: a walk
// that reports every file of a store with its state, one record looked up
// by key, repairs, a sweep that reports what it did, and facts about the
// store that an operator asks for. Applications need none of it.

var (
	// ErrResharding is returned by Open for a store that a reshard (see
	// Reshard) has begun and not finished, or is running now. The message
	// names the command that finishes it.
	ErrResharding = errors.New("filestore: store is being resharded")
	// ErrInUse is returned by Reshard while another Store, in this process
	// or another, has the store open.
	ErrInUse = errors.New("filestore: store is in use")
)

// FileState is what a file in a store's data tree is.
type FileState int

const (
	// FileLive is a valid record that has not expired.
	FileLive FileState = iota + 1
	// FileExpired is a valid record past its expiry, which the sweeper
	// will remove.
	FileExpired
	// FileCorrupt is a file with a record's name that is not a readable
	// record of this store: a bad header or checksum, a record of another
	// id, a symlink, a file of another owner or with other hard links.
	// FileInfo.Err says why.
	FileCorrupt
	// FileMisplaced is a valid record in a shard directory other than the
	// one its hash names: Load cannot find it.
	FileMisplaced
	// FileTemp is a writer's temp file. FileInfo.Stale says whether it is
	// old enough for the sweeper to reclaim.
	FileTemp
	// FileForeign is a file or directory whose name the store never
	// creates where it lies. The store leaves it alone.
	FileForeign
	// FileShard is a shard directory of the layout.
	FileShard
)

// String returns the state's lowercase name, such as "live".
func (st FileState) String() string {
	switch st {
	case FileLive:
		return "live"
	case FileExpired:
		return "expired"
	case FileCorrupt:
		return "corrupt"
	case FileMisplaced:
		return "misplaced"
	case FileTemp:
		return "temp"
	case FileForeign:
		return "foreign"
	case FileShard:
		return "shard"
	}
	return "unknown"
}

// FileInfo describes one file or directory of a store, as Scan and Inspect
// report it.
type FileInfo struct {
	// Path is the file's path relative to the store's root, with slashes,
	// such as "data/ab/ab12...". It never holds a session id.
	Path string
	// Key is the record's key (see Key) for a record file, and the key of
	// the record a temp file was written for; empty otherwise.
	Key   string
	State FileState
	// Size is the file's size in bytes.
	Size int64
	// Mode is the file's type and permission bits, as lstat reports them.
	Mode fs.FileMode
	// BadMode is set when the permission bits are not the store's own
	// (0600 for files, 0700 for directories): a record readable by other
	// users leaks sessions. Repair fixes them.
	BadMode bool
	// Expiry is the record's expiry (zero for never); set for live,
	// expired and misplaced records.
	Expiry time.Time
	// Compressed reports whether the record's payload is stored
	// zstd-compressed.
	Compressed bool
	// DataSize is the length of the record's payload, uncompressed.
	DataSize int
	// Stale is set for a temp file old enough that no live writer owns
	// it.
	Stale bool
	// ID is the session id the record holds, for live, expired and
	// misplaced records. It is a bearer secret: print it only when the
	// operator asks.
	ID string
	// Err says why a file is FileCorrupt. Its text holds no session id.
	Err error
}

// Scan calls fn for every file and directory in the store's data tree, and
// for every name in the store's root that the store did not create, in no
// particular order, with its state, until fn returns an error, which Scan
// returns. It reads and checks every record (header, checksum, that its id
// hashes to its name, that it lies in its shard), so it costs a full read of
// the store. It takes no lock and changes nothing: files written or removed
// during the scan may or may not be reported. It holds at most 512 names of
// a directory and one record in memory at a time. Safe for concurrent use;
// it stops with ctx's error when ctx ends.
func (s *Store) Scan(ctx context.Context, fn func(FileInfo) error) error {
	if s.closed.Load() {
		return opErr("scan", ErrClosed)
	}
	if err := s.scanRoot(fn); err != nil {
		return opErr("scan", err)
	}
	if err := s.scanDir(ctx, s.data, 0, fn); err != nil {
		return opErr("scan", err)
	}
	return nil
}

// scanRoot reports the names in the root that a store never creates there,
// and creating Opens' temp files.
func (s *Store) scanRoot(fn func(FileInfo) error) error {
	names, err := listDir(s.fs, s.root)
	if err != nil {
		return err
	}
	for _, name := range names {
		switch name {
		case markerName, dataDir, locksDir, tableName, QuarantineDir, reshardDir:
			continue
		}
		fi, err := s.fs.Lstat(filepath.Join(s.root, name))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		info := FileInfo{Path: name, State: FileForeign, Size: fi.Size(), Mode: fi.Mode()}
		if strings.HasPrefix(name, initPrefix) && fi.Mode().IsRegular() {
			info.State = FileTemp
			info.Stale = s.now().Sub(fi.ModTime()) >= staleTempAge
		}
		if err := fn(info); err != nil {
			return fnError{err}
		}
	}
	return nil
}

// scanDir reports the entries of the directory path, level levels below the
// data directory, and descends into its shard directories.
func (s *Store) scanDir(ctx context.Context, path string, level int, fn func(FileInfo) error) error {
	d, err := s.fs.OpenDir(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer d.Close()
	return walkBatches(ctx, d, func(d dir, names []string) error {
		for _, name := range names {
			fi, err := d.Lstat(name)
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				return err
			}
			info, _, err := s.classify(d, level, name, fi)
			if err != nil {
				return err
			}
			if err := fn(info); err != nil {
				return fnError{err}
			}
			if info.State == FileShard {
				if err := s.scanDir(ctx, filepath.Join(path, name), level+1, fn); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// classify says what the entry name of d, level levels below the data
// directory, is, and returns the record it holds if it is a valid one. Its
// error is one that stops a scan: an I/O error on the directory.
func (s *Store) classify(d dir, level int, name string, fi fileStat) (FileInfo, decoded, error) {
	info := FileInfo{
		Path:  s.rel(d.Path() + string(filepath.Separator) + name),
		State: FileForeign,
		Size:  fi.Size(),
		Mode:  fi.Mode(),
	}
	switch {
	case fi.IsDir():
		if level < s.layout.levels && s.layout.isShardName(name) {
			info.State = FileShard
			info.BadMode = fi.Mode().Perm() != dirMode
		}
		return info, decoded{}, nil
	case isRecordName(name):
		info.Key = name
		info.BadMode = fi.Mode().IsRegular() && fi.Mode().Perm() != fileMode
		rec, err := s.checkIn(d, name, fi)
		if err != nil {
			info.State, info.Err = FileCorrupt, err
			return info, decoded{}, nil
		}
		info.ID, info.Expiry, info.Compressed, info.DataSize = rec.id, expiryTime(rec.expiry), rec.zstd, len(rec.data)
		switch want, _ := s.layout.recordPath(s.data, name); {
		case want != d.Path():
			info.State = FileMisplaced
		case expired(rec.expiry, s.now()):
			info.State = FileExpired
		default:
			info.State = FileLive
		}
		return info, rec, nil
	}
	if owner, ok := tempOwner(name); ok && fi.Mode().IsRegular() {
		info.State, info.Key = FileTemp, owner
		info.Stale = s.now().Sub(tempBorn(fi)) >= staleTempAge
		info.BadMode = fi.Mode().Perm() != fileMode
	}
	return info, decoded{}, nil
}

// checkIn reads and checks the record file name of d, as a Load would:
// any error says why it is not a readable record.
func (s *Store) checkIn(d dir, name string, fi fileStat) (decoded, error) {
	if err := checkRecordFile(fi, s.uid); err != nil {
		return decoded{}, err
	}
	rec, err := s.readIn(d, name)
	if err != nil {
		return decoded{}, s.unrooted(err)
	}
	return rec, nil
}

// rel is path relative to the root, with slashes: how FileInfo names it.
func (s *Store) rel(path string) string {
	r, err := filepath.Rel(s.root, path)
	if err != nil {
		return filepath.ToSlash(path)
	}
	return filepath.ToSlash(r)
}

// unrooted rewrites the absolute paths in err's text relative to the root,
// for FileInfo.Err, which sits next to the file's own Path.
func (s *Store) unrooted(err error) error {
	return &relError{err: err, msg: strings.ReplaceAll(err.Error(), s.root+string(filepath.Separator), "")}
}

type relError struct {
	err error
	msg string
}

func (e *relError) Error() string { return e.msg }
func (e *relError) Unwrap() error { return e.err }

// keyRef checks that key is a record key and locates its record.
func (s *Store) keyRef(key string) (ref, error) {
	if !isRecordName(key) {
		return ref{}, fmt.Errorf("%w: not a key (64 lowercase hex digits)", ErrInvalidID)
	}
	return s.refAt(sumOfHex(key), key), nil
}

// Inspect reports the record file named key (see Key), and its record when
// it is valid, live or expired. It returns ErrNotFound when there is no
// such file and ErrInvalidID when key is not a key. It takes no lock and
// never waits. Safe for concurrent use.
func (s *Store) Inspect(ctx context.Context, key string) (FileInfo, Record, error) {
	if s.closed.Load() {
		return FileInfo{}, Record{}, opErr("inspect", ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return FileInfo{}, Record{}, opErr("inspect", err)
	}
	r, err := s.keyRef(key)
	if err != nil {
		return FileInfo{}, Record{}, opErr("inspect", err)
	}
	d, err := s.fs.OpenDir(r.dirPath())
	if err == nil {
		defer d.Close()
		var fi fileStat
		if fi, err = d.Lstat(key); err == nil {
			info, rec, err := s.classify(d, s.layout.levels, key, fi)
			if err != nil {
				return info, Record{}, opErr("inspect", err)
			}
			if info.State != FileLive && info.State != FileExpired {
				return info, Record{}, nil
			}
			return info, Record{ID: rec.id, Data: rec.data, Expiry: expiryTime(rec.expiry)}, nil
		}
	}
	if errors.Is(err, fs.ErrNotExist) {
		err = ErrNotFound
	}
	return FileInfo{}, Record{}, opErr("inspect", err)
}

// DeleteKey is Delete of the record named key (see Key), for an operator
// who knows a session by its key only. It removes whatever file has that
// name in the record's shard, a corrupt one too, under the record's lock,
// for which it waits honouring ctx. Removing a missing record is not an
// error. Safe for concurrent use.
func (s *Store) DeleteKey(ctx context.Context, key string) error {
	if s.closed.Load() {
		return opErr("delete", ErrClosed)
	}
	r, err := s.keyRef(key)
	if err != nil {
		return opErr("delete", err)
	}
	return s.deleteRef(ctx, r)
}

// Repair fixes the problem that fi, from Scan, reports, and says what it
// did. A corrupt or misplaced record is moved into QuarantineDir in the
// store's root, named by its key and the time, never deleted and never
// served again. A stale temp file is removed. A record, temp file or shard
// directory whose permission bits are not the store's gets the store's. For
// anything else, a foreign file above all, it does nothing and says so.
//
// Repair takes the lock of the record a file belongs to, waiting for it
// honouring ctx, and checks the file again under it: a file that changed
// since the scan (a record rewritten, a temp file renamed) is left alone.
// Safe for concurrent use, also with other processes' writes and sweeps.
func (s *Store) Repair(ctx context.Context, fi FileInfo) (string, error) {
	if s.closed.Load() {
		return "", opErr("repair", ErrClosed)
	}
	path := filepath.Join(s.root, filepath.FromSlash(fi.Path))
	if rel, err := filepath.Rel(s.data, path); err != nil || rel == "." || strings.HasPrefix(rel, "..") {
		if fi.State == FileTemp && fi.Stale && fi.Key == "" {
			return s.repairInitTemp(path)
		}
		return "left alone: not in the data tree", nil
	}
	if fi.State == FileShard {
		if !fi.BadMode {
			return "nothing to repair", nil
		}
		if err := s.fixDirMode(path); err != nil {
			return "", opErr("repair", err)
		}
		return fmt.Sprintf("mode set to %v", fs.FileMode(dirMode)), nil
	}
	if fi.Key == "" || !isRecordName(fi.Key) {
		return "left alone: not a file of the store", nil
	}
	held, err := s.locks.lock(ctx, s.locks.of(sumOfHex(fi.Key)))
	if err != nil {
		return "", opErr("repair", err)
	}
	defer held.unlock()

	d, err := s.fs.OpenDir(filepath.Dir(path))
	if errors.Is(err, fs.ErrNotExist) {
		return "left alone: gone since the scan", nil
	}
	if err != nil {
		return "", opErr("repair", err)
	}
	defer d.Close()
	name := filepath.Base(path)
	st, err := d.Lstat(name)
	if errors.Is(err, fs.ErrNotExist) {
		return "left alone: gone since the scan", nil
	}
	if err != nil {
		return "", opErr("repair", err)
	}
	level := strings.Count(s.rel(d.Path()), "/")
	now, _, err := s.classify(d, level, name, st)
	if err != nil {
		return "", opErr("repair", err)
	}
	if now.State != fi.State {
		return fmt.Sprintf("left alone: %s since the scan, now %s", fi.State, now.State), nil
	}
	var did []string
	if now.BadMode && st.Mode().IsRegular() {
		if err := s.fixFileMode(d, name); err != nil {
			return "", opErr("repair", err)
		}
		did = append(did, fmt.Sprintf("mode set to %v", fs.FileMode(fileMode)))
		// A record unreadable for its mode alone is whole again.
		if st2, err := d.Lstat(name); err == nil {
			if again, _, err := s.classify(d, level, name, st2); err == nil {
				now = again
			}
		}
	}
	switch now.State {
	case FileCorrupt, FileMisplaced:
		to, err := s.quarantine(d, name, now)
		if err != nil {
			return "", opErr("repair", err)
		}
		did = append(did, "moved to "+to)
	case FileTemp:
		if !now.Stale {
			break
		}
		if err := d.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return "", opErr("repair", err)
		}
		if err := s.syncOpenDir(d, syncAfterUnlink); err != nil {
			return "", opErr("repair", err)
		}
		did = append(did, "removed")
	}
	if len(did) == 0 {
		return "nothing to repair", nil
	}
	return strings.Join(did, "; "), nil
}

// quarantine moves the file name of d, a corrupt or misplaced record whose
// lock is held, into the quarantine directory, and returns its new path
// relative to the root. A corrupt file at a record's own path is what Load
// reports for it, so readers' caches are told, as for a removal.
func (s *Store) quarantine(d dir, name string, fi FileInfo) (string, error) {
	qdir := filepath.Join(s.root, QuarantineDir)
	if err := s.mkdirIn(s.root, qdir); err != nil {
		return "", err
	}
	to := filepath.Join(qdir, fmt.Sprintf("%s.%s.%d", name, fi.State, s.now().UnixNano()))
	sum := sumOfHex(name)
	s.table.bump(sum)
	err := s.fs.Rename(d.Path()+string(filepath.Separator)+name, to)
	s.table.bump(sum)
	s.cache.evict(sum)
	if err != nil {
		return "", err
	}
	if err := s.syncOpenDir(d, syncAfterRename); err != nil {
		return "", err
	}
	if err := s.syncDir(qdir, syncAfterRename); err != nil {
		return "", err
	}
	return s.rel(to), nil
}

// fixFileMode sets the mode of the regular file name of d to the store's,
// through a descriptor opened without following a symlink.
func (s *Store) fixFileMode(d dir, name string) error {
	f, err := d.Open(name, os.O_RDONLY|noFollow|noBlock, 0)
	if err != nil {
		return err
	}
	err = f.Chmod(fileMode)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// fixDirMode sets the mode of the shard directory path to the store's.
func (s *Store) fixDirMode(path string) error {
	fi, err := s.fs.Lstat(path)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s: not a directory", s.rel(path))
	}
	return s.fs.Chmod(path, dirMode)
}

// repairInitTemp removes a creating Open's stale temp file in the root, as
// the sweeper does.
func (s *Store) repairInitTemp(path string) (string, error) {
	fi, err := s.fs.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "left alone: gone since the scan", nil
	}
	if err != nil {
		return "", opErr("repair", err)
	}
	if filepath.Dir(path) != s.root || !strings.HasPrefix(filepath.Base(path), initPrefix) || !fi.Mode().IsRegular() || s.now().Sub(fi.ModTime()) < staleTempAge {
		return "left alone: not a stale temp file", nil
	}
	if err := s.fs.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", opErr("repair", err)
	}
	return "removed", nil
}

// QuarantineDir is the directory, in a store's root, where Repair moves
// records it will not serve.
const QuarantineDir = "quarantine"

// SweepStats is what one sweep did, so far or in all.
type SweepStats struct {
	Removed int // expired records removed
	Kept    int // records left: live, busy, corrupt or unreadable
	Temps   int // stale temp files removed
	Dirs    int // shard directories walked
	Shards  int // shard directories in the layout
}

// Sweep runs one sweep now, as DeleteExpired does, and returns what it did.
// It calls progress, if not nil, after each shard directory with the
// totals so far. It waits, honouring ctx, while another process or
// goroutine sweeps the same store. Safe for concurrent use.
func (s *Store) Sweep(ctx context.Context, progress func(SweepStats)) (SweepStats, error) {
	if s.closed.Load() {
		return SweepStats{}, opErr("sweep", ErrClosed)
	}
	var errs []error
	st, err := s.sweep(ctx, false, func(err error) {
		if len(errs) < maxReportedErrors {
			errs = append(errs, err)
		}
	}, progress)
	if err := errors.Join(append(errs, err)...); err != nil {
		return st, opErr("sweep", err)
	}
	return st, nil
}

// Info is what Stat reports of a store.
type Info struct {
	Layout        string // the shard layout, such as "1x2"
	FormatVersion int    // the version in the store's marker
	// Sweeping reports whether a process was sweeping the store when Stat
	// looked.
	Sweeping bool
	// Opens is how many Stores, in any process, have the store open,
	// besides this one; -1 where the system cannot tell.
	Opens int
}

// Stat reports facts about the store that change while it runs. It never
// blocks: it tries the sweep lock without waiting, and so may make a
// background sweeper that tries it at that very moment skip one round.
// Safe for concurrent use.
func (s *Store) Stat() (Info, error) {
	if s.closed.Load() {
		return Info{}, opErr("stat", ErrClosed)
	}
	info := Info{Layout: s.layout.String(), FormatVersion: s.version, Opens: -1}
	release, err := s.fs.Lock(context.Background(), s.locks.sweepPath(), true)
	switch {
	case errors.Is(err, errLockBusy):
		info.Sweeping = true
	case err != nil:
		return info, opErr("stat", err)
	default:
		_ = release() // error deliberately ignored: closing the fd drops the lock
	}
	if s.storeLock != nil {
		if info.Opens, err = s.storeLock.OtherStores(); err != nil {
			return info, opErr("stat", err)
		}
	}
	return info, nil
}

// ReshardProgress is reported by Reshard after each step.
type ReshardProgress struct {
	Step  string // "start", "move", "cleanup", "switch" or "done"
	Done  int    // records moved so far, in this run
	Total int    // records to move, known after "start"
}
