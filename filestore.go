// Package filestore is a session store on a local directory that stays
// correct when many goroutines and many processes on one host share it.
//
// Every method of a Store is safe for concurrent use by multiple goroutines,
// and any number of processes on the same machine may open the same
// directory at once: preforked workers, a blue/green pair, an admin CLI.
// Writes are atomic (temp file, fsync, rename, directory fsync), so a reader
// sees the old record or the new one and never a torn one, and takes no
// lock. Writers, deleters, read-modify-write updates and the expiry sweeper
// exclude each other through advisory locks on separate lock files plus an
// in-process mutex.
//
// The guarantee holds for processes on a single host using a local
// filesystem. It does NOT hold on NFS, SMB or other network filesystems,
// where advisory locks and rename atomicity vary, nor on Windows, where the
// store is not supported. Open refuses a directory on a network filesystem
// with ErrNetworkFS unless Options.AllowNetworkFS is set.
//
// # Basics
//
// Open a directory with Open, then Load, Save, Delete and Update records by
// session id. A Record's Expiry is stored in the record; an expired record
// reads as ErrNotFound and a background sweeper, one process at a time,
// removes it. ForEach visits every live record.
//
// Session ids are bearer secrets and attacker-controlled input, so they
// never reach a path: each record file is named by the lowercase hex SHA-256
// of its id, in a tree of shard directories whose shape is fixed when the
// store is created and recorded in its root. No error or log line from this
// package contains a raw id.
//
// # Errors
//
// Errors are wrapped with the failing operation; test them with errors.Is
// against the sentinels ErrNotFound, ErrCorrupt, ErrInvalidID, ErrTooLarge,
// ErrClosed, ErrNotStore, ErrUnsafeRoot, ErrNetworkFS, ErrLayout,
// ErrInvalidOption, ErrResharding and ErrInUse.
// Errors from the operating system are wrapped unchanged, so
// errors.Is(err, syscall.ENOSPC) and errors.As(err, new(*fs.PathError))
// work; their paths hold hashed names only. A context that ends while a method waits for a lock returns the
// context's error.
//
// # Caveats
//
// Byte slices: Load returns Data the caller owns, and Save does not keep
// data after it returns. Expiry is wall-clock time compared with the local
// clock of whichever process reads: keep hosts' clocks sane. A record
// file's modification time is set to its expiry, a hint that lets the
// sweeper skip live records without reading them; tools that keep or reset
// file times are harmless, since the hint is never trusted to delete. The sweeper
// skips records it cannot decode (it logs them) rather than deleting or
// moving them: a corrupt file is evidence, and removing it is the operator's
// call.
//
// # Operators
//
// Scan, Inspect, DeleteKey, Repair, Sweep, Stat and Reshard are for tools
// that maintain a store, such as the filestore command (cmd/filestore):
// they report every file with its state, move corrupt records into a
// quarantine directory, and move a store to another layout. Every open
// Store holds a shared lock on the store until Close, which lets Stat count
// them and lets Reshard refuse to run under them.
package filestore

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Errors returned by Store methods, wrapped with context. Test for them with
// errors.Is.
var (
	// ErrNotFound is returned by Load when there is no live record for the
	// id: it never existed, was deleted, or has expired. It also matches
	// fs.ErrNotExist.
	ErrNotFound error = notFoundError{}
	// ErrCorrupt is returned when the file at a record's path is not a
	// readable record: bad header, checksum mismatch, bad compressed data,
	// a record stored under the wrong id, a file larger than any record
	// this store accepts (it matches ErrTooLarge too), or something this
	// store did not write (a symlink, FIFO, directory, hard-linked or
	// foreign-owned file). The file is left as it is.
	ErrCorrupt = errors.New("filestore: corrupt record")
	// ErrInvalidID is returned for an empty id or one longer than
	// MaxIDLength bytes.
	ErrInvalidID = errors.New("filestore: invalid session id")
	// ErrTooLarge is returned by Save and Update for data longer than
	// Options.MaxRecordSize, and by reads of a file above the largest
	// record that size allows, which are also ErrCorrupt.
	ErrTooLarge = errors.New("filestore: record too large")
	// ErrClosed is returned by every method called after Close.
	ErrClosed = errors.New("filestore: store is closed")
	// ErrNotStore is returned by Open for a non-empty directory that holds
	// no filestore marker, so that a mistyped path is never swept, and for
	// a marker this version cannot read.
	ErrNotStore = errors.New("filestore: directory is not a filestore")
	// ErrUnsafeRoot is returned by Open for a root directory that is a
	// symlink, not a directory, writable by other users, or owned by
	// another user.
	ErrUnsafeRoot = errors.New("filestore: unsafe store directory")
	// ErrInvalidOption is returned by Open for an Options field out of its
	// range, such as a negative MaxRecordSize.
	ErrInvalidOption = errors.New("filestore: invalid option")
	// ErrLayout is returned by Open for a malformed Options.Layout, or one
	// that differs from the layout recorded in an existing store.
	ErrLayout = errors.New("filestore: bad shard layout")
)

// opError names the operation that failed. It keeps one "filestore: "
// prefix however deep the wrapping, and unwraps to the cause.
type opError struct {
	op  string
	err error
}

func opErr(op string, err error) error { return &opError{op: op, err: err} }

func (e *opError) Error() string {
	msg := strings.TrimPrefix(e.err.Error(), "filestore: ")
	return "filestore: " + e.op + ": " + strings.ReplaceAll(msg, ": filestore: ", ": ")
}

func (e *opError) Unwrap() error { return e.err }

// notFoundError is ErrNotFound's type: it also matches fs.ErrNotExist, so
// callers that treat a store like a filesystem need no special case.
type notFoundError struct{}

func (notFoundError) Error() string        { return "filestore: session not found" }
func (notFoundError) Is(target error) bool { return target == fs.ErrNotExist }

// Limits and defaults.
const (
	// MaxIDLength is the longest session id accepted, in bytes.
	MaxIDLength = 1024
	// DefaultMaxRecordSize is the default Options.MaxRecordSize: 1 MiB.
	DefaultMaxRecordSize = 1 << 20
	// DefaultSweepInterval is the default Options.SweepInterval.
	DefaultSweepInterval = time.Minute
	// DefaultLayout is the shard layout of new stores when
	// Options.Layout is empty: one level of 256 directories. See
	// bench/RESULTS.md for the measurements behind it.
	DefaultLayout = "1x2"

	// maxMaxRecordSize is the largest MaxRecordSize accepted: the record
	// format stores lengths in 32 bits, and the zstd decoder's memory is
	// capped here.
	maxMaxRecordSize = 64 << 20
	// staleTempAge is how old a temp file must be before the sweeper
	// removes it. The sweeper holds the record's lock when it does, so no
	// live writer can own it; the grace period is a second line of defence.
	staleTempAge = time.Minute
)

// Options configures Open. A nil *Options means all defaults; each field's
// zero value is its default.
type Options struct {
	// NoSync skips the fsync of record files and of directories (the
	// store's creation is synced regardless). While the machine stays up
	// records stay atomic: readers never see a torn record. After a power
	// failure or kernel crash, writes and deletes acknowledged shortly
	// before it may be lost, a deleted session may come back, and a record
	// written shortly before it may read as ErrCorrupt. A process crash
	// loses nothing either way.
	NoSync bool

	// Compress zstd-compresses a record's payload when that makes its file
	// take fewer blocks of the filesystem (statfs's block size, 4 KiB on
	// ext4, XFS and tmpfs): a file occupies whole blocks, so compressing a
	// record that fits one block saves no disk and costs every Load a
	// decompression. In practice it pays for payloads of several KiB that
	// compress well. Reads accept compressed and plain records whatever it
	// is set to, so it can be changed at any time and may differ between
	// processes.
	Compress bool

	// SweepInterval is the time between expiry sweeps by the background
	// sweeper. Zero means DefaultSweepInterval; a negative value starts no
	// sweeper (DeleteExpired still works). Of the processes sharing a
	// store, one sweeps at a time and the others skip that round.
	SweepInterval time.Duration

	// Layout is the shard layout of a new store: "flat", or "LxW" for L
	// levels of directories named by W hex digits of the record hash
	// ("1x2" is 256 directories, "1x3" 4,096, "2x2" 65,536). Empty means
	// DefaultLayout for a new store and the recorded layout for an
	// existing one; a non-empty value that differs from the recorded
	// layout makes Open fail with ErrLayout. With "flat" and "1x2" (and
	// "1x1", "2x1") a Store keeps its shard directories open and names
	// records relative to them; with more directories than 256 it names
	// them by path, which is slower (bench/RESULTS.md).
	Layout string

	// MaxRecordSize caps the length of a record's data, before
	// compression. Zero means DefaultMaxRecordSize; the largest accepted
	// value is 64 MiB.
	MaxRecordSize int

	// CacheBytes is how many bytes of decoded records a Store keeps in
	// memory to answer Load without reading the file; 0 means no cache.
	// A cached record is served only while a counter in a table shared by
	// every process of the store (see Load) says that no process has
	// written it since, so the cache is never stale across processes.
	CacheBytes int64

	// NoCreate makes Open fail with ErrNotStore rather than create a store
	// in a missing or empty directory: for tools that inspect a store.
	NoCreate bool

	// AllowNetworkFS lets Open use a directory on a network filesystem
	// (NFS, SMB/CIFS, Ceph, GlusterFS, Lustre, 9p, AFS, ...), which it
	// otherwise refuses with ErrNetworkFS. You own the consequences: the
	// clients of such a filesystem do not see one another's locks and
	// renames reliably, so writes from different hosts can be lost or
	// interleaved, and the read cache is off. Open logs one warning. A
	// FUSE filesystem not known to be a network one opens without it,
	// with one warning.
	AllowNetworkFS bool

	// Logger receives what the background sweeper cannot return: I/O
	// errors and corrupt records it skipped. Nil discards them. Log lines
	// name records by hashed path, never by id.
	Logger *slog.Logger
}

// Record is one session: its id, its data and when it expires.
type Record struct {
	// ID is the session id.
	ID string
	// Data is the session's payload, opaque to the store.
	Data []byte
	// Expiry is when the record stops being live. The zero Time means the
	// record never expires.
	Expiry time.Time
}

// Store is a session store rooted at one directory. Create it with Open.
//
// A Store is safe for concurrent use by multiple goroutines, and any number
// of processes on the same host may have the same directory open.
type Store struct {
	root, data string
	opts       Options
	layout     layout
	locks      *locker
	dirs       *dirCache // open shard directories (flat and 1x2 layouts)
	fs         fsys
	log        *slog.Logger
	fixModes   bool // the umask trims mode bits; chmod what we create
	uid        int  // the effective uid at Open: whose files are ours
	// compressBlock is the filesystem block size when Compress is set, and
	// 0 when it is not: a record is compressed when that saves a block.
	compressBlock int
	table         *counterTable // shared change counters (cache.go); nil if unmapped
	version       int           // the marker's format version
	storeLock     storeLocker   // the store lock (storelock.go); nil where there is none
	netFS         string        // the network filesystem AllowNetworkFS let Open use, or ""
	cache         *readCache    // nil without CacheBytes

	closed    atomic.Bool
	closeOnce sync.Once
	life      context.Context // ends at Close
	stop      context.CancelFunc
	sweeping  sync.WaitGroup
	watchMu   sync.Mutex     // orders Watch's start with Close
	watching  sync.WaitGroup // Watch goroutines

	// Test hooks, set only by tests in this package before use.
	now      func() time.Time // the clock for expiry
	mapTable func(path string, size int) ([]byte, func([]byte) error, error)
	hook     func(point string)
	mutant   syncReason // a kind of fsync to skip, to test the tests
}

// Open opens the store in dir, creating dir and the store if dir does not
// exist or is empty. With nil opts it uses the defaults.
//
// Open refuses (with ErrNotStore) a non-empty directory that holds no store,
// and (with ErrUnsafeRoot) a directory that is a symlink, writable by other
// users or owned by another user. "Another user" is anyone but the
// effective uid at the time of the call, which the Store then takes as the
// owner of its records: a server that drops privileges should open its
// store afterwards. A store's shard layout is fixed when it is created; a
// conflicting opts.Layout is ErrLayout. A directory on a network
// filesystem is ErrNetworkFS unless opts.AllowNetworkFS is set. Unless
// opts.SweepInterval is negative, Open starts a sweeper goroutine that runs
// until Close.
//
// A Store keeps open each lock file it has locked, at most one descriptor
// per lock stripe (256), and, with the "flat" and "1x2" layouts, each shard
// directory it has used, at most 256 more, until Close; budget for them in
// RLIMIT_NOFILE when a process opens many stores.
func Open(dir string, opts *Options) (*Store, error) {
	return open(dir, opts, osFS{})
}

func open(dir string, opts *Options, fsys fsys) (*Store, error) {
	return openStore(dir, opts, fsys, false)
}

// openStore is Open. With reshard set it takes the store lock exclusively,
// accepts a store whose reshard is unfinished, and starts no sweeper: it
// opens the store for Reshard.
func openStore(dir string, opts *Options, fsys fsys, reshard bool) (*Store, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	switch {
	case o.MaxRecordSize == 0:
		o.MaxRecordSize = DefaultMaxRecordSize
	case o.MaxRecordSize < 0 || o.MaxRecordSize > maxMaxRecordSize:
		return nil, opErr("open", fmt.Errorf("%w: MaxRecordSize %d out of range [1, %d]", ErrInvalidOption, o.MaxRecordSize, maxMaxRecordSize))
	}
	if o.SweepInterval == 0 {
		o.SweepInterval = DefaultSweepInterval
	}
	if o.CacheBytes < 0 {
		return nil, opErr("open", fmt.Errorf("%w: CacheBytes %d is negative", ErrInvalidOption, o.CacheBytes))
	}
	var want *layout
	if o.Layout != "" {
		l, err := parseLayout(o.Layout)
		if err != nil {
			return nil, opErr("open", err)
		}
		want = &l
	}
	root, err := filepath.Abs(dir)
	if err != nil {
		return nil, opErr("open", err)
	}
	s := &Store{
		root:     root,
		data:     filepath.Join(root, dataDir),
		opts:     o,
		fs:       fsys,
		log:      o.Logger,
		fixModes: umaskTrims(),
		// Read now, not at package init: a server that starts as root and
		// drops privileges before it opens the store writes its records
		// as the uid it runs as then.
		uid:      os.Geteuid(),
		now:      time.Now,
		mapTable: mapFile,
	}
	if h := testOpenHook; h != nil {
		h(s)
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	// Creating a store is durable even with NoSync, which gives up only
	// recent writes: a marker lost or torn by a power failure would leave
	// a directory that Open refuses for good. It happens once per store.
	s.opts.NoSync = false
	if err := s.checkFilesystem(); err != nil {
		return nil, opErr("open", err)
	}
	m, err := s.openRoot(want)
	if err != nil {
		return nil, opErr("open", err)
	}
	if err := s.mkdirIn(root, filepath.Join(root, locksDir)); err != nil {
		return nil, opErr("open", err)
	}
	s.locks = newLocker(fsys, filepath.Join(root, locksDir), m.Stripes, m.Version, s.fixModes)
	if err := s.lockStore(reshard); err != nil {
		return nil, opErr("open", err)
	}
	// Read again under the store lock: a reshard may have finished, or
	// begun and died, since.
	if m, err = readMarker(fsys, root); err != nil {
		s.unlockStore()
		return nil, opErr("open", err)
	}
	if m.Reshard != "" && !reshard {
		s.unlockStore()
		return nil, opErr("open", fmt.Errorf("%w: a reshard of %s to %q did not finish; finish it with: filestore reshard %s --layout %s", ErrResharding, root, m.Reshard, root, m.Reshard))
	}
	s.version = m.Version
	s.layout, _ = parseLayout(m.Layout) // validated by readMarker
	if want != nil && *want != s.layout && !reshard {
		s.unlockStore()
		return nil, opErr("open", fmt.Errorf("%w: store was created with %q, options ask for %q", ErrLayout, s.layout, *want))
	}
	if !reshard || m.Reshard == "" {
		if err := s.mkdirIn(root, s.data); err != nil {
			s.unlockStore()
			return nil, opErr("open", err)
		}
	}
	if o.Compress {
		s.compressBlock = fsBlockSize(s.data)
	}
	s.dirs = newDirCache(fsys, s.layout)
	if err := s.locks.ensure(s.locks.sweepPath()); err != nil {
		s.unlockStore()
		return nil, opErr("open", err)
	}
	if !reshard {
		s.openCache() // creating the counter table is synced too
	}
	s.opts.NoSync = o.NoSync

	ctx, cancel := context.WithCancel(context.Background())
	s.life, s.stop = ctx, cancel
	if o.SweepInterval > 0 && !reshard {
		s.sweeping.Add(1)
		go s.sweepLoop(ctx, o.SweepInterval)
	}
	return s, nil
}

// openRoot checks the root directory, creating it or the store in it if
// needed, and returns the store's marker.
func (s *Store) openRoot(want *layout) (marker, error) {
	fi, err := s.fs.Lstat(s.root)
	if errors.Is(err, fs.ErrNotExist) && s.opts.NoCreate {
		return marker{}, fmt.Errorf("%w: %s does not exist", ErrNotStore, s.root)
	}
	if errors.Is(err, fs.ErrNotExist) {
		if err := s.fs.MkdirAll(filepath.Dir(s.root), 0o755); err != nil {
			return marker{}, err
		}
		if err := s.mkdirIn(filepath.Dir(s.root), s.root); err != nil {
			return marker{}, err
		}
		fi, err = s.fs.Lstat(s.root)
	}
	if err != nil {
		return marker{}, err
	}
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		return marker{}, fmt.Errorf("%w: %s is a symlink", ErrUnsafeRoot, s.root)
	case !fi.IsDir():
		return marker{}, fmt.Errorf("%w: %s is not a directory", ErrUnsafeRoot, s.root)
	case fi.Mode().Perm()&0o002 != 0:
		return marker{}, fmt.Errorf("%w: %s is writable by other users (mode %v)", ErrUnsafeRoot, s.root, fi.Mode())
	}
	// Whoever owns the root can swap its contents under us.
	if fi.sys && fi.uid != s.uid {
		return marker{}, fmt.Errorf("%w: %s is owned by uid %d, not %d", ErrUnsafeRoot, s.root, fi.uid, s.uid)
	}

	m, err := readMarker(s.fs, s.root)
	if !errors.Is(err, fs.ErrNotExist) {
		return m, err
	}
	if s.opts.NoCreate {
		return m, fmt.Errorf("%w: %s holds no store (no %s)", ErrNotStore, s.root, markerName)
	}
	empty, err := isEmptyRoot(s.fs, s.root)
	if err != nil {
		return m, err
	}
	if !empty {
		// Another process may have created the store just now.
		if m, err := readMarker(s.fs, s.root); !errors.Is(err, fs.ErrNotExist) {
			return m, err
		}
		return m, fmt.Errorf("%w: %s is not empty and has no %s", ErrNotStore, s.root, markerName)
	}
	l, _ := parseLayout(DefaultLayout)
	if want != nil {
		l = *want
	}
	return s.createMarker(marker{Format: "filestore", Version: formatVersion, Layout: l.String(), Stripes: defaultStripes})
}

// Dir returns the store's root directory, as an absolute path. Like
// Layout and MaxRecordSize it never blocks, and works after Close.
func (s *Store) Dir() string { return s.root }

// MaxRecordSize returns the largest record payload Save accepts, in bytes:
// Options.MaxRecordSize, or its default.
func (s *Store) MaxRecordSize() int { return s.opts.MaxRecordSize }

// Layout returns the store's shard layout, such as "1x2".
func (s *Store) Layout() string { return s.layout.String() }

// ref locates one record: the hash of its id, its shard and its lock.
type ref struct {
	sum    [32]byte
	hex    string
	data   string // the store's data directory
	layout layout
	shard  int // the shard directory's number, layout.leafOf
	lk     recordLock
}

// dirPath is the path of the record's shard directory. It is built when
// asked for: a Load through a cached shard directory names the record by
// hex alone.
func (r ref) dirPath() string {
	d, _ := r.layout.recordPath(r.data, r.hex)
	return d
}

// path is the record's path.
func (r ref) path() string {
	_, p := r.layout.recordPath(r.data, r.hex)
	return p
}

// refOf validates id and locates its record.
func (s *Store) refOf(id string) (ref, error) {
	if len(id) == 0 || len(id) > MaxIDLength {
		return ref{}, fmt.Errorf("%w: length %d not in [1, %d]", ErrInvalidID, len(id), MaxIDLength)
	}
	sum, hex := hashID(id)
	return s.refAt(sum, hex), nil
}

// refAt locates the record whose hash is sum, hex in hex.
func (s *Store) refAt(sum [32]byte, hex string) ref {
	return ref{sum: sum, hex: hex, data: s.data, layout: s.layout, shard: s.layout.leafOf(sum), lk: s.locks.of(sum)}
}

// begin checks that the store is open and the context live, and locates id.
func (s *Store) begin(ctx context.Context, id string) (ref, error) {
	if s.closed.Load() {
		return ref{}, ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return ref{}, err
	}
	return s.refOf(id)
}

// Load returns the live record for id. It returns an error matching
// ErrNotFound if there is none or it has expired, and ErrCorrupt if the file
// at its path is not a valid record for id.
//
// Load takes no lock and never waits: a concurrent Save or Update is seen
// either entirely or not at all. It does not modify any file. The returned
// Data is a fresh slice owned by the caller.
//
// With Options.CacheBytes, Load answers from memory while the record's
// change counter, which every process's writers bump around each rename or
// unlink, still holds the value it had when the record was read: one
// atomic load and a copy. Once a Save, Update or Delete in any process has
// returned, no Load begun after it returns the old record.
func (s *Store) Load(ctx context.Context, id string) (Record, error) {
	var (
		version   uint64
		cacheable bool
		r         ref
		err       error
	)
	if s.cache != nil && len(id) > 0 && len(id) <= MaxIDLength && !s.closed.Load() && ctx.Err() == nil {
		// The read cache (cache.go): an entry stored at the record's
		// current version is the record. A hit needs only the hash; a
		// miss locates the record from it, as begin would.
		sum := sha256.Sum256([]byte(id))
		version, cacheable = s.table.version(sum)
		if cacheable {
			if data, exp, ok := s.cache.get(sum, id, version); ok {
				if expired(exp, s.now()) {
					return Record{}, opErr("load", ErrNotFound)
				}
				return Record{ID: id, Data: data, Expiry: expiryTime(exp)}, nil
			}
		}
		r = s.refAt(sum, hexOf(sum))
	} else if r, err = s.begin(ctx, id); err != nil {
		return Record{}, opErr("load", err)
	}
	// Cache what this Load reads only if no writer holds the record now;
	// see the protocol in cache.go for why a crashed writer needs this.
	cacheable = cacheable && !s.locks.busy(r.lk)
	d, err := s.readRecord(r, id)
	if err != nil {
		return Record{}, opErr("load", err)
	}
	if cacheable {
		if v, ok := s.table.version(r.sum); ok && v == version {
			s.cache.put(r.sum, id, d.data, d.expiry, version)
		}
	}
	if expired(d.expiry, s.now()) {
		return Record{}, opErr("load", ErrNotFound)
	}
	return Record{ID: id, Data: d.data, Expiry: expiryTime(d.expiry)}, nil
}

// readRecord reads and decodes r's record, through its shard directory's
// cached descriptor where there is one, and checks that it belongs there:
// that it holds id. A record copied or moved to another record's path is
// ErrCorrupt, like any other record that is not what this store wrote. A
// missing file is ErrNotFound. The returned data is owned by the caller.
func (s *Store) readRecord(r ref, id string) (decoded, error) {
	var f file
	_, use, err := s.inShard(r, func(d dir) (err error) {
		f, err = openRecord(d, r.hex)
		return err
	})
	use.release() // an open file needs no open directory
	if err != nil {
		return decoded{}, recordOpenErr(err)
	}
	defer f.Close()
	return s.decodeFile(f, id)
}

// readIn is readRecord of the record file name in the walked directory d,
// for a walk, which knows only the file name: the record must hold an id
// whose hash is that name.
func (s *Store) readIn(d dir, name string) (decoded, error) {
	f, err := openRecord(d, name)
	if err != nil {
		return decoded{}, recordOpenErr(err)
	}
	defer f.Close()
	return s.decodeFile(f, "")
}

// openRecord opens the record file name in d for reading, with O_NOATIME
// where the system has it. Every write sets a record's modification time
// to its expiry, in the future, and relatime updates the access time of
// any file read whose access time is older than its modification time: so
// without O_NOATIME every Load of a live session would dirty its inode, a
// journalled metadata write on a disk. The kernel allows O_NOATIME only on
// a file the process owns (or with CAP_FOWNER), so a record file of another
// owner, which decodeFile would refuse as corrupt, fails here with EPERM
// instead. It is not retried without the flag: an EPERM for any other
// reason must not be hidden.
func openRecord(d dir, name string) (file, error) {
	return d.Open(name, recordReadFlags, 0)
}

// recordReadFlags opens a record file for reading: never through a
// planted symlink, never blocking on a planted FIFO, and leaving its
// access time alone.
const recordReadFlags = os.O_RDONLY | noFollow | noBlock | noATime

// recordOpenErr classifies an error opening a record file for reading.
func recordOpenErr(err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return ErrNotFound
	case errors.Is(err, syscall.ELOOP) || errors.Is(err, syscall.ENXIO):
		// A symlink (ELOOP) or a socket (ENXIO) planted at the record path.
		return fmt.Errorf("%w: %w", ErrCorrupt, err)
	default:
		// EACCES, EMFILE, EIO...: the record may be fine, and a caller
		// must not treat it as corrupt (and delete it).
		return err
	}
}

// decodeFile reads and decodes the open record file f and checks it as
// readRecord and readIn describe. f's name is the record's path, asked for only to name it
// in an error.
func (s *Store) decodeFile(f file, id string) (decoded, error) {
	fi, err := f.Stat()
	if err != nil {
		return decoded{}, err
	}
	if err := checkRecordFile(fi, s.uid); err != nil {
		return decoded{}, fmt.Errorf("%s: %w", f.Name(), err)
	}
	limit := int64(headerSize+MaxIDLength+trailerSize) + int64(s.opts.MaxRecordSize) + 64
	if fi.Size() > limit {
		return decoded{}, fmt.Errorf("%s: %w: %w: file of %d bytes", f.Name(), ErrCorrupt, ErrTooLarge, fi.Size())
	}
	// Records are never written in place (every write renames a new
	// inode over the name), so the size fstat reported is the size to
	// read, in one read(2) for a record of ordinary size. A file that is
	// shorter than that fails its length check as corrupt.
	b := make([]byte, fi.Size())
	n, err := io.ReadFull(f, b)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return decoded{}, err
	}
	d, err := decodeRecordOf(b[:n], s.opts.MaxRecordSize, id)
	if err != nil {
		return decoded{}, fmt.Errorf("%s: %w", f.Name(), err)
	}
	misplaced := d.id != id
	if id == "" {
		_, h := hashID(d.id)
		misplaced = h != fi.Name()
	}
	if misplaced {
		return decoded{}, fmt.Errorf("%s: %w: record holds another id", f.Name(), ErrCorrupt)
	}
	return d, nil
}

// checkRecordFile refuses anything at a record path that a store running
// as uid did not write: a non-regular file, a file with other hard links
// (its content can be changed through another name) or a file owned by
// another user. Where the system gives no link count or owner (fi.sys is
// unset), only the type is checked.
func checkRecordFile(fi fileStat, uid int) error {
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%w: not a regular file (%v)", ErrCorrupt, fi.Mode().Type())
	}
	if !fi.sys {
		return nil
	}
	// Nlink 0 is an old version a concurrent rename replaced after we
	// opened it: reading it is the "old record" half of the guarantee.
	if fi.nlink > 1 {
		return fmt.Errorf("%w: %d hard links", ErrCorrupt, fi.nlink)
	}
	if fi.uid != uid {
		return fmt.Errorf("%w: owned by uid %d, not %d", ErrCorrupt, fi.uid, uid)
	}
	return nil
}

// Save stores data under id, replacing any record there, to expire at
// expiry (the zero Time for never). It returns ErrInvalidID for a bad id
// and ErrTooLarge for data over Options.MaxRecordSize.
//
// Save waits for id's lock, honouring ctx, and holds it while it writes and
// (unless NoSync) fsyncs. It does not keep data after it returns. When Save
// returns nil the record is durable, unless NoSync is set.
func (s *Store) Save(ctx context.Context, id string, data []byte, expiry time.Time) error {
	r, err := s.begin(ctx, id)
	if err != nil {
		return opErr("save", err)
	}
	if len(data) > s.opts.MaxRecordSize {
		return opErr("save", fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(data), s.opts.MaxRecordSize))
	}
	// Encode (and compress) before taking the lock, to hold it shorter.
	exp := expiryNanos(expiry)
	b := encodeRecordIn(id, data, exp, rand.Uint64(), s.compressBlock)
	held, err := s.locks.lock(ctx, r.lk)
	if err != nil {
		return opErr("save", err)
	}
	defer held.unlock()
	if err := s.replaceLocked(r, b, exp); err != nil {
		return opErr("save", err)
	}
	return nil
}

// Delete removes the record for id. Deleting a missing record is not an
// error. When Delete returns nil the removal is durable (unless NoSync), so
// a logged-out session cannot come back after a crash.
//
// Delete waits for id's lock, honouring ctx.
func (s *Store) Delete(ctx context.Context, id string) error {
	r, err := s.begin(ctx, id)
	if err != nil {
		return opErr("delete", err)
	}
	return s.deleteRef(ctx, r)
}

// deleteRef is Delete of the record r, once located.
func (s *Store) deleteRef(ctx context.Context, r ref) error {
	held, err := s.locks.lock(ctx, r.lk)
	if err != nil {
		return opErr("delete", err)
	}
	defer held.unlock()
	if _, err := s.removeLocked(r); err != nil {
		return opErr("delete", err)
	}
	return nil
}

// Update runs a read-modify-write of id's record under id's exclusive lock,
// which excludes Save, Delete, other Updates and the sweeper on id in every
// process sharing the store.
//
// fn receives a copy of the live record, or nil if there is none or it has
// expired. It returns the record to store (its ID must be empty or id), nil
// to delete the record, or an error to change nothing; that error is
// returned by Update unwrapped. If the current file is corrupt, Update
// returns ErrCorrupt without calling fn (Delete removes such a record).
//
// The returned record is stored as it is, Expiry included, and a zero
// Expiry means "never expires". To change only the data, change cur and
// return it, which keeps its expiry:
//
//	cur.Data = next(cur.Data)
//	return cur, nil
//
// A new &Record{Data: ...} without an Expiry makes the session immortal.
//
// Update waits for the lock honouring ctx, then holds it while fn runs and
// while the result is written: keep fn short. fn may call any Store method
// on any other id (on Linux, even while another process's fn does the
// same; elsewhere two processes whose fns write records of each other's
// lock stripes can deadlock). A method on the same id called from fn waits
// for fn, which deadlocks.
func (s *Store) Update(ctx context.Context, id string, fn func(cur *Record) (*Record, error)) error {
	r, err := s.begin(ctx, id)
	if err != nil {
		return opErr("update", err)
	}
	held, err := s.locks.lock(ctx, r.lk)
	if err != nil {
		return opErr("update", err)
	}
	defer held.unlock()

	var cur *Record
	d, err := s.readRecord(r, id)
	switch {
	case err == nil && !expired(d.expiry, s.now()):
		cur = &Record{ID: id, Data: d.data, Expiry: expiryTime(d.expiry)}
	case err == nil, errors.Is(err, ErrNotFound):
		// Expired or missing: fn sees no record.
	default:
		return opErr("update", err)
	}

	next, err := fn(cur)
	if err != nil {
		return err
	}
	if next == nil {
		if _, err := s.removeLocked(r); err != nil {
			return opErr("update", err)
		}
		return nil
	}
	if next.ID != "" && next.ID != id {
		return opErr("update", fmt.Errorf("%w: fn returned a record for another id", ErrInvalidID))
	}
	if len(next.Data) > s.opts.MaxRecordSize {
		return opErr("update", fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(next.Data), s.opts.MaxRecordSize))
	}
	exp := expiryNanos(next.Expiry)
	b := encodeRecordIn(id, next.Data, exp, rand.Uint64(), s.compressBlock)
	if err := s.replaceLocked(r, b, exp); err != nil {
		return opErr("update", err)
	}
	return nil
}

// maxReportedErrors bounds how many per-file errors ForEach collects.
const maxReportedErrors = 16

// Close stops the background sweeper, waiting for a sweep in progress to
// finish, ends every Watch (closing its channel), and closes the lock files and shard directories the store keeps
// open, waiting for any Save, Delete or Update in flight to release its
// record's lock first (so Close must not be called from inside an Update's
// fn); a Load in flight closes the shard directory it uses as it returns.
// Every later call of a Store method, Close included, returns ErrClosed.
// Methods already running when Close is called complete normally.
func (s *Store) Close() error {
	err := ErrClosed
	s.closeOnce.Do(func() {
		// Under watchMu, so that a Watch either sees the store closed or
		// has registered before Close waits for the Watches.
		s.watchMu.Lock()
		s.closed.Store(true)
		s.watchMu.Unlock()
		s.stop()
		s.sweeping.Wait()
		s.watching.Wait()
		s.locks.close()
		s.unlockStore()
		s.dirs.close()
		s.table.retire() // unmapped by the last Load still using it
		err = nil
	})
	if err != nil {
		return opErr("close", err)
	}
	return nil
}
