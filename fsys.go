package filestore

import (
	"context"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// fsys is the seam between the engine and the operating system. Every
// filesystem call the engine makes goes through it, so tests can put a fault
// injector or a power-loss simulator in its place. The real implementation,
// osFS, is a thin layer over golang.org/x/sys/unix, the os package and
// gofrs/flock (sys_unix.go; sys_other.go off Unix).
//
// Paths are always absolute paths built by layout.go; they never contain a
// raw session id. Errors are the os package's kinds (*fs.PathError,
// *os.LinkError) around the system's errno, so that errors.Is works on
// them and they name the file by its hashed path.
//
// Every method of an fsys is safe for concurrent use.
type fsys interface {
	// OpenFile is os.OpenFile for a file: the engine opens record, temp,
	// marker and lock files with it, and directories only with OpenDir.
	OpenFile(name string, flag int, perm fs.FileMode) (file, error)
	// OpenDir opens the directory name to list it and to work on the
	// names in it (see dir). It fails, without following it, when name is
	// a symlink, and fails when name is not a directory.
	OpenDir(name string) (dir, error)
	// Rename is os.Rename.
	Rename(oldpath, newpath string) error
	// Remove is os.Remove.
	Remove(name string) error
	// Mkdir is os.Mkdir.
	Mkdir(name string, perm fs.FileMode) error
	// MkdirAll is os.MkdirAll. Open uses it for the parents of a new
	// store's root, which are not the store's: it neither syncs them nor
	// fixes their modes.
	MkdirAll(name string, perm fs.FileMode) error
	// Chmod is os.Chmod; it fixes modes that the umask trimmed.
	Chmod(name string, mode fs.FileMode) error
	// Lstat is os.Lstat, reporting what fileStat holds.
	Lstat(name string) (fileStat, error)
	// Link is os.Link. Open uses it to publish the format marker without
	// clobbering one another process published first.
	Link(oldname, newname string) error
	// Lock takes an exclusive advisory lock on the lock file name, creating
	// it if needed. With try set it returns errLockBusy at once instead of
	// waiting; otherwise it waits until ctx is done. The returned func
	// releases the lock and must be called exactly once.
	Lock(ctx context.Context, name string, try bool) (unlock func() error, err error)
	// OpenLock opens the existing lock file name to be locked and unlocked
	// many times through one descriptor (see lockFile).
	OpenLock(name string) (lockFile, error)
	// Statfs tells what filesystem holds name (statfs(2)): Open refuses a
	// network filesystem, and the read cache turns itself off on one.
	Statfs(name string) (fsType, error)
}

// lockFile is a lock file kept open between acquisitions: the uncontended
// path of a stripe lock, which needs no open or close (see locker.lock).
// It is not safe for concurrent use; its stripe's mutex guards it.
type lockFile interface {
	// TryLock takes an exclusive advisory lock without waiting. It returns
	// errLockBusy if another descriptor holds the lock, and errLockStale,
	// not holding it, if the file has been unlinked since it was opened.
	TryLock() error
	// Unlock releases the lock TryLock took.
	Unlock() error
	// Close closes the descriptor, releasing any lock it holds.
	Close() error
}

// dir is an open directory. Its methods take a name in the directory,
// never a path. On Unix osFS implements them relative to the directory's
// descriptor (openat, fstatat, unlinkat, renameat: fdDir), so a name
// costs no lookup of the path above it and a shard directory swapped for a
// symlink after it was opened is not followed; pathDir, for writers that
// hold no descriptor and for the tests' filesystems, joins the name to the
// directory's path and calls the fsys.
//
// The dir cache shares one dir among concurrent Loads, Saves and Deletes,
// so Path, Lstat, Open, Remove, Rename, Stat and Sync must be safe for
// concurrent use. ReadNames need not be: only a walk lists a directory,
// and a walk's dir is its own. Close comes after every other call has
// returned (the dir cache counts uses to make sure of it).
type dir interface {
	// Path is the directory's path, as given to OpenDir.
	Path() string
	// ReadNames is (*os.File).Readdirnames: the names of the next n
	// entries (all of them for n <= 0), without "." and "..", and io.EOF
	// at the end. Names are all a walk needs: the type of an entry it
	// learns by opening or lstatting it, which it must do anyway.
	ReadNames(n int) ([]string, error)
	// Lstat is os.Lstat of the name in the directory.
	Lstat(name string) (fileStat, error)
	// Open is fsys.OpenFile of the name in the directory.
	Open(name string, flag int, perm fs.FileMode) (file, error)
	// Remove unlinks the file name from the directory.
	Remove(name string) error
	// Rename renames oldname over newname, both in the directory.
	Rename(oldname, newname string) error
	// Stat is fstat of the directory itself: after an operator removed
	// the directory, its link count is 0.
	Stat() (fileStat, error)
	// Sync fsyncs the directory itself.
	Sync() error
	// Close closes the directory.
	Close() error
}

// file is an open file: what the engine uses of *os.File. A file is used
// by one goroutine at a time, and not after Close.
type file interface {
	io.Reader
	io.Writer
	io.Closer
	Sync() error
	// Stat is fstat. The fileStat's Name is the file's name in its
	// directory, which a walk compares with the hash of the record's id.
	Stat() (fileStat, error)
	Chmod(mode fs.FileMode) error
	// SetModTime sets the file's modification time, where the engine
	// keeps a record's expiry as a hint for the sweeper (see sweepCheck).
	// It must never set a later time than t: the sweeper trusts a time in
	// the future to mean a live record. The engine calls it before it
	// renames the file and while the file's dir is open, and an
	// implementation may rely on that to name the file in its directory.
	// It may ignore the call: a file without the hint is only examined
	// more closely.
	SetModTime(t time.Time) error
	// Name is the file's path: the name given to fsys.OpenFile, or the
	// dir's Path joined with the name given to dir.Open. It names the
	// file in errors, and the fault injector matches an fsync with a
	// later rename by it.
	Name() string
}

// fileStat is what the engine learns of a file from stat(2). Its methods
// are those of fs.FileInfo that the engine uses.
//
// The link count, owner and status-change time are known only where sys
// is set: osFS sets it on Unix. Elsewhere, and in the in-memory power-loss
// filesystem, the checks that need them (checkRecordFile, tempBorn,
// dirRemoved, openRoot's owner check) let the file pass.
type fileStat struct {
	name  string
	mode  fs.FileMode // the permission bits and the type, of the types that matter
	size  int64
	mtime time.Time

	sys   bool
	nlink uint64
	uid   int
	ctime time.Time
}

func (fi fileStat) Name() string       { return fi.name }
func (fi fileStat) Mode() fs.FileMode  { return fi.mode }
func (fi fileStat) Size() int64        { return fi.size }
func (fi fileStat) ModTime() time.Time { return fi.mtime }
func (fi fileStat) IsDir() bool        { return fi.mode.IsDir() }

// pathDir is a dir that names each file by joining it to the directory's
// path and handing it to the fsys, so that a fault-injecting or power-loss
// fsys sees every call as its own, and a writer with no descriptor at hand
// needs to open none. One made by pathsIn holds no open directory: it
// opens one for Sync, and cannot be listed. The dir of a path-based fsys
// is a pathDir holding the open directory, h.
//
// It is safe for concurrent use as dir requires, if h is.
type pathDir struct {
	fs   fsys
	path string
	h    dirHandle // the open directory; nil for pathsIn
}

// dirHandle is an open directory of a path-based fsys: what a pathDir
// needs of it besides the fsys's path calls.
type dirHandle interface {
	ReadNames(n int) ([]string, error)
	Stat() (fileStat, error)
	Sync() error
	Close() error
}

// pathsIn is a dir for the names in the directory path that opens nothing
// until it must: what writers use where no descriptor is cached.
func pathsIn(fsys fsys, path string) dir { return &pathDir{fs: fsys, path: path} }

// join is filepath.Join for the names a walk yields: the directory path is
// clean and a name has no separator.
func (d *pathDir) join(name string) string { return d.path + string(filepath.Separator) + name }

func (d *pathDir) Path() string                        { return d.path }
func (d *pathDir) Lstat(name string) (fileStat, error) { return d.fs.Lstat(d.join(name)) }
func (d *pathDir) Remove(name string) error            { return d.fs.Remove(d.join(name)) }

func (d *pathDir) Rename(oldname, newname string) error {
	return d.fs.Rename(d.join(oldname), d.join(newname))
}

func (d *pathDir) Open(name string, flag int, perm fs.FileMode) (file, error) {
	return d.fs.OpenFile(d.join(name), flag, perm)
}

func (d *pathDir) ReadNames(n int) ([]string, error) {
	if d.h == nil {
		return nil, &fs.PathError{Op: "readdirent", Path: d.path, Err: fs.ErrInvalid}
	}
	return d.h.ReadNames(n)
}

func (d *pathDir) Stat() (fileStat, error) {
	if d.h == nil {
		return d.fs.Lstat(d.path)
	}
	return d.h.Stat()
}

// Sync fsyncs the directory, opening it first if the pathDir holds none.
func (d *pathDir) Sync() error {
	if d.h != nil {
		return d.h.Sync()
	}
	od, err := d.fs.OpenDir(d.path)
	if err != nil {
		return err
	}
	err = od.Sync()
	if cerr := od.Close(); err == nil {
		err = cerr
	}
	return err
}

func (d *pathDir) Close() error {
	if d.h == nil {
		return nil
	}
	return d.h.Close()
}

// osFS is the real fsys: its methods are in sys_unix.go and sys_other.go,
// but for these, which the os package does the same way everywhere.
type osFS struct{}

func (osFS) Remove(name string) error                     { return os.Remove(name) }
func (osFS) Mkdir(name string, perm fs.FileMode) error    { return os.Mkdir(name, perm) }
func (osFS) MkdirAll(name string, perm fs.FileMode) error { return os.MkdirAll(name, perm) }
func (osFS) Chmod(name string, mode fs.FileMode) error    { return os.Chmod(name, mode) }
func (osFS) Link(oldname, newname string) error           { return os.Link(oldname, newname) }

func (osFS) Lock(ctx context.Context, name string, try bool) (func() error, error) {
	return flockFile(ctx, name, try)
}

func (osFS) OpenLock(name string) (lockFile, error) { return openLockFile(name) }
