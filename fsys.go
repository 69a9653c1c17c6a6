package filestore

import (
	"context"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// fsys is the seam between the engine and the operating system. Every
// filesystem call the engine makes goes through it, so tests can put a fault
// injector or a power-loss simulator in its place. The real implementation,
// osFS, is a thin layer over system calls, the os package and gofrs/flock.
//
// Paths are always absolute paths built by layout.go; they never contain a
// raw session id.
type fsys interface {
	// OpenFile is os.OpenFile.
	OpenFile(name string, flag int, perm fs.FileMode) (file, error)
	// OpenDir opens the directory name to list it and to work on the names
	// in it (see dir).
	OpenDir(name string) (dir, error)
	// Rename is os.Rename.
	Rename(oldpath, newpath string) error
	// Remove is os.Remove.
	Remove(name string) error
	// Mkdir is os.Mkdir.
	Mkdir(name string, perm fs.FileMode) error
	// Chmod is os.Chmod; it fixes modes that the umask trimmed.
	Chmod(name string, mode fs.FileMode) error
	// Lstat is os.Lstat.
	Lstat(name string) (fs.FileInfo, error)
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

// dir is an open directory whose entries the engine works on one by one:
// the leaf shard directories of the sweeper's and ForEach's walks. Its
// methods take a name in the directory, never a path. On Linux osFS
// implements them relative to the directory's descriptor (openat, fstatat,
// unlinkat), so a name costs no lookup of the path above it and a shard
// directory swapped for a symlink mid-walk is not followed; pathDir, used
// elsewhere and by the tests' filesystems, joins the name to the
// directory's path and calls the fsys. A dir is not safe for concurrent
// use.
type dir interface {
	// Path is the directory's path, as given to OpenDir.
	Path() string
	// ReadNames is (*os.File).Readdirnames: names only, which is all a
	// walk needs of a leaf directory, and one allocation an entry fewer
	// than ReadDir.
	ReadNames(n int) ([]string, error)
	// Lstat is os.Lstat of the name in the directory.
	Lstat(name string) (fs.FileInfo, error)
	// Open is fsys.OpenFile of the name in the directory.
	Open(name string, flag int, perm fs.FileMode) (file, error)
	// Remove unlinks the file name from the directory.
	Remove(name string) error
	// Rename renames oldname over newname, both in the directory.
	Rename(oldname, newname string) error
	// Stat is fstat of the directory itself.
	Stat() (fs.FileInfo, error)
	// Sync fsyncs the directory itself.
	Sync() error
	// Close closes the directory.
	Close() error
}

// pathDir is a dir over any fsys: each name is joined to the directory's
// path and handed to the fsys, so a fault-injecting or power-loss fsys sees
// every call as its own. A pathDir made by pathsIn holds no open directory:
// it opens one for Sync, and cannot be listed.
type pathDir struct {
	fs   fsys
	path string
	f    file // the open directory; nil for pathsIn
}

// openPathDir opens name through fsys as a pathDir.
func openPathDir(fsys fsys, name string) (dir, error) {
	f, err := fsys.OpenFile(name, os.O_RDONLY|noFollow|noBlock, 0)
	if err != nil {
		return nil, err
	}
	return &pathDir{fs: fsys, path: name, f: f}, nil
}

// pathsIn is a dir for the names in the directory path that opens nothing
// until it must: what writers use where no descriptor is cached.
func pathsIn(fsys fsys, path string) dir { return &pathDir{fs: fsys, path: path} }

// join is filepath.Join for the names a walk yields: the directory path is
// clean and a name has no separator.
func (d *pathDir) join(name string) string { return d.path + string(filepath.Separator) + name }

func (d *pathDir) Path() string                           { return d.path }
func (d *pathDir) Lstat(name string) (fs.FileInfo, error) { return d.fs.Lstat(d.join(name)) }
func (d *pathDir) Remove(name string) error               { return d.fs.Remove(d.join(name)) }

func (d *pathDir) Rename(oldname, newname string) error {
	return d.fs.Rename(d.join(oldname), d.join(newname))
}

func (d *pathDir) ReadNames(n int) ([]string, error) {
	if d.f == nil {
		return nil, &fs.PathError{Op: "readdirent", Path: d.path, Err: fs.ErrInvalid}
	}
	ents, err := d.f.ReadDir(n)
	names := make([]string, len(ents))
	for i, e := range ents {
		names[i] = e.Name()
	}
	return names, err
}

func (d *pathDir) Open(name string, flag int, perm fs.FileMode) (file, error) {
	return d.fs.OpenFile(d.join(name), flag, perm)
}

func (d *pathDir) Stat() (fs.FileInfo, error) {
	if d.f == nil {
		return d.fs.Lstat(d.path)
	}
	return d.f.Stat()
}

// Sync fsyncs the directory, opening it first if the pathDir holds none.
func (d *pathDir) Sync() error {
	if d.f != nil {
		return d.f.Sync()
	}
	f, err := d.fs.OpenFile(d.path, os.O_RDONLY|noFollow|noBlock, 0)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func (d *pathDir) Close() error {
	if d.f == nil {
		return nil
	}
	return d.f.Close()
}

// file is the part of *os.File the engine uses.
type file interface {
	io.Reader
	io.Writer
	io.Closer
	Sync() error
	Stat() (fs.FileInfo, error)
	ReadDir(n int) ([]fs.DirEntry, error)
	Chmod(mode fs.FileMode) error
	// SetModTime sets the file's modification time, where the engine
	// keeps a record's expiry as a hint for the sweeper (see sweepEntry).
	// An implementation may ignore it: a file without the hint is only
	// examined more closely.
	SetModTime(t time.Time) error
	Name() string
}

// osFS is the real fsys.
type osFS struct{}

// OpenFile opens a bare-descriptor file on Linux (see fdFile) and an
// *os.File elsewhere.
func (osFS) OpenFile(name string, flag int, perm fs.FileMode) (file, error) {
	return openFD(name, flag, perm)
}

// Rename is rename(2) without os.Rename's Lstat of newpath: the os package
// checks that newpath is not a directory, which rename(2) itself reports
// (EISDIR) when the source is a file, as ours always are. That is one
// syscall of a Save.
func (osFS) Rename(oldpath, newpath string) error {
	if err := syscall.Rename(oldpath, newpath); err != nil {
		return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: err}
	}
	return nil
}

func (osFS) Remove(name string) error                  { return os.Remove(name) }
func (osFS) Mkdir(name string, perm fs.FileMode) error { return os.Mkdir(name, perm) }
func (osFS) Chmod(name string, mode fs.FileMode) error { return os.Chmod(name, mode) }
func (osFS) Lstat(name string) (fs.FileInfo, error)    { return os.Lstat(name) }
func (osFS) Link(oldname, newname string) error        { return os.Link(oldname, newname) }

func (osFS) Lock(ctx context.Context, name string, try bool) (func() error, error) {
	return flockFile(ctx, name, try)
}

func (osFS) OpenLock(name string) (lockFile, error) { return openLockFile(name) }
