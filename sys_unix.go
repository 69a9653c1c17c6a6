//go:build unix

package filestore

import (
	"bufio"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// osFS on Unix: named x/sys calls, the same on every architecture and
// every Unix. Files and directories are bare descriptors (fdFile, fdDir);
// stat results become fileStats with the link count, owner and ctime that
// the engine's checks need.

const (
	// noFollow makes open fail on a symlink instead of following it.
	noFollow = unix.O_NOFOLLOW
	// noBlock keeps open from blocking on a FIFO planted at a record path.
	// On regular files and directories, where it changes nothing, it also
	// spares os.OpenFile four fcntl calls: given a non-blocking descriptor
	// the os package does not switch it to non-blocking mode and back
	// around its failed attempt to add the file to the netpoller. That
	// matters where os.OpenFile still opens our files: gofrs/flock's lock
	// files.
	noBlock = unix.O_NONBLOCK
)

// ignoringEINTR calls fn again for as long as it fails with EINTR: a
// system call that can block (open, flock, fsync, a read or write) returns
// EINTR when a signal, such as the Go runtime's preemption signal, arrives
// before it has done anything. The os package retries the same way.
// close(2) must not be retried: the descriptor is gone whatever it says.
func ignoringEINTR(fn func() error) error {
	for {
		if err := fn(); err != unix.EINTR {
			return err
		}
	}
}

// statFrom is the fileStat of st, the stat result of the file name.
func statFrom(name string, st *unix.Stat_t) fileStat {
	return fileStat{
		name:  name,
		mode:  modeOf(uint32(st.Mode)),
		size:  st.Size,
		mtime: time.Unix(st.Mtim.Unix()),
		sys:   true,
		nlink: uint64(st.Nlink),
		uid:   int(st.Uid),
		ctime: time.Unix(st.Ctim.Unix()),
	}
}

// modeOf maps a stat mode to an fs.FileMode: the permission bits, and of
// the types only those the engine tells apart or names in an error. What
// it maps to fs.ModeIrregular (devices, and any other type) is refused as
// not a regular file, like the rest.
func modeOf(m uint32) fs.FileMode {
	mode := fs.FileMode(m & 0o777)
	switch m & unix.S_IFMT {
	case unix.S_IFREG:
	case unix.S_IFDIR:
		mode |= fs.ModeDir
	case unix.S_IFLNK:
		mode |= fs.ModeSymlink
	case unix.S_IFIFO:
		mode |= fs.ModeNamedPipe
	case unix.S_IFSOCK:
		mode |= fs.ModeSocket
	default:
		mode |= fs.ModeIrregular
	}
	return mode
}

// lstatAt is fstatat(2) of name relative to the directory descriptor
// dirfd (unix.AT_FDCWD for a path), not following a symlink. Its error is
// the bare errno, for the caller to wrap with the path.
func lstatAt(dirfd int, name string) (fileStat, error) {
	var st unix.Stat_t
	if err := ignoringEINTR(func() error { return unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW) }); err != nil {
		return fileStat{}, err
	}
	return statFrom(filepath.Base(name), &st), nil
}

// openAt is openat(2) of name relative to dirfd, close-on-exec. Its error
// is the bare errno, for the caller to wrap with the path.
func openAt(dirfd int, name string, flag int, perm fs.FileMode) (fd int, err error) {
	err = ignoringEINTR(func() error {
		fd, err = unix.Openat(dirfd, name, flag|unix.O_CLOEXEC, uint32(perm.Perm()))
		return err
	})
	return fd, err
}

// OpenFile opens a bare-descriptor file (see fdFile).
func (osFS) OpenFile(name string, flag int, perm fs.FileMode) (file, error) {
	fd, err := openAt(unix.AT_FDCWD, name, flag, perm)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	return &fdFile{fd: fd, name: name, at: unix.AT_FDCWD}, nil
}

// OpenDir opens name as an fdDir, with O_DIRECTORY, so that a shard name
// that is not a directory fails here, and O_NOFOLLOW, so that a symlink
// planted for it does.
func (osFS) OpenDir(name string) (dir, error) {
	fd, err := openAt(unix.AT_FDCWD, name, unix.O_RDONLY|unix.O_DIRECTORY|noFollow|noBlock, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	return &fdDir{fd: fd, path: name}, nil
}

// Lstat is fstatat(2) of the path, as os.Lstat is.
func (osFS) Lstat(name string) (fileStat, error) {
	fi, err := lstatAt(unix.AT_FDCWD, name)
	if err != nil {
		return fileStat{}, &fs.PathError{Op: "lstat", Path: name, Err: err}
	}
	return fi, nil
}

// Rename is rename(2) without os.Rename's Lstat of newpath: the os package
// checks that newpath is not a directory, which rename(2) itself reports
// (EISDIR) when the source is a file, as ours always are. That is one
// syscall of a Save.
func (osFS) Rename(oldpath, newpath string) error {
	if err := ignoringEINTR(func() error { return unix.Rename(oldpath, newpath) }); err != nil {
		return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: err}
	}
	return nil
}

// umaskTrims reports whether the process umask removes any of the 0700
// bits, in which case every created file and directory needs a chmod to
// end up exactly 0600/0700. Only Linux shows the umask without changing
// it (in /proc); where it cannot be read it says yes.
func umaskTrims() bool {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return true
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "Umask:"); ok {
			m, err := strconv.ParseUint(strings.TrimSpace(v), 8, 32)
			return err != nil || m&0o700 != 0
		}
	}
	return true
}

// fsBlockSize is the block size of the filesystem holding dir, the unit in
// which it allocates a file's space, or 4096 if statfs cannot tell.
func fsBlockSize(dir string) int {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil || st.Bsize <= 0 {
		return 4096
	}
	return int(st.Bsize)
}
