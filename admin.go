package filestore

import (
	"context"
	"errors"
	"io/fs"
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

// Scan calls fn for every file and directory under the store's data tree,
// in no particular order, with its state, until fn returns an error, which
// Scan returns. It reads and checks every record (header, checksum, that
// the id hashes to the name and the shard), so it costs a full read of the
// store; it takes no lock and changes nothing. Files written or removed
// during the scan may or may not be reported. Safe for concurrent use; it
// stops with ctx's error when ctx ends.
func (s *Store) Scan(ctx context.Context, fn func(FileInfo) error) error {
	return errors.New("filestore: Scan: not implemented yet")
}

// Inspect reports the record file named key (see Key), and its record
// when it is valid (live or expired). It returns ErrNotFound when there is
// no such file, and ErrInvalidID when key is not a key. It takes no lock.
func (s *Store) Inspect(ctx context.Context, key string) (FileInfo, Record, error) {
	return FileInfo{}, Record{}, errors.New("filestore: Inspect: not implemented yet")
}

// DeleteKey is Delete of the record named key (see Key): for an operator
// who knows a session by its key only. It removes the file whatever it
// holds, even a corrupt one, under the record's lock.
func (s *Store) DeleteKey(ctx context.Context, key string) error {
	return errors.New("filestore: DeleteKey: not implemented yet")
}

// Repair fixes the problem fi (from Scan) reports, and says what it did:
// a corrupt or misplaced record is moved into the quarantine directory in
// the store's root (never deleted, and never served again); a stale temp
// file is removed; a file or directory with bad permission bits gets the
// store's own. It does nothing, and says so, for a file that needs no
// repair or one it will not touch (a foreign file). It takes the record's
// lock for a record or temp file, and checks fi against the file again
// under it, so a record rewritten since the scan is left alone.
func (s *Store) Repair(ctx context.Context, fi FileInfo) (string, error) {
	return "", errors.New("filestore: Repair: not implemented yet")
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

// Sweep runs one sweep now, as DeleteExpired does, calling progress (if not
// nil) after each shard directory with the totals so far, and returns the
// totals. It waits, honouring ctx, while another process sweeps.
func (s *Store) Sweep(ctx context.Context, progress func(SweepStats)) (SweepStats, error) {
	return SweepStats{}, errors.New("filestore: Sweep: not implemented yet")
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

// Stat reports facts about the store that change while it runs. It does
// not block: it probes the sweep lock without waiting.
func (s *Store) Stat() (Info, error) {
	return Info{}, errors.New("filestore: Stat: not implemented yet")
}

// ReshardProgress is reported by Reshard after each step.
type ReshardProgress struct {
	Step  string // "start", "move", "cleanup", "switch" or "done"
	Done  int    // records moved so far, in this run
	Total int    // records to move, known after "start"
}

// Reshard moves the store in dir to layout ("flat" or "LxW"). It needs the
// store to itself: it fails with ErrInUse while any Store has it open, and
// holds it exclusively while it runs, so that Open elsewhere fails with
// ErrResharding. It is crash-safe: killed at any point, running it again
// with the same layout finishes the job, no record lost or duplicated;
// until then Open fails with ErrResharding. progress, if not nil, is
// called after each step. Resharding to the current layout does nothing.
func Reshard(ctx context.Context, dir, layout string, progress func(ReshardProgress)) error {
	return errors.New("filestore: Reshard: not implemented yet")
}
