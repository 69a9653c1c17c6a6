//go:build linux

package filestore

import (
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"
	"unsafe"
)

// fdFile is an open file as a bare descriptor, the file osFS hands out on
// Linux.
//
// *os.File costs a Load or a Save more than it gives. Every os.OpenFile tries
// to register the descriptor with the runtime's netpoller, an epoll_ctl that
// fails for regular files and directories: one syscall in four of a Load,
// three of a Save. Regular files and directories never block in the
// netpoller's sense, so a plain descriptor loses nothing. Directories that
// are walked get an *os.File on their first ReadDir, for its getdents
// buffering; walks are rare and long, so the one extra call there is noise.
//
// An fdFile is not safe for concurrent use; the engine never shares one.
// Unlike *os.File it has no finalizer: the engine closes every file it
// opens, and the hygiene tests check that no descriptor outlives Close.
type fdFile struct {
	fd   int
	name string   // the path it was opened by, or its name in parent
	in   string   // the directory an fdDir opened it in, else ""
	dir  *os.File // owns fd once ReadDir has been called
	info fdInfo   // what Stat returns, kept here to spare an allocation
}

func openFD(name string, flag int, perm fs.FileMode) (file, error) {
	for {
		fd, err := syscall.Open(name, flag|syscall.O_CLOEXEC, uint32(perm.Perm()))
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return nil, &fs.PathError{Op: "open", Path: name, Err: err}
		}
		return &fdFile{fd: fd, name: name}, nil
	}
}

// Name is the file's path. For a file an fdDir opened it is built on
// demand: a Load asks for it only to report an error.
func (f *fdFile) Name() string {
	if f.in != "" {
		return f.in + string(filepath.Separator) + f.name
	}
	return f.name
}

func (f *fdFile) fail(op string, err error) error {
	return &fs.PathError{Op: op, Path: f.Name(), Err: err}
}

func (f *fdFile) Read(p []byte) (int, error) {
	if f.fd < 0 {
		return 0, f.fail("read", os.ErrClosed)
	}
	if len(p) == 0 {
		return 0, nil
	}
	for {
		n, err := syscall.Read(f.fd, p)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return 0, f.fail("read", err)
		}
		if n == 0 {
			return 0, io.EOF
		}
		return n, nil
	}
}

// Write writes all of p, as *os.File does, or returns why it could not.
func (f *fdFile) Write(p []byte) (int, error) {
	if f.fd < 0 {
		return 0, f.fail("write", os.ErrClosed)
	}
	done := 0
	for done < len(p) {
		n, err := syscall.Write(f.fd, p[done:])
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return done, f.fail("write", err)
		}
		if n == 0 {
			return done, f.fail("write", io.ErrShortWrite)
		}
		done += n
	}
	return done, nil
}

func (f *fdFile) Sync() error {
	if f.fd < 0 {
		return f.fail("sync", os.ErrClosed)
	}
	for {
		err := syscall.Fsync(f.fd)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return f.fail("sync", err)
		}
		return nil
	}
}

func (f *fdFile) Chmod(mode fs.FileMode) error {
	if f.fd < 0 {
		return f.fail("chmod", os.ErrClosed)
	}
	if err := syscall.Fchmod(f.fd, uint32(mode.Perm())); err != nil {
		return f.fail("chmod", err)
	}
	return nil
}

func (f *fdFile) Stat() (fs.FileInfo, error) {
	if f.fd < 0 {
		return nil, f.fail("stat", os.ErrClosed)
	}
	// The result lives in f and is overwritten by the next Stat: the
	// engine stats a file once and uses the result at once.
	fi := &f.info
	fi.name = filepath.Base(f.name)
	if err := syscall.Fstat(f.fd, &fi.st); err != nil {
		return nil, f.fail("stat", err)
	}
	return fi, nil
}

func (f *fdFile) ReadDir(n int) ([]fs.DirEntry, error) {
	if f.fd < 0 {
		return nil, f.fail("readdirent", os.ErrClosed)
	}
	if f.dir == nil {
		f.dir = os.NewFile(uintptr(f.fd), f.Name())
	}
	return f.dir.ReadDir(n)
}

// utimeOmit leaves a timestamp unchanged (UTIME_OMIT in utimensat(2)).
const utimeOmit = (1 << 30) - 2

// SetModTime is futimens(2): the modification time only, through the
// descriptor, with no path lookup.
func (f *fdFile) SetModTime(t time.Time) error {
	if f.fd < 0 {
		return f.fail("utimes", os.ErrClosed)
	}
	ts := [2]syscall.Timespec{{Nsec: utimeOmit}, syscall.NsecToTimespec(t.UnixNano())}
	// utimensat(fd, NULL, times, 0) is futimens(fd, times).
	_, _, errno := syscall.Syscall6(syscall.SYS_UTIMENSAT, uintptr(f.fd), 0, uintptr(unsafe.Pointer(&ts[0])), 0, 0, 0)
	if errno != 0 {
		return f.fail("utimes", errno)
	}
	return nil
}

// tempBorn is the earlier of fi's modification and status-change (ctime)
// times: what a temp file's age is counted from. A temp file's
// modification time may hold its record's expiry hint, in the future; its
// ctime, which cannot be set, is then when the writer last touched it.
// Without a Stat_t it is the modification time.
func tempBorn(fi fs.FileInfo) time.Time {
	t := fi.ModTime()
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		if c := time.Unix(st.Ctim.Unix()); c.Before(t) {
			t = c
		}
	}
	return t
}

// Close closes the descriptor. It is not retried on EINTR: on Linux the
// descriptor is gone whatever close(2) returns.
func (f *fdFile) Close() error {
	if f.fd < 0 {
		return f.fail("close", os.ErrClosed)
	}
	fd, dir := f.fd, f.dir
	f.fd, f.dir = -1, nil
	if dir != nil {
		return dir.Close()
	}
	if err := syscall.Close(fd); err != nil {
		return f.fail("close", err)
	}
	return nil
}

// fdInfo is fs.FileInfo over an fstat(2) result. Sys returns the
// *syscall.Stat_t, as the os package's FileInfo does.
type fdInfo struct {
	name string
	st   syscall.Stat_t
}

func (fi *fdInfo) Name() string       { return fi.name }
func (fi *fdInfo) Size() int64        { return fi.st.Size }
func (fi *fdInfo) IsDir() bool        { return fi.Mode().IsDir() }
func (fi *fdInfo) Sys() any           { return &fi.st }
func (fi *fdInfo) ModTime() time.Time { return time.Unix(fi.st.Mtim.Unix()) }

func (fi *fdInfo) Mode() fs.FileMode {
	m := fs.FileMode(fi.st.Mode & 0o777)
	switch fi.st.Mode & syscall.S_IFMT {
	case syscall.S_IFDIR:
		m |= fs.ModeDir
	case syscall.S_IFLNK:
		m |= fs.ModeSymlink
	case syscall.S_IFIFO:
		m |= fs.ModeNamedPipe
	case syscall.S_IFSOCK:
		m |= fs.ModeSocket
	case syscall.S_IFBLK:
		m |= fs.ModeDevice
	case syscall.S_IFCHR:
		m |= fs.ModeDevice | fs.ModeCharDevice
	}
	if fi.st.Mode&syscall.S_ISUID != 0 {
		m |= fs.ModeSetuid
	}
	if fi.st.Mode&syscall.S_ISGID != 0 {
		m |= fs.ModeSetgid
	}
	if fi.st.Mode&syscall.S_ISVTX != 0 {
		m |= fs.ModeSticky
	}
	return m
}
