package filestore

import (
	"context"
	"io"
	"io/fs"
	"os"
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
