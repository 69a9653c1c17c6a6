//go:build !unix

package filestore

import (
	"io/fs"
	"os"
	"syscall"
	"time"
)

// osFS where there is no Unix: the os package alone. There is no
// O_NOFOLLOW, O_NONBLOCK, link count or owner to check, and no flock for a
// kept-open lock file. filestore is built and tested on Unix; see the
// package documentation.

const (
	noFollow = 0
	noBlock  = 0
)

func (osFS) OpenFile(name string, flag int, perm fs.FileMode) (file, error) {
	f, err := os.OpenFile(name, flag, perm)
	if err != nil {
		// Return a nil interface, not a typed nil.
		return nil, err
	}
	return osFile{f}, nil
}

// OpenDir is a pathDir holding the open directory: each name is joined to
// the directory's path.
func (osFS) OpenDir(name string) (dir, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	if fi, err := f.Stat(); err != nil || !fi.IsDir() {
		_ = f.Close() // error deliberately ignored: already failing
		if err == nil {
			err = &fs.PathError{Op: "open", Path: name, Err: syscall.ENOTDIR}
		}
		return nil, err
	}
	return &pathDir{fs: osFS{}, path: name, h: osDir{f}}, nil
}

func (osFS) Lstat(name string) (fileStat, error) {
	fi, err := os.Lstat(name)
	if err != nil {
		return fileStat{}, err
	}
	return statOf(fi), nil
}

func (osFS) Rename(oldpath, newpath string) error { return os.Rename(oldpath, newpath) }

// statOf is the fileStat of what fs.FileInfo tells: no Unix facts.
func statOf(fi fs.FileInfo) fileStat {
	return fileStat{name: fi.Name(), mode: fi.Mode(), size: fi.Size(), mtime: fi.ModTime()}
}

// osFile is an *os.File as a file.
type osFile struct{ *os.File }

func (f osFile) Stat() (fileStat, error) {
	fi, err := f.File.Stat()
	if err != nil {
		return fileStat{}, err
	}
	return statOf(fi), nil
}

// SetModTime does not set the sweeper's hint: a temp file's age is counted
// from the earlier of its modification and status-change times (tempBorn),
// and without the status-change time a temp file carrying a hint in the
// future would never look stale.
func (osFile) SetModTime(time.Time) error { return nil }

// osDir is an open directory as a pathDir's dirHandle.
type osDir struct{ f *os.File }

func (d osDir) ReadNames(n int) ([]string, error) { return d.f.Readdirnames(n) }
func (d osDir) Sync() error                       { return d.f.Sync() }
func (d osDir) Close() error                      { return d.f.Close() }

func (d osDir) Stat() (fileStat, error) {
	fi, err := d.f.Stat()
	if err != nil {
		return fileStat{}, err
	}
	return statOf(fi), nil
}

// umaskTrims says yes: there is no umask to read, so every mode is set.
func umaskTrims() bool { return true }

// busyLock is the lockFile where flock(2) is not at hand: it always reports
// the lock busy, so every acquisition takes gofrs/flock's path.
type busyLock struct{}

func openLockFile(string) (lockFile, error) { return busyLock{}, nil }

func (busyLock) TryLock() error { return errLockBusy }
func (busyLock) Unlock() error  { return nil }
func (busyLock) Close() error   { return nil }

// fsBlockSize is the common filesystem block size: see sys_unix.go.
func fsBlockSize(string) int { return 4096 }
