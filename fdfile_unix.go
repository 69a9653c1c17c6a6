//go:build unix

package filestore

import (
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// fdFile is an open file as a bare descriptor, the file osFS hands out on
// Unix.
//
// *os.File costs a Load or a Save more than it gives. Every os.OpenFile tries
// to register the descriptor with the runtime's netpoller, an epoll_ctl that
// fails for regular files and directories: one syscall in four of a Load,
// three of a Save. Regular files never block in the netpoller's sense, so
// a plain descriptor loses nothing.
//
// An fdFile is not safe for concurrent use; the engine never shares one.
// Unlike *os.File it has no finalizer: the engine closes every file it
// opens, and the hygiene tests check that no descriptor outlives Close.
type fdFile struct {
	fd   int
	name string // the path it was opened by, or its name in its directory
	in   string // the directory an fdDir opened it in, else ""
	at   int    // that directory's descriptor, else unix.AT_FDCWD
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
	var n int
	err := ignoringEINTR(func() (err error) {
		n, err = unix.Read(f.fd, p)
		return err
	})
	if err != nil {
		return 0, f.fail("read", err)
	}
	if n == 0 {
		return 0, io.EOF
	}
	return n, nil
}

// Write writes all of p, as *os.File does, or returns why it could not.
func (f *fdFile) Write(p []byte) (int, error) {
	if f.fd < 0 {
		return 0, f.fail("write", os.ErrClosed)
	}
	done := 0
	for done < len(p) {
		var n int
		err := ignoringEINTR(func() (err error) {
			n, err = unix.Write(f.fd, p[done:])
			return err
		})
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
	if err := ignoringEINTR(func() error { return unix.Fsync(f.fd) }); err != nil {
		return f.fail("sync", err)
	}
	return nil
}

func (f *fdFile) Chmod(mode fs.FileMode) error {
	if f.fd < 0 {
		return f.fail("chmod", os.ErrClosed)
	}
	if err := unix.Fchmod(f.fd, uint32(mode.Perm())); err != nil {
		return f.fail("chmod", err)
	}
	return nil
}

func (f *fdFile) Stat() (fileStat, error) {
	if f.fd < 0 {
		return fileStat{}, f.fail("stat", os.ErrClosed)
	}
	var st unix.Stat_t
	if err := unix.Fstat(f.fd, &st); err != nil {
		return fileStat{}, f.fail("stat", err)
	}
	return statFrom(filepath.Base(f.name), &st), nil
}

// SetModTime is utimensat(2) through the descriptor (futimens) where the
// system takes that, and otherwise of the file's name in the directory it
// was opened in, which file's contract lets it rely on: the engine sets
// the hint on a temp file it holds the record's lock for, before renaming
// it. x/sys offers futimens on no system; Linux takes utimensat with
// AT_EMPTY_PATH since 5.8.
// The access time is set to now, what creating the file gave it, since
// not every system's x/sys has UTIME_OMIT to leave it alone. Nanoseconds
// go to the kernel as they are, and a filesystem with coarser times
// truncates them: the hint is never later than t.
func (f *fdFile) SetModTime(t time.Time) error {
	if f.fd < 0 {
		return f.fail("utimes", os.ErrClosed)
	}
	ts := [2]unix.Timespec{unix.NsecToTimespec(time.Now().UnixNano()), unix.NsecToTimespec(t.UnixNano())}
	if done, err := futimens(f.fd, ts[:]); done {
		if err != nil {
			return f.fail("utimes", err)
		}
		return nil
	}
	if err := unix.UtimesNanoAt(f.at, f.name, ts[:], unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return f.fail("utimes", err)
	}
	return nil
}

// Close closes the descriptor. It is not retried on EINTR: the descriptor
// is gone whatever close(2) returns.
func (f *fdFile) Close() error {
	if f.fd < 0 {
		return f.fail("close", os.ErrClosed)
	}
	fd := f.fd
	f.fd = -1
	if err := unix.Close(fd); err != nil {
		return f.fail("close", err)
	}
	return nil
}
