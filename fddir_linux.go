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
	// The name as a C string, on the stack for any name a store makes.
	var buf [128]byte
	var p *byte
	if len(name) < len(buf) && strings.IndexByte(name, 0) < 0 {
		copy(buf[:], name)
		p = &buf[0]
	} else {
		var err error
		if p, err = syscall.BytePtrFromString(name); err != nil {
			return nil, d.fail("lstat", name, err)
		}
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
	for {
		fd, err := syscall.Openat(d.fd, name, flag|syscall.O_CLOEXEC, uint32(perm.Perm()))
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return nil, d.fail("open", name, err)
		}
		return &fdFile{fd: fd, name: d.join(name)}, nil
	}
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
