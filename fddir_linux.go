//go:build linux && (amd64 || arm64)

package filestore

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"unsafe"
)

// atSymlinkNoFollow is AT_SYMLINK_NOFOLLOW, the same on every Linux
// architecture; the syscall package exports it on some only.
const atSymlinkNoFollow = 0x100

// fdDir is osFS's dir on Linux: each name is looked up relative to the
// directory's descriptor, so examining an entry of a shard directory costs
// one path component instead of the whole path from /. On tmpfs that is
// about 0.45 µs of a 1.25 µs lstat, paid for every record a sweep visits.
//
// It is not safe for concurrent use; the engine never shares one.
type fdDir struct {
	fd   int
	path string
	f    *os.File // owns fd once ReadNames has been called
}

// OpenDir opens name with O_DIRECTORY, so a shard name that is not a
// directory fails here, and O_NOFOLLOW, so a symlink planted for it does.
func (osFS) OpenDir(name string) (dir, error) {
	for {
		fd, err := syscall.Open(name, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC|noFollow|noBlock, 0)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return nil, &fs.PathError{Op: "open", Path: name, Err: err}
		}
		return &fdDir{fd: fd, path: name}, nil
	}
}

func (d *fdDir) Path() string { return d.path }

// join is the path of name, for errors and for the files Open returns.
func (d *fdDir) join(name string) string { return d.path + string(filepath.Separator) + name }

func (d *fdDir) fail(op, name string, err error) error {
	return &fs.PathError{Op: op, Path: d.join(name), Err: err}
}

func (d *fdDir) ReadNames(n int) ([]string, error) {
	if d.fd < 0 {
		return nil, &fs.PathError{Op: "readdirent", Path: d.path, Err: os.ErrClosed}
	}
	if d.f == nil {
		d.f = os.NewFile(uintptr(d.fd), d.path)
	}
	return d.f.Readdirnames(n)
}

// Lstat is fstatat(2) with AT_SYMLINK_NOFOLLOW.
func (d *fdDir) Lstat(name string) (fs.FileInfo, error) {
	if d.fd < 0 {
		return nil, d.fail("lstat", name, os.ErrClosed)
	}
	var buf cName
	p, err := buf.of(name)
	if err != nil {
		return nil, d.fail("lstat", name, err)
	}
	fi := &fdInfo{name: name}
	for {
		_, _, errno := syscall.Syscall6(sysFstatat, uintptr(d.fd), uintptr(unsafe.Pointer(p)), uintptr(unsafe.Pointer(&fi.st)), atSymlinkNoFollow, 0, 0)
		if errno == syscall.EINTR {
			continue
		}
		if errno != 0 {
			return nil, d.fail("lstat", name, errno)
		}
		return fi, nil
	}
}

// Open is openat(2); the file it returns is named by its whole path.
func (d *fdDir) Open(name string, flag int, perm fs.FileMode) (file, error) {
	if d.fd < 0 {
		return nil, d.fail("open", name, os.ErrClosed)
	}
	var buf cName
	p, err := buf.of(name)
	if err != nil {
		return nil, d.fail("open", name, err)
	}
	for {
		fd, _, errno := syscall.Syscall6(syscall.SYS_OPENAT, uintptr(d.fd), uintptr(unsafe.Pointer(p)), uintptr(flag|syscall.O_CLOEXEC), uintptr(perm.Perm()), 0, 0)
		if errno == syscall.EINTR {
			continue
		}
		if errno != 0 {
			return nil, d.fail("open", name, errno)
		}
		return &fdFile{fd: int(fd), name: name, in: d.path}, nil
	}
}

// cName holds a name as a C string on the stack, for the names a store
// makes (at most 80 bytes), sparing a Load or a sweep an allocation for
// each system call.
type cName [128]byte

// of returns name NUL-terminated, in c when it fits.
func (c *cName) of(name string) (*byte, error) {
	if len(name) < len(c) && strings.IndexByte(name, 0) < 0 {
		copy(c[:], name)
		c[len(name)] = 0
		return &c[0], nil
	}
	return syscall.BytePtrFromString(name)
}

// Remove is unlinkat(2) without AT_REMOVEDIR: the engine removes files only.
func (d *fdDir) Remove(name string) error {
	if d.fd < 0 {
		return d.fail("remove", name, os.ErrClosed)
	}
	for {
		err := syscall.Unlinkat(d.fd, name)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return d.fail("remove", name, err)
		}
		return nil
	}
}

// Rename is renameat(2) within the directory.
func (d *fdDir) Rename(oldname, newname string) error {
	if d.fd < 0 {
		return d.fail("rename", oldname, os.ErrClosed)
	}
	for {
		err := syscall.Renameat(d.fd, oldname, d.fd, newname)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return &os.LinkError{Op: "rename", Old: d.join(oldname), New: d.join(newname), Err: err}
		}
		return nil
	}
}

// Stat is fstat(2) of the directory: a directory that was removed while
// open reports no links.
func (d *fdDir) Stat() (fs.FileInfo, error) {
	if d.fd < 0 {
		return nil, &fs.PathError{Op: "stat", Path: d.path, Err: os.ErrClosed}
	}
	fi := &fdInfo{name: filepath.Base(d.path)}
	if err := syscall.Fstat(d.fd, &fi.st); err != nil {
		return nil, &fs.PathError{Op: "stat", Path: d.path, Err: err}
	}
	return fi, nil
}

func (d *fdDir) Sync() error {
	if d.fd < 0 {
		return &fs.PathError{Op: "sync", Path: d.path, Err: os.ErrClosed}
	}
	for {
		err := syscall.Fsync(d.fd)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return &fs.PathError{Op: "sync", Path: d.path, Err: err}
		}
		return nil
	}
}

// Close closes the descriptor, through the *os.File if ReadNames made one.
func (d *fdDir) Close() error {
	if d.fd < 0 {
		return &fs.PathError{Op: "close", Path: d.path, Err: os.ErrClosed}
	}
	fd, f := d.fd, d.f
	d.fd, d.f = -1, nil
	if f != nil {
		return f.Close()
	}
	if err := syscall.Close(fd); err != nil {
		return &fs.PathError{Op: "close", Path: d.path, Err: err}
	}
	return nil
}
